"""Scores against a plain pandas reference of DESIGN.md "Semantics of a score", and
`tally explain` / `tally segments` on them."""

from __future__ import annotations

import json
import math
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tally.catalog.compute.runner import ComputeOptions, Computer, compute
from tally.catalog.errors import DefinitionError, LookupFailedError
from tally.catalog.spec.loading import load_project

from tests.helpers import REPO, invoke

DAY = timedelta(days=1)
EPOCH = datetime(2025, 3, 1, tzinfo=UTC)
BANDS = "{low: [0, 30], mid: [30, 60], high: [60, 100]}"
HEAD = """
entities:
  - {name: shop, join_key: shop_id, description: A shop., owner: o@x.com}
sources:
  - {name: ev, description: Events., owner: p@x.com, path: data/ev.parquet, entity: shop,
     timestamp_field: ts}
  - {name: tiers, description: Tiers., owner: p@x.com, path: data/tiers.parquet, entity: shop,
     timestamp_field: ts}
metrics:
  - {name: a_avg, description: d, owner: o@x.com, source: ev, aggregation: avg, expression: a,
     window: 1d}
  - {name: b_avg, description: d, owner: o@x.com, source: ev, aggregation: avg, expression: b,
     window: 1d}
  - {name: c_avg, description: d, owner: o@x.com, source: ev, aggregation: avg, expression: c,
     window: 1d}
  - {name: seg_max, description: d, owner: o@x.com, source: ev, aggregation: max,
     expression: seg, window: 1d}
  - {name: tier, description: d, owner: o@x.com, type: column, source: tiers,
     expression: tier, ttl: 5d}
  - {name: a_double, description: d, owner: o@x.com, type: derived, expression: a_avg * 2}
"""
SCORES = f"""
scores:
  - name: s_skip
    entity: shop
    description: d
    owner: o@x.com
    components:
      - {{metric: a_avg, weight: 0.5}}
      - {{metric: b_avg, weight: 0.3, direction: lower_is_better}}
      - {{metric: c_avg, weight: 0.2, transform: log1p}}
      - {{metric: a_double, weight: 0.1}}
    bands: {BANDS}
  - name: s_zero
    entity: shop
    description: d
    owner: o@x.com
    normalize: minmax
    missing: zero
    components:
      - {{metric: a_avg, weight: 2}}
      - {{metric: b_avg, weight: 1, direction: lower_is_better}}
      - {{metric: c_avg, weight: 1, transform: log1p, normalize: percentile}}
    bands: {BANDS}
  - name: s_mixed
    entity: shop
    description: d
    owner: o@x.com
    normalize: minmax
    components:
      - {{metric: a_avg, weight: 1, bounds: [1, 4]}}
      - {{metric: b_avg, weight: 1, normalize: percentile, segment_by: tier}}
      - {{metric: c_avg, weight: 1, transform: log1p, direction: lower_is_better,
          segment_by: seg_max}}
      - {{metric: b_avg, weight: 0.5, direction: lower_is_better, bounds: [0, 4]}}
    bands: {BANDS}
"""
COMPONENTS = {  # metric, weight, transform, lower_is_better, normalize, bounds, segment
    "s_skip": ("skip", [("a_avg", .5, None, False, "percentile", None, None),
                        ("b_avg", .3, None, True, "percentile", None, None),
                        ("c_avg", .2, "log1p", False, "percentile", None, None),
                        ("a_double", .1, None, False, "percentile", None, None)]),
    "s_zero": ("zero", [("a_avg", 2, None, False, "minmax", None, None),
                        ("b_avg", 1, None, True, "minmax", None, None),
                        ("c_avg", 1, "log1p", False, "percentile", None, None)]),
    "s_mixed": ("skip", [("a_avg", 1, None, False, "minmax", (1, 4), None),
                         ("b_avg", 1, None, False, "percentile", None, "tier"),
                         ("c_avg", 1, "log1p", True, "minmax", None, "seg_max"),
                         ("b_avg", .5, None, True, "minmax", (0, 4), None)]),
}


