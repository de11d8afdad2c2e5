"""The catalog's pages without a browser (``fastapi.testclient``) on the catalog's example project
(``fixtures.ui_project``): what each page shows against the registry and the Iceberg tables, the search, the
statistics and their cache, the lineage drawn, the runs' validation and quarantine, auth, and that the
templates install with the package. The same pages in headless Chromium: tests/quasar/test_ui_browser.py."""

from __future__ import annotations

import fnmatch
import re
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from fastapi.testclient import TestClient

from fixtures.ui_project import UiProject, open_platform
from quasar.platform import Platform
from quasar.store.quarantine import read_quarantine
from quasar.ui import stats as ui_stats
from quasar.ui.app import TEMPLATES, create_app

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def platform(ui_project: UiProject) -> Iterator[Platform]:
    with open_platform(ui_project) as p:
        yield p


@pytest.fixture(scope="module")
def client(platform: Platform) -> TestClient:
    return TestClient(create_app(platform))


def svgs(html: str, cls: str) -> list[ET.Element]:
    """Every inline ``<svg class="cls">`` of a page, parsed as XML (so it is well-formed)."""
    return [ET.fromstring(m) for m in re.findall(rf'<svg class="{cls}".*?</svg>', html, flags=re.S)]


def lineage(html: str) -> tuple[set[str], set[tuple[str, str]], str]:
    [svg] = svgs(html, "lineage")
    nodes = {g.get("data-node", "") for g in svg.iter(f"{SVG}g") if "node" in g.get("class", "").split()}
    edges = {(e.get("data-from", ""), e.get("data-to", "")) for e in svg.iter(f"{SVG}path")
             if e.get("class") == "edge"}
    [focus] = [g.get("data-node", "") for g in svg.iter(f"{SVG}g") if "focus" in g.get("class", "").split()]
    return nodes, edges, focus


def names(html: str, table: str) -> list[str]:
    section = re.search(rf'<table class="{table}">(.*?)</table>', html, flags=re.S)
    return re.findall(r'<tr data-name="([^"]+)"', section.group(1)) if section else []


def test_the_index_lists_everything_registered(client: TestClient, platform: Platform) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert names(page.text, "signals") == sorted(sv.name for sv in platform.ls())
    assert names(page.text, "requests") == ["boosted_affinity"]
    assert names(page.text, "services") == ["home_feed"]
    assert names(page.text, "entities") == ["pin", "user"]
    assert "events" in names(page.text, "sources")
    assert "<script" not in page.text and "http://" not in page.text.replace('xmlns="http://www.w3.org/2000/svg"', "")


@pytest.mark.parametrize(("query", "expected"), [
    ("ctr", {"signals": ["pin_stats", "user_affinity", "user_engagement"], "requests": ["boosted_affinity"],
             "services": ["home_feed"]}),                        # features, a description ("weekly CTR"), refs
    ("QUALITY", {"signals": ["clicks_checked", "clicks_strict"]}),   # an owner, any case
    ("growth engagement", {"signals": ["user_affinity", "user_engagement"]}),  # every word, anywhere
    ("dwell_1d", {"signals": ["user_engagement"]}),
    ("nothing-is-called-this", {}),
])
def test_search_filters_names_descriptions_owners_and_features(client: TestClient, query: str,
                                                               expected: dict[str, list[str]]) -> None:
    page = client.get("/", params={"q": query})
    found = sum(len(v) for v in expected.values())
    assert f"{found} result{'s' * (found != 1)} for" in page.text
    for table in ("signals", "requests", "services", "entities", "sources"):
        assert names(page.text, table) == expected.get(table, []), table


def test_a_signal_page_draws_its_upstream_and_downstream(client: TestClient) -> None:
    page = client.get("/signals/user_engagement")
    nodes, edges, focus = lineage(page.text)
    assert focus == "signal:user_engagement"
    assert nodes == {"source:events", "signal:user_engagement", "signal:user_affinity",
                     "request:boosted_affinity", "service:home_feed"}              # not its sibling pin_stats
    assert edges == {("source:events", "signal:user_engagement"),
                     ("signal:user_engagement", "signal:user_affinity"),
                     ("signal:user_affinity", "request:boosted_affinity"),
                     ("signal:user_engagement", "request:boosted_affinity"),
                     ("request:boosted_affinity", "service:home_feed"),
                     ("signal:user_engagement", "service:home_feed")}
    affinity = lineage(client.get("/signals/user_affinity").text)
    assert affinity[0] == nodes and ("signal:user_engagement", "signal:user_affinity") in affinity[1]
    service = lineage(client.get("/services/home_feed").text)
    assert {"signal:pin_stats", "source:events"} <= service[0] and service[2] == "service:home_feed"


