"""A funnel report as a chart: one centred horizontal bar per step, its width the starts
that reached it, labelled with the count, the share of starts and the step's conversion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tally.catalog.errors import UsageError
from tally.catalog.search.funnel_report import FunnelReport, StepReach
from tally.catalog.store.fsutil import write_figure

BAR = "#2f5597"
DROP = "#e8b4b3"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _step_label(step: StepReach) -> str:
    text = step.filter if len(step.filter) <= 38 else step.filter[:37] + "…"
    return f"{step.step}. {text}\n({step.source})"


def _draw(ax: Any, steps: list[StepReach], title: str) -> None:
    widest = max((s.reached for s in steps), default=0) or 1
    for row, step in enumerate(steps):
        previous = steps[row - 1].reached if row else step.reached
        ax.barh(row, previous, left=-previous / 2, color=DROP, height=0.7)
        ax.barh(row, step.reached, left=-step.reached / 2, color=BAR, height=0.7)
        conversion = "" if row == 0 else f", {_percent(step.from_previous)} of step {row}"
        ax.text(widest / 2 * 1.02, row, f"{step.reached:,} ({_percent(step.from_start)} of "
                f"starts{conversion})", va="center", ha="left", fontsize=8)
    ax.set_yticks(range(len(steps)), [_step_label(s) for s in steps], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-widest / 2 * 1.05, widest * 1.45)
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, fontsize=9)


def funnel_figure(report: FunnelReport) -> Any:
    """The chart as a matplotlib Figure (for notebooks): the whole funnel, then one panel
    per segment when the report has segments. Pale bars: the previous step's reach, so
    each step's drop-off shows as the pale margin around its bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"all {report.entities:,} {report.entity}s: {report.starts:,} starts, rate "
               f"{_percent(report.rate)}", report.steps)]
    panels += [(f"{report.segment_by} = "
                f"{'(no value)' if s.value is None else s.value}: {s.entities:,} {report.entity}s, "
                f"{s.starts:,} starts, rate {_percent(s.rate)}", s.steps)
               for s in report.segments]
    height = 0.6 + 0.55 * len(report.steps)
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 0.6 + height * len(panels)),
                             dpi=100, squeeze=False)
    for ax, (title, steps) in zip(axes[:, 0], panels, strict=True):
        _draw(ax, steps, title)
    same = f", same {report.same}" if report.same else ""
    fig.suptitle(f"{report.metric} at {report.snapshot[:10]} ({report.order}, within "
                 f"{report.within}{same}, starts in the trailing {report.window})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_funnel(report: FunnelReport, out: Path | str) -> Path:
    """Write the chart as a PNG (atomically); a UsageError for another file type."""

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"{out}: give a .png file name", option="plot")
    fig = funnel_figure(report)
    return write_figure(fig, out)
