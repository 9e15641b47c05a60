"""Deterministic adoption data for the example project: CRM, marketing, commerce, renewals.

Accounts have a latent adoption level that drives logins, sends and orders, and renewal
outcomes follow adoption, so the churn model's features carry signal. Timestamps are
microsecond UTC (Spark refuses nanoseconds). The data covers the year before `end` (by
default today, UTC), so the demo's contracts pass the day it is made; given a seed and an
end date the files are the same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tally.catalog.store.fsutil import replacing

DAYS = 365
MONTHS = 12
US_PER_DAY = 86_400_000_000
TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class DemoData:
    folder: Path
    files: dict[str, Path]
    rows: dict[str, int]
    start: datetime
    end: datetime


def today_utc() -> date:
    return datetime.now(UTC).date()


def data_span(end: date | None = None) -> tuple[datetime, datetime]:
    """The demo data's [start, end): the DAYS days before midnight UTC of `end` (today)."""
    stop = datetime.combine(end or today_utc(), datetime.min.time(), tzinfo=UTC)
    return stop - timedelta(days=DAYS), stop


def _month_starts_us(start: datetime) -> np.ndarray:
    """The first MONTHS first-of-month midnights at or after `start`, in microseconds."""
    year, month = start.year, start.month + (start.day > 1 or start.time() != start.min.time())
    starts = []
    for _ in range(MONTHS):
        year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
        starts.append(int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1e6))
        month += 1
    return np.array(starts, dtype=np.int64)


def _ts(values_us: np.ndarray) -> pa.Array:
    return pa.array(values_us.astype("int64"), type=pa.int64()).cast(TS)


def _write(table: pa.Table, path: Path, sort_keys: list[str]) -> None:
    table = table.sort_by([(k, "ascending") for k in sort_keys])
    with replacing(path, ".parquet") as tmp:
        pq.write_table(table, tmp, row_group_size=256_000)