def _write(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _ev_rows(rng: random.Random) -> list[dict]:
    rows = []
    for day in range(10):
        for shop in range(1, 9):
            if rng.random() < 0.2:
                continue
            rows.append({"shop_id": shop, "ts": EPOCH + day * DAY + timedelta(hours=3),
                         "a": rng.choice([None, 1.0, 2.0, 2.0, 3.0, 5.0]),
                         "b": rng.choice([None, 0.0, 1.0, 1.0, 4.0]),
                         "c": rng.choice([None, 0.0, 9.0, 99.0, 9.0]),
                         "seg": rng.choice([1, 2, None])})
    # one shop alone at snapshot day 13; all equal at snapshot day 16
    rows.append({"shop_id": 9, "ts": EPOCH + 12 * DAY, "a": 3.0, "b": 1.0, "c": 9.0,
                 "seg": 1})
    for shop in (1, 2, 3):
        rows.append({"shop_id": shop, "ts": EPOCH + 15 * DAY, "a": 2.0, "b": 1.0, "c": 9.0,
                     "seg": 2})
    return rows


def _tier_rows(rng: random.Random) -> list[dict]:
    return [{"shop_id": shop, "ts": EPOCH + day * DAY, "tier": rng.choice(["free", "gold"])}
            for shop in range(1, 10) for day in (0, 3, 4, 11) if rng.random() < 0.8]


def _project(root: Path, scores: str = SCORES, seed: int = 5) -> tuple[Path, list[dict]]:
    rng = random.Random(seed)
    (root / "metrics").mkdir(parents=True)
    (root / "metrics" / "defs.yaml").write_text(HEAD + scores)
    _write(root / "data" / "ev.parquet", _ev_rows(rng), pa.schema([
        ("shop_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")), ("a", pa.float64()),
        ("b", pa.float64()), ("c", pa.float64()), ("seg", pa.int64())]))
    tiers = _tier_rows(rng)
    _write(root / "data" / "tiers.parquet", tiers, pa.schema([
        ("shop_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")), ("tier", pa.string())]))
    return root, tiers


@pytest.fixture(scope="module")
def computed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root, tiers = _project(tmp_path_factory.mktemp("scores"))
    compute(load_project(root))
    return root, tiers


# -- the reference ----------------------------------------------------------------------
def _inputs(root: Path, tiers: list[dict]) -> pd.DataFrame:
    ev = pd.read_parquet(root / "data" / "tables" / "ev_1d.parquet")
    derived = pd.read_parquet(root / "data" / "tables" / "derived_shop_1d.parquet")
    frame = ev.drop(columns="created_timestamp").merge(
        derived[["shop_id", "event_timestamp", "a_double"]], how="outer",
        on=["shop_id", "event_timestamp"])

    def tier_at(shop: int, t: pd.Timestamp) -> str | None:
        before = [r for r in tiers if r["shop_id"] == shop and r["ts"] < t]
        latest = max(before, key=lambda r: r["ts"], default=None)
        return latest["tier"] if latest and latest["ts"] >= t - 5 * DAY else None

    frame["tier"] = [tier_at(s, t) for s, t in zip(frame["shop_id"], frame["event_timestamp"],
                                                   strict=True)]
    return frame


