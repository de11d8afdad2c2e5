"""Point-in-time datasets into PyTorch: iterable datasets, loaders, sharding across workers and ranks."""

from quasar.training_adapters.dataset import FeatureDataset, TrainingBatch, spec_from_schema
from quasar.training_adapters.loader import as_source, make_loader
from quasar.training_adapters.sources import ParquetSource, Piece, RowSource, TableSource, iceberg_source

__all__ = ["FeatureDataset", "ParquetSource", "Piece", "RowSource", "TableSource", "TrainingBatch", "as_source",
           "iceberg_source", "make_loader", "spec_from_schema"]
