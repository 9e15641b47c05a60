"""Why an entity got its score (`tally explain`) and who is outside the healthy band, by
the component that pulls them down most (`tally segments`).

Both read the computed score table (data/tables/score_<name>.parquet) with DuckDB: it holds
each component's raw value, normalised value and contribution as computed together, so an
explanation always matches the score it explains. No Feast, no pandas.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from tally.catalog.errors import DataError, LookupFailedError, UsageError
from tally.catalog.scores.plans import (
    band_column,
    challenge_of,
    component_labels,
    contribution_column,
    norm_column,
    ordered_bands,
    presence,
    shortfalls,
    top_band,
    value_column,
    weight_shares,
)
from tally.catalog.spec.models import Score, ScoreComponent
from tally.catalog.spec.moments import parse_moment
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import funnel_step_column, table_specs, tables_by_feature
from tally.catalog.sql.duck import parquet_scan

EXAMPLES = 5


def _score(project: Project, name: str) -> tuple[Score, Path]:
    score = project.scores.get(name)
    if score is None:
        known = ", ".join(sorted(project.scores)) or "none"
        raise LookupFailedError(f"unknown score {name!r}; scores: {known}")
    spec = tables_by_feature(table_specs(project))[name]
    path = spec.path(project)
    if not path.exists():
        raise DataError(f"score {name} is not computed yet ({path} is missing); compute "
                        f"its table first (`metrics` = [{name!r}])", mentions=("metrics",))
    return score, path


def _con() -> Any:
    from tally.catalog.sql.duck import connect

    return connect(None)


def _rows(con: Any, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    try:
        cursor = con.execute(sql, params)
    except Exception as exc:  # duckdb raises a family of its own errors
        raise DataError(f"reading the score table: {str(exc).strip().splitlines()[0]}"
                        ) from None
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _key(project: Project, score: Score, raw: str | int) -> str | int:
    entity = project.entities[score.entity]
    if entity.value_type == "string":
        return str(raw)
    try:
        return int(str(raw).strip())
    except ValueError:
        raise UsageError(f"{raw!r}: {entity.join_key} of {entity.name} is an integer",
                         option="entity") from None


def _iso(value: Any) -> str | None:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else None


def _delta(now: Any, before: Any) -> float | None:
    return None if now is None or before is None else float(now) - float(before)


@dataclass
class ComponentExplanation:
    metric: str
    weight: float
    share: float  # 100 * weight / denominator: the most it can contribute
    raw_value: float | None
    normalised: float | None
    contribution: float
    shortfall: float | None
    previous_raw_value: float | None = None
    previous_normalised: float | None = None
    previous_contribution: float | None = None
    raw_change: float | None = None
    normalised_change: float | None = None
    contribution_change: float | None = None
    transform: str | None = None
    direction: str = "higher_is_better"
    normalize: str = "percentile"
    # a funnel component: the entity's starts counted at the snapshot that reached each
    # step (`<metric>__step_i`); None when its funnel table has no row there
    funnel_steps: list[int] | None = None


@dataclass
class Explanation:
    score: str
    entity: str
    join_key: str
    key: str | int
    snapshot: str
    value: float
    band: str | None
    missing: str
    challenge: str | None
    previous_snapshot: str | None = None
    previous_value: float | None = None
    previous_band: str | None = None
    change: float | None = None
    bands: dict[str, tuple[float, float]] = field(default_factory=dict)
    components: list[ComponentExplanation] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _latest_rows(project: Project, score: Score, path: Path, key: Any,
                 moment: datetime | None) -> list[dict[str, Any]]:
    """The entity's newest score row at or before `moment` and the one before it, or a
    LookupFailedError saying why there is none."""
    entity = project.entities[score.entity]
    table = parquet_scan(path)
    where = f'"{entity.join_key}" = ?'
    params: list[Any] = [key]
    if moment is not None:
        where += " AND event_timestamp <= ?"
        params.append(moment)
    con = _con()
    rows = _rows(con, f"SELECT * FROM {table} WHERE {where} ORDER BY event_timestamp DESC "
                      "LIMIT 2", params)
    if rows:
        return rows
    first = _rows(con, f"SELECT min(event_timestamp) AS t FROM {table} WHERE "
                       f'"{entity.join_key}" = ?', [key])[0]["t"]
    if first is None:
        raise LookupFailedError(f"{entity.name} {entity.join_key}={key!r} has no "
                                f"{score.name}: no such {entity.name}, or none of the "
                                "score's components has a value for it")
    raise LookupFailedError(f"{entity.name} {key!r} has no {score.name} at or before "
                            f"{_iso(moment)}; its first snapshot is {_iso(first)}")


def _component(score: Score, label: str, c: ScoreComponent, now: dict[str, Any],
               before: dict[str, Any] | None, share: float,
               shortfall: float | None) -> ComponentExplanation:
    """One component's part in the score now, and its change since `before`."""
    columns = (value_column(score, label), norm_column(score, label),
               contribution_column(score, label))
    raw, norm, contribution = (now[col] for col in columns)
    item = ComponentExplanation(
        metric=c.metric, weight=c.weight, share=share, raw_value=raw,
        normalised=norm, contribution=float(contribution or 0.0),
        shortfall=shortfall, transform=c.transform, direction=c.direction,
        normalize=score.normalize_of(c),
    )
    if before is not None:
        item.previous_raw_value, item.previous_normalised, item.previous_contribution = (
            before[col] for col in columns)
        item.raw_change = _delta(raw, item.previous_raw_value)
        item.normalised_change = _delta(norm, item.previous_normalised)
        item.contribution_change = _delta(contribution, item.previous_contribution)
    return item


