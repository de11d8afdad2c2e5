"""Where in the user's own code an exception happened: the one rule both engines use to say what a transform
that raised did, so the error names the author's file and line rather than a frame inside pyarrow or quasar.

The user's code is the folder of the transform's file (its module and the helpers beside it, or below it);
the innermost traceback frame there is the place. ``transform_failure`` wraps the exception in a
``BackfillError`` (one line: ``KeyError: 'x' (at /p/signals/mod.py:12, in fn)``) caused by it, so ``quasar --debug`` still
prints the whole traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import TracebackType
from typing import Any

from quasar.signals.errors import BackfillError


def _folder(fn: Callable[..., Any]) -> str | None:
    code = getattr(fn, "__code__", None)
    file = getattr(code, "co_filename", None)
    return os.path.dirname(os.path.abspath(file)) if isinstance(file, str) and os.path.isfile(file) else None


def user_frame(tb: TracebackType | None, fn: Callable[..., Any]) -> tuple[str, int, str] | None:
    """``(file, line, function)`` of the innermost frame of ``tb`` in the folder of ``fn``'s file, if any."""
    folder = _folder(fn)
    if folder is None:
        return None
    found = None
    while tb is not None:
        file = os.path.abspath(tb.tb_frame.f_code.co_filename)
        if file == folder or file.startswith(folder + os.sep):
            found = (file, tb.tb_lineno, tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return found


def transform_failure(fn: Callable[..., Any], exc: BaseException) -> BackfillError:
    """``exc``, raised by the transform ``fn``, as one line naming the user's file and line (raise it ``from
    exc``)."""
    where = user_frame(exc.__traceback__, fn)
    problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    place = (f"at {where[0]}:{where[1]}, in {where[2]}" if where else
             f"in the transform {getattr(fn, '__name__', '?')}")
    return BackfillError(f"{problem} ({place})")
