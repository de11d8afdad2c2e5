"""A request-time version keeps running after its module changes: the module text is kept with the version,
so a feature service pinned to it (``ranker@1`` after ``ctr_boost`` v2 is registered) serves the values it
served before, online and offline."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fixtures.request_world import build_world, spine_of


def test_a_pinned_request_time_version_runs_after_its_code_changed(tmp_path: Path, project_env: str) -> None:
    world = build_world(tmp_path)
    p = world.platform
    request = world.request(20)
    entities = {"user_id": request["user_id"], "pin_id": request["pin_id"]}
    fields = {"position": request["position"], "query": request["query"]}
    before = p.online_features(entities, "ranker", request_data=fields)
    at = datetime.now(UTC)
    offline_before = p.training_dataset(spine_of(request, at), "ranker")
    assert p.registry.service("ranker").version == 1

    module = tmp_path / "signals.py"
    module.write_text(module.read_text().replace("DECAY = 0.5", "DECAY = 0.25"))
    p.register(module)
    assert p.registry.request_signal("ctr_boost").version == 2
    assert p.registry.service("ranker").version == 2                  # re-pinned to ctr_boost@2
    assert p.registry.service("ranker", 1).service.pins["ctr_boost"] == 1

    assert p.online_features(entities, "ranker@1", request_data=fields) == before
    assert p.training_dataset(spine_of(request, at), "ranker@1").equals(offline_before)
    changed = p.online_features(entities, "ranker", request_data=fields)
    names = changed["metadata"]["feature_names"]
    boost = names.index("boost")
    assert changed["results"][boost]["values"] != before["results"][boost]["values"]   # v2 is the new code
