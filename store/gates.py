"""Data-quality gates: a signal's great-expectations expectations, run on a computed batch before it is committed.

``validate_batch`` is engine-agnostic: it takes the checked Arrow batch a backfill is about to write, and the
DataFrame to validate (``Engine.validation_frame``: pandas for the local engine; an engine whose data lives
elsewhere hands a Spark DataFrame, and ``validate_frame`` runs GX's Spark datasource on it). ``enforce`` is the
policy: under ``strict`` a failed batch goes to the signal version's quarantine table and raises
``ValidationFailedError``, so the signal table stays at its previous snapshot; under ``warn`` it is committed
and the result recorded. Committed snapshots carry their verdict (``quasar.validation``), which
``check_snapshot`` reads so materialization refuses a snapshot marked as failed.

great-expectations is imported only when a signal has expectations: it takes seconds to import.
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from quasar.signals.errors import DefinitionError, QuasarError, ValidationFailedError
from quasar.signals.expectations import describe_expectation, expectation_to_dict
from quasar.signals.signal import Signal
from quasar.signals.ufr.schema import EVENT_TIMESTAMP

if TYPE_CHECKING:
    from quasar.store.tables import OfflineStore

PROP_VALIDATION = "quasar.validation"        # snapshot property: passed | warned | failed (absent: no expectations)
PROP_RUN_ID = "quasar.run_id"
VERDICTS = ("passed", "warned", "failed")
EXAMPLES = 10                                # unexpected values kept per expectation


@dataclass(frozen=True, kw_only=True)
class ExpectationOutcome:
    """How one expectation did on one batch: GX's result, JSON-safe and trimmed to what a person reads."""

    expectation: dict[str, Any]              # the plain expectation: {"type", "kwargs"}
    success: bool
    observed_value: Any = None
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    unexpected_examples: list[Any] = field(default_factory=list)
    error: str | None = None

    def describe(self) -> str:
        """``expect_...(column=x, ...): 3 of 500 unexpected (0.6%), e.g. [7, 9, 12]`` and the like."""
        parts = [describe_expectation(self.expectation)]
        if self.error:
            parts.append(f"error: {self.error}")
        if self.unexpected_count is not None:
            pct = f" ({self.unexpected_percent:.3g}%)" if self.unexpected_percent is not None else ""
            total = f" of {self.element_count}" if self.element_count is not None else ""
            shown = "; ".join(_example_text(e) for e in self.unexpected_examples[:3])
            parts.append(f"{self.unexpected_count}{total} unexpected{pct}" + (f", e.g. {shown}" if shown else ""))
        if self.observed_value is not None:
            parts.append(f"observed {self.observed_value}")
        return ": ".join(parts[:1]) + (": " + ", ".join(parts[1:]) if parts[1:] else "")

    def to_dict(self) -> dict[str, Any]:
        return {"expectation": self.expectation, "success": self.success, "observed_value": self.observed_value,
                "element_count": self.element_count, "unexpected_count": self.unexpected_count,
                "unexpected_percent": self.unexpected_percent, "unexpected_examples": self.unexpected_examples,
                "error": self.error}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpectationOutcome:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True, kw_only=True)
