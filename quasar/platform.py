"""The facade: ``quasar.Platform`` opens a project and delegates to the rooms that do the work."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from quasar.config import Config, find_project_root, load_config
from quasar.signals.errors import ConfigError, NotFoundError, QuasarError

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.table import Table as IcebergTable
    from torch.utils.data import DataLoader

    from quasar.delete import DeletePlan
    from quasar.online.consistency import ConsistencyReport
    from quasar.online.materialize import MaterializeResult
    from quasar.online.skew import SkewReport
    from quasar.online.store import OnlineStore
    from quasar.registry import RegistrationReport, Registry, SignalVersion
    from quasar.registry.feature_lists import FeatureLists
    from quasar.registry.records import RunRecord, Serving
    from quasar.runner import PassReport
    from quasar.runner_metrics import RunnerMetrics
    from quasar.signals.signal import Signal
    from quasar.status import SignalStatus
    from quasar.store.backfill import BackfillResult
    from quasar.store.compaction import CompactionResult
    from quasar.store.dataset import DatasetResult
    from quasar.store.engines import Engine
    from quasar.store.gc import GcResult
    from quasar.store.tables import OfflineStore
    from quasar.store.validation import WindowValidation


class Platform:
    """One quasar project: its registry, offline store, engines and online store."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._engines: dict[str, Engine] = {}

    @classmethod
    def open(cls, path: str | Path = ".") -> Platform:
        """Open the project that holds ``path``: the nearest folder at or above it with a ``quasar.toml``, so a
        notebook in ``myproject/notebooks/`` opens ``myproject``. ConfigError when there is none (a project is
        made with ``quasar init``; ``Platform(load_config(folder))`` opens a folder as is, defaults and all)."""
        return cls(load_config(find_project_root(path)))

    @property
    def root(self) -> Path:
        return self.config.root

    # --- rooms, opened on first use ---------------------------------------------------------------
    @cached_property
    def registry(self) -> Registry:
        from quasar.gc import duration
        from quasar.registry import Registry
        return Registry.open(self.config.sql_url(self.config.registry.url),
                             run_lease=duration(self.config.registry.run_lease, "[registry] run_lease"))

    @cached_property
    def catalog(self) -> Any:
        from quasar.store.catalog import open_catalog
        off = self.config.offline
        return open_catalog(uri=self.config.sql_url(off.catalog_uri), warehouse=self.config.warehouse,
                            properties=dict(off.properties))

    @cached_property
    def offline(self) -> OfflineStore:
        from quasar.store.layout import Layout
        from quasar.store.tables import OfflineStore
        off = self.config.offline
        layout = Layout.from_settings(off.buckets, off.target_file_mb)
        return OfflineStore(self.catalog, namespace=off.namespace, buckets=layout.buckets,
                            target_file_bytes=layout.target_file_bytes)

    @cached_property
    def online_store(self) -> OnlineStore:
        from quasar.online.redis_store import RedisOnlineStore
        on = self.config.online
        return RedisOnlineStore(on.redis_url, project=self.config.project.name, cluster=on.cluster)

    def engine(self, name: str | None = None) -> Engine:
        """The engine called ``name`` (the configured default when None), created once and reused."""
        from quasar.store.engines import load_engine
        name = name or self.config.engine.default
        if name not in self._engines:
            options: dict[str, Any] = {}
            settings = self.config.engine
            if name == "local":
                options = {"threads": settings.threads or None, "memory_limit": settings.memory_limit or None,
                           "temp_directory": str(self.config.path(settings.temp_directory))
                           if settings.temp_directory else None}
            if name == "spark":
                options = {"master": self.config.spark.master, "conf": dict(self.config.spark.conf)}
            self._engines[name] = load_engine(name, **options)
        return self._engines[name]

    # --- signal authors ---------------------------------------------------------------------------
    def register(self, target: str | Path) -> RegistrationReport:
        """Register every Entity, Source, signal, request-time signal and feature service defined at the top
        level of a file, folder or module (a feature service is pinned to the serving versions of now)."""
        report = self.registry.register(target, root=self.root)
        self.feature_lists.clear()
        return report

    @cached_property
    def feature_lists(self) -> FeatureLists:
        """Feature lists and services made ready to plan (``quasar.registry.feature_lists``), cached."""
        from quasar.registry.feature_lists import FeatureLists
        return FeatureLists(self.registry)

    def plan(self, target: str | Path) -> RegistrationReport:
        """What ``register(target)`` would change (new versions, metadata updates), writing nothing."""
        return self.registry.plan(target, root=self.root)

    def delete(self, signal: str, version: int | None = None) -> DeletePlan:
        """Delete ``version`` of ``signal`` (every version when None): its online fields, its Iceberg tables and
        files, its registry rows (``quasar.delete``). Refused, with nothing removed, while another signal reads
        it or a run of it is live. Returns what was removed."""
        from quasar.delete import delete, plan_delete
        plan = plan_delete(self, signal, version)
        try:
            delete(self, plan)
        finally:
            self.feature_lists.clear()
        return plan

    def ls(self) -> list[SignalVersion]:
        """The latest version of every registered signal."""
        return self.registry.signals()

    def serving_versions(self) -> dict[str, Serving]:
        """Each signal's serving version (what unpinned references resolve to) and why, by name."""
        return self.registry.serving_versions()

    def promote(self, signal: str, version: int | None) -> Serving:
        """Serve ``version`` of ``signal`` to unpinned references, offline and online, until the next promotion;
        ``None`` returns to the rule (the newest version whose backfill and materialization completed)."""
        try:
            return self.registry.promote(signal, version)
        finally:
            self.feature_lists.clear()

    def describe(self, name: str, what: str | None = None) -> dict[str, Any]:
        """A signal (schema, aggregations, versions, lineage, recent runs, the services and bundles reading each
        version), a request-time signal (inputs, request fields, features, modes, versions, users), a feature
        service (features, pins, versions, logging, bundles), an entity (join key, signals) or a source
        (location, schema, signals) as plain data; ``what`` ("signal", "request", "service", "entity",
        "source") says which, None takes the first kind that has the name, in that order."""
        from quasar.compact import table_layouts
        from quasar.describe import describe
        described = describe(self.registry, name, what, models=self.config.path(self.config.serving.models))
        if described.get("what") == "signal":
            from quasar.status import freshness
            described["tables"] = table_layouts(self, name)
            fresh = freshness(self, self.registry.signal(name), datetime.now(UTC))
            described["freshness"] = {**fresh.to_dict(), "text": fresh.text()}
        return described

    def request_signals(self) -> list[dict[str, Any]]:
        """The latest version of every request-time signal: inputs, request fields, features, modes."""
        from quasar.describe_features import request_rows
        return request_rows(self.registry)

    def feature_services(self) -> list[dict[str, Any]]:
        """The latest version of every feature service: feature count, pins, logging sample rate."""
        from quasar.describe_features import service_rows
        return service_rows(self.registry)

    def entities(self) -> list[dict[str, Any]]:
        """Every registered entity with the signals of it."""
        from quasar.describe import entity_rows
        return entity_rows(self.registry)

    def sources(self) -> list[dict[str, Any]]:
        """Every registered source with where it reads and the signals reading it."""
        from quasar.describe import source_rows
        return source_rows(self.registry)

    def backfill(self, signal: str, start: str | datetime, end: str | datetime, *, engine: str | None = None,
                 with_upstream: bool = False, progress: bool = False) -> list[BackfillResult]:
        """Compute ``signal`` for the days in ``[start, end)`` into its Iceberg table (upstream first when asked)."""
        order = self._upstream_order(signal) if with_upstream else [signal]
        results: list[BackfillResult] = []
        eng = self.engine(engine)
        try:
            self._backfill_each(order, start, end, eng, progress, results)
        finally:
            self.feature_lists.clear()              # a completed version may serve now
        return results

    def _backfill_each(self, order: Sequence[str], start: str | datetime, end: str | datetime, eng: Engine,
                       progress: bool, results: list[BackfillResult]) -> None:
        from quasar.store.backfill import backfill
        from quasar.store.sources import SourceReader
        for name in order:
            sv = self.registry.load_signal(name)
            upstream = {u: self._latest(u) for u in sv.signal.upstream}
            reader = SourceReader(root=self.root, store=self.offline, catalog=self.catalog,
                                  upstream_versions=upstream, schemas=self.registry)
            results.append(backfill(signal=sv.signal, version=sv.version, start=start, end=end, store=self.offline,
                                    engine=eng, sources=reader, runs=self.registry, progress=progress,
                                    bounds=self.config.time_bounds))
            self._collect_after(name, results[-1].run_id)
            self._compact_after(name, sv.version)

    def gc(self, signals: Sequence[str] | None = None, *, retention: timedelta | None = None,
           grace: timedelta | None = None, dry_run: bool = False) -> list[GcResult]:
        """Expire snapshots older than ``retention`` (default ``[offline] snapshot_retention``) and remove files
        no kept snapshot references, older than ``grace`` (``[offline] orphan_grace``); what is always kept is
        listed in ``quasar.gc``. ``dry_run`` only reports."""
        from quasar.gc import collect_garbage
        return collect_garbage(self, signals, retention=retention, grace=grace, dry_run=dry_run)

    def compact(self, signals: Sequence[str] | None = None, *, dry_run: bool = False) -> list[CompactionResult]:
        """Rewrite the small files of ``signals``' offline tables (all by default, every version) into the layout
        their data calls for, each table in one atomic commit (``quasar.store.compaction``). ``dry_run`` plans."""
        from quasar.compact import compact_signals
        return compact_signals(self, signals, dry_run=dry_run)

    def _compact_after(self, name: str, version: int) -> None:
        """After a backfill: compact the version's table if it holds many small files (``quasar.compact``)."""
        from quasar.compact import compact_after
        compact_after(self, name, version)

    def _collect_after(self, name: str, run_id: int | None) -> None:
        """After a backfill: remove the files killed or failed commits left in the signal's tables (no expiry), if
        the run log says there may be some. A failure here is logged, never the backfill's failure."""
        from quasar.gc import collect_after
        try:
            collect_after(self, name, run_id)
        except Exception as exc:  # the data is committed; the garbage waits for the next run or quasar gc
            logging.getLogger("quasar").warning("collecting unreferenced files of %s failed: %s", name, exc)

    def validate(self, signal: str, start: str | datetime, end: str | datetime, *,
                 engine: str | None = None) -> WindowValidation:
        """Run ``signal``'s data-quality gate on the batch a backfill of ``[start, end)`` would write; commits
        nothing, quarantines nothing; recorded in the run log as a ``validate`` run."""
        from quasar.store.sources import SourceReader
        from quasar.store.validation import validate_window
        sv = self.registry.load_signal(signal)
        reader = SourceReader(root=self.root, store=self.offline, catalog=self.catalog,
                              upstream_versions={u: self._latest(u) for u in sv.signal.upstream},
                              schemas=self.registry)
        return validate_window(signal=sv.signal, version=sv.version, start=start, end=end,
                               engine=self.engine(engine), sources=reader, runs=self.registry,
                               bounds=self.config.time_bounds)

    def run(self, *, once: bool = True, dry_run: bool = False, interval: timedelta = timedelta(minutes=1),
            wait: bool = False, max_days: int = 31, metrics: RunnerMetrics | None = None, now: datetime | None = None,
            echo: Callable[[str], None] | None = None) -> PassReport | None:
        """Keep every signal computed (``quasar.runner``): one pass (``once``) or passes every ``interval`` until
        SIGTERM/SIGINT, under the registry's runner lease (``wait``: wait while another runner holds it); each pass
        backfills the missing and stale days of the due signals, upstream first, and materializes the online
        ones. ``dry_run`` only plans. ``now`` replaces the clock of a single pass. The last pass's report."""
        from quasar.runner import run
        return run(self, once=once, dry_run=dry_run, interval=interval, wait=wait, max_days=max_days,
                   metrics=metrics, now=now, echo=echo)

    def status(self, now: datetime | None = None) -> list[SignalStatus]:
        """Each signal's freshness against its target, its last run and what the next pass would do
        (``quasar.status``)."""
        from quasar.status import status
        return status(self, now)

    def runs(self, signal: str, *, limit: int = 20) -> list[RunRecord]:
        """Recent runs of ``signal`` (backfills, validations, materializations), newest first."""
        self.registry.signal(signal)
        return self.registry.runs(signal, limit=limit)

    # --- trainers ---------------------------------------------------------------------------------
    @overload
    def training_dataset(self, spine: Any, features: str | Sequence[str], *, engine: str | None = None,
                         full_names: bool = False, progress: bool = False, mode: str = "auto",
                         out: None = None, chunk_rows: int | None = None) -> pa.Table: ...

    @overload
    def training_dataset(self, spine: Any, features: str | Sequence[str], *, engine: str | None = None,
                         full_names: bool = False, progress: bool = False, mode: str = "auto",
                         out: Path, chunk_rows: int | None = None) -> Path: ...

    @overload       # a string is a path, or "iceberg:namespace.table" (then the committed pyiceberg table)
    def training_dataset(self, spine: Any, features: str | Sequence[str], *, engine: str | None = None,
                         full_names: bool = False, progress: bool = False, mode: str = "auto",
                         out: str, chunk_rows: int | None = None) -> Path | IcebergTable: ...

    def training_dataset(self, spine: Any, features: str | Sequence[str], *, engine: str | None = None,
                         full_names: bool = False, progress: bool = False, mode: str = "auto",
                         out: str | Path | None = None,
                         chunk_rows: int | None = None) -> pa.Table | Path | IcebergTable:
        """Every spine row, in order, with each feature as of the row's ``event_timestamp``. ``features`` is a
        list of references (stored and request-time signals) or a feature service's name; request-time
        signals read their request fields from spine columns. With ``out`` the rows are streamed to Parquet
        there (a folder of part files; one file for a ``.parquet`` path) instead of kept, and the path returned;
        ``out="iceberg:namespace.table"`` writes them to that Iceberg table of the offline catalog in one commit
        and returns the pyiceberg table (``quasar.store.dataset_out``);
        ``chunk_rows`` spine rows are joined at a time (1,000,000 by default), which bounds this process's memory."""
        result = self.dataset(spine, features, engine=engine, full_names=full_names, progress=progress,
                              mode=mode, out=out, chunk_rows=chunk_rows)
        return result.iceberg if result.iceberg is not None else result.table if result.path is None \
            else result.path

    def dataset(self, spine: Any, features: str | Sequence[str], *, engine: str | None = None,
                full_names: bool = False, progress: bool = False, mode: str = "auto",
                out: str | Path | None = None, chunk_rows: int | None = None) -> DatasetResult:
        """Like ``training_dataset`` but returns the result with the snapshots it was read from."""
        from quasar.store.dataset import build_training_dataset
        planned = self.feature_lists.expand(features, self._resolve)
        return build_training_dataset(spine, planned.refs, resolve=planned.resolve, store_files=self._store_files,
                                      engine=self.engine(engine), full_names=full_names, progress=progress,
                                      lookup=planned.lookup, mode=mode, out=out, catalog=self.catalog,
                                      **({} if chunk_rows is None else {"chunk_rows": chunk_rows}))

    def loader(self, spine: Any, features: str | Sequence[str], *, labels: Sequence[str] = ("label",),
               engine: str | None = None, **options: Any) -> DataLoader:  # type: ignore[type-arg]
        """Feature references and a spine straight to a DataLoader of ``TrainingBatch``.

        Builds the point-in-time dataset (full feature names) and streams it through ``make_loader``;
        ``options`` go to ``make_loader`` (batch_size, shuffle, seed, drop_last, num_workers, ...).
        """
        from quasar.training_adapters import make_loader
        table = self.training_dataset(spine, features, engine=engine, full_names=True)
        spine_columns = set(_column_names(spine))
        feature_columns = [c for c in table.column_names if c not in spine_columns]
        return make_loader(table, features=feature_columns, labels=labels, **options)

    # --- online services --------------------------------------------------------------------------
    def materialize(self, signals: Sequence[str] | None = None, *, batch_rows: int = 100_000,
                    progress: bool = False, full: bool = False, engine: str | None = None) -> list[MaterializeResult]:
        """Write the latest row per entity of each online signal (all of them by default) to the online
        store, reading only the Iceberg snapshots added since the last run (everything with ``full``).
        ``engine="spark"`` reads the files and writes Redis from Spark executors, with the same result."""
        from quasar.online.materialize import materialize
        chosen_engine = engine or self.config.engine.default
        if chosen_engine not in ("local", "spark"):
            self.engine(chosen_engine)                     # an unknown engine: its error names the known ones
        if chosen_engine == "spark":
            from functools import partial

            from quasar.online.materialize_spark import materialize_spark
            spark: Any = self.engine("spark")
            materialize = partial(materialize_spark, session=spark.session)  # type: ignore[assignment]
        chosen = [self.registry.signal(name) for name in signals] if signals else self._online_versions()
        results = []
        try:
            for sv in chosen:
                if not signals and self.offline.current_snapshot_id(sv.name, sv.version) is None:
                    continue                               # never backfilled: nothing to materialize yet
                results.append(materialize(signal=sv.signal, version=sv.version, offline=self.offline,
                                           online=self.online_store, state=self.registry, batch_rows=batch_rows,
                                           progress=progress, full=full, bounds=self.config.time_bounds))
        finally:
            self.feature_lists.clear()                     # a completed version may serve now
        return results

    def online_features(self, entities: Mapping[str, Sequence[Any]], features: str | Sequence[str], *,
                        full_feature_names: bool = False, request_data: Mapping[str, Sequence[Any]] | None = None,
                        mode: str = "auto") -> dict[str, Any]:
        """The latest feature values of ``entities`` from the online store, in the HTTP response's shape.
        ``features`` is a list of references or a feature service's name; request-time signals read their
        fields from ``request_data`` (or from ``entities``, as Feast sends them)."""
        from quasar.online.response import online_features
        planned = self.feature_lists.expand(features, self._resolve)
        return online_features(self.online_store, entities, planned.refs, planned.resolve,
                               full_feature_names=full_feature_names, max_entities=self.config.online.max_entities,
                               lookup=planned.lookup, request_data=request_data, mode=mode,
                               plans=self.feature_lists.plans, scope=planned.scope)

    def consistency(self, signal: str, *, sample: int = 1000, seed: int | None = None,
                    engine: str | None = None) -> ConsistencyReport:
        """Sample up to ``sample`` of ``signal``'s offline entities and up to ``sample`` of its online ones, and
        compare their online values with the offline values as of now: mismatch, missing and extra counts and
        rates per feature (an entity online only is extra)."""
        from quasar.online.consistency import check_consistency, sample_keys
        sv = self.registry.resolve(signal)                 # the serving version: what the service answers
        key = sv.signal.entity.join_key
        stored = self.offline.read(sv.signal, sv.version, columns=[key]).column(key)
        keys = sample_keys(stored, sample, seed)
        ref = f"{sv.name}@{sv.version}"
        report = check_consistency(signal=sv.signal, version=sv.version, keys=keys,
                                   population=len(stored.unique()), online=self.online_store,
                                   offline_as_of=lambda spine: self.training_dataset(spine, [ref], engine=engine),
                                   online_sample=sample, seed=seed)
        from quasar.ui.catalog import record_report
        record_report(self.registry, "consistency", sv.name, report.to_dict())   # the catalog shows the last one
        return report

    def push(self, signal: str, rows: Any, *, to: str = "online") -> int:
        """Write ``rows`` of ``signal`` online (newer event time wins); ``to="online_and_offline"`` also
        appends them to its Iceberg table. Returns the rows written online."""
        from quasar.online.push import push, validate_push_rows
        if to not in ("online", "online_and_offline"):
            raise ConfigError(f"push to must be 'online' or 'online_and_offline', got {to!r}")
        sv = self.registry.resolve(signal)                 # the serving version, as the HTTP push resolves it
        bounds = self.config.time_bounds                    # times outside are refused (quasar.signals.bounds)
        if to == "online_and_offline":
            table = validate_push_rows(sv.signal, rows, bounds=bounds)
            written = push(signal=sv.signal, version=sv.version, rows=table, online=self.online_store,
                           bounds=bounds)
            self.push_offline(sv.signal, sv.version, table)
            return written
        return push(signal=sv.signal, version=sv.version, rows=rows, online=self.online_store, bounds=bounds)

    def push_offline(self, signal: Signal, version: int, rows: pa.Table) -> None:
        """Append validated pushed rows to the offline table (``created_timestamp`` = now where absent)."""
        import pyarrow as pa

        from quasar.signals.ufr.schema import CREATED_TIMESTAMP
        from quasar.signals.ufr.types import TIMESTAMP_ARROW
        if CREATED_TIMESTAMP not in rows.column_names:
            now = pa.array([datetime.now(UTC)], TIMESTAMP_ARROW)
            rows = rows.append_column(CREATED_TIMESTAMP, now.take(pa.array([0] * rows.num_rows, pa.int32())))
        self.offline.append(signal, version, rows)

    # --- helpers ----------------------------------------------------------------------------------
    def _latest(self, name: str) -> tuple[Any, int]:
        sv = self.registry.signal(name)
        return sv.signal, sv.version

    def _resolve(self, name: str, version: int | None) -> tuple[Any, int]:
        """A reference's signal version: pinned as given, unpinned the serving version (datasets and online
        reads resolve through here), cached for a few seconds (``FeatureLists.resolve``); this platform's own
        registrations, backfills, materializations, promotions and deletions clear the cache."""
        return self.feature_lists.resolve(name, version)

    def _online_versions(self) -> list[SignalVersion]:
        """What a plain ``materialize`` keeps fresh: the latest version of every online signal, and its serving
        version when that is another one (still answering unpinned reads until the latest completes)."""
        serving = self.registry.serving_versions()
        chosen = []
        for sv in self.registry.signals():
            current = serving.get(sv.name)
            if current is not None and current.version != sv.version:
                old = self.registry.signal(sv.name, current.version)
                if old.signal.online:
                    chosen.append(old)
            if sv.signal.online:
                chosen.append(sv)
        return chosen

    def _store_files(self, name: str, version: int, start: datetime | None,
                     end: datetime | None) -> tuple[list[str], int | None, int | None]:
        snapshot = self.offline.current_snapshot_id(name, version)
        if snapshot is None:
            raise NotFoundError(f"signal {name} v{version} has no offline data yet: run `quasar backfill {name}`")
        files = self.offline.plan_files(name, version, start=start, end=end, snapshot_id=snapshot)
        return files, snapshot, self.offline.bucket_count(name, version)

    def _upstream_order(self, name: str) -> list[str]:
        """``name`` and everything it is computed from, upstream first."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(n: str, path: tuple[str, ...]) -> None:
            if n in path:
                raise QuasarError(f"dependency cycle: {' -> '.join((*path, n))}")
            if n in seen:
                return
            for up in self.registry.upstream(n):
                visit(up, (*path, n))
            seen.add(n)
            order.append(n)

        visit(name, ())
        return order

    def close(self) -> None:
        for eng in self._engines.values():
            eng.close()
        self._engines.clear()
        if "online_store" in self.__dict__:
            self.online_store.close()
        if "registry" in self.__dict__:
            self.registry.close()

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- feature logs (quasar.online.feature_log, quasar.online.skew) ---------------------------------------
    def feature_log(self, service: str, start: str | datetime | None = None, end: str | datetime | None = None,
                    *, features: bool = False) -> pa.Table:
        """The rows ``service`` logged with serving times in ``[start, end)``: a training spine as it is
        (``training_dataset(p.feature_log("ranker"), "ranker")`` trains on exactly what was served);
        ``features=True`` adds the served values and statuses."""
        from quasar.online.skew import read_feature_log
        self.registry.service(service)                     # NotFoundError names the registered services
        return read_feature_log(self.catalog, self.config.offline.namespace, service, start, end,
                                features=features)

    def skew(self, service: str, *, start: str | datetime | None = None, end: str | datetime | None = None,
             sample: int | None = None, seed: int | None = None, engine: str | None = None) -> SkewReport:
        """Compare the values ``service`` logged in ``[start, end)`` with the offline point-in-time values of
        the same keys, request fields and times, per feature (``quasar.online.skew``)."""
        from quasar.online.skew import measure_skew
        from quasar.ui.catalog import record_report
        name = self.registry.service(service).name
        report = measure_skew(self.catalog, self.config.offline.namespace, service,
                              lambda spine, ref, full: self.training_dataset(spine, ref, engine=engine,
                                                                             full_names=full),
                              start=start, end=end, sample=sample, seed=seed)
        record_report(self.registry, "skew", name, report.to_dict())         # the catalog shows the last one
        return report


def _column_names(spine: Any) -> list[str]:
    names = getattr(spine, "column_names", None)
    return list(names) if names is not None else [str(c) for c in spine.columns]