def test_every_edge_points_right_and_no_node_overlaps_another(client: TestClient) -> None:
    [svg] = svgs(client.get("/services/home_feed").text, "lineage")
    boxes = {g.get("data-node"): next(g.iter(f"{SVG}rect")).attrib for g in svg.iter(f"{SVG}g")
             if g.get("data-node")}
    at = {k: (float(b["x"]), float(b["y"]), float(b["width"]), float(b["height"])) for k, b in boxes.items()}
    for e in svg.iter(f"{SVG}path"):
        if e.get("class") == "edge":
            assert at[e.get("data-from")][0] < at[e.get("data-to")][0], e.attrib
    for a, (ax, ay, aw, ah) in at.items():
        for b, (bx, by, _, _) in at.items():
            if a < b:
                assert abs(ax - bx) >= aw or abs(ay - by) >= ah, (a, b)


def test_a_signal_page_shows_what_describe_says_and_its_freshness(client: TestClient, platform: Platform) -> None:
    page = client.get("/signals/user_engagement").text
    described = platform.describe("user_engagement")
    for text in (described["description"], described["owner"], "mean(clicked) over 7d", "count(*) over 1d",
                 "data/events", "policy <b>strict</b>"):
        assert text in page, text
    for f in described["schema"]:
        assert f'<tr data-feature="{f["name"]}"><td><code>{f["name"]}</code></td><td>{f["type"]}</td>' in page
    assert '<div class="card" data-state="ok">' in page                         # computed until today's midnight
    assert 'data-state="never"' in client.get("/signals/pin_profile").text          # registered, never backfilled


def test_statistics_are_those_of_the_last_backfilled_window(client: TestClient, platform: Platform,
                                                           ui_project: UiProject) -> None:
    sv = platform.registry.signal("user_engagement")
    rows = platform.offline.read(sv.signal, sv.version, start=ui_project.start, end=ui_project.end)
    page = client.get("/signals/user_engagement").text
    stats = platform.registry.get_state(ui_stats.state_key("user_engagement", sv.version))
    assert stats is not None and stats["snapshot_id"] == platform.offline.current_snapshot_id("user_engagement", 1)
    assert stats["rows"] == rows.num_rows and stats["start"] == ui_project.start.isoformat()
    by = {f["name"]: f for f in stats["features"]}
    for name in ("impressions_1d", "clicks_7d", "ctr_7d", "dwell_1d"):
        col = rows.column(name)
        assert by[name]["nulls"] == col.null_count
        assert by[name]["min"] == pytest.approx(pc.min(col).as_py())
        assert by[name]["max"] == pytest.approx(pc.max(col).as_py())
        assert by[name]["mean"] == pytest.approx(pc.mean(col).as_py())
        assert sum(by[name]["counts"]) == len(col) - col.null_count
        [chart] = [s for s in svgs(page, "histogram") if s.get("data-feature") == name]
        bars = [int(r.get("data-count", -1)) for r in chart.iter(f"{SVG}rect")]
        assert bars == by[name]["counts"]
    dwell = np.asarray(rows.column("dwell_1d").drop_null().to_numpy(), dtype=float)
    assert by["dwell_1d"]["counts"] == np.histogram(dwell, bins=ui_stats.BINS)[0].tolist()


