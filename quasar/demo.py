"""``quasar demo``: the whole product end to end on generated data, in a fresh project folder."""

from __future__ import annotations

import json
import random
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from quasar import examples
from quasar.examples.data import World, generate, make_spine
from quasar.platform import Platform
from quasar.signals.errors import QuasarError

EXAMPLE_SIGNALS = Path(examples.__file__).parent / "signals"
ALL_FEATURES = ["user_engagement", "pin_stats", "user_recent_pins", "pin_profile", "user_profile",
                "user_affinity"]
Step = Callable[[Path, World], None]
INCOMING = "incoming"                  # where the last day's events wait until they land (step 5)


def _heading(text: str) -> None:
    click.echo()
    click.secho(f"== {text}", bold=True)


def quasar_cli(project: Path, *args: str) -> None:
    """Run one ``quasar`` command in-process, echoing it as a user would type it."""
    from quasar.cli import main
    click.secho(f"$ quasar {shlex.join(args)}", fg="cyan")
    main.main(args=["-C", str(project), *args], standalone_mode=False)


def step_project(project: Path, world: World) -> None:
    _heading("1. A project, generated data and the example signals")
    quasar_cli(project, "init", str(project), "--name", f"demo_{secrets.token_hex(3)}", "--minimal")
    shutil.copytree(EXAMPLE_SIGNALS, project / "signals", ignore=shutil.ignore_patterns("__pycache__"))
    counts = generate(project, world)
    click.echo(f"generated {counts['events']:,} events, {counts['users']:,} user and {counts['pins']:,} pin "
               f"snapshots over {world.days} days from {world.start:%Y-%m-%d}")
    held = _last_day_events(project, world)
    (project / INCOMING).mkdir()
    held.replace(project / INCOMING / held.name)
    click.echo(f"the last day's events ({held.name}) are held back in {INCOMING}/: they land in step 5")
    quasar_cli(project, "register", "signals")
    quasar_cli(project, "ls")
    quasar_cli(project, "describe", "user_engagement")


def step_backfill(project: Path, world: World) -> None:
    _heading("2. Backfill every signal into Iceberg (upstream first)")
    end = f"{world.end - timedelta(days=1):%Y-%m-%d}"             # the events landed so far
    starts = {"pin_profile": _first_day(project / "data" / "pins", "updated_at"),     # profiles reach back
              "user_profile": _first_day(project / "data" / "users", "updated_at")}   # before the events
    for name in ["user_affinity", "pin_stats", "user_recent_pins", "pin_profile", "user_profile"]:
        start = starts.get(name, f"{world.start:%Y-%m-%d}")
        quasar_cli(project, "backfill", name, "--start", start, "--end", end, "--with-upstream")
    quasar_cli(project, "describe", "user_affinity")


def step_dataset(project: Path, world: World) -> None:
    _heading("3. A point-in-time correct, labeled training dataset")
    import pyarrow.parquet as pq
    spine = make_spine(project, world.end - timedelta(days=7), world.end, rows=20_000)
    pq.write_table(spine, project / "spine.parquet")
    click.echo(f"spine: {spine.num_rows:,} impressions of the last week (user_id, pin_id, event_timestamp, label)")
    quasar_cli(project, "dataset", "--spine", str(project / "spine.parquet"), "--features", ",".join(ALL_FEATURES),
               "--full-names", "--out", str(project / "train.parquet"))
    table = pq.read_table(project / "train.parquet")
    click.echo(f"columns: {', '.join(table.column_names)}")
    filled = {c: 1 - table[c].null_count / table.num_rows for c in table.column_names[4:]}
    click.echo("share of rows with a value: " + ", ".join(f"{c} {v:.0%}" for c, v in filled.items()))
    click.echo(table.slice(0, 3).select(table.column_names[:8]).to_pandas().to_string())


def step_materialize(project: Path, world: World) -> None:
    _heading("4. Materialize the online signals from Iceberg into Redis (incremental)")
    quasar_cli(project, "materialize")
    click.echo("a second run reads only what changed since the first, which is nothing:")
    quasar_cli(project, "materialize", "user_engagement")


def step_fresh(project: Path, world: World) -> None:
    _heading("5. New data lands: `quasar run --once` computes what is missing or stale, then materializes")
    held = project / INCOMING / _last_day_events(project, world).name
    click.secho(f"$ mv {INCOMING}/{held.name} data/events/        # the last day's events land", fg="cyan")
    held.replace(project / "data" / "events" / held.name)
    quasar_cli(project, "status")
    quasar_cli(project, "run", "--once")
    click.echo("a second pass finds nothing to do (every signal is checked for this day):")
    quasar_cli(project, "run", "--once")
    quasar_cli(project, "status")


