"""``[time]`` in quasar.toml: the time bounds every write path accepts (``quasar.signals.bounds``); defaults, and values
that do not parse are a ConfigError naming the key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from quasar.config import load_config
from quasar.signals.bounds import TimeBounds
from quasar.signals.errors import ConfigError


def test_defaults_are_1970_and_one_day(tmp_path: Path) -> None:
    assert load_config(tmp_path).time_bounds == TimeBounds(earliest=datetime(1970, 1, 1, tzinfo=UTC),
                                                           max_future=timedelta(days=1))


def test_values_are_read(tmp_path: Path) -> None:
    (tmp_path / "quasar.toml").write_text('[time]\nearliest = "1900-01-01"\nmax_future = "2h"\n')
    assert load_config(tmp_path).time_bounds == TimeBounds(earliest=datetime(1900, 1, 1, tzinfo=UTC),
                                                           max_future=timedelta(hours=2))


@pytest.mark.parametrize(("toml", "named"), [
    ('[time]\nearliest = "the dawn of time"\n', "[time] earliest"),
    ('[time]\nmax_future = "a while"\n', "[time] max_future"),
    ('[time]\nmax_future = 3\n', "[time] max_future must be str"),
    ('[time]\nlatest = "2030-01-01"\n', "unknown key(s) latest in [time]"),
])
def test_bad_values_name_the_key(tmp_path: Path, toml: str, named: str) -> None:
    (tmp_path / "quasar.toml").write_text(toml)
    with pytest.raises(ConfigError, match=r"quasar\.toml") as raised:
        load_config(tmp_path)
    assert named in str(raised.value)
