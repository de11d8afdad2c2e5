"""Point-in-time correct training datasets: feature references, the dataset contract, and where it came from.

``build_training_dataset`` returns every spine row, in spine order, with the spine's own columns (labels
included) followed by the requested features as of each row's ``event_timestamp`` (see ``quasar.store.pit_local`` for
the exact semantics). Large spines are joined chunk by chunk, so the join's memory stays bounded. The result
records the signal versions and Iceberg snapshots it read, so the same dataset can be built again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from quasar.signals.errors import DatasetError, NotFoundError, StoreError
from quasar.signals.refs import FeatureRef, PlanErrors, PlannedFeature, Resolve
from quasar.signals.refs import parse_feature_ref as refs_parse
from quasar.signals.request_plan import FeaturePlan, Lookup, no_request_signals, request_arrays
from quasar.signals.request_plan import plan_features as plan_with_requests
from quasar.signals.signal import Signal
from quasar.store.dataset_join import join_chunk
from quasar.store.dataset_out import IcebergOut, IcebergSink, open_sink, parse_out
from quasar.store.engines.base import Engine, FeatureRequest
from quasar.store.progress import Progress
from quasar.store.spine import (
    JoinKeys,
    check_spine_schema,
    normalize_spine,
    spine_chunks,
    time_range,
)

# (files, snapshot id) or (files, snapshot id, bucket count of the table's bucket(N, key) partitioning)
StoreFiles = Callable[[str, int, datetime | None, datetime | None],
                      tuple[list[str], int | None] | tuple[list[str], int | None, int | None]]

SOURCES_KEY = "quasar.sources"
FEATURES_KEY = "quasar.features"
@dataclass(frozen=True, kw_only=True)
class DatasetResult:
    """A built dataset and what it was read from: ``sources[signal] = {"version": v, "snapshot_id": s}``
    (keyed ``signal@v`` when one dataset reads two versions of a signal); ``features[column] =
    "signal@v:feature"``."""

    table: pa.Table
    sources: dict[str, dict[str, int | None]]
    features: dict[str, str] = field(default_factory=dict)
    path: Path | None = None          # where ``out=`` wrote the rows (then ``table`` is empty: the schema alone)
    iceberg: Any = None               # or the pyiceberg table ``out="iceberg:..."`` committed them to
    written_rows: int = 0

    @property
    def written(self) -> bool:
        """The rows went to ``out`` (``path`` or ``iceberg``), not into ``table``."""
        return self.path is not None or self.iceberg is not None

    @property
    def num_rows(self) -> int:
        """The dataset's rows: in ``table``, or written to ``path`` or ``iceberg``."""
        return self.written_rows if self.written else self.table.num_rows

    def metadata(self) -> dict[bytes, bytes]:
        return {SOURCES_KEY.encode(): json.dumps(self.sources, sort_keys=True).encode(),
                FEATURES_KEY.encode(): json.dumps(self.features).encode()}

    def _in_memory(self) -> None:
        if self.written:
            where = self.path if self.path is not None else f"the Iceberg table {'.'.join(self.iceberg.name())}"
            raise DatasetError(f"this dataset was streamed to {where} and is not in memory: read it from there")

    def write_parquet(self, path: str | Path) -> Path:
        """Write the table to one Parquet file, the sources recorded in its schema metadata."""
        import pyarrow.parquet as pq
        self._in_memory()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {**(self.table.schema.metadata or {}), **self.metadata()}
        try:
            pq.write_table(self.table.replace_schema_metadata(metadata), path)
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"cannot write the dataset to {path}: {exc}") from exc
        return path

    def write_iceberg(self, catalog: Any, identifier: str, *, overwrite: bool = False) -> Any:
        """Write the table as the Iceberg table ``identifier`` ("namespace.name") of ``catalog`` and return it, as
        ``out="iceberg:..."`` writes one (``quasar.store.dataset_out.IcebergSink``: its schema, day partitioning and
        properties, in one commit). An existing table is replaced only with ``overwrite``, and only if it is an
        earlier dataset table, in one transaction: a failure leaves no table, or the previous one as it was."""
        self._in_memory()
        sink = IcebergSink(IcebergOut(identifier, catalog), self.metadata())
        if sink.existing is not None and not overwrite:
            raise DatasetError(f"dataset table {identifier!r} already exists: pass overwrite=True to replace it")
        try:
            sink.write(self.table)
            return sink.close()
        except BaseException:
            sink.abort()
            raise