def step_serve(project: Path, world: World) -> None:
    _heading("6. The HTTP feature service")
    with _service(project, "serve") as url:
        with Platform.open(project) as p:                  # two users whose profile is in the window
            profiled = p.offline.read(p.registry.signal("user_profile").signal, 1, columns=["user_id"])
        users = sorted(set(profiled.column("user_id").to_pylist()))[:2]
        entities: dict[str, list[Any]] = {"user_id": [*users, 999_999]}
        features = ["user_engagement:clicks_7d", "user_engagement:ctr_7d", "user_profile:country"]
        body = {"entities": entities, "features": features}
        click.secho(f"$ curl -s {url}/v1/features -d '{json.dumps(body)}'", fg="cyan")
        answer = _post(f"{url}/v1/features", body)
        names = answer["metadata"]["feature_names"]
        for name, result in zip(names, answer["results"], strict=True):
            cells = [f"{v:>8.4g} {s}" if isinstance(v, float) else f"{v!r:>8} {s}" for v, s in zip(result["values"], result["statuses"], strict=True)]
            click.echo(f"  {name:<12} " + " | ".join(cells))
        with Platform.open(project) as p:
            same = p.online_features(entities, features) == answer
        click.echo(f"Platform.online_features gives the same answer in-process: {same}")
        push = {"signal": "user_profile", "rows": [{"user_id": 999_999, "event_timestamp": _now_iso(),
                                                     "country": "FR", "taste": [0.0] * 16}]}
        click.secho(f"$ curl -s {url}/v1/push -d '{{\"signal\": \"user_profile\", \"rows\": [...]}}'", fg="cyan")
        click.echo(f"  {_post(f'{url}/v1/push', push)}")
        after = _post(f"{url}/v1/features", {"entities": {"user_id": [999_999]},
                                              "features": ["user_profile:country"]})
        click.echo(f"  user 999999 country now: {after['results'][1]['values'][0]!r} "
                   f"{after['results'][1]['statuses'][0]}")


def step_train(project: Path, world: World) -> None:
    _heading("7. Train the example ranker on a point-in-time dataset (quasar's PyTorch loader)")
    from quasar.examples.train_ranker import train
    spine = make_spine(project, world.end - timedelta(days=14), world.end, rows=40_000)
    path = train(project, project / "models", spine=spine)
    meta = json.loads((path / "bundle.json").read_text()) if (path / "bundle.json").exists() else {}
    click.echo(f"saved the model bundle {path.name} to {path} "
               f"(train loss {meta.get('metrics', {}).get('train_loss', float('nan')):.4f})")


def step_score(project: Path, world: World) -> None:
    _heading("8. The scoring service: features read at request time, scored by the ranker")
    with _service(project, "score-serve") as url:
        health = _get(f"{url}/healthz")
        click.echo(f"scorer device: {health.get('device')}")
        rng = random.Random(3)
        for user in (1, 2, 3):
            pins = rng.sample(range(world.pins), 5)
            body = {"model": "ranker", "entities": {"user_id": [user]}, "candidates": {"pin_id": pins}}
            click.secho(f"$ curl -s {url}/v1/score -d '{json.dumps(body)}'", fg="cyan")
            scores = _post(f"{url}/v1/score", body)["scores"]
            click.echo("  " + ", ".join(f"pin {p}: {s:.3f}" for p, s in zip(pins, scores, strict=True)))


def step_catalog(project: Path, world: World) -> None:
    _heading("9. The catalog: `quasar ui`, every signal with its lineage, freshness, runs and statistics")
    quasar_cli(project, "consistency", "user_engagement", "--sample", "200", "--seed", "1")   # the catalog shows it
    with _service(project, "ui") as url:
        click.echo(f"the catalog of the demo project is at {url}/")
        click.secho(f"$ curl -s {url}/", fg="cyan")
        home = _get_text(f"{url}/")
        signals = re.search(r'<table class="signals">(.*?)</table>', home, flags=re.S)
        listed = re.findall(r'<tr data-name="([^"]+)"', signals.group(1)) if signals else []
        click.echo(f"  {len(listed)} signals listed: {', '.join(listed)}")
        click.secho(f"$ curl -s {url}/signals/user_engagement", fg="cyan")
        page = _get_text(f"{url}/signals/user_engagement")
        state = re.search(r'<div class="card" data-state="([^"]+)"', page)
        nodes = len(re.findall(r'<g class="node[ "]', page))
        charts = len(re.findall(r'<svg class="histogram"', page))
        verdict = "online equals offline" if "online equals offline" in page else "no consistency report"
        click.echo(f"  freshness {state.group(1) if state else '?'}, a lineage graph of {nodes} nodes, {charts} "
                   f"histograms of its last backfill, the last consistency check: {verdict}")
    click.echo("stopped the catalog")


