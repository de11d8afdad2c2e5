"""``python -m quasar`` runs the same command line as the ``quasar`` entry point."""
from __future__ import annotations

import subprocess
import sys


def test_python_dash_m_quasar_is_the_cli() -> None:
    run = subprocess.run([sys.executable, "-m", "quasar", "dataset", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "iceberg:namespace.table" in run.stdout          # the dataset command's own help, not a stub
    bad = subprocess.run([sys.executable, "-m", "quasar", "no-such-command"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "No such command" in bad.stderr
