"""A corpus of bad definition files: each is refused with file, line and key; nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import invoke, tree_digest

GOOD_METRIC = """\
metrics:
  - name: new_metric
    description: A new metric.
    owner: someone@example.com
    source: crm_logins
    aggregation: sum
    expression: seconds
    window: 30d
"""


def metric_with(**changes: str) -> str:
    text = GOOD_METRIC
    for key, value in changes.items():
        lines = text.splitlines()
        def is_key(line: str, key: str = key) -> bool:
            return line.strip().removeprefix("- ").startswith(f"{key}:")

        lines = [line.split(key)[0] + f"{key}: {value}" if is_key(line) else line
                 for line in lines]
        if not any(is_key(line) for line in text.splitlines()):
            lines.append(f"    {key}: {value}")
        text = "\n".join(lines) + "\n"
    return text


GOOD_FUNNEL = """\
metrics:
  - name: login_to_send
    description: Logins followed by a campaign send within 7 days.
    owner: someone@example.com
    type: funnel
    entity: account
    steps:
      - {source: crm_logins, filter: "seconds > 5"}
      - {source: marketing_sends, filter: "emails > 0"}
    within: 7d
    window: 30d
"""


def funnel_with(old: str, new: str) -> str:
    assert old in GOOD_FUNNEL, old
    return GOOD_FUNNEL.replace(old, new)


OTHER_ENTITY = """\
entities:
  - name: person
    join_key: person_id
    description: d
    owner: o@example.com
sources:
  - name: person_events
    description: d
    owner: o@example.com
    path: data/person_events.parquet
    entity: person
    timestamp_field: ts
