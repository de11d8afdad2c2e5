"""A torch ``IterableDataset`` of ``FeatureBatch`` objects over training rows.

Rows are dealt out exactly once per epoch across DataLoader workers and distributed ranks: pieces
(Parquet row groups or table slices) are cut so there are at least as many as shards, optionally
shuffled by a seeded per-epoch permutation, and dealt round-robin; within a shard a bounded shuffle
buffer mixes rows. Conversion to tensors is columnar (``quasar.signals.ufr.tensors.build_feature_batch``), the
same builder the scorer uses, once per row group (or shuffle-buffer half): its batches are cut from those tensors
as views (``split_feature_batch``), so a batch's tensors share memory with the others of its row group; a batch
straddling two is built from its own rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset, get_worker_info

from quasar.signals.errors import DefinitionError
from quasar.signals.ufr.infer import infer_feature_type
from quasar.signals.ufr.tensors import FeatureBatch, InputSpec, build_feature_batch, split_feature_batch
from quasar.training_adapters.sources import Piece, RowSource, check_columns


@dataclass
class TrainingBatch:
    """Model inputs and labels of one batch."""

    features: FeatureBatch
    labels: dict[str, torch.Tensor]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TrainingBatch:
        return TrainingBatch(self.features.to(device, non_blocking=non_blocking),
                             {k: v.to(device, non_blocking=non_blocking) for k, v in self.labels.items()})

    def pin_memory(self) -> TrainingBatch:
        return TrainingBatch(self.features.pin_memory(), {k: v.pin_memory() for k, v in self.labels.items()})


def spec_from_schema(schema: pa.Schema, features: Sequence[str]) -> InputSpec:
    """An ``InputSpec`` for ``features`` inferred from their Arrow types."""
    check_columns(schema, features)
    return InputSpec(features=tuple((f, infer_feature_type(schema.field(f).type, f)) for f in features))


def _distributed_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def split_pieces(pieces: list[Piece], shards: int) -> list[Piece]:
    """Cut the largest pieces in half until there are at least ``shards`` pieces (every row kept once)."""
    pieces = list(pieces)
    while 0 < len(pieces) < shards:
        k = max(range(len(pieces)), key=lambda i: pieces[i].length)
        p = pieces[k]
        if p.length < 2:
            break
        half = p.length // 2
        pieces[k:k + 1] = [Piece(p.part, p.offset, half), Piece(p.part, p.offset + half, p.length - half)]
    return pieces


class FeatureDataset(IterableDataset):  # type: ignore[type-arg]
    """Yields ``TrainingBatch`` objects; use with ``make_loader`` (batching happens here, not in the loader)."""

    def __init__(self, source: RowSource, spec: InputSpec, *, labels: Sequence[str] = (), batch_size: int = 1024,
                 shuffle: bool = False, shuffle_buffer: int = 65_536, seed: int = 0, drop_last: bool = False,
                 rank: int | None = None, world_size: int | None = None) -> None:
        if batch_size <= 0:
            raise DefinitionError(f"batch_size must be positive, got {batch_size}")
        self.source, self.spec, self.labels = source, spec, tuple(labels)
        self.columns = [name for name, _ in spec.features] + [c for c in self.labels
                                                             if c not in {n for n, _ in spec.features}]
        check_columns(source.schema, self.columns)
        self.batch_size, self.shuffle, self.shuffle_buffer = batch_size, shuffle, max(shuffle_buffer, batch_size)
        self.seed, self.drop_last, self.epoch = seed, drop_last, 0
        self.rank, self.world_size = rank, world_size
        self._iterated = self._epoch_set = False

    def set_epoch(self, epoch: int) -> None:
        """Shuffle for ``epoch``: the next iteration through ``make_loader``'s loader uses it (as with
        ``DistributedSampler``), and the ones after it go on from there."""
        self.epoch, self._epoch_set = epoch, True

    def begin_iteration(self) -> None:
        """Called by the loader in the main process as each iteration starts (so its workers get the epoch):
        the epoch ``set_epoch`` gave since the last iteration, else the last one's plus one. So re-iterating a
        loader is a new epoch with a new, seeded shuffle, on every rank alike (they iterate alike)."""
        if self._iterated and not self._epoch_set:
            self.epoch += 1
        self._iterated, self._epoch_set = True, False

    def _shard(self) -> tuple[int, int]:
        rank, world = _distributed_rank_world()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return rank * workers + worker, world * workers

    def _my_pieces(self) -> list[Piece]:
        shard, shards = self._shard()
        pieces = split_pieces(self.source.pieces(), shards)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(pieces))
            pieces = [pieces[i] for i in order]
        return pieces[shard::shards]

    def _read_ahead(self, pieces: list[Piece]) -> Iterator[pa.Table]:
        """The pieces' rows in order, the next one read on a thread (Arrow releases the GIL) while this one's
        batches are cut."""
        with ThreadPoolExecutor(1, thread_name_prefix="quasar-read") as pool:
            pending = None
            for piece in pieces:
                following = pool.submit(self.source.read, piece, self.columns)
                if pending is not None:
                    yield pending.result()
                pending = following
            if pending is not None:
                yield pending.result()

    def _tables(self) -> Iterator[pa.Table]:
        """This shard's rows, as tables, shuffled through a bounded buffer when asked."""
        shard, _ = self._shard()
        rng = np.random.default_rng([self.seed, self.epoch, shard, 1])
        buffer: list[pa.Table] = []
        held = 0
        for table in self._read_ahead(self._my_pieces()):
            if not self.shuffle:
                yield table
                continue
            buffer.append(table)
            held += table.num_rows
            if held >= self.shuffle_buffer:
                mixed = pa.concat_tables(buffer).combine_chunks()
                mixed = mixed.take(pa.array(rng.permutation(mixed.num_rows)))
                half = mixed.num_rows // 2
                yield mixed.slice(0, half)
                buffer, held = [mixed.slice(half)], mixed.num_rows - half
        if buffer and held:
            mixed = pa.concat_tables(buffer).combine_chunks()
            yield mixed.take(pa.array(rng.permutation(mixed.num_rows)))

    @staticmethod
    def _label(column: pa.ChunkedArray) -> torch.Tensor:
        """A label column as a writable copy of its own (``to_numpy``: with nulls, ints become floats)."""
        return torch.from_numpy(np.asarray(column.to_numpy(zero_copy_only=False)).copy())

    def _batch(self, table: pa.Table) -> TrainingBatch:
        return TrainingBatch(build_feature_batch(table, self.spec), {c: self._label(table[c]) for c in self.labels})

    def _batches(self, table: pa.Table) -> Iterator[TrainingBatch]:
        """``table`` (a whole number of batches) as consecutive batches: built once as one ``FeatureBatch``
        and cut into views (``split_feature_batch``), the same tensors as building each batch from its slice
        but without the per-batch Arrow -> numpy work. The batches share the table's tensors' memory."""
        size, count = self.batch_size, table.num_rows // self.batch_size
        if count == 1:
            yield self._batch(table)
            return
        whole = build_feature_batch(table, self.spec)
        # a label with nulls reads as float only in a batch that holds one, so it stays per batch
        whole_labels = {c: self._label(table[c]) for c in self.labels if not table[c].null_count}
        for k, features in enumerate(split_feature_batch(whole, [size] * count)):
            rows = slice(k * size, (k + 1) * size)
            labels = {c: whole_labels[c][rows] if c in whole_labels else self._label(table[c].slice(k * size, size))
                      for c in self.labels}
            yield TrainingBatch(features, labels)

    def __iter__(self) -> Iterator[TrainingBatch]:
        carry: pa.Table | None = None          # fewer than batch_size rows left over from the tables before
        for table in self._tables():
            start = 0
            if carry is not None and carry.num_rows:
                need = self.batch_size - carry.num_rows
                if table.num_rows < need:
                    carry = pa.concat_tables([carry, table])
                    continue
                yield self._batch(pa.concat_tables([carry, table.slice(0, need)]))
                start = need
            full = (table.num_rows - start) // self.batch_size * self.batch_size
            if full:
                yield from self._batches(table.slice(start, full))
            carry = table.slice(start + full)
        if carry is not None and carry.num_rows and not self.drop_last:
            yield self._batch(carry)
