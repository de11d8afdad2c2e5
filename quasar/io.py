"""Reading user-supplied tables (spines) from files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from quasar.signals.errors import QuasarError


def read_table(path: str | Path) -> pa.Table:
    """A Parquet or CSV file as an Arrow table."""
    p = Path(path)
    try:
        if p.suffix.lower() == ".csv":
            return pacsv.read_csv(p)
        return pq.read_table(p)
    except (OSError, pa.ArrowInvalid) as exc:
        raise QuasarError(f"cannot read {p}: {exc}") from exc
