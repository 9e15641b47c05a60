"""The writing half of Tally's offline store: saved datasets, feature-service logs and
offline_write_batch, each writing what Feast's stock DuckDB store writes, but atomically
(a temporary file beside the target, then a rename) and with relative paths read against
the repo folder rather than the current one.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tally.catalog.store.fsutil import replacing


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    with replacing(path, ".parquet") as tmp:
        pq.write_table(table, tmp)


def persist_table(table: pa.Table, path: str, allow_overwrite: bool) -> None:
    """A saved dataset: one parquet file when the path ends in .parquet, else a folder
    holding one (as the stock store, which writes a dataset under a folder path)."""
    from feast.errors import SavedDatasetLocationAlreadyExists

    if os.path.exists(path) and not allow_overwrite:
        raise SavedDatasetLocationAlreadyExists(location=path)
    target = Path(path)
    if not path.endswith(".parquet"):
        target = target / f"{uuid.uuid4().hex}-0.parquet"
    write_parquet_atomic(table, target)


def append_rows(table: pa.Table, path: Path) -> None:
    """offline_write_batch on a parquet FileSource: the new rows, then the old ones (the
    stock store's order), cast to the file's schema."""
    if path.exists():
        previous = pq.read_table(path)
        if table.schema != previous.schema:
            table = table.cast(previous.schema)
        table = pa.concat_tables([table, previous])
    write_parquet_atomic(table, path)


def write_logs(data: pa.Table | Path, folder: str) -> None:
    """Feature-service logs: one new parquet file under the destination folder per call,
    as the stock store writes them (a partitioned destination goes to the stock writer)."""
    table = pq.read_table(data) if isinstance(data, Path) else data
    write_parquet_atomic(table, Path(folder) / f"{uuid.uuid4().hex}-0.parquet")


def check_batch_columns(config: Any, feature_view: Any, table: pa.Table) -> None:
    """The stock store's check: the table has the batch source's columns, in order."""
    from feast.infra.offline_stores.offline_utils import get_pyarrow_schema_from_batch_source

    schema, names = get_pyarrow_schema_from_batch_source(config, feature_view.batch_source)
    if names != table.column_names:
        raise ValueError(
            f"The input pyarrow table has schema {table.schema} with the incorrect columns "
            f"{table.column_names}. The schema is expected to be {schema} with the columns "
            f"(in this exact order) to be {names}.")
