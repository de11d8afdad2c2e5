"""``quasar delete`` refuses a signal version a feature service is pinned to (its model would lose its inputs),
removing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fixtures.request_world import build_world
from quasar.cli import main


def test_a_version_pinned_by_a_service_is_not_deleted(tmp_path: Path, project_env: str) -> None:
    world = build_world(tmp_path)
    p = world.platform
    assert p.registry.service("ranker").service.pins["pin_stats"] == 1
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "delete", "pin_stats", "--yes"])
    assert result.exit_code != 0
    assert "feature service ranker@1 (pinned to v1)" in result.output, result.output
    assert [sv.version for sv in p.registry.versions("pin_stats")] == [1]            # nothing removed
    assert p.offline.current_snapshot_id("pin_stats", 1) is not None
    with pytest.raises(Exception, match="ranker@1"):
        p.delete("pin_stats", 1)
