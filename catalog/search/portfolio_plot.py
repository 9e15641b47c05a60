"""The portfolio as a chart: cost per model (stacked by kind) beside its outcome trend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tally.catalog.errors import UsageError
from tally.catalog.search.portfolio import Portfolio
from tally.catalog.store.fsutil import write_figure

COST_COLOURS = (("compute+storage", "#2f5597"), ("serving", "#4c9f70"),
                ("maintenance", "#c0504d"))


def _cost_panel(ax: Any, report: Portfolio) -> None:
    names = [m.name for m in report.models]
    left = [0.0] * len(names)
    parts = [[m.compute + m.storage for m in report.models],
             [m.serving for m in report.models], [m.maintenance for m in report.models]]
    for (label, colour), values in zip(COST_COLOURS, parts, strict=True):
        ax.barh(names, values, left=left, color=colour, label=label)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel(f"cost over the period ({report.currency})")
    ax.legend(fontsize=7, loc="lower right")


def _outcome_panel(ax: Any, report: Portfolio) -> None:
    names = [m.name for m in report.models]
    changes = [(m.outcome.relative_change or 0.0) * 100 if m.outcome else 0.0
               for m in report.models]
    ax.barh(names, changes, color=["#4c9f70" if c >= 0 else "#c0504d" for c in changes])
    for index, model in enumerate(report.models):
        label = model.outcome.metric if model.outcome else "no outcome declared"
        if model.outcome and model.outcome.relative_change is None:
            label += " (no trend)"
        ax.text(0, index, f" {label}", va="center", fontsize=7)
    ax.axvline(0, color="#333333", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_yticks(range(len(names)), [""] * len(names))
    ax.set_xlabel("outcome change, first to last snapshot (%)")


def plot_portfolio(report: Portfolio, out: Path | str) -> Path:
    """Write the chart as a PNG (atomically); a UsageError for another file type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"{out}: give a .png file name", option="plot")
    fig, (cost_ax, outcome_ax) = plt.subplots(
        1, 2, figsize=(11, 1.2 + 0.45 * max(len(report.models), 1)), dpi=100, sharey=False)
    _cost_panel(cost_ax, report)
    _outcome_panel(outcome_ax, report)
    fig.suptitle(f"portfolio {report.since:%Y-%m-%d} .. {report.until:%Y-%m-%d}: sharing saved "
                 f"{report.sharing_saved:,.2f} {report.currency}, unused features cost "
                 f"{report.unused_cost:,.2f}", fontsize=9)
    fig.tight_layout()
    return write_figure(fig, out)
