"""``quasar --help`` stays fast: the CLI imports click and the standard library only; each command imports the
heavy libraries it needs when it runs (issue 15: ``--help`` took seconds). Checked by what a fresh interpreter
has in ``sys.modules``, not by a clock (bench/RESULTS.md has the timings)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("pyarrow", "numpy", "pandas", "duckdb", "pyiceberg", "torch", "fastapi", "sqlalchemy", "redis",
         "pyspark", "great_expectations", "uvicorn")
CHECK = """
import json, sys
from quasar.cli import main
try:
    main(args={args!r})
except SystemExit:
    pass
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))))
"""


@pytest.mark.parametrize("args", [[], ["--help"], ["ls", "--help"], ["init", "--help"], ["--version"]],
                         ids=lambda a: " ".join(a) or "import")
def test_the_cli_loads_no_heavy_library(args: list[str]) -> None:
    code = CHECK.format(args=args, heavy=HEAVY) if args else (
        f"import json, sys, quasar.cli; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & "
        f"set({HEAVY!r}))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [], done.stdout


def test_import_quasar_is_light_and_still_gives_the_facade() -> None:
    code = ("import sys, quasar; light = 'pyarrow' not in sys.modules; "
            "print(light, quasar.Platform.__name__, quasar.QuasarError.__name__, quasar.signals.Entity.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "Platform", "QuasarError", "Entity"]
