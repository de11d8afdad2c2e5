"""Staging a window replace in a pyiceberg transaction: the window's data files out and the new ones in, in one snapshot.

A window replace (``OfflineStore.replace_window``, ``replace_window_files``) drops every row of ``[start, end)``
and adds the new files. On a table partitioned by day a window of whole days holds whole files only, so the
replace is one overwrite snapshot: the files whose rows all lie in the window (by their statistics, as
pyiceberg's delete decides) dropped, the new files added. Before, it was pyiceberg's ``delete`` (a snapshot,
the window's delete planned over the table's manifests) and an append (a second snapshot): twice the snapshots
and metadata writes, and the history every later commit copies grew twice as fast. A window that cuts a file
(bounds that are not midnights) still goes through pyiceberg's delete, which rewrites the rows of that file
outside the window, then an append.

The one snapshot keeps the window's row filter, so on pyiceberg's own retry after another writer committed first,
a commit that added or removed files in the window fails its validation (``ValidationException``), exactly as the
delete's did; ``quasar.store.commits`` then builds the replace again on that writer's snapshot. Each manifest is
read once per replace (manifest files never change; pyiceberg's overwrite read each relevant one twice more), and
manifests left with no live file (only the entries of files an earlier replace deleted) are dropped from the new
snapshot, as an append drops them; pyiceberg's overwrite carries them on forever.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_PRODUCER: type | None = None


def replace(tx: Any, io: Any, row_filter: Any, files: Sequence[Any], props: Mapping[str, str]) -> None:
    """Stage in ``tx`` the replace of the rows matching ``row_filter`` (a window of event times) by ``files``, with
    ``props`` in the snapshot summary: one snapshot when the window holds whole files, else pyiceberg's delete
    and an append. The snapshot is named as Iceberg names such a change: ``append`` when it drops nothing,
    ``delete`` when it adds nothing, ``overwrite`` otherwise."""
    from pyiceberg.table.refs import MAIN_BRANCH
    from pyiceberg.table.snapshots import Operation

    live: dict[str, list[Any]] = {}
    whole = whole_files(tx, io, row_filter, live)
    if whole is None:
        delete_rows(tx, row_filter, props)
        append(tx, files, props)
        return
    operation = Operation.OVERWRITE if whole and files else Operation.DELETE if whole else Operation.APPEND
    producer = _producer_class()(operation=operation, transaction=tx, io=io, branch=MAIN_BRANCH,
                                 snapshot_properties=dict(props))
    producer.live = live
    with producer:
        producer.delete_by_predicate(row_filter)
        for data_file in whole:
            producer.delete_data_file(data_file)
        for data_file in files:
            producer.append_data_file(data_file)


def append(tx: Any, files: Sequence[Any], props: Mapping[str, str]) -> None:
    """Stage one append snapshot of ``files`` (none: a snapshot all the same, carrying ``props``)."""
    with tx.update_snapshot(snapshot_properties=dict(props)).fast_append() as appending:
        for data_file in files:
            appending.append_data_file(data_file)


def delete_rows(tx: Any, row_filter: Any, props: Mapping[str, str]) -> None:
    """pyiceberg's delete of the rows matching ``row_filter`` (rewriting files partly matched; none is fine)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Delete operation did not match any records")
        tx.delete(row_filter, snapshot_properties=dict(props))


def whole_files(tx: Any, io: Any, row_filter: Any, live: dict[str, list[Any]] | None = None) -> list[Any] | None:
    """The data files of the table's current snapshot (as staged in ``tx``) whose rows all match ``row_filter``,
    decided from their statistics as pyiceberg's delete decides; None when a file may hold rows on both sides
    (only a rewrite keeps the others) or the snapshot has delete files. ``live`` collects the live entries of each
    manifest read, by path."""
    from pyiceberg.expressions.visitors import (
        ROWS_MIGHT_NOT_MATCH,
        ROWS_MUST_MATCH,
        _InclusiveMetricsEvaluator,
        _StrictMetricsEvaluator,
    )
    from pyiceberg.manifest import ManifestContent
    from pyiceberg.table.refs import MAIN_BRANCH

    metadata = tx.table_metadata
    snapshot = metadata.snapshot_by_name(MAIN_BRANCH)
    if snapshot is None:
        return []
    live = {} if live is None else live
    schema = metadata.schema()
    strict = _StrictMetricsEvaluator(schema, row_filter).eval
    inclusive = _InclusiveMetricsEvaluator(schema, row_filter).eval
    meets = _manifest_evaluators(metadata, row_filter)
    whole: list[Any] = []
    for manifest in snapshot.manifests(io):
        if manifest.content != ManifestContent.DATA:
            return None
        if not _has_live_files(manifest) or not meets(manifest):
            continue
        for entry in _live_entries(manifest, io, live):
            if strict(entry.data_file) == ROWS_MUST_MATCH:
                whole.append(entry.data_file)
            elif inclusive(entry.data_file) != ROWS_MIGHT_NOT_MATCH:
                return None                              # rows in and out of the window: a rewrite
    return whole


