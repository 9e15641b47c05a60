"""Reading chosen rows of one parquet file by row number, one row group at a time.

The row-number plan of the offline store (offline_store_sql.rows_sql) finds, per entity
row, which file row holds its features; this reads those rows' feature columns. Only the
row groups that hold a wanted row are decoded, and one at a time, so memory stays at one
row group's columns plus the rows kept.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def read_rows(path: str, columns: list[str], rows: np.ndarray) -> pa.Table:
    """The `columns` of file rows `rows` (any order, repeats allowed), in that order."""
    file = pq.ParquetFile(path)
    names = list(dict.fromkeys(columns))
    order = np.argsort(rows, kind="stable")
    wanted = rows[order]
    starts = np.cumsum([0] + [file.metadata.row_group(i).num_rows
                              for i in range(file.num_row_groups)])
    parts: list[pa.Table] = []
    for group in range(file.num_row_groups):
        lo, hi = np.searchsorted(wanted, starts[group:group + 2])
        if lo == hi:
            continue
        chunk = file.read_row_group(group, columns=names)
        parts.append(chunk.take(pa.array(wanted[lo:hi] - starts[group])))
    schema = file.schema_arrow
    empty = pa.table({n: pa.array([], schema.field(n).type) for n in names})
    found = pa.concat_tables(parts) if parts else empty
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return found.take(pa.array(back)).select(columns) if len(rows) else empty
