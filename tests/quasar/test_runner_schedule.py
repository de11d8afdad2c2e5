"""Schedules and freshness in the SDK (issue 19, item 1): defaults, refusals, not part of a version, stored by the
registry and updated in place; and the registry's lease, atomic on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fixtures.fault_project import wait_for
from fixtures.registry_db import example_module, write_module
from quasar.registry import Registry
from quasar.signals import Entity, Int64, Source, aggregate, count, signal
from quasar.signals.errors import DefinitionError
from quasar.signals.schedule import boundary
from quasar.signals.signal import Signal

user = Entity(name="user", join_key="user_id")
events = Source.parquet(name="events", path="data/events", timestamp="ts")


def daily(**kw: object) -> Signal:
    return aggregate(name="daily", entity=user, source=events, step=kw.pop("step", "1d"),  # type: ignore[arg-type]
                     aggregations=[count("1d")], **kw)  # type: ignore[arg-type]


def transform(**kw: object) -> Signal:
    @signal(entity=user, source=events, features={"clicked": Int64()}, **kw)  # type: ignore[arg-type]
    def clicks(batch):  # type: ignore[no-untyped-def]
        return batch
    return clicks


def test_defaults_an_aggregation_runs_every_step_a_transform_daily_both_with_two_hours_of_slack() -> None:
    assert (daily().run_schedule, daily().freshness_target) == (timedelta(days=1), timedelta(hours=26))
    hourly = daily(step="1h")
    assert (hourly.run_schedule, hourly.freshness_target) == (timedelta(hours=1), timedelta(hours=26))
    weekly = daily(step="7d")
    assert (weekly.run_schedule, weekly.freshness_target) == (timedelta(days=7), timedelta(days=7, hours=2))
    assert daily(step="7h").run_schedule == timedelta(days=1)               # an odd step is checked daily
    assert (transform().run_schedule, transform().freshness_target) == (timedelta(days=1), timedelta(hours=26))
    manual = transform(schedule="manual")
    assert (manual.run_schedule, manual.freshness_target) == (None, None)
    assert transform(schedule="manual", freshness="2d").freshness_target == timedelta(days=2)


def test_declared_values_and_clear_refusals() -> None:
    sig = transform(schedule="6h", freshness="30h")
    assert (sig.run_schedule, sig.freshness_target) == (timedelta(hours=6), timedelta(hours=30))
    refused = {
        "schedule 7h does not divide a day": dict(schedule="7h"),
        "schedule 36h is not a whole number of days": dict(schedule="36h"),
        "freshness 12h is shorter than 1d: quasar computes whole UTC days": dict(freshness="12h"),
        "freshness 3d is shorter than 7d": dict(schedule="7d", freshness="3d"),
        "schedule must be a duration like '1d' or '1h', or 'manual'": dict(schedule=3),
        "schedule 'daily' is invalid": dict(schedule="daily"),
        "freshness must be positive": dict(freshness=timedelta(days=-1)),
    }
    for message, kw in refused.items():
        with pytest.raises(DefinitionError, match=message.replace("(", r"\(")):
            transform(**kw)
        with pytest.raises(DefinitionError, match=message.replace("(", r"\(")):
            daily(**kw)


def test_schedule_and_freshness_are_metadata_not_version() -> None:
    assert daily(schedule="1h", freshness="2d").definition_fingerprint == daily().definition_fingerprint
    assert transform(schedule="manual").definition_fingerprint == transform().definition_fingerprint
    assert "schedule" not in daily().to_dict() and "freshness" not in daily().to_dict()   # old rows stay equal
    declared = daily(schedule="1h", freshness="2d")
    assert (declared.to_dict()["schedule"], declared.to_dict()["freshness"]) == ("1h", "2d")
    assert Signal.from_dict(declared.to_dict()) == declared
    assert Signal.from_dict(transform(schedule="manual").to_dict()).run_schedule is None


def test_boundaries_are_multiples_since_the_epoch() -> None:
    now = datetime(2026, 12, 2, 7, 38, tzinfo=UTC)
    assert boundary(now, timedelta(days=1)) == datetime(2026, 12, 2, tzinfo=UTC)
    assert boundary(now, timedelta(hours=6)) == datetime(2026, 12, 2, 6, tzinfo=UTC)
    assert boundary(now, timedelta(days=7)) == datetime(2026, 11, 26, tzinfo=UTC)          # a Thursday, as 1970-01-01


def test_the_registry_stores_them_and_updates_them_in_place(registry_url: str, tmp_path: Path) -> None:
    text = example_module()
    path = write_module(tmp_path / "engagement.py", text)
    with Registry.open(registry_url) as reg:
        reg.register(path)
        assert reg.signal("user_activity").signal.freshness_target == timedelta(hours=26)
        write_module(path, text.replace('step="1d", ttl="2d"', 'step="1d", schedule="6h", freshness="30h", ttl="2d"'))
        report = reg.register(path)
        (change,) = [c for c in report.signals if c.name == "user_activity"]
        assert (change.status, change.version, change.changed) == ("metadata updated", 1, ["freshness", "schedule"])
        stored = reg.signal("user_activity").signal
        assert (stored.schedule, stored.run_schedule, stored.freshness) == (
            timedelta(hours=6), timedelta(hours=6), timedelta(hours=30))
        again = [c for c in reg.register(path).signals if c.name == "user_activity"]
        assert again[0].status == "unchanged"


# --- the registry's lease ---------------------------------------------------------------------------------
def test_a_lease_has_one_holder_until_it_runs_out_or_is_released(registry_url: str) -> None:
    with Registry.open(registry_url) as reg:
        first = reg.take_lease("runner", "a", 30)
        assert first.held_by("a") and not first.held_by("b")
        second = reg.take_lease("runner", "b", 30)
        assert second.owner == "a" and not second.held_by("b")                # refused: says who holds it
        assert reg.take_lease("runner", "a", 30).held_by("a")                 # the holder keeps it
        assert reg.renew_lease("runner", "a", 30) and not reg.renew_lease("runner", "b", 30)
        reg.release_lease("runner", "b")                                      # not b's: left alone
        assert reg.lease("runner").owner == "a"                               # type: ignore[union-attr]
        reg.release_lease("runner", "a")
        assert reg.lease("runner") is None
        assert reg.take_lease("runner", "b", 0.001).held_by("b", datetime(2000, 1, 1, tzinfo=UTC))
        threading.Event().wait(0.05)                                          # b's lease runs out
        assert not reg.renew_lease("runner", "b", 30)                         # and b learns it lost it
        assert reg.take_lease("runner", "c", 30).held_by("c")


def test_concurrent_takers_never_both_hold_it(registry_url: str) -> None:
    takers = 6
    regs = [Registry.open(registry_url) for _ in range(takers)]
    barrier = threading.Barrier(takers)
    won: list[str] = []

    def take(i: int) -> None:
        barrier.wait()
        if regs[i].take_lease("runner", f"owner-{i}", 30).held_by(f"owner-{i}"):
            won.append(f"owner-{i}")

    threads = [threading.Thread(target=take, args=(i,)) for i in range(takers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(won) == 1, won
        assert regs[0].lease("runner").owner == won[0]                        # type: ignore[union-attr]
    finally:
        for r in regs:
            r.close()


def test_a_keeper_renews_the_lease_and_notices_losing_it(registry_url: str) -> None:
    with Registry.open(registry_url) as reg:
        taken = reg.take_lease("runner", "a", 2)
        keeper = reg.keep_lease("runner", "a", 2)
        try:
            wait_for(lambda: reg.lease("runner").renewed_at > taken.renewed_at, "a renewal")  # type: ignore[union-attr]
            assert reg.lease("runner").owner == "a" and not keeper.lost.is_set()  # type: ignore[union-attr]
            reg.release_lease("runner", "a")                                  # gone from under it
            assert keeper.lost.wait(30)
        finally:
            keeper.stop()