def generate(folder: Path, accounts: int = 3000, seed: int = 7, *,
             end: date | None = None) -> DemoData:
    """Write the six source files of the example project under `folder` (its data/), with
    rows in the DAYS days before `end` (default: today, UTC)."""
    start, stop = data_span(end)
    rng = np.random.default_rng(seed)
    start_us = int(start.timestamp() * 1e6)
    days = DAYS
    ids = np.arange(1, accounts + 1, dtype=np.int64)
    adoption = rng.beta(2.0, 2.0, accounts)  # latent 0..1
    seats = np.maximum(3, rng.lognormal(3.0, 0.8, accounts)).astype(np.int64)
    # accounts that will not renew go quiet some time before their decision
    decided_day = rng.integers(90, days - 5, accounts)
    renewed = rng.random(accounts) < (0.35 + 0.6 * adoption)
    quiet_from = np.where(renewed, days, decided_day - rng.integers(20, 80, accounts))
    files: dict[str, Path] = {}
    rows: dict[str, int] = {}

    def emit(name: str, table: pa.Table, keys: list[str]) -> None:
        path = folder / f"{name}.parquet"
        _write(table, path, keys)
        files[name] = path
        rows[name] = table.num_rows

    # CRM logins: daily Poisson per account, rate grows with adoption and seats
    rate = 0.15 + 2.0 * adoption * np.sqrt(seats / seats.mean())
    per_account = rng.poisson(rate * np.maximum(quiet_from, 1))
    acc = np.repeat(ids, per_account)
    limit = np.repeat(np.maximum(quiet_from, 1), per_account)
    event_us = start_us + (rng.random(acc.size) * limit * US_PER_DAY).astype(np.int64)
    users = np.repeat(np.maximum(1, (seats * (0.2 + 0.8 * adoption)).astype(np.int64)),
                      per_account)
    user_id = acc * 10_000 + rng.integers(0, 1 << 30, acc.size) % users
    seconds = np.round(rng.exponential(240.0, acc.size), 3)
    seconds[rng.random(acc.size) < 0.05] = 2.0  # bounces, filtered out of active users
    loaded_us = event_us + rng.integers(60, 3600, acc.size) * 1_000_000
    emit("crm_logins", pa.table({
        "account_id": acc, "user_id": user_id, "event_ts": _ts(event_us),
        "loaded_at": _ts(loaded_us), "seconds": seconds,
    }), ["account_id", "event_ts"])

    # CRM licenses: billing reports the seat count at the start of every month
    months = MONTHS
    acc = np.repeat(ids, months)
    month = np.tile(np.arange(months), accounts)
    drift = np.exp(np.cumsum(rng.normal(0.01, 0.05, acc.size).reshape(accounts, months),
                             axis=1)).ravel()
    seat_values = np.maximum(1, (np.repeat(seats, months) * drift).astype(np.int64))
    month_starts = _month_starts_us(start)
    reported_us = month_starts[month] + rng.integers(0, 6 * 3_600_000_000, acc.size)
    emit("crm_licenses", pa.table({
        "account_id": acc, "reported_ts": _ts(reported_us), "seats": seat_values,
    }), ["account_id", "reported_ts"])

    # Marketing sends: about weekly campaign batches
    batches = rng.poisson((0.3 + 1.5 * adoption) * np.maximum(quiet_from, 1) / 7)
    acc = np.repeat(ids, batches)
    limit = np.repeat(np.maximum(quiet_from, 1), batches)
    sent_us = start_us + (rng.random(acc.size) * limit * US_PER_DAY).astype(np.int64)
    volume = np.repeat(seats * 40, batches)
    emails = np.maximum(0, rng.normal(volume / 4, volume / 10)).astype(np.int64)
    channel = rng.choice(np.array(["email", "sms", "push"]), acc.size, p=[0.8, 0.12, 0.08])
    emit("marketing_sends", pa.table({
        "account_id": acc, "campaign_id": rng.integers(1, 5000, acc.size),
        "sent_ts": _ts(sent_us), "emails": emails, "channel": channel,
    }), ["account_id", "sent_ts"])

    # Marketing contracts: contracted monthly volume, one or two agreements
    agreements = 1 + (rng.random(accounts) < 0.3)
    acc = np.repeat(ids, agreements)
    first = np.concatenate([[True], acc[1:] != acc[:-1]])
    eff_day = np.where(first, 0, rng.integers(30, days, acc.size))
    emit("marketing_contracts", pa.table({
        "account_id": acc,
        "effective_ts": _ts(start_us + eff_day * US_PER_DAY),
        "monthly_volume": np.repeat(seats * 40 * 4, agreements)
        * np.where(first, 1, 2),
    }), ["account_id", "effective_ts"])

    # Commerce orders
    orders = rng.poisson((0.02 + 0.25 * adoption) * np.maximum(quiet_from, 1))
    acc = np.repeat(ids, orders)
    limit = np.repeat(np.maximum(quiet_from, 1), orders)
    order_us = start_us + (rng.random(acc.size) * limit * US_PER_DAY).astype(np.int64)
    status = np.where(rng.random(acc.size) < 0.06, "refunded", "paid")
    emit("commerce_orders", pa.table({
        "account_id": acc, "order_id": np.arange(1, acc.size + 1, dtype=np.int64),
        "order_ts": _ts(order_us), "amount": np.round(rng.lognormal(4.0, 1.0, acc.size), 2),
        "status": status,
    }), ["account_id", "order_ts"])

    # Renewals: one decision per account, the label of churn_risk
    decided_us = start_us + decided_day * US_PER_DAY + rng.integers(0, US_PER_DAY, accounts)
    emit("renewals", pa.table({
        "account_id": ids, "decided_ts": _ts(decided_us), "renewed": renewed,
        "contract_value": np.round(seats * rng.uniform(300, 900, accounts), 2),
    }), ["account_id", "decided_ts"])
    return DemoData(folder, files, rows, start, stop)