# --- running the services as a user would ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _service(project: Path, command: str) -> Iterator[str]:
    """``quasar <command>`` in a child process on a free port, until the block ends."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "quasar.cli", "-C", str(project), command, "--port", str(port)]
    click.secho(f"$ quasar {command} --port {port} &", fg="cyan")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise QuasarError(f"quasar {command} exited with {proc.returncode}: {out.strip()[-2000:]}")
            try:
                _get(f"{url}/healthz")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise QuasarError(f"quasar {command} did not answer on {url} within 60 s") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return str(answer.read().decode())


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return dict(json.loads(answer.read()))


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return dict(json.loads(answer.read()))
    except urllib.error.HTTPError as exc:
        raise QuasarError(f"POST {url} answered {exc.code}: {exc.read().decode()[:500]}") from exc


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _last_day_events(project: Path, world: World) -> Path:
    """The events file of the world's last day (``examples.data.generate`` writes one per day)."""
    return project / "data" / "events" / f"events-{world.end - timedelta(days=1):%Y-%m-%d}.parquet"


def _first_day(folder: Path, column: str) -> str:
    """The first UTC day of ``column`` in a folder of Parquet files."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    first = pc.min(pq.read_table(folder, columns=[column]).column(column)).as_py()
    return f"{first.astimezone(UTC):%Y-%m-%d}"


STEPS: list[Step] = [step_project, step_backfill, step_dataset, step_materialize, step_fresh, step_serve,
                     step_train, step_score, step_catalog]


def recent_world() -> World:
    """The example world, ending at today's midnight (UTC), so its latest values are fresh online."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return World(start=today - timedelta(days=World().days))


NEXT_STEPS = [
    "next steps:",
    "  quasar init myproject       # a runnable sample project of your own: cd myproject, then its README.md",
    "  quasar demo --dir DIR       # keep the demo project, then: quasar -C DIR/project status, ui, serve",
    "  README.md                   # the tours: signal author, trainer, online service",
]


def run_demo(workdir: Path | None = None, *, keep: bool = False, world: World | None = None) -> Path:
    """Run every demo step in ``workdir`` (a fresh temp folder by default); return the project folder.

    The project has a name of its own (``demo_<hex>``), so its online keys never mix with another project's.
    A temp run removes them (every signal, through ``Platform.delete``) and its folder at the end, even when a
    step fails; a kept one (``workdir`` or ``keep``) keeps both and says under which name."""
    base = workdir or Path(tempfile.mkdtemp(prefix="quasar-demo-"))
    project = base / "project"
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    world = world or recent_world()
    kept = keep or workdir is not None
    try:
        for step in STEPS:
            step(project.resolve(), world)
        _heading(f"done: the demo project is in {project}" if kept else "done")
    finally:
        if not kept:
            try:
                _remove_online(project)
            except QuasarError as exc:                 # never hide a failed step behind the clean-up's error
                click.echo(f"warning: could not remove the demo's Redis keys: {exc}", err=True)
            shutil.rmtree(base, ignore_errors=True)
    if kept:
        with Platform.open(project) as p:
            click.echo(f"its online values stay in Redis under the project {p.config.project.name} "
                       f"(`quasar -C {project} delete SIGNAL` removes a signal's); `quasar -C {project} ui` "
                       "serves its catalog again")
    else:
        click.echo("removed the demo's Redis keys and its folder")
    click.echo("\n".join(NEXT_STEPS))
    return project


def _remove_online(project: Path) -> None:
    """Delete every signal of the demo project (readers first), which removes its online fields: its keys."""
    if not (project / "quasar.toml").is_file():
        return
    with Platform.open(project) as p:
        names = [sv.name for sv in p.ls()]
        while names:
            free = [n for n in names if not set(p.registry.readers(n)) & set(names)] or names
            for name in free:
                p.delete(name)
            names = [n for n in names if n not in free]
