"""The progress rule of long work (``quasar.store.progress``): on a terminal a bar that keeps redrawing while
one long step runs (a 20-second compute no longer looks frozen) and names the step; elsewhere nothing."""

from __future__ import annotations

import io
import time

from quasar.store.progress import Progress


class Terminal(io.StringIO):
    """What a terminal receives (a real pseudo-TTY is used by tests/quasar/test_cli_progress.py)."""

    def isatty(self) -> bool:
        return True


def test_a_long_step_keeps_redrawing_and_names_the_step() -> None:
    screen = Terminal()
    with Progress("backfill x v1", total=5, unit="step", stream=screen, refresh_s=0.01) as bar:
        bar.step("compute")
        drawn = screen.getvalue().count("\r")
        deadline = time.monotonic() + 30
        while screen.getvalue().count("\r") < drawn + 3:      # no update: only the ticker draws
            assert time.monotonic() < deadline, "the bar was not redrawn during a long step"
            time.sleep(0.01)
        bar.update(1)
        while "1/5" not in screen.getvalue():                  # the count shows by the next redraw at latest
            assert time.monotonic() < deadline, "the update never showed"
            time.sleep(0.01)
    text = screen.getvalue()
    assert "backfill x v1" in text and "compute" in text and "1/5" in text
    assert text.endswith("\r"), "the bar is cleared at the end, leaving the command's summary line"
    settled = len(text)
    time.sleep(0.05)
    assert len(screen.getvalue()) == settled, "nothing is drawn after close"


def test_nothing_is_written_off_a_terminal_or_when_not_asked() -> None:
    log = io.StringIO()
    with Progress("dataset", total=10, stream=log, refresh_s=0.01) as bar:
        bar.step("join")
        bar.update(10)
    screen = Terminal()
    with Progress("dataset", total=10, stream=screen, enabled=False, refresh_s=0.01) as bar:
        bar.update(10)
    assert log.getvalue() == "" and screen.getvalue() == ""