def _reference(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    missing, components = COMPONENTS[name]
    norms, weights = [], []
    for metric, weight, transform, lower, normalize, bounds, segment in components:
        x = frame[metric].astype(float)
        if transform == "log1p":
            x = np.log1p(x)
            if bounds:
                bounds = (math.log1p(bounds[0]), math.log1p(bounds[1]))
        if lower:
            x = -x
            if bounds:
                bounds = (-bounds[1], -bounds[0])
        keys = [frame["event_timestamp"]] + ([frame[segment]] if segment else [])
        groups = x.groupby(keys, dropna=False)
        if normalize == "percentile":
            norm = groups.rank(method="average") / groups.transform("count")
        elif bounds:
            norm = (x.clip(*bounds) - bounds[0]) / (bounds[1] - bounds[0])
        else:
            low, high = groups.transform("min"), groups.transform("max")
            norm = ((x - low) / (high - low)).where(high != low, 0.5).where(x.notna())
        norms.append(norm)
        weights.append(weight)
    have = sum(n.notna() * w for n, w in zip(norms, weights, strict=True))
    denominator = have if missing == "skip" else sum(weights)
    out = frame[["shop_id", "event_timestamp"]].copy()
    out["score"] = 100 * sum(n.fillna(0) * w for n, w in zip(norms, weights, strict=True)) / (
        denominator)
    for i, (n, w) in enumerate(zip(norms, weights, strict=True)):
        out[f"contribution{i}"] = 100 * w * n.fillna(0) / denominator
        out[f"norm{i}"] = n
    out = out[have > 0]
    out["band"] = [("low" if s < 30 else "mid" if s < 60 else "high") for s in
                   out["score"].round(9)]
    return out.set_index(["shop_id", "event_timestamp"]).sort_index()


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_score_matches_reference(computed, name: str) -> None:
    root, tiers = computed
    expected = _reference(_inputs(root, tiers), name)
    got = pd.read_parquet(root / "data" / "tables" / f"score_{name}.parquet").set_index(
        ["shop_id", "event_timestamp"]).sort_index()
    assert list(got.index) == list(expected.index)
    assert np.allclose(got[name], expected["score"], rtol=0, atol=1e-8)
    assert list(got[f"{name}_band"]) == list(expected["band"])
    metrics = [c[0] for c in COMPONENTS[name][1]]
    # one column per component; a metric used again is labelled <metric>_2, _3, ...
    labels = [m if metrics[:i].count(m) == 0 else f"{m}_{metrics[:i].count(m) + 1}"
              for i, m in enumerate(metrics)]
    contribution_cols = [f"{name}__{label}_contribution" for label in labels]
    for i, column in enumerate(contribution_cols):
        assert np.allclose(got[column], expected[f"contribution{i}"], atol=1e-8), column
        norm = got[f"{name}__{labels[i]}_norm"]
        assert np.allclose(norm.fillna(-1), expected[f"norm{i}"].fillna(-1), atol=1e-12)
    assert np.allclose(got[contribution_cols].sum(axis=1), got[name], atol=1e-7)
    assert got[name].between(0, 100).all()


def test_edge_cases_in_the_data(computed) -> None:
    root, _ = computed
    skip = pd.read_parquet(root / "data" / "tables" / "score_s_skip.parquet")
    alone = skip[skip["event_timestamp"] == EPOCH + 13 * DAY]
    assert list(alone["shop_id"]) == [9]
    assert alone["s_skip__a_avg_norm"].iloc[0] == 1.0  # percentile of one entity
    assert alone["s_skip"].iloc[0] == 100.0 and alone["s_skip_band"].iloc[0] == "high"
    equal = skip[skip["event_timestamp"] == EPOCH + 16 * DAY]
    assert len(equal) == 3 and np.allclose(equal["s_skip__a_avg_norm"], 2 / 3)  # (1+2+3)/3/3
    zero = pd.read_parquet(root / "data" / "tables" / "score_s_zero.parquet")
    equal = zero[zero["event_timestamp"] == EPOCH + 16 * DAY]
    assert (equal["s_zero__a_avg_norm"] == 0.5).all()  # minmax, all equal
    # under `zero` a missing component lowers the score; under `skip` it re-weights
    missing = zero[zero["s_zero__b_avg_value"].isna() & zero["s_zero__a_avg_value"].notna()]
    assert len(missing) and (missing["s_zero__b_avg_contribution"] == 0).all()


EDGE = """
entities:
  - {name: shop, join_key: shop_id, description: A shop., owner: o@x.com}
sources:
  - {name: v, description: V., owner: p@x.com, path: data/v.parquet, entity: shop,
     timestamp_field: ts}
metrics:
  - {name: x_avg, description: d, owner: o@x.com, source: v, aggregation: avg, expression: x,
     window: 1d}
scores:
  - {name: edge_mm, entity: shop, description: d, owner: o@x.com, normalize: minmax,
     components: [{metric: x_avg, weight: 1}],
     bands: {at_risk: [0, 30], watch: [30, 60], healthy: [60, 100]}}
  - {name: edge_pct, entity: shop, description: d, owner: o@x.com,
     components: [{metric: x_avg, weight: 0.7}],
     bands: {at_risk: [0, 30], watch: [30, 60], healthy: [60, 100]}}
"""


def test_bands_at_their_edges(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "d.yaml").write_text(EDGE)
    rows = [{"shop_id": s, "ts": EPOCH, "x": x} for s, x in
            [(1, 0.0), (2, 3.0), (3, 6.0), (4, 10.0), (5, 10.0)]]
    rows.append({"shop_id": 1, "ts": EPOCH + 2 * DAY, "x": 5.0})  # alone at EPOCH + 3d
    _write(tmp_path / "data" / "v.parquet", rows, pa.schema([
        ("shop_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")), ("x", pa.float64())]))
    compute(load_project(tmp_path))
    mm = pd.read_parquet(tmp_path / "data" / "tables" / "score_edge_mm.parquet")
    first = mm[mm["event_timestamp"] == EPOCH + DAY].set_index("shop_id")
    assert list(first["edge_mm"]) == [0.0, 30.0, 60.0, 100.0, 100.0]
    assert list(first["edge_mm_band"]) == ["at_risk", "watch", "healthy", "healthy", "healthy"]
    alone = mm[mm["event_timestamp"] == EPOCH + 3 * DAY]
    assert list(alone["edge_mm"]) == [50.0] and list(alone["edge_mm_band"]) == ["watch"]
    pct = pd.read_parquet(tmp_path / "data" / "tables" / "score_edge_pct.parquet")
    first = pct[pct["event_timestamp"] == EPOCH + DAY].set_index("shop_id")
    # ranks 1, 2, 3, 4.5, 4.5 of 5
    assert np.allclose(first["edge_pct"], [20.0, 40.0, 60.0, 90.0, 90.0])
    assert list(first["edge_pct_band"]) == ["at_risk", "watch", "healthy", "healthy", "healthy"]
    from tally.catalog.scores.plans import band_of

    score = load_project(tmp_path).scores["edge_mm"]
    assert [band_of(score, v) for v in (0, 29.999, 30, 59.9, 60, 100)] == [
        "at_risk", "at_risk", "watch", "watch", "healthy", "healthy"]


