"""Feature logging from the scorer: what a model of a logging feature service read, with its scores.

A bundle saved from a feature service that declares ``logging`` has each scored request submitted to the
``quasar.online.feature_log.FeatureLogger`` of ``quasar score-serve`` (through the feature service's
``ServedLog``, which also exports what became of the rows in ``/metrics``, ``quasar_feature_log_rows_total``:
logged, dropped at a full queue, failed to write, sampled out). One log row per candidate: the join keys (the request entity's key repeated), the request
fields as the request-time signals read them (one value per candidate, broadcast ones repeated), every input
column with its status as read, the score, the model's name and every signal version read or computed.
Submitting never blocks and never fails a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from quasar.signals.ufr.types import FeatureType, Int64, String

if TYPE_CHECKING:
    from quasar.online.feature_log import ServedVectors
    from quasar.serving_adapters.features import RequestKeys
    from quasar.serving_adapters.models import LoadedModel

log = logging.getLogger("quasar.scorer")
SOURCE = "score-serve"


def logs(model: LoadedModel) -> bool:
    """Whether the model's feature service declares logging."""
    return model.service is not None and model.service.service.logging is not None


def _key_type(kind: str) -> FeatureType:
    return Int64() if kind == "int64" else String()


def scorer_vectors(model: LoadedModel, keys: RequestKeys, fields: Mapping[str, pa.Array], body: dict[str, Any],
                   scores: Sequence[float], request_id: str, served_at_us: int | None = None) -> ServedVectors:
    """The ``ServedVectors`` of one scored request of a logging service's bundle (``body``: the Feast-shaped
    features the model read, ``quasar.serving_adapters.features.served_features``)."""
    from quasar.online.feature_log import ServedVectors

    found = model.service
    assert found is not None and found.service.logging is not None
    spec = model.spec
    rows = len(keys.candidates)
    join_keys: dict[str, list[Any]] = {}
    types: dict[str, FeatureType] = {}
    if keys.request is not None:
        join_keys[spec.request_key] = [keys.request] * rows
        kind = model.request_entity.join_key_type if model.request_entity is not None else "int64"
        types[spec.request_key] = _key_type(kind)
    join_keys[spec.candidate_key] = list(keys.candidates)
    kind = model.candidate_entity.join_key_type if model.candidate_entity is not None else "int64"
    types[spec.candidate_key] = _key_type(kind)
    types.update(spec.spec.features)
    versions = {r.signal.name: r.version for r in (*model.request_reads, *model.candidate_reads)}
    if model.plan is not None:
        for name, (ftype, _) in model.plan.request_fields.items():
            types[name] = ftype
        versions.update({step.signal.name: step.version for step in model.plan.steps})
    return ServedVectors(service=found.name, service_version=found.version,
                         sample_rate=found.service.logging.sample_rate, request_id=request_id,
                         served_at_us=time.time_ns() // 1000 if served_at_us is None else served_at_us,
                         join_keys=join_keys, request_fields={k: v.to_pylist() for k, v in fields.items()},
                         response=body, types=types, versions=versions, scores=[float(s) for s in scores],
                         model=model.name, source=SOURCE)


def submit(served_log: Any, model: LoadedModel, keys: RequestKeys, fields: Mapping[str, pa.Array],
           body: dict[str, Any], scores: Sequence[float], request_id: str) -> bool:
    """Submit one scored request to ``served_log`` (a ``quasar.online.service.served_log.ServedLog``, whose
    logger samples, queues and counts); False when not queued. Never raises: logging never fails a request."""
    try:
        return bool(served_log.logger.submit(scorer_vectors(model, keys, fields, body, scores, request_id)))
    except Exception:
        log.warning("feature logging: request %s of model %r could not be submitted", request_id, model.name,
                    exc_info=True)
        return False