def explain(project: Project, score_name: str, entity_key: str | int,
            at: str | datetime | date | None = None) -> Explanation:
    """The score of one entity at the newest snapshot <= `at` (default: its newest), with
    each component's raw value, normalised value, weight, contribution and the change of
    each since the entity's previous snapshot."""
    score, path = _score(project, score_name)
    entity = project.entities[score.entity]
    key = _key(project, score, entity_key)
    rows = _latest_rows(project, score, path, key, parse_moment(at))
    now, before = rows[0], (rows[1] if len(rows) > 1 else None)
    shares = weight_shares(score, presence(score, now))
    gaps = shortfalls(score, now)
    out = Explanation(
        score=score.name, entity=entity.name, join_key=entity.join_key, key=key,
        snapshot=_iso(now["event_timestamp"]) or "", value=float(now[score.name]),
        band=now[band_column(score)], missing=score.missing, challenge=challenge_of(score, now),
        bands={name: (lo, hi) for name, lo, hi in ordered_bands(score)},
    )
    if before is not None:
        out.previous_snapshot = _iso(before["event_timestamp"])
        out.previous_value = float(before[score.name])
        out.previous_band = before[band_column(score)]
        out.change = out.value - out.previous_value
    for label, c in zip(component_labels(score), score.components, strict=True):
        out.components.append(_component(score, label, c, now, before, shares[label],
                                         gaps.get(label)))
        if project.metrics.get(c.metric) and project.metrics[c.metric].type == "funnel":
            out.components[-1].funnel_steps = _funnel_steps(project, c.metric, key,
                                                            now["event_timestamp"])
    return out


def _funnel_steps(project: Project, metric: str, key: Any, snapshot: datetime
                  ) -> list[int] | None:
    """The entity's `<metric>__step_i` at the snapshot explained, from the funnel's table."""
    spec = tables_by_feature(table_specs(project))[metric]
    path = spec.path(project)
    if not path.exists():
        return None
    funnel = project.metrics[metric]
    join_key = project.entities[funnel.entity or ""].join_key
    steps = ", ".join(f'"{funnel_step_column(metric, i)}"'
                      for i in range(1, len(funnel.steps or ()) + 1))
    rows = _rows(_con(), f"SELECT {steps} FROM {parquet_scan(path)} WHERE "
                         f'"{join_key}" = ? AND event_timestamp = ?', [key, snapshot])
    if not rows:
        return None
    return [int(v or 0) for v in rows[0].values()]


