"""Loading bundles: a bundle that does not match the registry is refused at load, naming what is wrong."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fixtures.serving import SIGNALS, column_of, input_spec, ranker_spec, score_pin_stats, score_user_stats
from quasar.examples.ranker import Ranker
from quasar.serving_adapters.bundle import InputColumn, save_bundle
from quasar.serving_adapters.models import ModelRegistry, static_resolver
from quasar.signals import Float64, Signal
from quasar.signals.errors import BundleError, NotFoundError
from quasar.signals.ufr.tensors import InputSpec

RESOLVE = static_resolver({k: {1: s} for k, s in SIGNALS.items()})


def save(folder: Path, name: str = "ranker", *, inputs: tuple[InputColumn, ...] | None = None,
         spec: InputSpec | None = None) -> None:
    bundle = ranker_spec(name, inputs=inputs, spec=spec)
    save_bundle(folder, bundle, Ranker(**bundle.model_kwargs))


def with_ref(column: str, ref: str, role: str | None = None) -> tuple[InputColumn, ...]:
    """The standard inputs with ``column``'s reference (and role) replaced."""
    base = ranker_spec().inputs
    return tuple(replace(c, ref=ref, role=role or c.role) if c.column == column else c for c in base)


def test_a_matching_bundle_loads_once_with_reads_grouped_by_role(tmp_path: Path) -> None:
    save(tmp_path)
    models = ModelRegistry(tmp_path, RESOLVE)
    assert models.cached("ranker") is None
    loaded = models.get("ranker")
    assert models.get("ranker") is loaded and models.cached("ranker") is loaded
    assert [(r.signal.name, r.version, [f for f, _ in r.features]) for r in loaded.request_reads] == [
        ("score_user_stats", 1, ["clicks", "ctr", "active", "taste", "recent"])]
    assert [(r.signal.name, [c for _, c in r.features]) for r in loaded.candidate_reads] == [
        ("score_pin_stats", ["score_pin_stats__ctr", "score_pin_stats__embedding"])]
    assert loaded.request_entity is not None and loaded.request_entity.join_key == "user_id"
    assert [m.name for m in models.loaded()] == ["ranker"]
    models.evict("ranker")
    assert models.cached("ranker") is None and models.get("ranker") is not loaded


def test_unknown_model_names_the_known_ones(tmp_path: Path) -> None:
    save(tmp_path)
    with pytest.raises(NotFoundError, match=r"model 'nope' not found.*known models: ranker"):
        ModelRegistry(tmp_path, RESOLVE).get("nope")
    for name in ("../ranker", "ranker/.", "x" * 256):     # never made into a path: checked against the bundles
        with pytest.raises(NotFoundError, match=r"not found.*known models: ranker$"):
            ModelRegistry(tmp_path, RESOLVE).get(name)


@pytest.mark.parametrize(("column", "ref", "message"), [
    ("score_user_stats__ctr", "gone_signal@1:ctr",
     r"model 'ranker': input 'score_user_stats__ctr' reads gone_signal@1:ctr, but the registry has no signal "
     r"'gone_signal'"),
    ("score_user_stats__ctr", "score_user_stats@1:ctr_30d",
     r"reads score_user_stats@1:ctr_30d, but signal 'score_user_stats'@1 has no feature 'ctr_30d'; its "
     r"features: clicks, ctr, active, taste, recent"),
    ("score_user_stats__ctr", "score_user_stats:ctr", r"is not 'signal@version:feature'.*pin the exact version"),
    ("score_pin_stats__ctr", "score_user_stats@1:ctr",
     r"input 'score_pin_stats__ctr' \(score_user_stats@1:ctr\) is a candidate input, so it must describe the "
     r"entity keyed by 'pin_id', but signal 'score_user_stats' is keyed by 'user_id'"),
])
def test_a_reference_the_registry_does_not_have_is_refused(tmp_path: Path, column: str, ref: str,
                                                           message: str) -> None:
    save(tmp_path, inputs=with_ref(column, ref))
    with pytest.raises(BundleError, match=message):
        ModelRegistry(tmp_path, RESOLVE).get("ranker")


def test_a_version_that_is_not_current_is_refused(tmp_path: Path) -> None:
    save(tmp_path)
    newer = static_resolver({"score_user_stats": {1: score_user_stats, 2: score_user_stats},
                             "score_pin_stats": {1: score_pin_stats}})
    with pytest.raises(BundleError, match=r"model 'ranker': input 'score_user_stats__clicks' reads "
                                          r"score_user_stats@1:clicks, but the registry's current version of "
                                          r"'score_user_stats' is 2"):
        ModelRegistry(tmp_path, newer).get("ranker")


def test_a_recorded_type_that_differs_from_the_registry_is_refused(tmp_path: Path) -> None:
    column = column_of("score_user_stats", "ctr")
    spec = InputSpec(features=tuple((c, Float64() if c == column else t) for c, t in input_spec().features))
    save(tmp_path, spec=spec)
    with pytest.raises(BundleError, match=r"reads score_user_stats@1:ctr as float64, but the registry's "
                                          r"schema says float32"):
        ModelRegistry(tmp_path, RESOLVE).get("ranker")


def test_an_offline_signal_is_refused(tmp_path: Path) -> None:
    save(tmp_path)
    offline = Signal.from_dict({**score_pin_stats.to_dict(), "online": False})
    resolve = static_resolver({"score_user_stats": {1: score_user_stats}, "score_pin_stats": {1: offline}})
    with pytest.raises(BundleError, match=r"signal 'score_pin_stats' is not online"):
        ModelRegistry(tmp_path, resolve).get("ranker")


