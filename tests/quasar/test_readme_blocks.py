"""Every code block of README.md runs in a test, as a reader would run it, so the README cannot drift from the product.

The tours run top to bottom in real projects: ``quasar init``, the example signals and generated data over the
README's dates (2026-01-01 .. 2026-02-01), a throwaway Redis, real Iceberg tables. Python blocks run in one
namespace per tour section, like a notebook; bash blocks run command by command in a shell in the project with
this venv's ``quasar`` on PATH; ``quasar serve`` and ``quasar score-serve`` start in the background on free ports
(``fixtures.readme.Shell``). The output a block shows (``text``, ``json`` blocks, ``# ...`` lines under a command)
is compared with what the command really printed: exactly where the README's lines are exact, by shape where the
values depend on the data or the clock (each such place says why). ``test_every_block_is_run`` fails on a block
no test claims, so a new block needs a runner here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

import quasar
from fixtures.project import init_project
from fixtures.readme import (
    README,
    Block,
    Command,
    Shell,
    commands,
    find_block,
    readme_blocks,
    run_python,
    shell_env,
)
from quasar.cli import main
from quasar.config import load_config
from quasar.demo import EXAMPLE_SIGNALS
from quasar.examples.data import World, generate

ROOT = README.parent
START, END = "2026-01-01", "2026-02-01"                   # the README's backfill window
WORLD = World(users=50, pins=100, days=31, events_per_day=200)       # 2026-01-01 .. 2026-02-01
STATUSES = {"PRESENT", "NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE"}
PUSHED = datetime(2026, 11, 23, 10, tzinfo=UTC)          # the README push row's "2026-11-23T10:00:00Z"

# Every README block, claimed by the runner below that runs it: (language, a marker only that block contains).
CLAIMS: dict[str, tuple[str, str]] = {
    "two_commands": ("bash", "make demo"),
    "own_project": ("bash", "cat README.md"),
    "author_module": ("python", "# signals/engagement.py"),
    "source_module": ("python", 'null_timestamps="drop"'),
    "author_cli": ("bash", "quasar init myproject --minimal"),
    "register_output": ("text", "new version; needs backfill"),
    "trainer_dataset": ("python", "spine.to_parquet(\"spine.parquet\")"),
    "trainer_cli": ("bash", "quasar dataset "),
    "trainer_loader": ("python", "make_loader("),
    "train_ranker": ("bash", "quasar.examples.train_ranker"),
    "online_cli": ("bash", "quasar materialize"),
    "online_curl": ("bash", "localhost:6566/v1/features"),
    "online_json": ("json", '"feature_names"'),
    "online_python": ("python", "p.push("),
    "score_cli": ("bash", "quasar score-serve --port 6567"),
    "own_model_module": ("python", "# scorer.py"),
    "own_model_save": ("python", "quasar.serving.save_bundle(model"),
    "own_model_cli": ("bash", "quasar score-serve --port 6568"),
    "quality_module": ("python", "great_expectations"),
    "quality_cli": ("bash", "quasar validate"),
    "rt_module": ("python", "# signals/ranking.py"),               # run by tests/quasar/test_readme_request_time.py
    "rt_cli": ("bash", "quasar describe ranker_v3"),
    "rt_service_python": ("python", 'offline = p.training_dataset(spine, "ranker_v3")'),
    "rt_log_python": ("python", 'p.feature_log("ranker_v3")'),
    "rt_skew": ("bash", "quasar skew ranker_v3"),
    "ui_cli": ("bash", "quasar ui --port 6570"),                   # run by tests/quasar/test_ui_readme.py
    "fresh_module": ("python", 'schedule="6h", freshness="30h"'),    # run by tests/quasar/test_runner_readme.py
    "fresh_cli": ("bash", "quasar run --once --dry-run"),
    "config_toml": ("toml", "[registry]"),
    "spark_toml": ("toml", "spark-master"),
    "spark_catalog_toml": ("toml", "SparkCatalog"),
}


def claim(name: str) -> Block:
    lang, marker = CLAIMS[name]
    return find_block(readme_blocks(), lang, marker)


def test_every_block_is_run() -> None:
    blocks = readme_blocks()
    assert {b.lang for b in blocks} <= {"python", "bash", "toml", "json", "text"}, "a block in a new language"
    claimed = {name: claim(name) for name in CLAIMS}
    unclaimed = [b.where() for b in blocks if b not in claimed.values()]
    assert not unclaimed, f"README blocks no test runs (add a runner to {Path(__file__).name}): {unclaimed}"
    assert len(set(claimed.values())) == len(CLAIMS), "two claims name the same block"


# --- the two commands ---------------------------------------------------------------------------------------
def test_the_two_commands_are_make_targets_that_run_what_the_readme_says() -> None:
    """``make test`` would run this very suite, and ``make demo``'s ``quasar demo`` runs end to end in
    tests/quasar/test_demo.py, so neither is run here: each line must be a Makefile target whose recipe
    (``make -n``: printed, not run) runs the command the block describes, and those commands must exist."""
    block = claim("two_commands")
    expected = {"demo": ".venv/bin/quasar demo", "test": ".venv/bin/python -m pytest"}
    targets = [cmd.text.split()[1] for cmd in commands(block)]
    assert targets == ["demo", "test"], targets
    makefile = (ROOT / "Makefile").read_text()
    for target in targets:
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"Makefile has no {target} target"
        dry = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=False)
        assert dry.returncode == 0, dry.stderr
        assert expected[target] in dry.stdout, dry.stdout
        assert "scripts/ensure_redis.sh" in dry.stdout, dry.stdout        # "makes sure a Redis is there"
    assert (ROOT / "scripts" / "ensure_redis.sh").stat().st_mode & 0o111, "scripts/ensure_redis.sh is not executable"
    assert "--dir" in CliRunner().invoke(main, ["demo", "--help"]).output      # `quasar demo --dir DIR`


# --- your own project -----------------------------------------------------------------------------------------
def test_quasar_init_makes_the_sample_the_readme_describes(tmp_path: Path, project_env: str) -> None:
    """The block in a terminal; the sample's own README commands run end to end in tests/quasar/test_scaffold.py."""
    shell = Shell(tmp_path, shell_env(project_env), tmp_path / "logs")
    cmds = run_commands(shell, claim("own_project"), {
        "quasar init": printing("created a sample project in", "quasar register signals/"),
        "cd myproject && cat README.md": printing("quasar register signals/", "quasar backfill user_activity",
                                                  "quasar dataset", "quasar materialize", "quasar serve"),
    })
    assert len(cmds) == 2
    root = tmp_path / "myproject"
    for part in ("quasar.toml", "signals", "data", ".gitignore", "README.md", "generate_data.py"):
        assert (root / part).exists(), part                  # what the block's comment lists
    assert ".quasar/" in (root / ".gitignore").read_text().splitlines()
    assert "from quasar.signals import" in (root / "signals" / "activity.py").read_text()


