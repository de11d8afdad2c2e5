"""The catalog in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``, installed by
``make test`` through scripts/ensure_test_tools.sh) driven by selenium against ``quasar.ui`` served by uvicorn
over a socket, on the catalog's example project (``fixtures.ui_project``). Nothing is downloaded: selenium is
given both binaries, so its manager never runs.

Screenshots of every page visited are saved under ``<pytest basetemp>/ui-screenshots/`` (or the folder in
``$QUASAR_UI_SCREENSHOTS``); docs/catalog.png in the README is one of them.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
import uvicorn

from fixtures.ui_project import UiProject, open_platform
from quasar.platform import Platform
from quasar.ui.app import create_app

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--window-size=1400,1000"]
TOKEN = "catalog-s3cret"

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402


def _tools_or_skip() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (shutil.which(p) or os.access(p, os.X_OK))]
    if missing:
        message = f"{', '.join(missing)} missing: run scripts/ensure_test_tools.sh (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


class Server:
    """``app`` on uvicorn in a thread, on a free port of 127.0.0.1, until ``stop``."""

    def __init__(self, app: Any) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="catalog", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the catalog did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def platform(ui_project: UiProject) -> Iterator[Platform]:
    with open_platform(ui_project) as p:
        yield p


@pytest.fixture(scope="module")
def catalog(platform: Platform) -> Iterator[str]:
    server = Server(create_app(platform))
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _tools_or_skip()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="quasar-ui-chromium-")
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(2)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("QUASAR_UI_SCREENSHOTS") or tmp_path_factory.getbasetemp() / "ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver: Any, folder: Path, name: str) -> Path:
    """The whole page (the window stretched to its height) as ``folder/name.png``."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1400, min(max(height, 600), 4000))
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    driver.set_window_size(1400, 1000)
    return path


def attrs(elements: list[Any], name: str) -> list[str]:
    return [e.get_attribute(name) for e in elements]


def test_the_signal_list(browser: Any, catalog: str, platform: Platform, shots: Path) -> None:
    browser.get(catalog + "/")
    assert browser.title.startswith("catalog · quasar catalog")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.signals tr[data-name]")
    assert attrs(rows, "data-name") == sorted(sv.name for sv in platform.ls())
    fresh = {r.get_attribute("data-name"): r.find_element(By.CSS_SELECTOR, ".badge").text for r in rows}
    assert fresh["user_engagement"] == "ok" and fresh["pin_profile"] == "never"
    assert [r.get_attribute("data-name") for r in browser.find_elements(
        By.CSS_SELECTOR, "table.services tr[data-name]")] == ["home_feed"]
    screenshot(browser, shots, "index")


def test_a_signal_page_with_its_lineage_graph_and_statistics(browser: Any, catalog: str, platform: Platform,
                                                             ui_project: UiProject, shots: Path) -> None:
    browser.get(catalog + "/signals/user_engagement")
    assert browser.find_element(By.ID, "title").text.startswith("signal user_engagement v1")
    nodes = browser.find_elements(By.CSS_SELECTOR, "svg.lineage g.node")
    assert set(attrs(nodes, "data-node")) == {"source:events", "signal:user_engagement", "signal:user_affinity",
                                              "request:boosted_affinity", "service:home_feed"}
    for node in nodes:                                           # laid out and painted, not just in the markup
        box = node.find_element(By.TAG_NAME, "rect").rect
        assert node.is_displayed() and box["width"] > 100 and box["height"] > 30
    edges = {(e.get_attribute("data-from"), e.get_attribute("data-to"))
             for e in browser.find_elements(By.CSS_SELECTOR, "svg.lineage path.edge")}
    assert ("source:events", "signal:user_engagement") in edges          # upstream
    assert {("signal:user_engagement", "signal:user_affinity"), ("signal:user_affinity", "request:boosted_affinity"),
            ("request:boosted_affinity", "service:home_feed")} <= edges  # downstream, transitively
    focus = browser.find_element(By.CSS_SELECTOR, "svg.lineage g.node.focus")
    assert focus.get_attribute("data-node") == "signal:user_engagement"

    sv = platform.registry.signal("user_engagement")
    ctr = platform.offline.read(sv.signal, 1, start=ui_project.start, end=ui_project.end, columns=["ctr_7d"])
    chart = browser.find_element(By.CSS_SELECTOR, "svg.histogram[data-feature='ctr_7d']")
    bars = chart.find_elements(By.CSS_SELECTOR, "rect.bar")
    counts = [int(b.get_attribute("data-count")) for b in bars]
    assert len(bars) > 1 and sum(counts) == ctr.num_rows - ctr.column("ctr_7d").null_count
    tallest = max(range(len(bars)), key=lambda i: counts[i])
    assert bars[tallest].rect["height"] > 40 and chart.rect["width"] >= 300
    row = browser.find_element(By.CSS_SELECTOR, "table.stats tr[data-feature='ctr_7d']")
    assert f"{pc.max(ctr.column('ctr_7d')).as_py():.4g}" in row.text
    screenshot(browser, shots, "signal")

    browser.find_element(By.CSS_SELECTOR, "svg.lineage g.node[data-node='signal:user_affinity'] rect").click()
    assert browser.current_url == catalog + "/signals/user_affinity"
    assert browser.find_element(By.ID, "title").text.startswith("signal user_affinity")