def test_statistics_are_cached_per_snapshot(client: TestClient, platform: Platform, ui_project: UiProject,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    client.get("/signals/pin_stats")                                   # computed (or already cached)
    reads: list[str] = []
    real = platform.offline.read

    def counted(signal, *args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(signal.name)
        return real(signal, *args, **kwargs)

    monkeypatch.setattr(platform.offline, "read", counted)
    assert client.get("/signals/pin_stats").status_code == 200
    assert reads == []                                                  # a page load reads the cache only
    key = ui_stats.state_key("pin_stats", 1)
    before = platform.registry.get_state(key)
    platform.backfill("pin_stats", ui_project.end - (ui_project.end - ui_project.start) / 2, ui_project.end)
    client.get("/signals/pin_stats")
    after = platform.registry.get_state(key)
    assert reads == ["pin_stats"] and after is not None and before is not None
    assert after["snapshot_id"] != before["snapshot_id"] and after["run_id"] != before["run_id"]


def test_a_warned_run_shows_its_failed_expectation(client: TestClient, ui_project: UiProject) -> None:
    signal_page = client.get("/signals/clicks_checked").text
    assert f'<tr data-run="{ui_project.warned_run}" data-status="succeeded">' in signal_page
    page = client.get(f"/signals/clicks_checked/runs/{ui_project.warned_run}").text
    assert 'data-verdict="warned"' in page and "policy <b>warn</b>" in page
    failed = re.findall(r'<tr class="outcome failed" data-type="([^"]+)"', page)
    assert failed == ["expect_column_values_to_be_between"]
    assert "Quarantined batch" not in page                                  # warn commits the batch


def test_a_refused_run_shows_its_quarantined_batch(client: TestClient, platform: Platform,
                                                   ui_project: UiProject) -> None:
    page = client.get(f"/signals/clicks_strict/runs/{ui_project.strict_run}").text
    assert 'data-verdict="failed"' in page and '<span class="badge failed">failed</span>' in page
    kept = read_quarantine(platform.offline, platform.registry.signal("clicks_strict").signal, 1,
                           run_id=ui_project.strict_run)
    assert f"{kept.num_rows:,} rows kept in <code>signals.clicks_strict__v1__quarantine</code>" in page
    table = re.search(r'<table class="quarantine-rows">(.*?)</table>', page, flags=re.S)
    assert table is not None and table.group(1).count("<tr>") == 1 + min(kept.num_rows, 20)
    signal_page = client.get("/signals/clicks_strict").text
    assert f'href="/signals/clicks_strict/runs/{ui_project.strict_run}"' in signal_page
    assert "never backfilled: no statistics yet" in signal_page


def test_request_service_entity_and_source_pages_link_to_what_they_read(client: TestClient) -> None:
    request = client.get("/requests/boosted_affinity").text
    assert 'href="/signals/user_affinity">user_affinity:engagement_score</a>' in request
    assert 'href="/services/home_feed"' in request
    service = client.get("/services/home_feed").text
    assert 'href="/requests/boosted_affinity">boosted_affinity@1</a>' in service
    assert "no skew report recorded" in service
    entity = client.get("/entities/user").text
    assert 'href="/signals/user_engagement"' in entity and 'href="/sources/events"' in entity
    source = client.get("/sources/events").text
    assert "data/events" in source and 'href="/signals/pin_stats"' in source


def test_the_last_consistency_check_is_shown(tmp_path: Path, ui_project: UiProject, redis_url: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUASAR_REDIS_URL", redis_url)
    with open_platform(ui_project) as p:
        p.materialize(["user_profile"])
        report = p.consistency("user_profile", sample=50, seed=1)          # recorded for the catalog
        page = TestClient(create_app(p)).get("/signals/user_profile").text
    assert "online equals offline" in page and report.consistent
    assert "<th>mismatch</th><th>missing</th><th>extra</th>" in page
    assert "<code>country</code></td><td>0.0%</td>" in page


def test_unknown_pages_are_404(client: TestClient) -> None:
    assert client.get("/signals/nope").status_code == 404
    assert "no signal named" in client.get("/signals/nope").text or "nope" in client.get("/signals/nope").text
    assert client.get("/signals/user_engagement/runs/999999").status_code == 404
    assert client.get("/nowhere").status_code == 404
    assert client.get("/healthz").json()["status"] == "ok"


def test_tokens_guard_every_page_with_a_cookie_for_browsers(platform: Platform) -> None:
    app = create_app(platform, tokens=["s3cret", "other"])
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200                            # probes stay open
        refused = c.get("/")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["detail"].startswith("Unauthorized")
        browser = c.get("/signals/user_engagement", headers={"accept": "text/html"})
        assert browser.status_code == 401 and "?token=" in browser.text
        assert c.get("/", headers={"authorization": "Bearer other"}).status_code == 200
        assert c.get("/", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/?token=wrong", follow_redirects=False).status_code == 401
        traded = c.get("/?q=ctr&token=s3cret", follow_redirects=False)
        assert traded.status_code == 303 and traded.headers["location"] == "/?q=ctr"    # the token leaves the URL
        cookie = traded.headers["set-cookie"]
        assert "quasar_token=s3cret" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert c.get("/signals/user_engagement").status_code == 200              # the client keeps the cookie
        c.cookies.clear()
        assert c.get("/signals/user_engagement").status_code == 401


def test_the_templates_install_with_the_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "quasar.ui" in config["packages"]
    patterns = config["package-data"]["quasar.ui"]
    files = [p.relative_to(TEMPLATES.parent).as_posix() for p in TEMPLATES.rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), files
