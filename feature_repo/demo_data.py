"""Deterministic adoption data for the example project: CRM, marketing, commerce, renewals,
and the sales job (CRM opportunity events, billing events) the job-adoption funnel reads.

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


def _month_starts_us(start_us: int) -> np.ndarray:
    """The first MONTHS first-of-month midnights at or after `start_us`, in microseconds."""
    start = datetime.fromtimestamp(start_us / 1e6, tz=UTC)
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


@dataclass(frozen=True)
class _Accounts:
    """The generated accounts: their latent adoption, seats and renewal story."""
    ids: np.ndarray
    adoption: np.ndarray  # latent 0..1
    seats: np.ndarray
    decided_day: np.ndarray
    renewed: np.ndarray
    quiet_from: np.ndarray  # the day an account goes quiet (the end for renewers)
    start_us: int
    days: int

    @property
    def active_days(self) -> np.ndarray:
        return np.asarray(np.maximum(self.quiet_from, 1))

    def event_times(self, rng: np.random.Generator, per_account: np.ndarray) -> np.ndarray:
        """Uniform event times within each account's active days."""
        limit = np.repeat(self.active_days, per_account)
        times: np.ndarray = self.start_us + (rng.random(limit.size) * limit
                                             * US_PER_DAY).astype(np.int64)
        return times


def _accounts(rng: np.random.Generator, accounts: int, start: datetime) -> _Accounts:
    start_us = int(start.timestamp() * 1e6)
    days = DAYS
    ids = np.arange(1, accounts + 1, dtype=np.int64)
    adoption = rng.beta(2.0, 2.0, accounts)
    seats = np.maximum(3, rng.lognormal(3.0, 0.8, accounts)).astype(np.int64)
    # accounts that will not renew go quiet some time before their decision
    decided_day = rng.integers(90, days - 5, accounts)
    renewed = rng.random(accounts) < (0.35 + 0.6 * adoption)
    quiet_from = np.where(renewed, days, decided_day - rng.integers(20, 80, accounts))
    return _Accounts(ids, adoption, seats, decided_day, renewed, quiet_from, start_us, days)


def _crm_logins(rng: np.random.Generator, a: _Accounts) -> pa.Table:
    """Daily Poisson per account, the rate growing with adoption and seats."""
    rate = 0.15 + 2.0 * a.adoption * np.sqrt(a.seats / a.seats.mean())
    per_account = rng.poisson(rate * a.active_days)
    acc = np.repeat(a.ids, per_account)
    event_us = a.event_times(rng, per_account)
    users = np.repeat(np.maximum(1, (a.seats * (0.2 + 0.8 * a.adoption)).astype(np.int64)),
                      per_account)
    user_id = acc * 10_000 + rng.integers(0, 1 << 30, acc.size) % users
    seconds = np.round(rng.exponential(240.0, acc.size), 3)
    seconds[rng.random(acc.size) < 0.05] = 2.0  # bounces, filtered out of active users
    loaded_us = event_us + rng.integers(60, 3600, acc.size) * 1_000_000
    return pa.table({"account_id": acc, "user_id": user_id, "event_ts": _ts(event_us),
                     "loaded_at": _ts(loaded_us), "seconds": seconds})


def _crm_licenses(rng: np.random.Generator, a: _Accounts) -> pa.Table:
    """Billing reports the seat count at the start of every month."""
    months = MONTHS
    acc = np.repeat(a.ids, months)
    month = np.tile(np.arange(months), a.ids.size)
    drift = np.exp(np.cumsum(rng.normal(0.01, 0.05, acc.size).reshape(a.ids.size, months),
                             axis=1)).ravel()
    seat_values = np.maximum(1, (np.repeat(a.seats, months) * drift).astype(np.int64))
    month_starts = _month_starts_us(a.start_us)
    reported_us = month_starts[month] + rng.integers(0, 6 * 3_600_000_000, acc.size)
    return pa.table({"account_id": acc, "reported_ts": _ts(reported_us),
                     "seats": seat_values})


