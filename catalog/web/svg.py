"""Inline SVG drawings of the web catalog: the lineage graph around one entry, a metric's
distribution over recent snapshots and a score's waterfall. Every text is escaped; links
are relative (`prefix` leads back to the site root) so the static build works from files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape
from tally.catalog.scores.explain import Explanation
from tally.catalog.search.distribution import Distribution
from tally.catalog.search.lineage import Lineage, sort_ids, split_id, walk

NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 182, 34, 30, 12, 8
MAX_NODES = 40
_LABEL_CHARS = 26


def neighbourhood(graph: Lineage, ident: str) -> set[str]:
    """Everything upstream and downstream of `ident`; just its direct neighbours when that
    is more than MAX_NODES (an entity reaches the whole project)."""
    nodes = {ident, *walk(ident, lambda i: graph.up.get(i, ())),
             *graph.transitive_down(ident)}
    if len(nodes) > MAX_NODES:
        nodes = {ident, *graph.up.get(ident, ()), *graph.down.get(ident, ())}
    return nodes


def _layers(graph: Lineage, nodes: set[str]) -> list[list[str]]:
    """Columns left to right: a node sits one column right of its furthest upstream."""
    depth: dict[str, int] = {}

    def depth_of(ident: str, seen: frozenset[str] = frozenset()) -> int:
        if ident not in depth:
            ups = [u for u in graph.up.get(ident, ()) if u in nodes and u not in seen]
            depth[ident] = 1 + max((depth_of(u, seen | {ident}) for u in ups), default=-1)
        return depth[ident]

    columns: dict[int, list[str]] = {}
    for ident in nodes:
        columns.setdefault(depth_of(ident), []).append(ident)
    return [sort_ids(columns[i]) for i in sorted(columns)]


def _label(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[:_LABEL_CHARS - 1] + "…"


def lineage_svg(graph: Lineage, ident: str, href: Callable[[str, str], str]) -> Markup:
    """The lineage around `ident` as an SVG graph; each node links to its entry page
    (`href(kind, name)`)."""
    layers = _layers(graph, neighbourhood(graph, ident))
    tallest = max(len(column) for column in layers)
    width = PAD * 2 + len(layers) * NODE_W + (len(layers) - 1) * COL_GAP
    height = PAD * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP
    where: dict[str, tuple[float, float]] = {}
    for col, column in enumerate(layers):
        top = PAD + (height - 2 * PAD - (len(column) * (NODE_H + ROW_GAP) - ROW_GAP)) / 2
        for row, node in enumerate(column):
            where[node] = (PAD + col * (NODE_W + COL_GAP), top + row * (NODE_H + ROW_GAP))
    parts = [f'<svg class="lineage" role="img" aria-label="lineage of {escape(ident)}" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             'xmlns="http://www.w3.org/2000/svg">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#778"/>'
             '</marker></defs>']
    for node, (x, y) in where.items():
        for down in sorted(graph.down.get(node, ())):
            if down in where:
                tx, ty = where[down]
                x1, y1, y2 = x + NODE_W, y + NODE_H / 2, ty + NODE_H / 2
                mid = (x1 + tx) / 2
                parts.append(f'<path class="edge" d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} '
                             f'{mid:.0f},{y2:.0f} {tx - 2:.0f},{y2:.0f}" fill="none" '
                             'stroke="#778" marker-end="url(#arrow)"/>')
    for node, (x, y) in where.items():
        kind, name = split_id(node)
        current = " current" if node == ident else ""
        parts.append(
            f'<a href="{escape(href(kind, name))}" class="node kind-{escape(kind)}{current}" '
            f'data-id="{escape(node)}"><title>{escape(kind)} {escape(name)}</title>'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="{x + 8:.0f}" y="{y + 13:.0f}" class="kind">{escape(kind)}</text>'
            f'<text x="{x + 8:.0f}" y="{y + 27:.0f}" class="name">{escape(_label(name))}'
            '</text></a>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _scale(values: Sequence[float], low: float, high: float) -> Callable[[float], float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        hi, lo = hi + 1, lo - 1
    return lambda v: high - (v - lo) / (hi - lo) * (high - low)


def distribution_svg(dist: Distribution, width: int = 560, height: int = 180) -> Markup:
    """p10..p90 as a band and the median as a line, one point per snapshot."""
    points = [s for s in dist.snapshots if s.p50 is not None]
    if not points:
        return Markup('<p class="muted">no values in the recent snapshots</p>')
    left, right, top, bottom = 56, width - 10, 10, height - 28
    values = [v for s in points for v in (s.p10, s.p90, s.p50) if v is not None]
    y = _scale(values, top, bottom)
    step = (right - left) / max(len(points) - 1, 1)

    def x(i: int) -> float:
        return left + i * step if len(points) > 1 else (left + right) / 2

    upper = [f"{x(i):.1f},{y(s.p90 or 0):.1f}" for i, s in enumerate(points)]
    lower = [f"{x(i):.1f},{y(s.p10 or 0):.1f}" for i, s in reversed(list(enumerate(points)))]
    median = [f"{x(i):.1f},{y(s.p50 or 0):.1f}" for i, s in enumerate(points)]
    lo, hi = min(values), max(values)
    parts = [f'<svg class="distribution" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" '
             f'aria-label="distribution of {escape(dist.name)}">',
             f'<polygon class="band" points="{" ".join(upper + lower)}"/>',
             f'<polyline class="median" fill="none" points="{" ".join(median)}"/>',
             f'<text x="4" y="{y(hi) + 4:.0f}" class="axis">{hi:.4g}</text>',
             f'<text x="4" y="{y(lo) + 4:.0f}" class="axis">{lo:.4g}</text>',
             f'<text x="{left}" y="{height - 8}" class="axis">'
             f'{escape(points[0].snapshot[:10])}</text>',
             f'<text x="{right}" y="{height - 8}" class="axis" text-anchor="end">'
             f'{escape(points[-1].snapshot[:10])}</text>']
    for i, s in enumerate(points):
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(s.p50 or 0):.1f}" r="2"><title>'
                     f'{escape(s.snapshot[:10])}: median {s.p50:.4g}, p10 {s.p10:.4g}, '
                     f'p90 {s.p90:.4g}, {s.count} entities</title></circle>')
    parts.append("</svg>")
    return Markup("".join(parts))


def waterfall_svg(explanation: Explanation, width: int = 640, height: int = 240) -> Markup:
    """Each component's contribution stacked on the previous ones, then the score; the
    hatched part above a bar is its shortfall (what it could still add)."""
    comps = explanation.components
    slots = len(comps) + 1
    left, top, bottom = 40, 10, height - 60
    slot = (width - left - 80) / slots

    def y(v: float) -> float:
        return bottom - v / 100 * (bottom - top)

    parts = [f'<svg class="waterfall" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" '
             f'aria-label="waterfall of {escape(explanation.score)}">',
             '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" '
             'stroke="#c0504d"/></pattern></defs>']
    for band, (lo, _) in explanation.bands.items():
        parts.append(f'<line class="band-edge" x1="{left}" x2="{width - 10}" y1="{y(lo):.1f}" '
                     f'y2="{y(lo):.1f}"/><text class="axis" x="2" y="{y(lo) - 2:.1f}">'
                     f'{escape(band)}</text>')
    running = 0.0
    for i, c in enumerate(comps):
        x0 = left + i * slot + slot * 0.15
        bar = f'x="{x0:.1f}" width="{slot * 0.7:.1f}"'
        reached = running + c.contribution
        could = reached + max(c.share - c.contribution, 0.0)
        parts.append(f'<rect class="gap" {bar} y="{y(could):.1f}" '
                     f'height="{y(reached) - y(could):.1f}" fill="url(#hatch)"/>')
        parts.append(f'<rect class="contribution" {bar} y="{y(running + c.contribution):.1f}" '
                     f'height="{y(running) - y(running + c.contribution):.1f}"><title>'
                     f'{escape(c.metric)}: +{c.contribution:.2f} of {c.share:.2f}</title></rect>')
        parts.append(_slot_label(x0 + slot * 0.35, bottom, c.metric))
        running += c.contribution
    x0 = left + len(comps) * slot + slot * 0.15
    parts.append(f'<rect class="total" x="{x0:.1f}" width="{slot * 0.7:.1f}" '
                 f'y="{y(explanation.value):.1f}" height="{bottom - y(explanation.value):.1f}"/>')
    parts.append(f'<text class="value" x="{x0 + slot * 0.35:.1f}" '
                 f'y="{y(explanation.value) - 3:.1f}" text-anchor="middle">'
                 f'{explanation.value:.1f}</text>')
    parts.append(_slot_label(x0 + slot * 0.35, bottom, explanation.score))
    parts.append("</svg>")
    return Markup("".join(parts))


def _slot_label(x: float, bottom: float, text: str) -> str:
    return (f'<text class="axis" transform="translate({x:.1f},{bottom + 12:.0f}) rotate(20)">'
            f'{escape(_label(text))}</text>')