def explanation_figure(explanation: Explanation) -> Any:
    """The contributions as a waterfall chart (a matplotlib Figure): a skipped component
    (no value, `missing: skip`) is drawn as an empty dotted slot labelled "skipped", not as
    a zero; band names sit right of the plot, clear of every bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [c.metric for c in explanation.components] + [explanation.score]
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=100)
    running = 0.0
    for i, c in enumerate(explanation.components):
        if c.normalised is None:
            _draw_missing(ax, i, running, explanation.missing)
            continue
        ax.bar(i, c.contribution, bottom=running, color="#4c9f70", edgecolor="#333333")
        ax.bar(i, max(c.share - c.contribution, 0.0), bottom=running + c.contribution,
               color="none", edgecolor="#c0504d", hatch="//", linewidth=0.8)
        ax.text(i, running + max(c.share, c.contribution) + 1, f"+{c.contribution:.1f}",
                ha="center", va="bottom", fontsize=8)
        running += c.contribution
    total = len(explanation.components)
    ax.bar(total, explanation.value, color="#2f5597", edgecolor="#333333")
    ax.text(total, explanation.value + 1, f"{explanation.value:.1f}", ha="center",
            va="bottom", fontsize=9, fontweight="bold")
    for band, (lo, _) in explanation.bands.items():
        if lo > 0:
            ax.axhline(lo, color="#888888", linestyle="--", linewidth=0.8)
        # in axes coordinates along x: right of the plot area, whatever the bars' heights
        ax.text(1.01, lo + 1, band, fontsize=7, color="#555555", ha="left", va="bottom",
                transform=ax.get_yaxis_transform(), clip_on=False)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("points (0..100)")
    ax.set_title(f"{explanation.score} of {explanation.entity} {explanation.key} at "
                 f"{explanation.snapshot[:10]}: {explanation.value:.1f} "
                 f"({explanation.band or 'no band'}); hatched = shortfall", fontsize=10)
    fig.tight_layout()
    return fig


def _draw_missing(ax: Any, i: int, running: float, policy: str) -> None:
    """A component without a value: skipped (re-weighted away) or counted as zero."""
    ax.bar(i, 6, bottom=running, color="none", edgecolor="#999999", linestyle=":",
           linewidth=1.0)
    ax.text(i, running + 7, "skipped" if policy == "skip" else "missing = 0", ha="center",
            va="bottom", fontsize=8, color="#777777", style="italic")


def plot_explanation(explanation: Explanation, out: Path | str) -> Path:
    """The waterfall chart of explanation_figure, written atomically as a PNG."""
    from tally.catalog.store.fsutil import write_figure

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"{out}: give a .png file name", option="plot")
    fig = explanation_figure(explanation)
    write_figure(fig, out)
    return out


@dataclass
class ChallengeGroup:
    challenge: str
    count: int
    share: float  # of the entities outside the healthy band
    mean_score: float
    mean_shortfall: float
    bands: dict[str, int]
    examples: list[str | int]


@dataclass
class Segments:
    score: str
    snapshot: str
    healthy_band: str
    entities: int
    outside: int
    bands: dict[str, int]
    groups: list[ChallengeGroup]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def segments(project: Project, score_name: str,
             at: str | datetime | date | None = None) -> Segments:
    """Every entity outside the healthy band at the newest snapshot <= `at`, grouped by the
    component with the largest shortfall (share - contribution); biggest groups first,
    examples the lowest scores."""
    score, path = _score(project, score_name)
    healthy = top_band(score)
    if healthy is None:
        raise LookupFailedError(f"score {score.name} has no bands, so no healthy band; add "
                                "`bands:` to its definition")
    key = project.entities[score.entity].join_key
    moment = parse_moment(at)
    table = parquet_scan(path)
    con = _con()
    found = _rows(con, f"SELECT max(event_timestamp) AS t FROM {table}" + (
        " WHERE event_timestamp <= ?" if moment else ""), [moment] if moment else [])[0]["t"]
    if found is None:
        raise LookupFailedError(f"{score.name} has no snapshot" + (
            f" at or before {_iso(moment)}" if moment else "") + " (is the table empty?)")
    rows = _rows(con, f"SELECT * FROM {table} WHERE event_timestamp = ? ORDER BY "
                      f'"{score.name}", "{key}"', [found])
    bands = {name: 0 for name, _, _ in ordered_bands(score)}
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        band = row[band_column(score)]
        bands[band] = bands.get(band, 0) + 1
        if band == healthy:
            continue
        groups.setdefault(challenge_of(score, row) or "none", []).append(row)
    outside = sum(len(members) for members in groups.values())
    result = []
    for challenge, members in groups.items():
        member_bands: dict[str, int] = {}
        for row in members:
            member_bands[row[band_column(score)]] = member_bands.get(
                row[band_column(score)], 0) + 1
        gaps = [shortfalls(score, row).get(challenge, 0.0) for row in members]
        result.append(ChallengeGroup(
            challenge=challenge, count=len(members), share=len(members) / outside,
            mean_score=sum(float(r[score.name]) for r in members) / len(members),
            mean_shortfall=sum(gaps) / len(gaps), bands=member_bands,
            examples=[r[key] for r in members[:EXAMPLES]],
        ))
    result.sort(key=lambda g: (-g.count, g.challenge))
    return Segments(score=score.name, snapshot=_iso(found) or "", healthy_band=healthy,
                    entities=len(rows), outside=outside, bands=bands, groups=result)