def _manifest_evaluators(metadata: Any, row_filter: Any) -> Callable[[Any], bool]:
    """Whether a manifest's partition summaries may meet ``row_filter`` (one evaluator per partition spec)."""
    from pyiceberg.expressions.visitors import inclusive_projection, manifest_evaluator

    schema, specs = metadata.schema(), metadata.specs()
    evaluators: dict[int, Callable[[Any], bool]] = {}

    def meets(manifest: Any) -> bool:
        spec_id = manifest.partition_spec_id
        if spec_id not in evaluators:
            spec = specs[spec_id]
            evaluators[spec_id] = manifest_evaluator(spec, schema, inclusive_projection(schema, spec)(row_filter))
        return evaluators[spec_id](manifest)

    return meets


def _has_live_files(manifest: Any) -> bool:
    """Whether a manifest may list a live file (added or existing); one of deleted entries only lists none."""
    return bool(manifest.has_added_files() or manifest.has_existing_files())


def _live_entries(manifest: Any, io: Any, live: dict[str, list[Any]]) -> list[Any]:
    entries = live.get(manifest.manifest_path)
    if entries is None:
        entries = live[manifest.manifest_path] = manifest.fetch_manifest_entry(io, discard_deleted=True)
    return entries


def _producer_class() -> type:
    """pyiceberg's overwrite producer reading each manifest once (``live``) and dropping manifests without live
    files from the new snapshot; everything else (summary, manifest list, validation, retries) is pyiceberg's."""
    global _PRODUCER
    if _PRODUCER is not None:
        return _PRODUCER
    from pyiceberg.manifest import DataFileContent, ManifestContent, ManifestEntry, ManifestEntryStatus
    from pyiceberg.table.update.snapshot import _OverwriteFiles

    class _WindowReplace(_OverwriteFiles):
        live: dict[str, list[Any]]

        def _head(self) -> list[Any]:
            snapshot = self._transaction.table_metadata.snapshot_by_name(name=self._target_branch)
            return [] if snapshot is None else list(snapshot.manifests(io=self._io))

        def _existing_manifests(self) -> list[Any]:
            """The head's manifests, those holding a dropped file rewritten without it (pyiceberg's rule), and
            those without a live file left out."""
            meets = self._build_manifest_evaluator
            kept = []
            for manifest in self._head():
                if manifest.content != ManifestContent.DATA:
                    kept.append(manifest)
                    continue
                if not _has_live_files(manifest):
                    continue
                if not meets(manifest.partition_spec_id)(manifest):
                    kept.append(manifest)
                    continue
                entries = _live_entries(manifest, self._io, self.live)
                remaining = [e for e in entries if e.data_file not in self._deleted_data_files]
                if len(remaining) == len(entries):
                    kept.append(manifest)
                    continue
                if not remaining:
                    continue
                with self.new_manifest_writer(self.spec(manifest.partition_spec_id)) as writer:
                    for entry in remaining:
                        writer.add_entry(ManifestEntry.from_args(
                            status=ManifestEntryStatus.EXISTING, snapshot_id=entry.snapshot_id,
                            sequence_number=entry.sequence_number,
                            file_sequence_number=entry.file_sequence_number, data_file=entry.data_file))
                kept.append(writer.to_manifest_file())
            return kept

        def _deleted_entries(self) -> list[Any]:
            """The dropped files' entries, marked deleted by this snapshot; every one must be live in the head."""
            deleted = []
            if self._parent_snapshot_id is not None:
                meets = self._build_manifest_evaluator
                for manifest in self._head():
                    if manifest.content != ManifestContent.DATA or not _has_live_files(manifest) or \
                            not meets(manifest.partition_spec_id)(manifest):
                        continue
                    deleted += [ManifestEntry.from_args(
                        status=ManifestEntryStatus.DELETED, snapshot_id=self._snapshot_id,
                        sequence_number=entry.sequence_number, file_sequence_number=entry.file_sequence_number,
                        data_file=entry.data_file)
                        for entry in _live_entries(manifest, self._io, self.live)
                        if entry.data_file.content == DataFileContent.DATA
                        and entry.data_file in self._deleted_data_files]
            self._validate_required_deletes(deleted)
            return deleted

    _PRODUCER = _WindowReplace
    return _PRODUCER
