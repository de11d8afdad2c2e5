"""Progress of long offline work (backfill, materialize, dataset) on stderr, one rule for every command.

On a terminal: a live tqdm bar that names the work and its current step, redrawn every ``REFRESH_S`` even
between updates, so a 20-second compute step shows its time moving instead of a frozen bar; it is cleared
when the work ends, leaving the command's own summary line. Anywhere else (a pipe, a log file, CI, a
notebook): nothing at all, no carriage returns and no line printed twice; the command's summary line is the
record.

It lives in ``store`` because the rooms that do long work are ``store`` and ``online``, which may import
``store`` but not ``quasar`` (DESIGN.md section 1), and the authoring SDK in ``signals`` is no place for UI.
"""

from __future__ import annotations

import os
import sys
import threading
from types import TracebackType
from typing import IO, Any

REFRESH_S = 0.5
FALLBACK_COLUMNS = 100


def is_terminal(stream: IO[Any]) -> bool:
    """Whether ``stream`` is an interactive terminal (a closed or odd stream counts as not one)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _columns(stream: IO[Any]) -> int:
    """The terminal's width; a terminal that reports none (a bare pseudo-TTY) gets ``FALLBACK_COLUMNS``."""
    try:
        width = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        width = 0
    return width or FALLBACK_COLUMNS


class Progress:
    """A context manager: ``with Progress("backfill x v1", total=5, unit="step", enabled=progress) as bar:``
    then ``bar.step("compute")`` to name the current step and ``bar.update(n)`` as work completes. Shown only
    when ``enabled`` and ``stream`` (stderr by default) is a terminal; otherwise every call does nothing."""

    def __init__(self, desc: str, *, total: int | None = None, unit: str = "it", enabled: bool = True,
                 stream: IO[Any] | None = None, refresh_s: float = REFRESH_S) -> None:
        out = stream if stream is not None else sys.stderr
        self.shown = enabled and is_terminal(out)
        self._bar: Any = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if not self.shown:
            return
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, unit=unit, file=out, leave=False, ncols=_columns(out),
                         mininterval=0.1)
        self._ticker = threading.Thread(target=self._tick, args=(refresh_s,), daemon=True,
                                        name="quasar-progress")
        self._ticker.start()

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every):
            self._bar.refresh()           # tqdm's own lock: never interleaves with an update's redraw

    def step(self, name: str) -> None:
        """Name what is being done now (shown after the counts)."""
        if self._bar is not None:
            self._bar.set_postfix_str(name, refresh=True)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        """Stop redrawing and clear the bar (idempotent)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