def iceberg_ready(table: pa.Table) -> pa.Table:
    """``table`` in types Iceberg can hold: vectors (fixed-size lists, float16) as ``list<float32>``,
    timestamps in microseconds UTC (naive ones stay naive), dictionaries decoded, unsigned ints widened."""
    fields, columns = [], []
    for f, column in zip(table.schema, table.columns, strict=True):
        target = _storable(f.type, f.name)
        fields.append(pa.field(f.name, target, nullable=f.nullable))
        if target != column.type:
            try:
                column = column.cast(target, safe=not pa.types.is_timestamp(target))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DatasetError(f"column {f.name!r} ({f.type}) cannot be stored in Iceberg: {exc}") from exc
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _storable(dtype: pa.DataType, name: str) -> pa.DataType:
    if pa.types.is_fixed_size_list(dtype) or pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        item = dtype.value_field
        return pa.list_(item.with_type(_storable(item.type, name)))
    if pa.types.is_struct(dtype):
        return pa.struct([f.with_type(_storable(f.type, name)) for f in dtype])
    if pa.types.is_float16(dtype):
        return pa.float32()
    if pa.types.is_timestamp(dtype):
        return pa.timestamp("us", tz="UTC" if dtype.tz is not None else None)
    if pa.types.is_dictionary(dtype):
        return _storable(dtype.value_type, name)
    if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return pa.string()
    if pa.types.is_unsigned_integer(dtype):
        return pa.int64() if dtype.bit_width >= 32 else pa.int32()
    if pa.types.is_null(dtype):
        raise DatasetError(f"column {name!r} holds only nulls of no type; Iceberg needs a type: cast it first")
    return dtype


@dataclass(frozen=True)
class PlannedColumn:
    """One requested feature: the reference it came from and its output column."""

    ref: str
    feature: str
    output: str


@dataclass
class SignalPlan:
    """One signal version a dataset reads, and its requested columns in request order."""

    signal: Signal
    version: int
    columns: list[PlannedColumn] = field(default_factory=list)


_PLAN_ERRORS = PlanErrors(syntax=DatasetError, missing=NotFoundError,
                          full_names_hint="pass full_names=True to name columns <signal>__<feature>")


def parse_feature_ref(ref: str) -> FeatureRef:
    """Parse one feature reference (``quasar.signals.refs``); bad syntax is a ``DatasetError`` showing the forms."""
    return refs_parse(ref, DatasetError)


def plan_features(refs: Sequence[str], resolve: Resolve, *, full_names: bool = False,
                  lookup: Lookup = no_request_signals) -> list[SignalPlan]:
    """Resolve references to signal versions and output columns, in request order (``quasar.signals.refs.plan_refs``),
    grouped by the signal version they read (stored features only; see ``plan_dataset``)."""
    return _group(plan_dataset(refs, resolve, full_names=full_names, lookup=lookup).stored)


def plan_dataset(refs: Sequence[str], resolve: Resolve, *, full_names: bool = False,
                 lookup: Lookup = no_request_signals) -> FeaturePlan:
    """The dataset's plan (``quasar.signals.request_plan``): stored columns to join, request-time steps, outputs."""
    if isinstance(refs, str):
        refs = [refs]
    if not refs:
        raise DatasetError("no features requested: give at least one 'signal' or 'signal:feature'")
    return plan_with_requests(refs, resolve, lookup, full_names=full_names, errors=_PLAN_ERRORS)


def _group(stored: Sequence[PlannedFeature]) -> list[SignalPlan]:
    plans: dict[tuple[str, int], SignalPlan] = {}
    for planned in stored:
        plan = plans.setdefault((planned.signal.name, planned.version), SignalPlan(planned.signal, planned.version))
        plan.columns.append(PlannedColumn(ref=planned.ref, feature=planned.feature, output=planned.output))
    return list(plans.values())


def _join_keys(plans: Iterable[SignalPlan]) -> JoinKeys:
    keys: dict[str, tuple[pa.DataType, str]] = {}
    for p in plans:
        entity = p.signal.entity
        if entity.join_key in keys and keys[entity.join_key][0] != entity.arrow_key_type:
            other = keys[entity.join_key][1]
            raise DatasetError(f"entities {other!r} and {entity.name!r} share the join key {entity.join_key!r} "
                               "with different key types; they cannot be joined on one spine column")
        keys.setdefault(entity.join_key, (entity.arrow_key_type, entity.name))
    return keys


def _sources(plans: Sequence[SignalPlan], requests: Sequence[FeatureRequest]) -> dict[str, dict[str, int | None]]:
    counts: dict[str, int] = {}
    for p in plans:
        counts[p.signal.name] = counts.get(p.signal.name, 0) + 1
    return {(r.signal if counts[r.signal] == 1 else f"{r.signal}@{r.version}"):
            {"version": r.version, "snapshot_id": r.snapshot_id} for r in requests}


