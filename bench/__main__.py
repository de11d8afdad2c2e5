"""Run benchmarks: ``python -m bench [NAME ...] [OPTIONS]`` (``make bench`` runs them all).

NAME is a module ``bench/<NAME>.py`` with a ``main(argv) -> int``; with no NAME every benchmark runs, one
after another. OPTIONS after the names go to each named benchmark (``python -m bench pit --size large``);
``python -m bench NAME --help`` shows a benchmark's own options. Exit code 0 only if every one succeeded.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

HELPERS = {"__main__", "__init__", "common"}


def available() -> list[str]:
    """The benchmark modules in this folder, by name."""
    return sorted(p.stem for p in Path(__file__).parent.glob("*.py")
                  if p.stem not in HELPERS and not p.stem.startswith("_"))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    known = available()
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        print("benchmarks: " + ", ".join(known))
        return 0
    names = []
    while args and not args[0].startswith("-"):
        name = args.pop(0).removesuffix(".py")
        if name not in known:
            print(f"unknown benchmark {name!r}; known: {', '.join(known)}", file=sys.stderr)
            return 2
        names.append(name)
    if not names and args:
        print("options need a benchmark name first, e.g. python -m bench pit --size small", file=sys.stderr)
        return 2
    failed = []
    for name in names or known:
        print(f"== bench {name} {' '.join(args)}".rstrip(), file=sys.stderr)
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            code = module.main(args)
        except SystemExit as exc:       # argparse exits on --help and on bad options
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:
            traceback.print_exc()
            code = 1
        print(f"== bench {name}: exit {code} after {time.perf_counter() - start:.1f} s", file=sys.stderr)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