# --- configuration ------------------------------------------------------------------------------------------
def _config_value(config: Any, section: str, key: str) -> Any:
    value = getattr(getattr(config, section), key)
    return list(value) if isinstance(value, tuple) else value


def _check_toml(block: Block, tmp: Path) -> tuple[dict[str, Any], Any]:
    """The block as a project's quasar.toml, read by ``load_config``: every value it shows is the one loaded."""
    tmp.mkdir()
    (tmp / "quasar.toml").write_text(block.text)
    config = load_config(tmp, env={})
    data = tomllib.loads(block.text)
    for section, values in data.items():
        for key, value in values.items():
            assert _config_value(config, section, key) == value, f"{block.where()}: [{section}] {key}"
    return data, config


def test_the_configuration_blocks_load_and_show_the_defaults(tmp_path: Path) -> None:
    data, _ = _check_toml(claim("config_toml"), tmp_path / "shown")
    (tmp_path / "empty").mkdir()
    defaults = load_config(tmp_path / "empty", env={})                      # no quasar.toml at all
    for section, values in data.items():                                    # "every field has a default"
        for key, value in values.items():
            assert _config_value(defaults, section, key) == value, f"README's [{section}] {key} is not the default"
    _, spark = _check_toml(claim("spark_toml"), tmp_path / "spark")
    assert spark.spark.master == "spark://spark-master:7077"
    assert spark.spark.conf == {"spark.executor.memory": "8g", "spark.sql.shuffle.partitions": "400"}
    _, catalog = _check_toml(claim("spark_catalog_toml"), tmp_path / "catalog")
    assert catalog.spark.conf["spark.sql.catalog.quasar"] == "org.apache.iceberg.spark.SparkCatalog"
    assert catalog.spark.master == defaults.spark.master