def test_spec_and_inputs_must_agree(tmp_path: Path) -> None:
    inputs = ranker_spec().inputs
    save(tmp_path, "missing", inputs=inputs[1:])
    save(tmp_path, "twice", inputs=(*inputs, inputs[0]))
    models = ModelRegistry(tmp_path, RESOLVE)
    with pytest.raises(BundleError, match=r"model 'missing': input spec columns \['score_user_stats__clicks'\] "
                                          "have no feature reference"):
        models.get("missing")
    with pytest.raises(BundleError, match=r"model 'twice': input columns \['score_user_stats__clicks'\] are "
                                          "listed more than once"):
        models.get("twice")


def test_a_refused_bundle_is_not_cached_and_loads_once_fixed(tmp_path: Path) -> None:
    save(tmp_path, inputs=with_ref("score_user_stats__ctr", "gone_signal@1:ctr"))
    models = ModelRegistry(tmp_path, RESOLVE)
    with pytest.raises(BundleError):
        models.get("ranker")
    save(tmp_path)
    assert models.get("ranker").name == "ranker"


def test_against_a_real_registry_a_new_signal_version_refuses_the_old_bundle(tmp_path: Path) -> None:
    from dataclasses import replace as dc_replace

    from quasar.registry import Registry
    from quasar.serving_adapters.models import registry_resolver
    from quasar.signals import FeatureSchema, Int64

    save(tmp_path / "models")
    sources = [score_user_stats.source, score_pin_stats.source]
    with Registry.open(f"sqlite:///{tmp_path / 'registry.db'}") as registry:
        registry.register_definitions([score_user_stats.entity, score_pin_stats.entity], sources,
                                      [score_user_stats, score_pin_stats], module="tests.scoring")
        assert registry.signal("score_user_stats").version == 1
        models = ModelRegistry(tmp_path / "models", registry_resolver(registry))
        assert models.get("ranker").request_reads[0].version == 1
        wider = dc_replace(score_user_stats, schema=FeatureSchema.of({**score_user_stats.features, "views": Int64()}))
        registry.register_definitions([], [], [wider], module="tests.scoring")
        assert registry.signal("score_user_stats").version == 2
        models.evict("ranker")
        with pytest.raises(BundleError, match=r"reads score_user_stats@1:clicks, but the registry's current "
                                              r"version of 'score_user_stats' is 2"):
            models.get("ranker")


def test_a_class_that_cannot_be_imported_is_a_model_import_error_and_loads_once_it_is_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a BundleError (409, "does not match the registry"): a ModelImportError naming the class, why, and
    where the scorer imports from; remembered as the bundle's state, and tried again on the next request."""
    import sys
    from dataclasses import replace as dc_replace

    from quasar.serving_adapters.bundle import load_bundle
    from quasar.signals.errors import ModelImportError

    spec = dc_replace(ranker_spec(), model_class="late_model:LateRanker")
    save_bundle(tmp_path / "models", spec, Ranker(**spec.model_kwargs))
    models = ModelRegistry(tmp_path / "models", RESOLVE)
    with pytest.raises(ModelImportError, match=r"model 'ranker': model class 'late_model:LateRanker' cannot be "
                                               r"imported: ModuleNotFoundError: No module named 'late_model'\. "
                                               r"score-serve imports model classes from the project root"):
        models.get("ranker")
    (state,) = models.states()
    assert state.state == "failed" and isinstance(state.error, ModelImportError)
    assert not isinstance(state.error, BundleError)

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "late_model", raising=False)
    (tmp_path / "late_model.py").write_text("from quasar.examples.ranker import Ranker\n\n\nclass Other(Ranker):\n"
                                            "    pass\n")
    with pytest.raises(ModelImportError, match=r"module 'late_model' \(.*late_model\.py\) has no 'LateRanker'"):
        models.get("ranker")
    monkeypatch.delitem(sys.modules, "late_model")
    (tmp_path / "late_model.py").write_text("from quasar.examples.ranker import Ranker as LateRanker\n")
    assert models.get("ranker").name == "ranker"                  # no restart: the next request loads it
    assert [(s.name, s.state) for s in models.states()] == [("ranker", "loaded")]
    assert type(load_bundle(tmp_path / "models", "ranker").model).__name__ == "Ranker"


def test_a_constructor_that_fails_or_weights_that_do_not_fit_are_bundle_errors(tmp_path: Path) -> None:
    from dataclasses import replace as dc_replace

    spec = ranker_spec()
    save_bundle(tmp_path, dc_replace(spec, name="bad_kwargs", model_kwargs={**spec.model_kwargs, "nope": 1}),
                Ranker(**spec.model_kwargs))
    save_bundle(tmp_path, dc_replace(spec, name="bad_weights", model_kwargs={**spec.model_kwargs, "hidden": 8}),
                Ranker(**spec.model_kwargs))
    models = ModelRegistry(tmp_path, RESOLVE)
    with pytest.raises(BundleError, match=r"model 'bad_kwargs': quasar\.examples\.ranker:Ranker\(\*\*.*\) fails: "
                                          r"TypeError: .*'nope'"):
        models.get("bad_kwargs")
    with pytest.raises(BundleError, match=r"(?s)model 'bad_weights': cannot load .*model\.pt: .*size mismatch"):
        models.get("bad_weights")
    assert {s.name: s.state for s in models.load_all()} == {"bad_kwargs": "failed", "bad_weights": "failed"}
