"""Committing to a signal's Iceberg table while other writers commit too, and leaving nothing behind on failure.

Two backfills of one signal (or a backfill and a push) may commit to one table at once. pyiceberg retries a plain
catalog conflict itself, but a replace whose window another writer just filled fails its validation
(``ValidationException: Added data files were found matching the filter``). Either way ``commit`` builds the
transaction again on a fresh read of the table and commits it, reusing the data files it already wrote: on the
fresh snapshot the window's delete also removes the other writer's rows of those days, so the last committer's
rows of a day win and no row is stored twice, exactly as if the two had run one after the other.

Every commit carries a ``quasar.write-id`` in its snapshot summary, so whether an attempt that raised actually
landed can be read back from the table (``landed``). When the commit finally fails and did not land, the files
that write put under the table's folder (data files named with the write id, manifests of its transaction) are
deleted at once; a killed writer's files are left to ``quasar.store.gc`` (the next backfill or ``quasar gc``).
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quasar.store.gc import delete_files, delete_stale_metadata, list_files

WRITE_ID = "quasar.write-id"
ATTEMPTS = 8
_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 2.0


def is_conflict(exc: BaseException) -> bool:
    """Another writer committed first: a catalog conflict, or pyiceberg's validation of a concurrent change."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    return isinstance(exc, CommitFailedException | ValidationException)


def landed(table: Any, write_id: str) -> int | None:
    """The id of the snapshot committed by ``write_id`` (the newest, for a transaction of several), or None."""
    found = [s for s in table.metadata.snapshots if s.summary is not None and s.summary.get(WRITE_ID) == write_id]
    return int(max(found, key=lambda s: s.sequence_number or 0).snapshot_id) if found else None


@dataclass
class Write:
    """One logical write (a window replace, an append): its id, named in its data files and its snapshots."""

    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    attempts: int = 0
    transactions: list[Any] = field(default_factory=list)

    @property
    def uuid(self) -> uuid.UUID:
        return uuid.UUID(self.id)

    def transaction(self, table: Any) -> Any:
        """A new transaction on ``table`` for this write's next attempt (``transaction``)."""
        tx = transaction(table)
        self.transactions.append(tx)
        return tx


_TRANSACTION: type | None = None


def transaction(table: Any) -> Any:
    """A pyiceberg transaction on ``table`` whose ``table_metadata`` is computed once per staged state.

    pyiceberg's ``Transaction.table_metadata`` applies every staged update to the table's metadata and deep-copies
    the result on every read, and a commit reads it about 35 times (each snapshot producer's set-up, manifest
    writers, summary, manifest list): 0.38 of a window replace's 1.1 CPU s, growing with the snapshots the table
    keeps. Here the result is kept while neither the table's metadata nor the staged updates (an immutable
    tuple, replaced on every change) are other objects; the metadata models are frozen, so sharing one is safe.
    """
    global _TRANSACTION
    if _TRANSACTION is None:
        from pyiceberg.table import Transaction
        from pyiceberg.table.update import update_table_metadata

        class _Transaction(Transaction):
            _staged: tuple[Any, Any, Any] | None = None

            @property
            def table_metadata(self) -> Any:
                base, updates, staged = self._table.metadata, self._updates, self._staged
                if staged is None or staged[0] is not base or staged[1] is not updates:
                    staged = self._staged = (base, updates, update_table_metadata(base, updates))
                return staged[2]

        _TRANSACTION = _Transaction
    return _TRANSACTION(table)


def commit(load: Callable[[], Any], build: Callable[[Any, Any], None], write: Write, *,
           fail: Callable[[BaseException, bool], Exception], attempts: int = ATTEMPTS) -> Any:
    """Stage ``build(table, tx)`` on ``load()``'s table and commit it; on a conflict, again on a fresh load.

    Returns the table after the commit. ``fail(exc, gave_up)`` makes the error to raise (``gave_up``: the
    conflicts outlasted ``attempts``); before it is raised the write's uncommitted files are removed.
    """
    table = load()
    for attempt in range(1, attempts + 1):
        write.attempts = attempt
        try:
            tx = write.transaction(table)
            build(table, tx)
            return tx.commit_transaction()
        except Exception as exc:
            fresh = _reload(load)
            if fresh is not None and landed(fresh, write.id) is not None:
                return fresh                              # it landed; only the answer was lost
            if is_conflict(exc) and attempt < attempts and fresh is not None:
                time.sleep(min(_MAX_BACKOFF_S, _BACKOFF_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5))
                table = fresh
                continue
            if fresh is not None:
                discard(fresh, write)
            raise fail(exc, is_conflict(exc)) from exc
    raise AssertionError("unreachable")


def discard(table: Any, write: Write) -> list[str]:
    """Delete what ``write`` put under the table's folder and no snapshot holds: its data files (named with its
    id), its transactions' manifests and metadata files that lost the race to the catalog
    (``quasar.store.gc.stale_metadata``). Only for a write that did not land."""
    for tx in write.transactions:
        for producer in getattr(tx, "_snapshot_producers", ()):   # pyiceberg keeps what each attempt wrote here
            clean = getattr(producer, "_clean_all_uncommitted", None)
            if clean is not None:
                with contextlib.suppress(Exception):     # best effort: gc finds what is left
                    clean()
    location = str(table.location())
    try:
        mine = [uri for uri, _ in list_files(f"{location.rstrip('/')}/data") if write.id in uri.rsplit("/", 1)[-1]]
        return delete_files(location, mine) + delete_stale_metadata(table)
    except Exception:  # the folder cannot be listed (e.g. the disk failed): gc collects them later
        return []


def _reload(load: Callable[[], Any]) -> Any:
    try:
        return load()
    except Exception:
        return None