# --- what `quasar register` prints ---------------------------------------------------------------------------
def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: {old!r}"
    path.write_text(text.replace(old, new))


def test_register_prints_the_lines_the_readme_shows(tmp_path: Path, project_env: str) -> None:
    """The example project with v1 serving, then the changes the block describes: user_engagement's code
    (an aggregation more), the user entity's description; pin_stats untouched."""
    root = init_project(tmp_path / "project", "project")
    shutil.copytree(EXAMPLE_SIGNALS, root / "signals", ignore=shutil.ignore_patterns("__pycache__"))
    generate(root, World(users=10, pins=10, days=2, events_per_day=40))
    with quasar.Platform.open(root) as p:
        p.register("signals")
        p.backfill("user_engagement", "2026-01-01", "2026-01-03")       # v1 backfilled: v1 is what serves
    _edit(root / "signals" / "engagement.py", 'count("1d", name="impressions_1d"),',
          'count("1d", name="impressions_1d"), count("7d", name="impressions_7d"),')
    _edit(root / "signals" / "entities.py", '"A person using the app."', '"A person who uses the app."')
    result = CliRunner().invoke(main, ["-C", str(root), "register", "signals"])
    assert result.exit_code == 0, result.output
    printed = [line.strip() for line in result.output.splitlines()]
    for line in claim("register_output").text.splitlines():
        assert line.strip() in printed, f"README line {line.strip()!r} not in:\n{result.output}"


# --- the tours, top to bottom ------------------------------------------------------------------------------
def run_commands(shell: Shell, block: Block, checks: dict[str, Callable[[Command], None]]) -> list[Command]:
    """Run a bash block; after each command whose text starts with a key of ``checks``, that check."""
    cmds = commands(block)
    used = set()
    for cmd in cmds:
        output = shell.run(cmd)
        for prefix, check in checks.items():
            if cmd.text.startswith(prefix):
                used.add(prefix)
                cmd.output = output
                check(cmd)
    assert used == set(checks), f"{block.where()}: no command starts with {set(checks) - used}"
    return cmds


def printing(*parts: str) -> Callable[[Command], None]:
    """A check: the command printed each of ``parts``."""
    def check(cmd: Command) -> None:
        for part in parts:
            assert part in cmd.output, f"README.md:{cmd.line}: `{cmd.text}` did not print {part!r}:\n{cmd.output}"
    return check


_TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)?"
_NUM = r"-?\d[\d,]*(?:\.\d+)?%?"
_TOKENS = re.compile(rf"(?P<ts>{_TS})|(?P<num>{_NUM})|(?P<ws>\s+)")


def shape(line: str) -> re.Pattern[str]:
    """A README output line as a pattern: its words exact, any number or timestamp where it shows one."""
    line = line.strip()
    parts, pos = [], 0
    for m in _TOKENS.finditer(line):
        parts += [re.escape(line[pos:m.start()]), {"ts": _TS, "num": _NUM, "ws": r"\s+"}[m.lastgroup or "ws"]]
        pos = m.end()
    parts.append(re.escape(line[pos:]))
    return re.compile("".join(parts))


def assert_shown(cmd: Command) -> None:
    """Each line the README shows under ``cmd`` matches a line it printed, by shape (the data differ)."""
    printed = [line.strip() for line in cmd.output.splitlines()]
    assert cmd.shown, f"README.md:{cmd.line}: no output shown"
    for line in cmd.shown:
        pattern = shape(line)
        assert any(pattern.fullmatch(p) for p in printed), f"README.md:{cmd.line}: {line!r} not in\n{cmd.output}"