def test_a_runs_validation_failure(browser: Any, catalog: str, ui_project: UiProject, shots: Path) -> None:
    browser.get(catalog + "/signals/clicks_checked")
    run = browser.find_element(By.CSS_SELECTOR, f"table.runs tr[data-run='{ui_project.warned_run}']")
    assert "warned" in run.text and "failed 1 of 1" in run.text.replace("warned 1 of 1", "failed 1 of 1")
    run.find_element(By.TAG_NAME, "a").click()
    assert browser.current_url.endswith(f"/signals/clicks_checked/runs/{ui_project.warned_run}")
    assert browser.find_element(By.CSS_SELECTOR, "[data-verdict]").get_attribute("data-verdict") == "warned"
    [failed] = browser.find_elements(By.CSS_SELECTOR, "table.outcomes tr.outcome.failed")
    assert failed.text.startswith("FAIL") and "expect_column_values_to_be_between(column=views_1d" in failed.text
    screenshot(browser, shots, "run-warned")

    browser.get(catalog + "/")                                   # the refused one, from the list's last run
    browser.find_element(By.CSS_SELECTOR, "table.signals tr[data-name='clicks_strict'] td:last-child a").click()
    assert browser.current_url.endswith(f"/signals/clicks_strict/runs/{ui_project.strict_run}")
    assert browser.find_element(By.CSS_SELECTOR, "[data-verdict]").get_attribute("data-verdict") == "failed"
    assert "the data-quality gate refused the batch" in browser.find_element(By.ID, "error").find_element(
        By.XPATH, "following-sibling::pre").text
    kept = browser.find_elements(By.CSS_SELECTOR, "table.quarantine-rows tr")
    assert len(kept) > 1 and "quarantine__run_id" in kept[0].text
    screenshot(browser, shots, "run-refused")


def test_search(browser: Any, catalog: str, shots: Path) -> None:
    browser.get(catalog + "/signals/user_profile")               # the box is on every page
    box = browser.find_element(By.ID, "search")
    box.send_keys("quality", Keys.ENTER)
    heading = browser.find_element(By.ID, "results")
    assert heading.text == "2 results for “quality”"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.signals tr[data-name]")
    assert attrs(rows, "data-name") == ["clicks_checked", "clicks_strict"]
    assert all("owner" in r.text.splitlines()[-1] for r in rows)       # where it matched
    assert browser.find_element(By.ID, "search").get_attribute("value") == "quality"
    screenshot(browser, shots, "search")
    box = browser.find_element(By.ID, "search")
    box.clear()
    box.send_keys("ctr_7d", Keys.ENTER)
    assert {"user_engagement", "pin_stats"} <= set(attrs(
        browser.find_elements(By.CSS_SELECTOR, "table.signals tr[data-name]"), "data-name"))
    assert attrs(browser.find_elements(By.CSS_SELECTOR, "table.services tr[data-name]"), "data-name") == ["home_feed"]
    browser.find_element(By.LINK_TEXT, "home_feed").click()
    assert browser.find_element(By.ID, "title").text.startswith("feature service home_feed")


def test_a_browser_signs_in_once_with_the_token(browser: Any, platform: Platform, shots: Path) -> None:
    server = Server(create_app(platform, tokens=[TOKEN]))
    try:
        browser.get(server.url + "/signals/user_engagement")
        assert "This catalog needs a token" in browser.find_element(By.TAG_NAME, "h1").text
        browser.get(server.url + f"/signals/user_engagement?token={TOKEN}")
        assert browser.current_url == server.url + "/signals/user_engagement"      # the token left the address
        assert browser.find_element(By.ID, "title").text.startswith("signal user_engagement")
        browser.get(server.url + "/services/home_feed")                             # the cookie does the rest
        assert browser.find_element(By.ID, "title").text.startswith("feature service home_feed")
        assert browser.get_cookie("quasar_token")["httpOnly"] is True
    finally:
        browser.delete_all_cookies()
        server.stop()
