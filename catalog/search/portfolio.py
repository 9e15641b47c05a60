"""The portfolio: what each model (ML app) costs over a period, how it is used, what its
outcome metric did, and what to retire (docs/portfolio.md explains every figure).

Costs come from the run log (tally.catalog.store.runlog) priced by tally.yaml's `cost`:
each run's CPU is charged to the features it computed or served, a table's storage to
its features, and each feature's cost is split equally among the models using it
(directly or through derived metrics and scores). So the models' attributed costs, the
unused features' cost and the cost of tables no longer defined add up to the measured
total exactly.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tally.catalog.errors import UsageError
from tally.catalog.search.lineage import build_lineage, node_id, split_id
from tally.catalog.search.outcomes import OutcomeTrend, outcome_trend
from tally.catalog.search.reuse import reuse_report
from tally.catalog.spec.config import CostConfig, load_config
from tally.catalog.spec.durations import parse_duration
from tally.catalog.spec.tables import TableSpec, table_specs
from tally.catalog.store.runlog import Run, now, read_runs

if TYPE_CHECKING:
    from tally.catalog.spec.project import Project

DAYS_PER_MONTH = 30.0


@dataclass
class ModelCost:
    name: str
    owner: str
    features: list[str]
    shared: list[str]  # features another model uses too
    exclusive: list[str]
    compute: float = 0.0
    storage: float = 0.0
    serving: float = 0.0
    maintenance: float = 0.0
    training_frames: int = 0
    rows_served: int = 0
    last_used: str | None = None
    outcome: OutcomeTrend | None = None

    @property
    def attributed(self) -> float:
        """Its share of measured cost (compute, storage, serving), without maintenance."""
        return self.compute + self.storage + self.serving

    @property
    def total(self) -> float:
        return self.attributed + self.maintenance


@dataclass
class TableCost:
    name: str
    features: list[str]
    readers: list[str]  # models using at least one of its features
    compute: float = 0.0
    storage: float = 0.0
    bytes: int = 0

    @property
    def cost(self) -> float:
        return self.compute + self.storage


@dataclass
class FeatureCost:
    name: str
    table: str | None
    cost: float


@dataclass
class Portfolio:
    since: datetime
    until: datetime
    currency: str
    measured: dict[str, float]  # compute, storage, serving, total
    models: list[ModelCost] = field(default_factory=list)
    tables: list[TableCost] = field(default_factory=list)
    unused_features: list[FeatureCost] = field(default_factory=list)
    unused_models: list[str] = field(default_factory=list)
    retired_cost: float = 0.0  # runs of tables and features no longer defined
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    sharing_saved: float = 0.0
    runs: int = 0

    @property
    def unused_cost(self) -> float:
        return sum(f.cost for f in self.unused_features)

    def to_dict(self) -> dict[str, Any]:
        models = []
        for m in self.models:
            entry = asdict(m)
            entry.update(attributed=m.attributed, total=m.total)
            if m.outcome is not None:
                entry["outcome"].update(change=m.outcome.change,
                                        relative_change=m.outcome.relative_change)
            models.append(entry)
        return {
            "since": self.since.isoformat(timespec="seconds"),
            "until": self.until.isoformat(timespec="seconds"),
            "currency": self.currency, "runs": self.runs, "measured": self.measured,
            "models": models,
            "tables": [{**asdict(t), "cost": t.cost} for t in self.tables],
            "unused_features": [asdict(f) for f in self.unused_features],
            "unused_cost": self.unused_cost, "unused_models": self.unused_models,
            "retired_cost": self.retired_cost, "duplicates": self.duplicates,
            "sharing_saved": self.sharing_saved,
        }


class _Ledger:
    """Cost charged per feature and kind; what names no current feature is `retired`."""

    def __init__(self, features: set[str]):
        self.features = features
        self.by_feature: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.retired = 0.0

    def charge(self, names: list[str], kind: str, amount: float) -> None:
        """Split `amount` equally over `names`; the part on unknown names is retired."""
        if not names:
            self.retired += amount
            return
        for name in names:
            if name in self.features:
                self.by_feature[name][kind] += amount / len(names)
            else:
                self.retired += amount / len(names)


def _cpu_cost(seconds: float, prices: CostConfig) -> float:
    return seconds / 3600.0 * prices.cpu_hour


def _charge_compute(run: Run, tables: dict[str, TableSpec], ledger: _Ledger,
                    costs: dict[str, TableCost], prices: CostConfig) -> None:
    """A compute run's CPU, per table written; the run's own overhead (loading, the lock)
    is split equally among the tables it wrote."""
    overhead = max(0.0, run.cpu_seconds - sum(t.cpu_seconds for t in run.tables))
    for written in run.tables:
        seconds = written.cpu_seconds + overhead / len(run.tables)
        amount = _cpu_cost(seconds, prices)
        spec = tables.get(written.name)
        if spec is None:
            ledger.retired += amount
            continue
        costs[spec.name].compute += amount
        ledger.charge(list(spec.features), "compute", amount)
    if not run.tables:
        ledger.retired += _cpu_cost(run.cpu_seconds, prices)


def _charge_runs(project: Project, runs: list[Run], ledger: _Ledger,
                 costs: dict[str, TableCost], models: dict[str, ModelCost],
                 prices: CostConfig) -> None:
    tables = {t.name: t for t in table_specs(project)}
    for run in runs:
        if run.command == "compute":
            _charge_compute(run, tables, ledger, costs, prices)
        elif run.command == "training_frame" and run.model in models:
            model = models[run.model]
            model.serving += _cpu_cost(run.cpu_seconds, prices)
            model.training_frames += 1
            model.rows_served += run.rows_served or 0
        else:  # apply, materialize, frames of ad-hoc features: charged to what they served
            ledger.charge(run.features, "serving", _cpu_cost(run.cpu_seconds, prices))


def _charge_storage(project: Project, every_run: list[Run], ledger: _Ledger,
                    costs: dict[str, TableCost], prices: CostConfig, months: float) -> None:
    """Each table's newest size in the log, kept for the whole period."""
    newest: dict[str, int] = {}
    for run in every_run:
        for written in run.tables:
            newest[written.name] = written.bytes
    tables = {t.name: t for t in table_specs(project)}
    for name, size in sorted(newest.items()):
        amount = size / 1e9 * prices.storage_gb_month * months
        if name not in tables:
            ledger.retired += amount
            continue
        costs[name].storage, costs[name].bytes = amount, size
        ledger.charge(list(tables[name].features), "storage", amount)