def build_training_dataset(spine: Any, refs: Sequence[str], *, resolve: Resolve, store_files: StoreFiles,
                           engine: Engine, full_names: bool = False, chunk_rows: int = 1_000_000,
                           progress: bool = False, lookup: Lookup = no_request_signals,
                           mode: str = "auto", out: str | Path | IcebergOut | None = None,
                           catalog: Any = None) -> DatasetResult:
    """Every spine row, in order, with its columns followed by each referenced feature as of its time.

    ``resolve(name, version)`` gives a signal version from the registry; ``store_files(name, version, start,
    end)`` the data files of its current snapshot holding event times in ``[start, end)`` and the snapshot id.
    ``lookup`` knows the request-time signals: they run on each chunk's joined inputs, their request fields
    read from spine columns of the same names (``mode`` forces their row or batch function, for tests).

    With ``out`` the rows are written to Parquet chunk by chunk (``quasar.store.dataset_out``: a folder of part
    files, or one file for a path ending in ``.parquet``) and none is kept: the result's ``path`` says where,
    ``num_rows`` how many, and its ``table`` is empty, with the dataset's schema. ``out="iceberg:ns.table"`` (or
    an ``IcebergOut``) writes them to that Iceberg table of ``catalog`` in one commit instead: the result's
    ``iceberg`` is the committed pyiceberg table.
    """
    out = parse_out(out, catalog)
    plan = plan_dataset(refs, resolve, full_names=full_names, lookup=lookup)
    plans = _group(plan.stored)
    join_keys = _join_keys(plans)
    from quasar.store.engines.spark_dataset import SparkSpine, open_spine
    data = open_spine(spine, engine, out, has_requests=plan.has_requests)   # a path spine, or Spark's executors
    check_spine_schema(data.schema, join_keys)
    for o in plan.outputs:
        if o.output in data.schema.names:
            raise DatasetError(f"feature {o.ref!r} would be named {o.output!r}, which is already a spine "
                               "column: rename the spine column or pass full_names=True")
    missing = [f for f in plan.request_fields if f not in data.schema.names]
    if missing:
        ftype, signal = plan.request_fields[missing[0]]
        raise DatasetError(f"request field {missing[0]!r} ({ftype}) of request-time signal {signal!r} is not a "
                           "spine column: add it to the spine (the value the caller would send)")
    lo = hi = None
    if isinstance(data, pa.Table):
        data = normalize_spine(data, join_keys)      # once, so the time range can narrow the file planning
        lo, hi = time_range(data.column("event_timestamp"))
    requests = [_request(p, store_files, lo, hi) for p in plans]
    stored = [(c.output, p.signal.schema.type_of(c.feature)) for p in plans for c in p.columns]
    result = DatasetResult(table=pa.table({}), sources=_sources(plans, requests),
                           features={o.output: f"{o.signal}@{o.version}:{o.feature}" for o in plan.outputs})
    if isinstance(data, SparkSpine):
        return data.build(engine, join_keys, requests, stored, result, out=out, chunk_rows=chunk_rows)
    sink = None if out is None else open_sink(out, result.metadata())
    parts = []
    try:
        with Progress(f"dataset: point-in-time join of {len(plan.outputs)} feature(s)", unit="row",
                      enabled=progress, total=data.num_rows if isinstance(data, pa.Table) else None) as bar:
            for chunk in spine_chunks(data, chunk_rows):
                joined = join_chunk(normalize_spine(chunk, join_keys), join_keys, requests, stored, engine)
                finished = _finish_chunk(joined, plan, mode)
                if sink is None:
                    parts.append(finished)
                else:
                    sink.write(finished)
                bar.update(chunk.num_rows)
        if sink is not None:
            sink.close()
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    if sink is not None:
        assert sink.schema is not None
        return dataclasses.replace(result, table=sink.schema.empty_table(), written_rows=sink.rows, **sink.where())
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}
    return dataclasses.replace(result, table=table.replace_schema_metadata({**metadata, **result.metadata()}))


def _finish_chunk(chunk: pa.Table, plan: FeaturePlan, mode: str) -> pa.Table:
    """Run the request-time signals on a joined chunk; keep the spine's columns and the outputs in order."""
    if not plan.has_requests:
        return chunk
    stored_names = {p.output for p in plan.stored}
    stored = {name: chunk.column(name) for name in stored_names}
    request = request_arrays(plan, {f: chunk.column(f) for f in plan.request_fields}, chunk.num_rows, DatasetError)
    computed = plan.compute(stored, request, chunk.num_rows, mode) if chunk.num_rows else {}
    spine = chunk.drop_columns([c for c in chunk.column_names if c in stored_names])
    for o in plan.outputs:
        column = computed.get(o.column) if o.computed else chunk.column(o.column)
        if column is None:
            column = pa.nulls(0, o.ftype.arrow_type())
        spine = spine.append_column(pa.field(o.output, o.ftype.arrow_type()), column)
    return spine


def _request(plan: SignalPlan, store_files: StoreFiles, lo: datetime | None,
             hi: datetime | None) -> FeatureRequest:
    sig = plan.signal
    start = end = None
    if lo is not None and hi is not None:
        try:
            start = lo - sig.ttl if sig.ttl is not None else None
        except OverflowError:
            start = None
        end = hi + timedelta(microseconds=1)
    planned = store_files(sig.name, plan.version, start, end)
    files, snapshot = planned[0], planned[1]
    buckets = planned[2] if len(planned) > 2 else None
    return FeatureRequest(signal=sig.name, version=plan.version, join_keys=(sig.entity.join_key,),
                          features=tuple((c.feature, c.output) for c in plan.columns), schema=sig.schema,
                          ttl=sig.ttl, files=tuple(files), snapshot_id=snapshot, buckets=buckets)