def as_of(p: quasar.Platform, signal: str, key: int, at: datetime, feature: str) -> tuple[str, Any]:
    """(status, value) of ``feature`` for entity ``key`` as of ``at``, straight from the signal's Iceberg table by
    the README's rule: the latest row with event_timestamp <= at (then the newest created_timestamp, null the
    oldest); NOT_FOUND without one, OUTSIDE_MAX_AGE when it is older than the TTL."""
    sv = p.registry.signal(signal)
    join_key = sv.signal.entity.join_key
    rows = p.offline.read(sv.signal, sv.version).filter(pc.field(join_key) == key).to_pylist()
    rows = [r for r in rows if r["event_timestamp"] <= at]
    if not rows:
        return "NOT_FOUND", None
    low = datetime.min.replace(tzinfo=UTC)
    row = max(rows, key=lambda r: (r["event_timestamp"], r["created_timestamp"] or low))
    if at - row["event_timestamp"] > sv.signal.ttl:
        return "OUTSIDE_MAX_AGE", None
    value = row[feature]
    return ("PRESENT" if value is not None else "NULL_VALUE"), value


def test_the_readme_runs_top_to_bottom(tmp_path: Path, project_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert WORLD.start <= datetime(2026, 1, 1, tzinfo=UTC) and WORLD.end >= datetime(2026, 2, 1, tzinfo=UTC)
    shell = Shell(tmp_path, shell_env(project_env), tmp_path / "logs")
    notebook: dict[str, Any] = {}                        # the trainer's and online tours' Python session
    try:
        author = signal_author_module(tmp_path / "author")
        project = signal_author_cli(shell)
        monkeypatch.chdir(project)                       # the reader's Python session runs in the project
        trainer_tour(shell, project, notebook)
        online_tour(shell, project, notebook)
        own_model_tour(shell, project, notebook, monkeypatch)
        data_quality(shell, project, author)
    finally:
        shell.close()
        if "p" in notebook:
            notebook["p"].close()


def signal_author_module(root: Path) -> Path:
    """The signal module, saved where its first line says, registered and backfilled over the README's window."""
    block = claim("author_module")
    init_project(root, "author")
    generate(root, WORLD)                                        # data/events: ts, user_id, pin_id, clicked, dwell_s
    path = re.match(r"# (\S+\.py)\n", block.text)
    assert path, f"{block.where()}: the module's first line names its file"
    (root / path.group(1)).parent.mkdir(parents=True)
    (root / path.group(1)).write_text(block.text)
    events = pq.read_table(root / "data" / "events")
    with quasar.Platform.open(root) as p:
        report = p.register("signals")
        assert sorted(c.summary.split()[0] for c in report.signals) == ["user_daily", "user_engagement"]
        (hourly,) = p.backfill("user_engagement", START, END)
        (daily,) = p.backfill("user_daily", START, END)
        table = p.offline.read(p.registry.signal("user_engagement").signal, 1)
        # one row per user and hour: every click of the window counted once
        assert table.num_rows == hourly.rows > 0
        assert pc.sum(table["clicks"]).as_py() == pc.sum(events["clicked"]).as_py()
        # rows stamped T in [start, end) count the events of [T - 1d, T): the events before 2026-01-31
        days = p.offline.read(p.registry.signal("user_daily").signal, 1)
        assert days.num_rows == daily.rows > 0
        before = pc.less(events["ts"], pa.scalar(datetime(2026, 1, 31, tzinfo=UTC), pa.timestamp("us", "UTC")))
        assert pc.sum(days["impressions_1d"]).as_py() == pc.sum(before.cast(pa.int64())).as_py()
    declared_source(root, events)
    return root


def declared_source(root: Path, events: pa.Table) -> None:
    """The declared source, in a module beside the tour's, over its data (the events' columns and one row with
    a null event time). Stand-in: a signal that reads it (a daily count), on the tour module's ``user``."""
    block = claim("source_module")
    clicks = events.select(["user_id", "clicked", "ts"])
    clicks = pa.concat_tables([clicks, pa.table({"user_id": [1], "clicked": [1],
                                                 "ts": pa.nulls(1, pa.timestamp("us", "UTC"))})])
    (root / "data" / "clicks").mkdir()
    pq.write_table(clicks, root / "data" / "clicks" / "clicks.parquet")
    reader = (
        "\n\nfrom engagement import user                 # stand-in: a signal reading the source\n"
        "from quasar.signals import aggregate, count\n"
        'clicks_1d = aggregate(name="clicks_1d", entity=user, source=clicks, step="1d", ttl="2d",\n'
        '                      aggregations=[count("1d", name="seen_1d")])\n')
    (root / "signals" / "clicks.py").write_text(block.text + reader)
    with quasar.Platform.open(root) as p:
        p.register("signals")
        (result,) = p.backfill("clicks_1d", START, END)
        table = p.offline.read(p.registry.signal("clicks_1d").signal, 1)
        assert table.num_rows == result.rows > 0
        before = pc.less(events["ts"], pa.scalar(datetime(2026, 1, 31, tzinfo=UTC), pa.timestamp("us", "UTC")))
        assert pc.sum(table["seen_1d"]).as_py() == pc.sum(before.cast(pa.int64())).as_py()   # the null row: in none
        (run,) = [r for r in p.runs("clicks_1d") if r.kind == "backfill"]
        assert [v for k, v in run.details.items() if "null" in k] == [1], run.details       # dropped, and counted


def signal_author_cli(shell: Shell) -> Path:
    """``quasar init myproject && cd myproject`` and the author's commands. Stand-in: between ``init`` and
    ``register`` the reader puts signal modules in ``signals/`` and data where their sources point; here the
    example project's (the block backfills and promotes its signals, user_affinity among them)."""
    block = claim("author_cli")
    assert f"--start {START} --end {END}" in block.text

    def init(cmd: Command) -> None:
        assert shell.cwd.name == "myproject" and (shell.cwd / ".quasar").is_dir()
        written = load_config(shell.cwd, env={})             # "quasar.toml with the defaults"
        (shell.logs / "no-config").mkdir()
        defaults = load_config(shell.logs / "no-config", env={})
        assert written.project.name == "myproject"
        assert dataclasses.replace(written, root=defaults.root, project=defaults.project) == defaults
        shutil.copytree(EXAMPLE_SIGNALS, shell.cwd / "signals", ignore=shutil.ignore_patterns("__pycache__"))
        generate(shell.cwd, WORLD)

    def ls(cmd: Command) -> None:                          # the header the README's comment shows
        assert cmd.output.splitlines()[0].split() == cmd.comment.split("(")[0].split()

    def describe(cmd: Command) -> None:                    # schema, aggregations, versions, serving, lineage
        if cmd.text.split()[2] == "events":                # a source: where it reads, its schema, its signals
            assert cmd.output.startswith("source events (parquet: data/events, timestamp ts)"), cmd.output
            assert "signals:     pin_stats, user_engagement, user_recent_pins" in cmd.output
            assert "schema:" in cmd.output
            return
        for heading in ("schema:", "aggregations (step 1d", "versions:", "serving:", "upstream:", "downstream:"):
            assert heading in cmd.output, cmd.output

    run_commands(shell, block, {
        "quasar init": init,
        "quasar plan": printing("user_engagement v1: new", "nothing written"),
        "quasar register": printing("user_engagement v1: new", "user_affinity v1: new"),
        "quasar ls": ls,
        "quasar describe": describe,
        "quasar backfill user_engagement": printing(f"backfilled user_engagement v1 [{START}, {END}): "),
        "quasar backfill user_affinity": printing(f"backfilled user_engagement v1 [{START}, {END}): ",
                                                  f"backfilled user_affinity v1 [{START}, {END}): "),
        "quasar promote": printing("user_engagement serves v1 (promoted)"),
    })
    return shell.cwd


def trainer_tour(shell: Shell, project: Path, notebook: dict[str, Any]) -> None:
    """The trainer's blocks in one namespace. Stand-ins: the other example signals backfilled over the same
    window (the author's tour backfills two as examples; these blocks read pin_stats and pin_profile and the
    ranker every signal), and a tiny ``model`` and ``loss_fn`` for the training loop."""
    with quasar.Platform.open(project) as p:
        for name in ("pin_stats", "pin_profile", "user_profile", "user_recent_pins"):
            p.backfill(name, START, END)
    run_python(claim("trainer_dataset"), notebook)
    p, ds = notebook["p"], notebook["ds"]
    assert ds.column_names == ["user_id", "pin_id", "event_timestamp", "label", "ctr_7d", "impressions_7d",
                               "embedding"]
    assert ds["user_id"].to_pylist() == [1, 2] and ds["label"].to_pylist() == [1, 0]    # spine order, labels kept
    for i, at in enumerate(ds["event_timestamp"].to_pylist()):      # each value: the latest row as of the spine's
        user, pin = ds["user_id"][i].as_py(), ds["pin_id"][i].as_py()
        assert ds["ctr_7d"][i].as_py() == as_of(p, "user_engagement", user, at, "ctr_7d")[1]
        assert ds["impressions_7d"][i].as_py() == as_of(p, "pin_stats", pin, at, "impressions_7d")[1]
        embedding = as_of(p, "pin_profile", pin, at, "embedding")[1]
        assert ds["embedding"][i].as_py() == (None if embedding is None else list(embedding))
    assert ds["ctr_7d"].null_count == 0                               # users 1 and 2 were active that week

    run_commands(shell, claim("trainer_cli"), {"quasar dataset": printing("wrote 2 rows")})
    train = pq.read_table(project / "train.parquet")
    assert train["user_engagement__ctr_7d"].to_pylist() == ds["ctr_7d"].to_pylist()         # the same answer
    assert train["pin_stats__impressions_7d"].to_pylist() == ds["impressions_7d"].to_pylist()
    assert "pin_stats__ctr_7d" in train.column_names

    class Model(torch.nn.Module):                    # stand-in: a model of the FeatureBatch, counting rows seen
        def __init__(self) -> None:
            super().__init__()
            self.rows = 0

        def forward(self, features: Any) -> torch.Tensor:
            self.rows += features.size
            return (features.dense * features.dense_mask).sum(dim=1)

    notebook.update(model=Model(), loss_fn=torch.nn.BCEWithLogitsLoss())
    block = claim("trainer_loader")
    if not torch.cuda.is_available():                # the only edit: the device, where there is no CUDA
        block = dataclasses.replace(block, text=block.text.replace('"cuda"', '"cpu"'))
    run_python(block, notebook)
    assert notebook["model"].rows == train.num_rows and math.isfinite(float(notebook["loss"]))
    batches = list(notebook["loader"])               # refs + spine -> loader: every spine row, full names
    assert sum(b.features.size for b in batches) == 2
    assert "user_engagement__ctr_7d" in batches[0].features.dense_names

    run_commands(shell, claim("train_ranker"), {"python -m quasar.examples.train_ranker": printing("saved model bundle")})
    assert (project / "models" / "ranker" / "bundle.json").is_file()


def online_tour(shell: Shell, project: Path, notebook: dict[str, Any]) -> None:
    """Materialize, serve, fetch, push, score. The reader's ``p`` is the one from the trainer's tour."""
    online = {"pin_profile", "pin_stats", "user_affinity", "user_engagement", "user_profile", "user_recent_pins"}

    def materialized(cmd: Command) -> None:
        done = set(re.findall(r"^materialized (\w+) v1 \((?:incremental|full)\)", cmd.output, flags=re.M))
        assert done == ({"pin_stats"} if "--full" in cmd.text else online), cmd.output
        assert "--full" not in cmd.text or "materialized pin_stats v1 (full)" in cmd.output

    run_commands(shell, claim("online_cli"), {"quasar materialize ": materialized, "quasar serve": printing()})
    (curl,) = run_commands(shell, claim("online_curl"), {"curl": printing('"feature_names"')})
    answer = json.loads(curl.output)

    # The README's JSON with its elisions dropped: the keys, the feature names and the join key result are
    # exact; the feature values are checked against the offline table as of now instead of the README's
    # (0.30 PRESENT was fresh when written; the README's dates are long past, so these are OUTSIDE_MAX_AGE).
    shown = json.loads(re.sub(r",\s*\.\.\.(?=\s*\])", "", claim("online_json").text))
    assert answer.keys() == shown.keys() and answer["metadata"] == shown["metadata"]
    names = answer["metadata"]["feature_names"]
    assert len(answer["results"]) == len(names)
    assert answer["results"][0]["values"] == shown["results"][0]["values"]
    assert answer["results"][0]["statuses"] == shown["results"][0]["statuses"]
    p = notebook["p"]
    now = datetime.now(UTC)
    signal_of = {"ctr_7d": "user_engagement", "taste": "user_profile", "country": "user_profile"}
    for name, result in zip(names, answer["results"], strict=True):
        assert result.keys() == shown["results"][0].keys() and len(result["values"]) == 2
        assert set(result["statuses"]) <= STATUSES
        for user, status, value in zip([1, 2], result["statuses"], result["values"], strict=True):
            if name != "user_id":
                want_status, want = as_of(p, signal_of[name], user, now, name)
                assert (status, value) == (want_status, want if want is None else pytest.approx(want)), name

    values = run_python(claim("online_python"), {"p": p})
    assert values[0] == answer                                # "In process, the same answer"
    sv = p.registry.signal("user_profile")                    # the pushed row, in both stores
    redis_store: Any = p.online_store
    (row,) = redis_store.read([(sv.signal, sv.version)], [7], now_us=int(PUSHED.timestamp() * 1_000_000))
    assert row.table.column("country").to_pylist() == ["FR"]
    assert row.event_time_us.tolist() == [int(PUSHED.timestamp() * 1_000_000)]
    stored = p.offline.read(sv.signal, sv.version).filter(pc.field("user_id") == 7)
    assert PUSHED in stored.column("event_timestamp").to_pylist()
    spine = pa.table({"user_id": [7], "event_timestamp": pa.array([PUSHED], pa.timestamp("us", "UTC"))})
    assert p.training_dataset(spine, ["user_profile:country"]).column("country").to_pylist() == ["FR"]

    def scored(cmd: Command) -> None:
        # The README's scores came from another training run: the keys, the model and one float per
        # candidate, in candidate order, are what can be checked.
        (line,) = cmd.shown
        shown_answer = json.loads(line[:line.rindex("}") + 1])
        got = json.loads(cmd.output)
        body = json.loads(re.search(r"-d '(.*)'", cmd.text).group(1))       # type: ignore[union-attr]
        assert got.keys() == shown_answer.keys() and got["model"] == shown_answer["model"] == body["model"]
        assert len(got["scores"]) == len(shown_answer["scores"]) == len(body["candidates"]["pin_id"])
        assert all(isinstance(s, float) and math.isfinite(s) for s in got["scores"])

    run_commands(shell, claim("score_cli"), {"quasar score-serve": printing(), "curl": scored})
    shell.close()                                             # the services stop with the section


def own_model_tour(shell: Shell, project: Path, notebook: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader's own model: its module saved where its first line says, trained and saved in the trainer's
    session (a REPL at the project root imports it, as ``python`` puts the current folder on the path), then
    served by a fresh ``quasar score-serve`` that must import it from the project root by itself."""
    from quasar.serving_adapters.bundle import load_bundle
    from quasar.signals.ufr.tensors import build_feature_batch

    block = claim("own_model_module")
    path = re.match(r"# (\S+\.py)\n", block.text)
    assert path, f"{block.where()}: the module's first line names its file"
    (project / path.group(1)).write_text(block.text)
    monkeypatch.syspath_prepend(str(project))
    saved = run_python(claim("own_model_save"), notebook)[-1]
    assert saved == project / "models" / "taste"                            # "-> <project>/models/taste"
    bundle = load_bundle(project / "models", "taste").spec
    assert bundle.model_class == "scorer:TasteScorer" and bundle.model_kwargs == {"dense_dim": 2}
    assert [(c.column, c.ref, c.role) for c in bundle.inputs] == [         # pinned to the serving versions
        ("user_engagement__ctr_7d", "user_engagement@1:ctr_7d", "request"),
        ("user_profile__taste", "user_profile@1:taste", "request"),
        ("pin_stats__ctr_7d", "pin_stats@1:ctr_7d", "candidate"),
        ("pin_profile__embedding", "pin_profile@1:embedding", "candidate")]
    model, p = notebook["model"], notebook["p"]

    def healthy(cmd: Command) -> None:                  # the shown line's facts: both bundles loaded at start-up
        got = json.loads(cmd.output)
        states = {m["name"]: m for m in got["models"]}
        assert got["status"] == "ok" and sorted(states) == ["ranker", "taste"], got
        assert states["taste"]["state"] == "loaded" and states["taste"]["model_class"] == "scorer:TasteScorer"
        assert got["model_states"] == {"loaded": 2}

    def scored(cmd: Command) -> None:                   # the model's own scores on the same rows, as of now
        got = json.loads(cmd.output)
        body = json.loads(re.search(r"-d '(.*)'", cmd.text).group(1))       # type: ignore[union-attr]
        pins = body["candidates"]["pin_id"]
        assert got["model"] == "taste" and len(got["scores"]) == len(pins)
        spine = pa.table({"user_id": [7] * len(pins), "pin_id": pins,
                          "event_timestamp": pa.array([datetime.now(UTC)] * len(pins), pa.timestamp("us", "UTC"))})
        rows = p.training_dataset(spine, notebook["features"], full_names=True)
        model.eval()
        with torch.inference_mode():
            want = model(build_feature_batch(rows, load_bundle(project / "models", "taste").spec.spec))
        assert got["scores"] == [float(s) for s in want]

    run_commands(shell, claim("own_model_cli"), {"quasar score-serve": printing(),
                                                 "curl -s localhost:6568/healthz": healthy,
                                                 "curl -s localhost:6568/v1/score": scored})
    shell.close()


def data_quality(shell: Shell, project: Path, author: Path) -> None:
    """The expectations block, and the quality commands on the example project."""
    # The block names the tour's `user` and `events`: it runs appended to the signal author's module (where
    # they are defined), replacing its user_engagement by this aggregation, a new version; its gate then
    # judges the README's window.
    block = claim("quality_module")
    module = author / "signals" / "engagement.py"
    module.write_text(f"{claim('author_module').text}\n\n{block.text}")
    with quasar.Platform.open(author) as p:
        (change,) = [c for c in p.register("signals").signals if c.summary.startswith("user_engagement")]
        assert change.summary.startswith("user_engagement v2: new version"), change.summary
        defined = p.registry.load_signal("user_engagement").signal
        assert len(defined.expectations) == 4 and defined.policy == "strict"
        checked = p.validate("user_engagement", START, END)
        assert checked.result.verdict == "passed", checked.result
    with quasar.Platform.open(project) as p:                  # "examples/signals/engagement.py has this one"
        example = p.registry.load_signal("user_engagement").signal
        assert all(e in example.expectations for e in defined.expectations)
        assert example.policy == defined.policy

    def consistent(cmd: Command) -> None:                     # the sample sizes differ: the world is smaller
        assert_shown(cmd)
        assert "online equals offline" in cmd.output, cmd.output

    run_commands(shell, claim("quality_cli"), {
        "quasar validate": printing("policy strict: passed"),
        "quasar runs": printing(" validate ", " materialize ", " backfill "),
        "quasar describe": printing("expectations (strict):", "last validation:", "recent runs:"),
        "quasar consistency": consistent,
    })
