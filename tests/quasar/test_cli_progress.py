"""Progress of the long commands (backfill, materialize, dataset) as a user sees it, through the real CLI in a
child process: with stderr a pipe (a log, CI) each command prints its one summary line and nothing else (no
carriage returns, no line twice); with stderr a terminal (a pseudo-TTY) a live bar names the work."""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fixtures.redis_server import RedisServer
from quasar.demo import EXAMPLE_SIGNALS
from quasar.examples.data import World, generate, make_spine

START = datetime(2026, 1, 1, tzinfo=UTC)
WORLD = World(users=40, pins=60, days=3, events_per_day=300, start=START)
END = START + timedelta(days=3)
CLI = [sys.executable, "-m", "quasar.cli"]
COMMANDS = {
    "backfill": ["backfill", "user_engagement", "--start", "2026-01-01", "--end", "2026-01-04"],
    "materialize": ["materialize", "user_engagement", "--full"],
    "dataset": ["dataset", "--spine", "spine.parquet", "--features", "user_engagement", "--out", "out.parquet"],
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Path]:
    """The example signals registered over a small generated world; the CLI's environment has no overrides
    but the throwaway Redis."""
    if redis_server.proc is None:
        redis_server.start()
    root = tmp_path_factory.mktemp("progress")
    (root / "quasar.toml").write_text('[project]\nname = "progress"\n')
    shutil.copytree(EXAMPLE_SIGNALS, root / "signals", ignore=shutil.ignore_patterns("__pycache__"))
    generate(root, WORLD)
    pq.write_table(make_spine(root, START, END, rows=200), root / "spine.parquet")
    result = subprocess.run([*CLI, "register", "signals"], cwd=root, env=cli_env(redis_server.url),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    yield root


def cli_env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUASAR_")}
    env["QUASAR_REDIS_URL"] = redis_url
    env.pop("TQDM_DISABLE", None)
    env["COLUMNS"] = "120"
    return env


def run_piped(root: Path, args: list[str], redis_url: str) -> tuple[str, str]:
    result = subprocess.run([*CLI, *args], cwd=root, env=cli_env(redis_url), capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def run_on_a_terminal(root: Path, args: list[str], redis_url: str) -> tuple[str, str]:
    """The command with stderr a pseudo-terminal of 40 x 120 (stdout a pipe): its stdout, and what it drew."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:                         # the terminal closed: the command ended
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        child = subprocess.Popen([*CLI, *args], cwd=root, env=cli_env(redis_url), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=follower)
        os.close(follower)
        stdout, _ = child.communicate(timeout=300)
    finally:
        reader.join(timeout=30)
        os.close(leader)
    assert child.returncode == 0, b"".join(chunks).decode(errors="replace")
    return stdout.decode(), b"".join(chunks).decode(errors="replace")


def test_piped_commands_print_one_summary_line_each(project: Path, redis_server: RedisServer) -> None:
    summaries = {"backfill": "backfilled user_engagement v1", "materialize": "materialized user_engagement v1",
                 "dataset": "wrote 200 rows"}
    for name, args in COMMANDS.items():
        stdout, stderr = run_piped(project, args, redis_server.url)
        assert stderr == "", f"{name} wrote to a piped stderr: {stderr!r}"
        assert "\r" not in stdout, name
        lines = stdout.splitlines()
        assert lines[0].startswith(summaries[name]), (name, lines)
        assert all(line.startswith("  ") for line in lines[1:]), (name, lines)       # details of the summary
        assert len(set(lines)) == len(lines), (name, lines)


def test_commands_on_a_terminal_draw_a_bar(project: Path, redis_server: RedisServer) -> None:
    bars = {"backfill": "backfill user_engagement v1", "materialize": "materialize user_engagement",
            "dataset": "dataset"}
    for name, args in COMMANDS.items():
        stdout, drawn = run_on_a_terminal(project, args, redis_server.url)
        assert bars[name] in drawn and "\r" in drawn, (name, drawn)
        assert "|" in drawn or "%" in drawn or "it/s" in drawn or "/s" in drawn, (name, drawn)
        assert "\r" not in stdout and not stdout.startswith(" "), (name, stdout)