def _feature_users(project: Project) -> dict[str, list[str]]:
    """Per metric and score: the models using it, directly or through other features."""
    graph = build_lineage(project)
    users = {}
    for kind, names in (("metric", project.metrics), ("score", project.scores)):
        for name in names:
            users[name] = sorted({split_id(m)[1] for m in graph.models_using(node_id(kind,
                                                                                        name))})
    return users


def _model_costs(project: Project, users: dict[str, list[str]], prices: CostConfig,
                 months: float) -> dict[str, ModelCost]:
    out = {}
    for name, model in sorted(project.models.items()):
        shared = [f for f in model.features if len(users.get(f, [])) > 1]
        out[name] = ModelCost(
            name, model.owner, list(model.features), shared,
            [f for f in model.features if f not in shared],
            maintenance=model.maintenance_hours_per_month * months * prices.maintenance_hour)
    return out


def _spread_to_models(ledger: _Ledger, users: dict[str, list[str]],
                      models: dict[str, ModelCost]) -> None:
    for feature, kinds in ledger.by_feature.items():
        readers = users.get(feature, [])
        for kind, amount in kinds.items():
            for reader in readers:
                model = models[reader]
                setattr(model, kind, getattr(model, kind) + amount / len(readers))


def _usage(models: dict[str, ModelCost], every_run: list[Run]) -> None:
    for run in every_run:
        if run.command == "training_frame" and run.model in models:
            models[run.model].last_used = run.time.isoformat(timespec="seconds")