class GateResult:
    """The gate's verdict on one batch of one signal version."""

    signal: str
    version: int
    policy: str
    rows: int
    engine: str                              # the GX datasource that ran: "pandas" or "spark" ("" when none ran)
    outcomes: tuple[ExpectationOutcome, ...] = ()

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    @property
    def verdict(self) -> str:
        """``passed``; ``warned`` (failed under ``warn``: committed); ``failed`` (under ``strict``: refused)."""
        if self.success:
            return "passed"
        return "warned" if self.policy == "warn" else "failed"

    def summary(self) -> str:
        """One line: ``passed 3 of 3 expectations`` or ``failed 1 of 3 expectations: <what failed>``."""
        n = len(self.outcomes)
        if self.success:
            return f"passed {n} of {n} expectation{'s' * (n != 1)}"
        failed = self.failed
        return (f"{self.verdict} {len(failed)} of {n} expectation{'s' * (n != 1)}: "
                + "; ".join(o.describe() for o in failed))

    def to_dict(self) -> dict[str, Any]:
        return {"signal": self.signal, "version": self.version, "policy": self.policy, "rows": self.rows,
                "engine": self.engine, "success": self.success, "verdict": self.verdict,
                "evaluated": len(self.outcomes), "failed": len(self.failed), "summary": self.summary(),
                "results": [o.to_dict() for o in self.outcomes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        return cls(signal=data["signal"], version=int(data["version"]), policy=data["policy"], rows=int(data["rows"]),
                   engine=data.get("engine", ""),
                   outcomes=tuple(ExpectationOutcome.from_dict(o) for o in data.get("results", [])))


def _example_text(example: Any) -> str:
    if isinstance(example, Mapping):
        return " ".join(f"{k}={v}" for k, v in example.items())
    return repr(example)


# --- great-expectations ------------------------------------------------------------------------------------------
def gx_expectations(expectations: Sequence[Mapping[str, Any]], where: str) -> list[Any]:
    """GX ``Expectation`` objects from plain expectations; DefinitionError names one GX cannot build."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    built = []
    for exp in expectations:
        try:
            config = ExpectationConfiguration(type=exp["type"], kwargs=dict(exp["kwargs"]), meta=exp.get("meta"),
                                              notes=exp.get("notes"), description=exp.get("description"))
            built.append(config.to_domain_obj())
        except Exception as exc:  # GX raises its own errors and pydantic's for unknown types and bad kwargs
            message = " ".join(str(exc).split())
            raise DefinitionError(f"{where}: great-expectations cannot build {describe_expectation(dict(exp))}: "
                                  f"{message}") from exc
    return built


def _context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
                               progress_bars=ProgressBarsConfig(globally=False))
    return gx.get_context(mode="ephemeral", project_config=config)


_THREAD = threading.local()


def _pandas_batches() -> Any:
    """This thread's GX batch definition for whole pandas DataFrames, in its own ephemeral context, made once:
    making a context, its data source and asset costs about 0.1 s, a third of validating 600k rows. Each
    ``get_batch`` brings its own DataFrame (``_forget`` lets go of it after)."""
    whole = getattr(_THREAD, "pandas_batches", None)
    if whole is None:
        source = _context().data_sources.add_pandas("quasar")
        whole = source.add_dataframe_asset(name="batch").add_batch_definition_whole_dataframe("whole")
        _THREAD.pandas_batches = whole
    return whole


def _spark_batches(frame: Any) -> Any:
    """This thread's GX batch definition for whole Spark DataFrames of ``frame``'s session, made once per session
    (the data source's execution engine holds its session: a later session, after this one was stopped, gets
    its own). Each ``get_batch`` brings its own DataFrame, let go of after (``_forget``)."""
    session = frame.sparkSession
    made = getattr(_THREAD, "spark_batches", None)
    if made is not None and made[0]() is session:
        return made[1]
    source = _context().data_sources.add_spark("quasar", persist=False)
    whole = source.add_dataframe_asset(name="batch").add_batch_definition_whole_dataframe("whole")
    _THREAD.spark_batches = (weakref.ref(session), whole)
    return whole


_FINGERPRINT = threading.Lock()
_fingerprint_off: list[Any] = []                  # GX's threshold, saved while any gate runs (one entry a gate)


@contextlib.contextmanager
def _no_fingerprint() -> Iterator[None]:
    """GX's pandas engine fingerprints every batch under 1 GB, an md5 of ``hash_pandas_object`` over the whole
    frame, as a batch marker (``pandas_data_fingerprint``) that no outcome of ours reads: 0.1-0.2 s of a 600k-row
    gate. Its threshold is 0 while a gate runs (restored when the last running gate ends); results are unchanged."""
    from great_expectations.execution_engine import pandas_execution_engine as engine

    with _FINGERPRINT:
        _fingerprint_off.append(engine.HASH_THRESHOLD)
        engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        with _FINGERPRINT:
            saved = _fingerprint_off.pop()
            if not _fingerprint_off:
                engine.HASH_THRESHOLD = saved


def _forget(batch: Any) -> None:
    """Drop the validated batch from its execution engine's cache, where GX keeps the last one loaded, so a
    reused context holds no batch between gates."""
    manager = batch.data.execution_engine.batch_manager
    manager.reset_batch_cache()
    manager.batch_data_cache.clear()


def is_spark_frame(frame: Any) -> bool:
    return type(frame).__module__.startswith("pyspark.") and type(frame).__name__ == "DataFrame"


def validate_frame(frame: Any, expectations: Sequence[Mapping[str, Any]], *, name: str,
                   index_columns: Sequence[str] = (), examples: int = EXAMPLES) -> list[ExpectationOutcome]:
    """Run ``expectations`` on a pandas or Spark DataFrame with great-expectations; one outcome each, in order.

    The seam every engine shares: pandas frames go to GX's pandas datasource, Spark frames to its Spark
    datasource, so the expectations run where the data is. Unexpected examples name their rows by
    ``index_columns`` (e.g. the join key and event time) where GX can; ``examples`` is how many are kept per
    expectation. With ``examples=0`` GX fetches no unexpected values (on Spark a job per expectation less), and
    an outcome with no unexpected row is the one it would be with examples.
    """
    import great_expectations as gx

    gx_objects = gx_expectations(expectations, name)
    if is_spark_frame(frame):
        whole = _spark_batches(frame)
    elif type(frame).__module__.startswith("pandas") and type(frame).__name__ == "DataFrame":
        whole = _pandas_batches()
    else:
        raise QuasarError(f"{name}: the data-quality gate validates a pandas or Spark DataFrame, not "
                          f"{type(frame).__name__}")
    suite = gx.ExpectationSuite(name=name, expectations=gx_objects)
    result_format: dict[str, Any] = {"result_format": "SUMMARY" if examples else "BASIC",
                                     "partial_unexpected_count": examples}
    if index_columns:
        result_format["unexpected_index_column_names"] = list(index_columns)
    with contextlib.nullcontext() if is_spark_frame(frame) else _no_fingerprint():
        batch = whole.get_batch(batch_parameters={"dataframe": frame})
        try:
            result = batch.validate(suite, result_format=result_format)
        finally:
            _forget(batch)
    # GX may reorder results; give them back in the declared order
    pending: dict[str, list[ExpectationOutcome]] = {}
    for item in result.results:
        config = expectation_to_dict(item.expectation_config.to_json_dict(), name)
        pending.setdefault(_key(config), []).append(_outcome(config, item))
    return [pending[_key(expectation_to_dict(e.configuration.to_json_dict(), name))].pop(0) for e in gx_objects]


def _key(plain: Mapping[str, Any]) -> str:
    import json
    return json.dumps({"type": plain["type"], "kwargs": plain["kwargs"]}, sort_keys=True, default=str)


def _outcome(config: dict[str, Any], item: Any) -> ExpectationOutcome:
    result = dict(item.result or {})
    examples = result.get("partial_unexpected_index_list") or result.get("partial_unexpected_list") or []
    if not all(isinstance(e, Mapping) for e in examples):        # bare row positions say little: the values
        examples = result.get("partial_unexpected_list") or []
    return ExpectationOutcome(
        expectation={"type": config["type"], "kwargs": config["kwargs"]}, success=bool(item.success),
        observed_value=json_safe(result.get("observed_value")), element_count=_int(result.get("element_count")),
        unexpected_count=_int(result.get("unexpected_count")),
        unexpected_percent=json_safe(result.get("unexpected_percent")),
        unexpected_examples=json_safe(list(examples)[:EXAMPLES]), error=_error(item.exception_info))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _error(info: Any) -> str | None:
    """The exception message in GX's ``exception_info`` (flat, or keyed by metric), or None."""
    if not isinstance(info, Mapping):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "raised an exception")
    for value in info.values():
        if isinstance(value, Mapping) and value.get("raised_exception"):
            return str(value.get("exception_message") or "raised an exception")
    return None


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars, timestamps, NaN and arrays made JSON-safe (NaN and NaT become None)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if hasattr(value, "tolist"):                 # numpy scalars and arrays
        return json_safe(value.tolist())
    if hasattr(value, "isoformat"):              # pandas Timestamp
        try:
            return str(value.isoformat())
        except ValueError:                       # NaT
            return None
    return str(value)


# --- the gate -----------------------------------------------------------------------------------------------------
def validate_batch(signal: Signal, version: int, rows: pa.Table, *, frame: Any = None) -> GateResult:
    """The gate's verdict on ``rows`` (``frame``, the same rows as a pandas or Spark DataFrame, is what GX
    validates; default: ``rows.to_pandas()``). A signal without expectations passes without importing GX."""
    if not signal.expectations:
        return GateResult(signal=signal.name, version=version, policy=signal.policy, rows=rows.num_rows, engine="")
    if frame is None:
        frame = rows.to_pandas()
    outcomes = validate_frame(frame, signal.expectations, name=f"signal {signal.name} v{version}",
                              index_columns=[signal.entity.join_key, EVENT_TIMESTAMP])
    return GateResult(signal=signal.name, version=version, policy=signal.policy, rows=rows.num_rows,
                      engine="spark" if is_spark_frame(frame) else "pandas", outcomes=tuple(outcomes))


def enforce(result: GateResult, *, signal: Signal, rows: pa.Table, store: OfflineStore, run_id: int | None) -> None:
    """Apply the policy: a batch that failed under ``strict`` is quarantined and ValidationFailedError raised
    (its ``details`` hold the validation and the quarantine); anything else returns, to be committed."""
    if result.verdict != "failed":
        return
    from quasar.store.quarantine import quarantine, quarantine_identifier

    where = ".".join(quarantine_identifier(store, signal.name, result.version))
    details: dict[str, Any] = {"validation": result.to_dict()}
    try:
        quarantine(store, signal, result.version, rows, run_id=run_id)
        details["quarantine"] = {"table": where, "rows": rows.num_rows, "run_id": run_id}
        kept = f"its {rows.num_rows} rows are in the quarantine table {where} (run {run_id})"
    except QuasarError as exc:
        details["quarantine"] = {"table": where, "rows": 0, "run_id": run_id, "error": str(exc)}
        kept = f"quarantining its rows also failed: {exc}"
    raise ValidationFailedError(f"the data-quality gate refused the batch ({result.summary()}); {kept}; the "
                                "signal table keeps its previous snapshot", details=details)


def snapshot_properties(result: GateResult, run_id: int | None) -> dict[str, str]:
    """Iceberg snapshot properties recording a committed batch's verdict (none without expectations)."""
    if not result.outcomes:
        return {}
    props = {PROP_VALIDATION: result.verdict}
    if run_id is not None:
        props[PROP_RUN_ID] = str(run_id)
    return props


def check_snapshot(store: OfflineStore, signal: str, version: int, snapshot_id: int | None) -> str | None:
    """The verdict recorded on a snapshot (None: no gate ran); ValidationFailedError for one marked failed."""
    if snapshot_id is None:
        return None
    snapshot = store.table(signal, version).snapshot_by_id(snapshot_id)
    summary = getattr(snapshot, "summary", None)
    props = dict(summary.additional_properties) if summary is not None else {}
    verdict = props.get(PROP_VALIDATION)
    if verdict == "failed":
        run = props.get(PROP_RUN_ID)
        raise ValidationFailedError(f"signal {signal} v{version}: snapshot {snapshot_id} failed its data-quality "
                                    f"gate{f' (run {run})' if run else ''}; refusing to materialize it: fix the "
                                    f"data or the expectations and run quasar backfill {signal} again")
    return verdict