def test_compute_selects_scores(computed) -> None:
    root, _ = computed
    project = load_project(root)
    only = Computer(project, ComputeOptions(metrics=["s_skip"])).selected()
    assert [t.name for t in only] == ["ev_1d", "derived_shop_1d", "score_s_skip"]
    # a component's group being recomputed pulls in the scores whose inputs all exist
    some = {t.name for t in Computer(project, ComputeOptions(metrics=["b_avg"])).selected()}
    assert {"score_s_skip", "score_s_zero", "score_s_mixed"} <= some
    with pytest.raises(LookupFailedError):
        Computer(project, ComputeOptions(metrics=["nope"])).selected()
    stats = json.loads((root / ".tally" / "tables.json").read_text())
    assert stats["score_s_skip"]["kind"] == "score" and stats["score_s_skip"]["rows"] > 0


def test_score_definitions_are_checked(tmp_path: Path) -> None:
    bad = SCORES.replace("{metric: a_avg, weight: 0.5}",
                         "{metric: a_avg, weight: 0.5, bounds: [0, 1]}")  # percentile + bounds
    bad = bad.replace("segment_by: tier", "segment_by: nowhere")
    root, _ = _project(tmp_path / "p", bad)
    with pytest.raises(DefinitionError) as info:
        load_project(root)
    text = str(info.value)
    assert "bounds go with normalize: minmax" in text and "'nowhere'" in text