def _marketing_sends(rng: np.random.Generator, a: _Accounts) -> pa.Table:
    """About weekly campaign batches."""
    batches = rng.poisson((0.3 + 1.5 * a.adoption) * a.active_days / 7)
    acc = np.repeat(a.ids, batches)
    sent_us = a.event_times(rng, batches)
    volume = np.repeat(a.seats * 40, batches)
    emails = np.maximum(0, rng.normal(volume / 4, volume / 10)).astype(np.int64)
    channel = rng.choice(np.array(["email", "sms", "push"]), acc.size, p=[0.8, 0.12, 0.08])
    return pa.table({"account_id": acc, "campaign_id": rng.integers(1, 5000, acc.size),
                     "sent_ts": _ts(sent_us), "emails": emails, "channel": channel})


def _marketing_contracts(rng: np.random.Generator, a: _Accounts) -> pa.Table:
    """Contracted monthly volume, one or two agreements."""
    agreements = 1 + (rng.random(a.ids.size) < 0.3)
    acc = np.repeat(a.ids, agreements)
    first = np.concatenate([[True], acc[1:] != acc[:-1]])
    eff_day = np.where(first, 0, rng.integers(30, a.days, acc.size))
    return pa.table({
        "account_id": acc, "effective_ts": _ts(a.start_us + eff_day * US_PER_DAY),
        "monthly_volume": np.repeat(a.seats * 40 * 4, agreements) * np.where(first, 1, 2)})


def _commerce_orders(rng: np.random.Generator, a: _Accounts) -> pa.Table:
    orders = rng.poisson((0.02 + 0.25 * a.adoption) * a.active_days)
    acc = np.repeat(a.ids, orders)
    order_us = a.event_times(rng, orders)
    status = np.where(rng.random(acc.size) < 0.06, "refunded", "paid")
    return pa.table({
        "account_id": acc, "order_id": np.arange(1, acc.size + 1, dtype=np.int64),
        "order_ts": _ts(order_us), "amount": np.round(rng.lognormal(4.0, 1.0, acc.size), 2),
        "status": status})


def _renewals(rng: np.random.Generator, a: _Accounts) -> pa.Table:
    """One decision per account, the label of churn_risk."""
    decided_us = (a.start_us + a.decided_day * US_PER_DAY
                  + rng.integers(0, US_PER_DAY, a.ids.size))
    return pa.table({
        "account_id": a.ids, "decided_ts": _ts(decided_us), "renewed": a.renewed,
        "contract_value": np.round(a.seats * rng.uniform(300, 900, a.ids.size), 2)})


