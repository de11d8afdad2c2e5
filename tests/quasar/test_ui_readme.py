"""README "The catalog", run as a reader runs it: in a ``quasar init`` sample (its events end today) with
``user_activity`` backfilled, ``quasar ui --port 6570`` starts in the background on a free port (which the
later commands use instead), prints the catalog's URL, and the two curls print what the README shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from fixtures.readme import Shell, commands, find_block, readme_blocks, shell_env
from quasar.cli import main
from quasar.platform import Platform


def test_the_catalog_block_runs(tmp_path: Path, project_env: str) -> None:
    root = tmp_path / "myproject"
    assert CliRunner().invoke(main, ["init", str(root)]).exit_code == 0
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with Platform.open(root) as p:
        p.register(root / "signals")
        p.backfill("user_activity", today - timedelta(days=14), today)
    block = find_block(readme_blocks(), "bash", "quasar ui --port 6570")
    shell = Shell(root, shell_env(project_env), tmp_path / "logs")
    cmds = commands(block)
    try:
        assert cmds[0].text.startswith("quasar ui --port 6570")
        shell._start(cmds[0], shell.substitute(cmds[0].text))        # a server: until /healthz answers
        for cmd in cmds[1:]:
            out = shell.run(cmd)
            assert out.strip().splitlines() == cmd.shown, (cmd.text, out)
    finally:
        shell.close()
    port = shell.ports["6570"]
    log = tmp_path / "logs" / f"server-{port}.log"                   # what the server printed (Shell keeps it)
    assert f"the catalog of {root} is at http://127.0.0.1:{port}/" in log.read_text()   # "prints the catalog's URL"
    assert len(cmds) == 3
