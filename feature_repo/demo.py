"""`tally demo`: the whole flow on generated adoption data, end to end."""

from __future__ import annotations

import importlib.resources
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from tally.catalog.errors import TallyError
from tally.catalog.spec.loading import load_project
from tally.catalog.spec.project import Project
from tally.catalog.spec.sample_data import SAMPLE_PATH
from tally.feature_repo.scaffold import init_project

MARKER = ".tally-demo"
EXAMPLE = Path(str(importlib.resources.files("tally.example")))


@dataclass
class Step:
    name: str
    seconds: float
    summary: str


@dataclass
class DemoReport:
    root: Path
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _fresh_folder(root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise TallyError(f"{root} exists and is not a tally demo folder; give an empty or "
                             "new folder")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)


def _score_notes(project: Project, report: DemoReport) -> str:
    """Band counts and the biggest adoption-challenge groups of each score (newest snapshot)."""
    from tally.catalog.scores.explain import segments

    summaries = []
    for name in sorted(n for n, s in project.scores.items() if s.bands):
        result = segments(project, name)
        bands = ", ".join(f"{band} {count:,}" for band, count in result.bands.items())
        summaries.append(f"{name}: {bands}")
        report.notes.append(f"{name} at {result.snapshot[:10]}: {bands}")
        for group in result.groups[:3]:
            examples = ", ".join(map(str, group.examples[:3]))
            report.notes.append(f"  outside {result.healthy_band}, held back by "
                                f"{group.challenge}: {group.count:,} (e.g. {examples})")
        if result.groups:
            report.notes.append(f"  try `tally -p {project.root} explain {name} --entity "
                                f"{result.groups[0].examples[0]} --plot score.png`")
    return "; ".join(summaries) or "no scores"


def _funnel_notes(project: Project, report: DemoReport) -> str:
    """Each funnel's starts, reach per step and rate at its newest snapshot."""
    from tally.catalog.search.funnel_report import funnel_report

    summaries = []
    for name in sorted(n for n, m in project.metrics.items()
                       if m.type == "funnel" and not project.is_version_copy(n)):
        result = funnel_report(project, name)
        reach = " -> ".join(f"{s.reached:,}" for s in result.steps)
        rate = "-" if result.rate is None else f"{result.rate:.0%}"
        summaries.append(f"{name}: {reach} ({rate})")
        report.notes.append(f"{name} at {result.snapshot[:10]}: {result.starts:,} starts, "
                            f"reach per step {reach}, rate {rate}; try `tally -p "
                            f"{project.root} funnel {name} --plot funnel.png`")
    return "; ".join(summaries) or "no funnels"


def _portfolio_note(project: Project, report: DemoReport) -> str:
    """What the run log of this demo measured, priced by the default costs."""
    from tally.catalog.search.portfolio import portfolio

    result = portfolio(project)
    cur = result.currency
    report.notes.append(f"portfolio: try `tally -p {project.root} portfolio --plot "
                        "portfolio.png` (docs/portfolio.md)")
    return (f"{result.runs} runs logged in .tally/runs.jsonl, measured "
            f"{result.measured['total']:.4f} {cur}; unused features cost "
            f"{result.unused_cost:.4f} {cur}; sharing saved {result.sharing_saved:.4f} {cur}")


def run_demo(root: Path, accounts: int = 3000,
             on_step: Callable[[str], None] | None = None,
             end: date | None = None) -> DemoReport:
    """The whole flow on data ending at midnight UTC of `end` (default today), checked as of
    that moment, so every command works in the project the day it is made."""
    from tally.catalog.pipeline import Gate, compute, gate
    from tally.feature_repo.demo_data import data_span, generate
    from tally.feature_repo.registry import apply
    from tally.feature_repo.serving import materialize, training_frame, write_frame

    if not EXAMPLE.is_dir():
        raise TallyError(f"the example definitions are not at {EXAMPLE}; reinstall tally "
                         "(its package data is incomplete)")
    root = Path(root).resolve()
    report = DemoReport(root)

    def step(name: str, action: Callable[[], str]) -> None:
        if on_step:
            on_step(name)
        started = time.perf_counter()
        summary = action()
        report.steps.append(Step(name, time.perf_counter() - started, summary))

    def scaffold() -> str:
        _fresh_folder(root)
        (root / MARKER).write_text("made by `tally demo`; rerunning the demo replaces it\n")
        init_project(root, name="tally_demo")
        (root / "metrics" / "example.yaml").unlink()
        (root / SAMPLE_PATH).unlink()
        for path in sorted(EXAMPLE.glob("*.yaml")):
            shutil.copy(path, root / "metrics" / path.name)
        data = generate(root / "data", accounts=accounts, end=end)
        return f"{accounts:,} accounts, {sum(data.rows.values()):,} source rows in data/"

    step("generate", scaffold)
    project = load_project(root)
    step("validate", lambda: f"{len(project.definitions)} definitions valid")
    as_of = data_span(end)[1]
    run_gate = Gate(as_of=as_of)  # the generated data ends at as_of: judge freshness there

    def check() -> str:
        result = gate(project, None, run_gate)
        return f"{len(result.sources)} source contracts pass (as of {as_of.date()})"

    step("check", check)

    def run_compute() -> str:
        results = compute(project, run_gate=run_gate).tables
        return ", ".join(f"{r.name} {r.rows:,} rows" for r in results)

    step("compute", run_compute)
    step("apply", lambda: f"{sum(1 for c in apply(project, run_gate) if c.action == 'add')} "
                          "Feast objects added to the registry")
    step("materialize", lambda: f"{len(materialize(project, run_gate=run_gate))} feature "
                                "views in the online store")

    def frame() -> str:
        import pandas as pd

        renewals = pd.read_parquet(root / "data" / "renewals.parquet")
        entities = pd.DataFrame({
            "account_id": renewals["account_id"],
            "event_timestamp": renewals["decided_ts"] - pd.Timedelta(days=30),
            "renewed": renewals["renewed"],
        })
        result = training_frame(entities, model="churn_risk", project=project)
        out = root / "churn_risk_training.parquet"
        write_frame(result, out)
        report.notes.append(f"training frame: {out} ({len(result):,} rows, label `renewed`)")
        return f"{len(result):,} rows x {len(result.columns)} columns"

    step("training-frame", frame)
    step("funnels", lambda: _funnel_notes(project, report))
    step("scores", lambda: _score_notes(project, report))
    step("portfolio", lambda: _portfolio_note(project, report))
    report.notes += [
        f"project: {root} (definitions in metrics/, tables in data/tables/)",
        f"Feast repo: {root / 'feature_repo'} (try `feast -c {root / 'feature_repo'} "
        "feature-views list`)",
    ]
    return report