def _opportunities(rng: np.random.Generator, a: _Accounts) -> dict[str, np.ndarray]:
    """The sales job per opportunity: created by a rep; quoted, then won or lost, each more
    likely and sooner the more the account has adopted. Delays are long-tailed, so some wins
    land after the funnel's 30 days and do not count as completions."""
    per_account = rng.poisson((0.3 + 2.5 * a.adoption) * a.active_days / 30)
    acc = np.repeat(a.ids, per_account)
    adoption = np.repeat(a.adoption, per_account)
    reps = np.repeat(np.maximum(1, a.seats // 6), per_account)
    created = a.event_times(rng, per_account)
    quoted = rng.random(acc.size) < 0.55 + 0.35 * adoption
    won = quoted & (rng.random(acc.size) < 0.2 + 0.5 * adoption)
    lost = quoted & ~won & (rng.random(acc.size) < 0.6)
    quote_at = created + (rng.exponential(4.0, acc.size) * US_PER_DAY).astype(np.int64)
    close_at = quote_at + (rng.exponential(10.0, acc.size) * US_PER_DAY).astype(np.int64)
    return {"account_id": acc, "opportunity_id": np.arange(1, acc.size + 1, dtype=np.int64),
            "user_id": acc * 10_000 + rng.integers(0, 1 << 30, acc.size) % reps,
            "created": created, "quoted": quoted, "quote_at": quote_at, "won": won,
            "lost": lost, "close_at": close_at,
            "notes": rng.poisson(1.5, acc.size)}


def _until_quiet(a: _Accounts, account_ids: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Rows before their account went quiet and before the end of the data."""
    quiet = a.start_us + a.active_days[account_ids - 1] * US_PER_DAY
    return np.asarray((times < quiet) & (times < a.start_us + a.days * US_PER_DAY))


def _crm_events(rng: np.random.Generator, a: _Accounts,
                opp: dict[str, np.ndarray]) -> pa.Table:
    """One row per CRM activity on an opportunity: created, notes, the quote."""
    note_of = np.repeat(np.arange(opp["account_id"].size), opp["notes"])
    note_at = opp["created"][note_of] + (rng.random(note_of.size) * 20
                                         * US_PER_DAY).astype(np.int64)
    quoted = np.flatnonzero(opp["quoted"])
    rows = np.concatenate([np.arange(opp["account_id"].size), note_of, quoted])
    times = np.concatenate([opp["created"], note_at, opp["quote_at"][quoted]])
    event = np.concatenate([np.full(opp["account_id"].size, "opportunity_created"),
                            np.full(note_of.size, "note_added"),
                            np.full(quoted.size, "quote_sent")])
    keep = _until_quiet(a, opp["account_id"][rows], times)
    rows, times, event = rows[keep], times[keep], event[keep]
    return pa.table({"account_id": opp["account_id"][rows],
                     "opportunity_id": opp["opportunity_id"][rows],
                     "user_id": opp["user_id"][rows], "event": event,
                     "event_ts": _ts(times)})


def _billing_events(rng: np.random.Generator, a: _Accounts,
                    opp: dict[str, np.ndarray]) -> pa.Table:
    """Deals closed (won or lost, by the opportunity's rep) and monthly invoices and their
    payments (no opportunity, no rep)."""
    closed = np.flatnonzero(opp["won"] | opp["lost"])
    status = np.where(opp["won"][closed], "closed_won", "closed_lost")
    month_starts = _month_starts_us(a.start_us)
    inv_acc = np.repeat(a.ids, month_starts.size)
    invoiced = (np.tile(month_starts, a.ids.size)
                + rng.integers(0, 28 * US_PER_DAY, inv_acc.size))
    paid = invoiced + (rng.exponential(6.0, inv_acc.size) * US_PER_DAY).astype(np.int64)
    n_inv = inv_acc.size
    acc = np.concatenate([opp["account_id"][closed], inv_acc, inv_acc])
    times = np.concatenate([opp["close_at"][closed], invoiced, paid])
    keep = _until_quiet(a, acc, times)
    none = np.full(2 * n_inv, None)
    table = pa.table({
        "account_id": acc,
        "opportunity_id": pa.array(np.concatenate([opp["opportunity_id"][closed], none]),
                                   type=pa.int64()),
        "user_id": pa.array(np.concatenate([opp["user_id"][closed], none]), type=pa.int64()),
        "status": np.concatenate([status, np.full(n_inv, "invoiced"), np.full(n_inv, "paid")]),
        "recorded_ts": _ts(times)})
    return table.filter(pa.array(keep))


def _sales_job(rng: np.random.Generator, a: _Accounts) -> dict[str, pa.Table]:
    opp = _opportunities(rng, a)
    return {"crm_events": _crm_events(rng, a, opp),
            "billing_events": _billing_events(rng, a, opp)}


_EVENT_KEYS = {"crm_events": ["account_id", "event_ts"],
               "billing_events": ["account_id", "recorded_ts"]}

# each source in the order its random draws are made, with the keys its file is sorted by
_SOURCES = [("crm_logins", _crm_logins, ["account_id", "event_ts"]),
            ("crm_licenses", _crm_licenses, ["account_id", "reported_ts"]),
            ("marketing_sends", _marketing_sends, ["account_id", "sent_ts"]),
            ("marketing_contracts", _marketing_contracts, ["account_id", "effective_ts"]),
            ("commerce_orders", _commerce_orders, ["account_id", "order_ts"]),
            ("renewals", _renewals, ["account_id", "decided_ts"])]


def generate(folder: Path, accounts: int = 3000, seed: int = 7, *,
             end: date | None = None) -> DemoData:
    """Write the eight source files of the example project under `folder` (its data/), with
    rows in the DAYS days before `end` (default: today, UTC). The sales job's two sources
    draw last, so the other six are the same as before they existed."""
    start, stop = data_span(end)
    rng = np.random.default_rng(seed)
    account_set = _accounts(rng, accounts, start)
    files: dict[str, Path] = {}
    rows: dict[str, int] = {}
    for name, make, keys in _SOURCES:
        table = make(rng, account_set)
        files[name] = folder / f"{name}.parquet"
        _write(table, files[name], keys)
        rows[name] = table.num_rows
    for name, table in _sales_job(rng, account_set).items():
        files[name] = folder / f"{name}.parquet"
        _write(table, files[name], _EVENT_KEYS[name])
        rows[name] = table.num_rows
    return DemoData(folder, files, rows, start, stop)
