"""`tally portfolio`: a thin wrapper over tally.catalog.search.portfolio (the figures are
explained in docs/portfolio.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from tally.catalog.errors import UsageError
from tally.cli.common import JsonOption, current_project, err, print_json


def _out(line: str = "") -> None:
    sys.stdout.write(line.rstrip() + "\n")


def _money(value: float, currency: str) -> str:
    """Two decimals, or six below 1 (a small demo costs fractions
    of a cent)."""
    shown = f"{value:,.2f}" if abs(value) >= 1 or value == 0 else f"{value:.6f}"
    return f"{shown} {currency}"


def _trend(outcome: Any) -> str:
    if outcome is None:
        return "-"
    if outcome.change is None:
        return f"{outcome.metric}: {outcome.note or 'no trend'}"
    rel = outcome.relative_change
    pct = f" ({rel:+.1%})" if rel is not None else ""
    shown = f"{outcome.metric} {outcome.first_mean:.4g} -> {outcome.last_mean:.4g}{pct}"
    return f"{shown} ({outcome.note})" if outcome.note else shown


def _models_table(report: Any) -> None:
    cur = report.currency
    rows = [("model", "features (shared/excl.)", "compute+storage", "serving", "maintenance",
             "total", "frames", "rows served", "last used", "outcome trend")]
    for m in report.models:
        rows.append((m.name, f"{len(m.features)} ({len(m.shared)}/{len(m.exclusive)})",
                     _money(m.compute + m.storage, cur), _money(m.serving, cur),
                     _money(m.maintenance, cur), _money(m.total, cur), str(m.training_frames),
                     str(m.rows_served), m.last_used or "never", _trend(m.outcome)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        _out("  ".join([c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)] + [row[-1]]))


def _summary(report: Any) -> None:
    cur, measured = report.currency, report.measured
    _out()
    _out(f"measured over {report.since:%Y-%m-%d} .. {report.until:%Y-%m-%d} ({report.runs} runs):"
         f" compute {_money(measured['compute'], cur)}, storage "
         f"{_money(measured['storage'], cur)}, serving {_money(measured['serving'], cur)}, "
         f"total {_money(measured['total'], cur)}")
    unused = ", ".join(f"{f.name} ({_money(f.cost, cur)})" for f in report.unused_features)
    _out(f"unused features: {unused or 'none'}; their cost {_money(report.unused_cost, cur)}")
    if report.retired_cost:
        _out(f"tables no longer defined: {_money(report.retired_cost, cur)}")
    _out(f"models unused in the period (no training frame): "
         f"{', '.join(report.unused_models) or 'none'}")
    for group in report.duplicates:
        _out(f"duplicated pipeline: {', '.join(group['names'])} compute the same thing; the "
             f"copies cost {_money(group['cost_of_copies'], cur)}")
    _out(f"sharing saved: {_money(report.sharing_saved, cur)} (against every model computing "
         "its own tables)")


def portfolio(
    since: Annotated[str, typer.Option("--since", help="The period, e.g. 90d or 12w.")] = "90d",
    as_json: Annotated[bool, JsonOption] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also draw cost per model beside its outcome trend (.png).")] = None,
) -> None:
    """Per model: features (shared, exclusive), attributed cost, use and outcome trend;
    then unused features, unused models, duplicated pipelines and what sharing saved."""
    from tally.catalog.search.portfolio import parse_period, portfolio

    period = parse_period(since)
    if plot is not None and plot.suffix.lower() != ".png":
        raise UsageError(f"{plot}: give a .png file name", option="plot")
    report = portfolio(current_project(), period)
    if plot is not None:
        from tally.catalog.search.portfolio_plot import plot_portfolio

        plot_portfolio(report, plot)
        err(f"wrote the portfolio chart to {plot}")
    if as_json:
        print_json(report.to_dict())
        return
    if not report.runs:
        err("the run log has no run in this period: costs are zero until compute, apply, "
            "materialize or training-frame run")
    _models_table(report)
    _summary(report)


def register_commands(app: typer.Typer) -> None:
    app.command()(portfolio)
