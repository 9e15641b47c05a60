"""The sample source file `tally init` writes beside its example definitions, so the
scaffold validates, checks, computes and applies as made: logins of a few accounts over
the weeks before the day it runs (UTC), the same file for the same day."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

SAMPLE_PATH = Path("data") / "logins.parquet"
ACCOUNTS = 20
DAYS = 60
US_PER_DAY = 86_400_000_000


def sample_logins(end: date | None = None) -> bytes:
    """Parquet bytes of `account_id, user_id, event_ts` rows in the DAYS days before
    midnight UTC of `end` (default today)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    stop = datetime.combine(end or datetime.now(UTC).date(), datetime.min.time(), tzinfo=UTC)
    start_us = int((stop - timedelta(days=DAYS)).timestamp() * 1e6)
    rng = np.random.default_rng(stop.toordinal())
    per_account = rng.poisson(3.0 * DAYS, ACCOUNTS)
    account = np.repeat(np.arange(1, ACCOUNTS + 1, dtype=np.int64), per_account)
    user = account * 100 + rng.integers(0, 8, account.size)
    stamps = start_us + (rng.random(account.size) * DAYS * US_PER_DAY).astype(np.int64)
    order = np.lexsort((stamps, account))
    table = pa.table({
        "account_id": account[order], "user_id": user[order],
        "event_ts": pa.array(stamps[order]).cast(pa.timestamp("us", tz="UTC")),
    })
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()
