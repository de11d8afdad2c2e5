"""What every ``quasar`` command shares: its project (found from ``-C``), the project's ``Platform`` (opened once
per command, closed when it ends), register targets as typed, and ``fail_cleanly`` (a user mistake is one
``error:`` line and exit 1; ``--debug`` or QUASAR_DEBUG adds the traceback). Standard library and click only."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_ENV = "QUASAR_DEBUG"


def fail_cleanly(fn: F) -> F:
    """Print QuasarErrors as one line and exit 1, never a traceback for user mistakes (but with ``--debug``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            from quasar.signals.errors import QuasarError
            if not isinstance(exc, QuasarError):
                raise
            if debugging():
                import traceback
                click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def debugging() -> bool:
    """Whether ``--debug`` or QUASAR_DEBUG asks for the whole traceback of an error."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and (root.obj or {}).get("debug")) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def project_root(ctx: click.Context) -> Path:
    """The project of this command: the nearest folder at or above ``-C`` (default: here) with a quasar.toml.
    Outside a project, a QuasarError (one line, exit 1), before anything is created."""
    from quasar.config import find_project_root
    obj = ctx.ensure_object(dict)
    if "root" not in obj:
        obj["root"] = find_project_root(obj["project"])
    return Path(obj["root"])


def project_platform(ctx: click.Context) -> Any:
    """The project's ``Platform``: opened on first use in a command, closed when the command ends."""
    from quasar.config import load_config
    from quasar.platform import Platform
    obj = ctx.ensure_object(dict)
    if "platform" not in obj:
        obj["platform"] = Platform(load_config(project_root(ctx)))
        ctx.call_on_close(obj["platform"].close)
    return obj["platform"]


def target_path(ctx: click.Context, target: str) -> str:
    """A register target as typed: a path relative to where the command runs (``-C`` or the current folder),
    like git's paths; a module name (nothing of that name here) unchanged."""
    path = Path(ctx.ensure_object(dict)["project"]) / target
    return str(path.resolve()) if path.exists() else target