def _duplicates(project: Project, feature_cost: dict[str, float]) -> list[dict[str, Any]]:
    """Each group of definitions computing the same thing, with what the copies cost."""
    out = []
    for group in reuse_report(project).duplicates:
        out.append({"names": group.names, "owners": group.owners, "models": group.models,
                    "cost_of_copies": sum(feature_cost.get(n, 0.0) for n in group.names[1:])})
    return out


def parse_period(text: str) -> timedelta:
    """A period such as `90d` or `12w`; a UsageError naming the `since` option otherwise."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"since: {exc}", option="since") from None


def portfolio(project: Project, since: timedelta | str = timedelta(days=90),
              until: datetime | None = None) -> Portfolio:
    """The portfolio of the project over the `since` period ending at `until` (now)."""
    since = parse_period(since) if isinstance(since, str) else since
    until = until or now()
    start = until - since
    prices = load_config(project.root).config.cost
    months = since.total_seconds() / 86400.0 / DAYS_PER_MONTH
    every_run = [r for r in read_runs(project.root) if r.time <= until]
    runs = [r for r in every_run if r.time >= start]
    users = _feature_users(project)
    models = _model_costs(project, users, prices, months)
    ledger = _Ledger(set(users))
    costs = {t.name: TableCost(t.name, list(t.features), sorted(
        {m for f in t.features for m in users.get(f, [])})) for t in table_specs(project)}
    _charge_runs(project, runs, ledger, costs, models, prices)
    _charge_storage(project, every_run, ledger, costs, prices, months)
    _spread_to_models(ledger, users, models)
    _usage(models, every_run)
    for name, model in models.items():
        outcome = project.models[name].outcome
        if outcome:
            model.outcome = outcome_trend(project, outcome, start, until)
    measured = measured_cost(runs, every_run, prices, months)
    return _assemble(project, start, until, prices, runs, measured, models, costs, ledger,
                     users)


def measured_cost(runs: list[Run], every_run: list[Run], prices: CostConfig,
                  months: float) -> dict[str, float]:
    """What the log measured, before any attribution: the CPU of the period's runs
    (compute, and serving: apply, materialize, frames) and the newest size of every table
    the log has seen, kept for the period."""
    compute = sum(max(r.cpu_seconds, sum(t.cpu_seconds for t in r.tables))
                  for r in runs if r.command == "compute")
    serving = sum(r.cpu_seconds for r in runs if r.command != "compute")
    newest = {t.name: t.bytes for r in every_run for t in r.tables}
    out = {"compute": _cpu_cost(compute, prices), "serving": _cpu_cost(serving, prices),
           "storage": sum(newest.values()) / 1e9 * prices.storage_gb_month * months}
    out["total"] = out["compute"] + out["serving"] + out["storage"]
    return out


def _assemble(project: Project, start: datetime, until: datetime, prices: CostConfig,
              runs: list[Run], measured: dict[str, float], models: dict[str, ModelCost],
              costs: dict[str, TableCost],
              ledger: _Ledger, users: dict[str, list[str]]) -> Portfolio:
    feature_cost = {f: sum(k.values()) for f, k in ledger.by_feature.items()}
    table_of = {f: t.name for t in table_specs(project) for f in t.features}
    return Portfolio(
        start, until, prices.currency, measured,
        models=sorted(models.values(), key=lambda m: (-m.total, m.name)),
        tables=sorted(costs.values(), key=lambda t: (-t.cost, t.name)),
        unused_features=[FeatureCost(f, table_of.get(f), feature_cost.get(f, 0.0))
                         for f in sorted(users) if not users[f]],
        unused_models=sorted(m.name for m in models.values() if m.training_frames == 0),
        retired_cost=ledger.retired, duplicates=_duplicates(project, feature_cost),
        sharing_saved=sum(t.cost * (len(t.readers) - 1) for t in costs.values() if t.readers),
        runs=len(runs))