"""

# case id -> (file content, expected line, expected key fragment or None, message fragment)
CASES: dict[str, tuple[bytes | str, int, str | None, str]] = {
    "yaml_unclosed_flow": (GOOD_METRIC + "    tags: [a, b\n", 10, None, "YAML syntax error"),
    "yaml_bad_indent": ("metrics:\n  - name: x\n   description: y\n", 3, None, "YAML"),
    "yaml_duplicate_key": (GOOD_METRIC + "    window: 7d\n", 9, None, "duplicate"),
    "empty_file": ("", 1, None, "empty"),
    "only_comment": ("# nothing here\n", 1, None, "empty"),
    "binary_file": (b"metrics:\n\x00\x01\x02", 2, None, "binary"),
    "non_utf8": ("metrics:\n  - name: caf\xe9\n".encode("latin-1"), 2, None, "UTF-8"),
    "ten_megabytes": ("# " + "x" * 10_000_000 + "\n", 1, None, "limited to"),
    "top_level_list": ("- name: x\n", 1, None, "top level must be a mapping"),
    "metrics_not_list": ("metrics:\n  name: x\n", 1, "metrics", "must be a list"),
    "item_not_mapping": ("metrics:\n  - just a string\n", 2, "metrics[0]", "must be a mapping"),
    "unknown_top_key": ("metric:\n  - name: x\n", 1, "metric", "unknown top-level key"),
    "unknown_key": (metric_with(windw="30d"), 9, "metrics[0].windw", "unknown key"),
    "wrong_type_window": (metric_with(window="30"), 8, "metrics[0].window", "has no unit"),
    "bad_duration": (metric_with(window="30x"), 8, "metrics[0].window", "not a duration"),
    "bad_name": (metric_with(name="NewMetric"), 2, "metrics[0].name", "lower snake case"),
    "missing_description": (GOOD_METRIC.replace("    description: A new metric.\n", ""), 2,
                            "metrics[0].description", "required key is missing"),
    "owner_wrong_type": (metric_with(owner="[a, b]"), 4, "metrics[0].owner", "string"),
    "unknown_aggregation": (metric_with(aggregation="median"), 6, "metrics[0].aggregation",
                            "count"),
    "aggregate_without_window": (GOOD_METRIC.replace("    window: 30d\n", ""), 2,
                                 "metrics[0]", "needs window"),
    "version_zero": (metric_with(version="0"), 9, "metrics[0].version", "greater than"),
    "unknown_status": (metric_with(status="golden"), 9, "metrics[0].status", "draft"),
    "unknown_source": (metric_with(source="crm_logouts"), 5, "metrics[0].source",
                       "unknown source 'crm_logouts'"),
    "source_is_a_metric": (metric_with(source="crm_logins_30d"), 5, "metrics[0].source",
                           "is a metric"),
    "duplicate_name": (metric_with(name="crm_logins_30d"), 2, "metrics[0].name",
                       "already"),
    "column_not_in_contract": (metric_with(expression="duration_ms"), 7,
                               "metrics[0].expression", "'duration_ms' not among"),
    "filter_column_not_in_contract": (metric_with(filter="region = 'eu'"), 9,
                                      "metrics[0].filter", "'region' not among"),
    "star_with_sum": (metric_with(expression="'*'"), 7, "metrics[0].expression",
                      "`*` only goes with"),
    "column_metric_arithmetic": (
        "metrics:\n  - name: seats_x2\n    description: d\n    owner: o@example.com\n"
        "    type: column\n    source: crm_licenses\n    expression: seats * 2\n",
        7, "metrics[0].expression", "one source column as-is"),
    "column_metric_with_window": (
        "metrics:\n  - name: seats_w\n    description: d\n    owner: o@example.com\n"
        "    type: column\n    source: crm_licenses\n    expression: seats\n    window: 7d\n",
        8, "metrics[0].window", "does not take window"),
    "derived_unknown_input": (
        "metrics:\n  - name: ratio_x\n    description: d\n    owner: o@example.com\n"
        "    type: derived\n    expression: crm_logins_30d / nullif(no_such_metric, 0)\n",
        6, "metrics[0].expression", "unknown metric 'no_such_metric'"),
    "derived_cycle": (
        "metrics:\n  - name: loop_a\n    description: d\n    owner: o@example.com\n"
        "    type: derived\n    expression: loop_b + 1\n"
        "  - name: loop_b\n    description: d\n    owner: o@example.com\n"
        "    type: derived\n    expression: loop_a + 1\n",
        6, "metrics[0].expression", "cycle"),
    "derived_mixed_grains": (
        GOOD_METRIC.replace("window: 30d", "window: 30d\n    grain: 1h") +
        "  - name: mixed\n    description: d\n    owner: o@example.com\n"
        "    type: derived\n    expression: new_metric / nullif(crm_logins_30d, 0)\n",
        14, "metrics[1].expression", "different grains"),
    "model_unknown_feature": (
        "models:\n  - name: m1\n    description: d\n    owner: o@example.com\n"
        "    features: [crm_logins_30d, nope_feature]\n",
        5, "models[0].features[1]", "unknown metric or score 'nope_feature'"),
    "model_feature_is_source": (
        "models:\n  - name: m2\n    description: d\n    owner: o@example.com\n"
        "    features:\n      - crm_logins\n",
        6, "models[0].features[0]", "is a source"),
    "score_unknown_component": (
        "scores:\n  - name: s1\n    entity: account\n    description: d\n    owner: o@ex.com\n"
        "    components:\n      - {metric: nope_metric, weight: 1}\n",
        7, "scores[0].components[0].metric", "unknown metric 'nope_metric'"),
    "score_bands_gap": (
        "scores:\n  - name: s2\n    entity: account\n    description: d\n    owner: o@ex.com\n"
        "    components:\n      - {metric: commerce_gmv_30d, weight: 1}\n"
        "    bands: {low: [0, 30], high: [40, 100]}\n",
        2, "scores[0]", "without gaps"),
    "score_negative_weight": (
        "scores:\n  - name: s3\n    entity: account\n    description: d\n    owner: o@ex.com\n"
        "    components:\n      - {metric: commerce_gmv_30d, weight: -1}\n",
        7, "scores[0].components[0].weight", "greater than 0"),
    "source_unknown_entity": (
        "sources:\n  - name: src_x\n    description: d\n    owner: o@ex.com\n"
        "    path: data/x.parquet\n    entity: customer\n    timestamp_field: ts\n",
        6, "sources[0].entity", "unknown entity 'customer'"),
    "source_path_dotdot": (
        "sources:\n  - name: src_y\n    description: d\n    owner: o@ex.com\n"
        "    path: ../../etc/passwd.csv\n    entity: account\n    timestamp_field: ts\n",
        5, "sources[0].path", "leaves the project"),
    "source_path_absolute": (
        "sources:\n  - name: src_z\n    description: d\n    owner: o@ex.com\n"
        "    path: /etc/data.parquet\n    entity: account\n    timestamp_field: ts\n",
        5, "sources[0].path", "leaves the project"),
    "contract_missing_timestamp": (
        "sources:\n  - name: src_c\n    description: d\n    owner: o@ex.com\n"
        "    path: data/c.parquet\n    entity: account\n    timestamp_field: ts\n"
        "    contract:\n      columns:\n        account_id: {type: int64}\n",
        7, "sources[0].timestamp_field", "not among the contract's columns"),
    "contract_unknown_type": (
        "sources:\n  - name: src_t\n    description: d\n    owner: o@ex.com\n"
        "    path: data/t.parquet\n    entity: account\n    timestamp_field: ts\n"
        "    contract:\n      columns:\n        account_id: {type: integer}\n"
        "        ts: {type: timestamp}\n",
        10, "sources[0].contract.columns.account_id.type", "int64"),
    # funnels
    "funnel_one_step": (funnel_with('      - {source: marketing_sends, filter: "emails > 0"}\n',
                                    ""), 7, "metrics[0].steps", "at least 2 steps"),
    "funnel_without_within": (funnel_with("    within: 7d\n", ""), 2, "metrics[0]",
                              "needs within"),
    "funnel_without_entity": (funnel_with("    entity: account\n", ""), 2, "metrics[0]",
                              "needs entity"),
    "funnel_unknown_step_source": (funnel_with("source: marketing_sends", "source: mkt"), 9,
                                   "metrics[0].steps[1].source", "unknown source 'mkt'"),
    "funnel_step_of_other_entity": (
        OTHER_ENTITY + funnel_with("source: marketing_sends", "source: person_events"),
        21, "metrics[0].steps[1].source", "about person, but the funnel is about account"),
    "funnel_step_without_filter": (funnel_with(', filter: "emails > 0"', ""), 9,
                                   "metrics[0].steps[1].filter", "required key is missing"),
    "funnel_filter_not_in_contract": (funnel_with("emails > 0", "region = 'eu'"), 9,
                                      "metrics[0].steps[1].filter", "'region' not among"),
    "funnel_filter_subquery": (funnel_with("emails > 0", "emails > (select 1)"), 9,
                               "metrics[0].steps[1].filter", "subquery"),
    "funnel_same_missing": (funnel_with("    within: 7d\n",
                                        "    within: 7d\n    same: user_id\n"),
                            11, "metrics[0].same", "'user_id' is not among"),
    "funnel_within_over_a_year": (funnel_with("within: 7d", "within: 53w"), 10,
                                  "metrics[0].within", "longer than a year"),
    "funnel_unknown_order": (funnel_with("    window: 30d\n",
                                         "    window: 30d\n    order: random\n"),
                             12, "metrics[0].order", "sequential"),
    "funnel_unknown_measure": (funnel_with("    window: 30d\n",
                                           "    window: 30d\n    measure: median\n"),
                               12, "metrics[0].measure", "rate"),
    "funnel_with_expression": (funnel_with("    window: 30d\n",
                                           "    window: 30d\n    expression: seconds\n"),
                               12, "metrics[0].expression", "does not take expression"),
    "funnel_key_on_aggregate": (metric_with(within="7d"), 9, "metrics[0].within",
                                "does not take within"),
    # refused SQL constructs
    "sql_subquery": (metric_with(expression="(select max(seconds) from crm_logins)"), 7,
                     "metrics[0].expression", "subquery"),
    "sql_semicolon": (metric_with(expression="'seconds; DROP TABLE x'"), 7,
                      "metrics[0].expression", "`;`"),
    "sql_comment": (metric_with(expression="'seconds /* hidden */'"), 7,
                    "metrics[0].expression", "comments"),
    "sql_table_function": (metric_with(expression="\"read_csv('/etc/passwd')\""), 7,
                           "metrics[0].expression", "read_csv"),
    "sql_getenv": (metric_with(filter="\"getenv('HOME') = 'x'\""), 9, "metrics[0].filter",
                   "getenv"),
    "sql_copy": (metric_with(filter="\"COPY crm TO '/tmp/x'\""), 9, "metrics[0].filter",
                 "COPY"),
    "sql_attach": (metric_with(expression="\"ATTACH 'x.db'\""), 7, "metrics[0].expression",
                   "ATTACH"),
    "sql_qualified_column": (metric_with(expression="t.seconds"), 7, "metrics[0].expression",
                             "qualified column"),
    "sql_lambda": (metric_with(expression="'list_transform([1], x -> x + 1)'"), 7,
                   "metrics[0].expression", "not allowed"),
    "sql_parameter": (metric_with(expression="'$1'"), 7, "metrics[0].expression", "parameter"),
    "sql_aggregate_inside": (metric_with(expression="sum(seconds)"), 7,
                             "metrics[0].expression", "sum()"),
    "sql_quoted_identifier_trick": (metric_with(expression="'\"seconds\"\" + 1 --\"'"), 7,
                                    "metrics[0].expression", "not"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_register_refuses_bad_file(case: str, example_project: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    content, line, key, message = CASES[case]
    bad = tmp_path / f"case_{case}.yaml"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = tree_digest(example_project)
    result = invoke(["--project", str(example_project), "register", str(bad)], capsys)
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"case_{case}.yaml:{line}" in result.stderr, result.stderr
    if key is not None:
        assert f": {key}" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    assert tree_digest(example_project) == before


@pytest.mark.parametrize("case", ["unknown_key", "sql_subquery", "derived_cycle", "non_utf8",
                                  "model_unknown_feature", "empty_file"])
def test_validate_reports_bad_file_in_project(case: str, example_project: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    content, line, key, message = CASES[case]
    bad = example_project / "metrics" / f"case_{case}.yaml"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = invoke(["--project", str(example_project), "validate"], capsys)
    assert result.code == 1
    assert f"metrics/case_{case}.yaml:{line}" in result.stderr, result.stderr
    assert message in result.stderr
    as_json = invoke(["--project", str(example_project), "validate", "--json"], capsys)
    import json

    payload = json.loads(as_json.stdout)
    assert as_json.code == 1 and payload["ok"] is False
    assert any(i["file"] == f"metrics/case_{case}.yaml" and i["line"] == line
               for i in payload["issues"])


def test_corpus_base_registers_and_its_cases_are_distinct(
        example_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The cases are the good file with something broken: the good file itself registers
    (so each case is refused for what it breaks), and no case is another's copy."""
    good = tmp_path / "good.yaml"
    good.write_text(GOOD_METRIC)
    result = invoke(["--project", str(example_project), "register", str(good)], capsys)
    assert result.code == 0, result.stderr
    assert (example_project / "metrics" / "good.yaml").read_text() == GOOD_METRIC
    good_funnel = tmp_path / "good_funnel.yaml"
    good_funnel.write_text(GOOD_FUNNEL)
    result = invoke(["--project", str(example_project), "register", str(good_funnel)], capsys)
    assert result.code == 0, result.stderr
    contents = [c if isinstance(c, bytes) else c.encode() for c, _, _, _ in CASES.values()]
    assert len(set(contents)) == len(contents)
    assert len(CASES) >= 30


def test_a_same_column_missing_from_a_shared_source_is_one_problem(
        example_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Both steps read crm_logins: the missing `same` column is reported once."""
    content = funnel_with('source: marketing_sends, filter: "emails > 0"',
                          'source: crm_logins, filter: "seconds > 9"').replace(
        "    within: 7d\n", "    within: 7d\n    same: campaign_ref\n")
    bad = tmp_path / "same.yaml"
    bad.write_text(content)
    result = invoke(["--project", str(example_project), "register", str(bad)], capsys)
    assert result.code == 1 and "'campaign_ref' is not among" in result.stderr, result.stderr
    assert result.stderr.count("metrics[0].same") == 1, result.stderr