# -- explain and segments ---------------------------------------------------------------
def test_explain_json_and_at(computed, capsys) -> None:
    root, _ = computed
    table = pd.read_parquet(root / "data" / "tables" / "score_s_skip.parquet")
    shop = int(table["shop_id"].value_counts().idxmax())
    mine = table[table["shop_id"] == shop].sort_values("event_timestamp")
    result = invoke(["--project", str(root), "explain", "s_skip", "--entity", str(shop),
                     "--json"], capsys)
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["snapshot"] == mine["event_timestamp"].iloc[-1].isoformat()
    assert data["value"] == pytest.approx(mine["s_skip"].iloc[-1])
    assert sum(c["contribution"] for c in data["components"]) == pytest.approx(data["value"])
    assert [c["metric"] for c in data["components"]] == ["a_avg", "b_avg", "c_avg", "a_double"]
    assert set(data["components"][0]) >= {"raw_value", "normalised", "weight", "contribution",
                                          "raw_change", "contribution_change"}
    assert data["change"] == pytest.approx(mine["s_skip"].iloc[-1] - mine["s_skip"].iloc[-2])
    # --at between snapshots picks the newest one at or before it
    at = mine["event_timestamp"].iloc[1] + timedelta(hours=5)
    result = invoke(["--project", str(root), "explain", "s_skip", "--entity", str(shop),
                     "--at", at.isoformat(), "--json"], capsys)
    data = json.loads(result.stdout)
    assert data["snapshot"] == mine["event_timestamp"].iloc[1].isoformat()
    assert data["previous_snapshot"] == mine["event_timestamp"].iloc[0].isoformat()
    text = invoke(["--project", str(root), "explain", "s_skip", "--entity", str(shop)], capsys)
    assert text.code == 0 and "a_double" in text.stdout


def test_explain_a_score_that_uses_a_metric_twice(computed, capsys) -> None:
    """s_mixed uses b_avg in two components: each keeps its own columns and share, so the
    contributions still add up to the score, and the view serves each once."""
    from tally.catalog.scores.plans import served_columns

    root, _ = computed
    table = pd.read_parquet(root / "data" / "tables" / "score_s_mixed.parquet")
    shop = int(table["shop_id"].value_counts().idxmax())
    result = invoke(["--project", str(root), "explain", "s_mixed", "--entity", str(shop),
                     "--json"], capsys)
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [c["metric"] for c in data["components"]] == ["a_avg", "b_avg", "c_avg", "b_avg"]
    assert sum(c["contribution"] for c in data["components"]) == pytest.approx(data["value"])
    served = [name for name, _ in served_columns(load_project(root).scores["s_mixed"])]
    assert len(served) == len(set(served))
    assert "s_mixed__b_avg_2_contribution" in served


@pytest.mark.parametrize("args, message", [
    (["explain", "nope", "--entity", "1"], "unknown score 'nope'"),
    (["explain", "s_skip", "--entity", "777"], "has no s_skip"),
    (["explain", "s_skip", "--entity", "1", "--at", "2000-01-01"], "at or before"),
    (["segments", "nope"], "unknown score"),
])
def test_lookup_failures_exit_1(computed, capsys, args, message) -> None:
    root, _ = computed
    result = invoke(["--project", str(root), *args, "--json"], capsys)
    assert result.code == 1 and message in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


def test_explain_plot_is_a_png(computed, capsys, tmp_path: Path) -> None:
    from PIL import Image

    root, _ = computed
    out = tmp_path / "waterfall.png"
    result = invoke(["--project", str(root), "explain", "s_zero", "--entity", "1", "--json",
                     "--plot", str(out)], capsys)
    assert result.code == 0, result.stderr
    json.loads(result.stdout)  # still only JSON on stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as image:
        assert image.size == (900, 480)
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
    assert (pixels < 200).any(axis=2).mean() > 0.02  # bars and text, not a blank canvas


def test_segments_group_by_largest_shortfall(computed, capsys) -> None:
    root, _ = computed
    result = invoke(["--project", str(root), "segments", "s_skip", "--json",
                     "--at", (EPOCH + 6 * DAY).isoformat()], capsys)
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["snapshot"] == (EPOCH + 6 * DAY).isoformat() and data["healthy_band"] == "high"
    table = pd.read_parquet(root / "data" / "tables" / "score_s_skip.parquet")
    rows = table[table["event_timestamp"] == EPOCH + 6 * DAY]
    assert data["entities"] == len(rows)
    assert data["bands"] == {b: int((rows["s_skip_band"] == b).sum()) for b in
                             ("low", "mid", "high")}
    assert data["outside"] == int((rows["s_skip_band"] != "high").sum())
    assert sum(g["count"] for g in data["groups"]) == data["outside"]
    weights = {"a_avg": .5, "b_avg": .3, "c_avg": .2, "a_double": .1}
    for group in data["groups"]:
        for shop in group["examples"]:
            row = rows[rows["shop_id"] == shop].iloc[0]
            present = {m: not pd.isna(row[f"s_skip__{m}_norm"]) for m in weights}
            total = sum(w for m, w in weights.items() if present[m])
            gaps = {m: 100 * w / total - row[f"s_skip__{m}_contribution"]
                    for m, w in weights.items() if present[m]}
            assert group["challenge"] == max(gaps, key=gaps.get)
            assert row["s_skip_band"] != "high"
    text = invoke(["--project", str(root), "segments", "s_skip"], capsys)
    assert text.code == 0 and "adoption challenge" in text.stdout


