"""``make_loader``: a DataLoader with sensible options for a ``FeatureDataset``.

With workers, each batch crosses to the main process packed into one buffer and is rebuilt there
(``quasar.training_adapters.packing``): sent as its two dozen tensors, a batch cost a shared-memory handshake per
tensor, which made worker loading 11-14x slower than one process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from torch.utils.data import DataLoader, get_worker_info

from quasar.signals.errors import SchemaError, StoreError
from quasar.signals.ufr.tensors import InputSpec
from quasar.store.dataset import DatasetResult
from quasar.store.dataset_out import ICEBERG
from quasar.training_adapters.dataset import FeatureDataset, TrainingBatch, spec_from_schema
from quasar.training_adapters.packing import PackedBatch, pack_batch, unpack_batch
from quasar.training_adapters.sources import ParquetSource, RowSource, TableSource, iceberg_source


def _identity(batch: TrainingBatch | PackedBatch) -> TrainingBatch | PackedBatch:
    return batch


class _WorkerPackedDataset(FeatureDataset):
    """A ``FeatureDataset`` that, inside a DataLoader worker, yields each batch as a ``PackedBatch``."""

    def __iter__(self) -> Iterator[TrainingBatch | PackedBatch]:  # type: ignore[override]
        if get_worker_info() is None:
            yield from super().__iter__()
            return
        for batch in super().__iter__():
            yield pack_batch(batch.features, batch.labels)


class FeatureLoader(DataLoader):  # type: ignore[type-arg]
    """A DataLoader that rebuilds the ``TrainingBatch`` of every ``PackedBatch`` its workers send, and starts
    a new epoch (a new shuffle) each time it is iterated (``FeatureDataset.begin_iteration``)."""

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next iteration (``FeatureDataset.set_epoch``)."""
        self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[TrainingBatch]:  # type: ignore[override]
        if isinstance(self.dataset, FeatureDataset):
            self.dataset.begin_iteration()
        for batch in super().__iter__():
            if isinstance(batch, PackedBatch):
                features, labels = unpack_batch(batch)
                yield TrainingBatch(features, labels)
            else:
                yield batch


def _default_features(source: RowSource, labels: Sequence[str]) -> list[str]:
    """The dataset's feature columns (its metadata), less the labels; SchemaError when it says none."""
    listed = source.dataset_features()
    if listed is None:
        raise SchemaError("the rows carry no quasar.features metadata (they were not written by `quasar dataset` "
                          "or Platform.dataset), so which columns are features is not known: name them with "
                          f"features=[...] or spec=...; the columns are {', '.join(source.schema.names)}")
    return [name for name in listed if name not in set(labels)]


def as_source(data: Any) -> RowSource:
    """An Arrow table, a Parquet path (file or folder, e.g. ``training_dataset(..., out=PATH)``'s), a list of
    Parquet files, a pyiceberg table (e.g. ``training_dataset(..., out="iceberg:ns.table")``'s), or a
    ``DatasetResult`` (its table, or the files or Iceberg table it was streamed to)."""
    if isinstance(data, RowSource):
        return data
    if isinstance(data, DatasetResult):
        if data.iceberg is not None:
            return iceberg_source(data.iceberg)
        return ParquetSource(data.path) if data.path is not None else TableSource(data.table)
    if isinstance(data, pa.Table):
        return TableSource(data)
    if isinstance(data, str) and data.startswith(ICEBERG):
        raise StoreError(f"make_loader({data!r}): a table name needs its catalog; pass the table itself "
                         f"(training_dataset(..., out={data!r}) returns it, or Platform.catalog.load_table)")
    if isinstance(data, (str, Path)) or (isinstance(data, list) and all(isinstance(x, (str, Path)) for x in data)):
        return ParquetSource(data)
    if hasattr(data, "scan") and hasattr(data, "metadata"):
        return iceberg_source(data)
    raise TypeError(f"cannot read training rows from {type(data).__name__}")


def make_loader(data: Any, *, features: Sequence[str] | None = None, spec: InputSpec | None = None,
                labels: Sequence[str] = ("label",), batch_size: int = 1024, shuffle: bool = False,
                shuffle_buffer: int = 65_536, seed: int = 0, drop_last: bool = False, num_workers: int | None = None,
                pin_memory: bool | None = None, rank: int | None = None, world_size: int | None = None,
                epoch: int = 0) -> DataLoader:  # type: ignore[type-arg]
    """A DataLoader of ``TrainingBatch`` over ``data``.

    Give ``spec`` (e.g. from a model bundle) or ``features`` (types inferred from the data); by default the
    features are the dataset's own, the columns its ``quasar.features`` metadata lists (``quasar dataset``,
    ``Platform.dataset`` and their Iceberg tables carry it), so join keys, the event time and the labels are
    not features and a feature named ``*_id`` is; rows without that metadata need ``features`` or ``spec``.
    Pinned memory defaults to on when CUDA is available.

    Each iteration of the loader is an epoch: with ``shuffle`` a new, seeded order each time (epoch ``epoch``
    first, then ``epoch + 1``, ...), the same sequence for the same ``seed``; ``loader.set_epoch(n)`` (or
    ``loader.dataset.set_epoch(n)``) makes the next iteration epoch ``n``.

    ``num_workers`` defaults to 0 (batches built in this process), from measurement (``python -m bench
    loader``, bench/RESULTS.md): on 2 cores, 1 or 2 workers were slower than none even with the packed
    transfer, because a worker does all the work this process would (read, slice, build tensors) and adds
    packing, a pipe and rebuilding, while this process mostly waits. Workers can pay off (not measured here)
    when the training step itself keeps this process busy, e.g. a model on the CPU, and cores are spare:
    pass ``num_workers`` then.
    """
    import torch
    source = as_source(data)
    if spec is None:
        if features is None:
            features = _default_features(source, labels)
        spec = spec_from_schema(source.schema, features)
    dataset = _WorkerPackedDataset(source, spec, labels=labels, batch_size=batch_size, shuffle=shuffle,
                             shuffle_buffer=shuffle_buffer, seed=seed, drop_last=drop_last, rank=rank,
                             world_size=world_size)
    dataset.set_epoch(epoch)
    workers = 0 if num_workers is None else num_workers
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    return FeatureLoader(dataset, batch_size=None, num_workers=workers, pin_memory=pin,
                         persistent_workers=False, collate_fn=_identity,  # type: ignore[arg-type]
                         prefetch_factor=4 if workers else None)