# -- served through Feast ---------------------------------------------------------------
def test_score_in_training_frame_point_in_time(tmp_path: Path) -> None:
    from tally.feature_repo.registry import apply
    from tally.feature_repo.serving import training_frame

    root, _ = _project(tmp_path / "served")
    (root / "feature_repo").mkdir()
    shutil.copy(REPO / "feature_repo" / "feature_store.yaml", root / "feature_repo")
    project = load_project(root)
    compute(project, ComputeOptions(metrics=["s_skip"]))
    apply(project)
    table = pd.read_parquet(root / "data" / "tables" / "score_s_skip.parquet")
    shop = int(table["shop_id"].value_counts().idxmax())
    mine = table[table["shop_id"] == shop].set_index("event_timestamp")["s_skip"]
    times = [mine.index[0] - timedelta(hours=1), mine.index[0], mine.index[2] + timedelta(hours=7),
             mine.index[-1] + timedelta(days=1), mine.index[-1] + timedelta(days=5)]
    entities = pd.DataFrame({"shop_id": [shop] * len(times), "event_timestamp": times,
                             "label": range(len(times))})
    frame = training_frame(entities, features=["s_skip"], project=project)
    ttl = timedelta(days=2)  # the components' window + grain
    expected = []
    for t in times:
        valid = mine[(mine.index <= t) & (mine.index >= t - ttl)]
        expected.append(valid.iloc[-1] if len(valid) else None)
    assert list(frame["label"]) == list(range(len(times)))
    got = [None if pd.isna(v) else v for v in frame["s_skip"]]
    assert got[0] is None and got[-1] is None
    assert got == pytest.approx(expected)
    from tally.feature_repo.registry import open_store

    view = open_store(project).get_feature_view("score_s_skip")
    fields = {f.name: str(f.dtype) for f in view.schema}
    assert "s_skip_band" in fields and "s_skip__a_avg_contribution" in fields


def test_explain_plot_draws_skipped_components_and_band_names_clear_of_bars(computed) -> None:
    """Issue 14: a skipped component looked like a real zero ("+0.0") and band names hid
    behind the total bar."""
    import matplotlib.pyplot as plt
    from tally.catalog.scores.explain import explain, explanation_figure

    root, _ = computed
    project = load_project(root)
    table = pd.read_parquet(root / "data" / "tables" / "score_s_skip.parquet")
    gaps = table[table["s_skip__a_avg_norm"].isna() & table["s_skip"].notna()]
    row = gaps.iloc[0]
    explanation = explain(project, "s_skip", int(row["shop_id"]),
                          row["event_timestamp"].isoformat())
    assert any(c.normalised is None for c in explanation.components)
    fig = explanation_figure(explanation)
    try:
        ax = fig.axes[0]
        texts = [t.get_text() for t in ax.texts]
        skipped = sum(c.normalised is None for c in explanation.components)
        assert texts.count("skipped") == skipped
        assert texts.count("+0.0") == sum(c.normalised is not None and c.contribution == 0
                                          for c in explanation.components)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        bars = [p.get_window_extent(renderer) for p in ax.patches]
        for text in ax.texts:
            if text.get_text() in explanation.bands:
                box = text.get_window_extent(renderer)
                assert not any(box.overlaps(bar) for bar in bars), text.get_text()
    finally:
        plt.close(fig)
