"""ODCS v3: export validated by the standard's own JSON schema, round trip, import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tally.catalog.contracts.odcs import from_odcs, to_odcs
from tally.catalog.spec.loading import load_project
from tally.catalog.spec.models import Source, spec_to_yaml_dict

from tests.helpers import invoke


def _schema_validator():  # type: ignore[no-untyped-def]
    from importlib.resources import files

    import jsonschema

    schema = json.loads(files("open_data_contract_standard").joinpath("schema.json").read_text())
    assert "Open Data Contract Standard" in schema["title"]
    return jsonschema.Draft201909Validator(schema)


RICH = Source.model_validate({
    "name": "orders_feed", "description": "Orders, one row each.", "owner": "shop@example.com",
    "path": "data/orders.txt", "format": "csv", "entity": "account",
    "timestamp_field": "order_ts", "created_timestamp_field": "loaded_at",
    "tags": ["commerce", "pii"],
    "contract": {
        "freshness": "36h", "allow_extra_columns": True,
        "unique": ["account_id", "order_id"],
        "columns": {
            "account_id": {"type": "int32", "nullable": False, "min": 1},
            "order_id": {"type": "int64", "nullable": False, "min": 0, "max": 1e9},
            "order_ts": {"type": "timestamp", "nullable": False},
            "loaded_at": {"type": "timestamp"},
            "day": {"type": "date", "description": "The business day."},
            "amount": {"type": "float32", "min": -0.5, "max": 99.5},
            "ratio": {"type": "float64", "values": [0.5, 1.0]},
            "status": {"type": "string", "values": ["paid", "refunded"]},
            "flag": {"type": "bool", "values": [True]},
            "odd": {"type": "string", "min": 2},
        },
    },
})


def test_export_of_every_example_source_is_valid_odcs(
        example_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    validator = _schema_validator()
    project = load_project(example_project)
    for name in project.sources:
        result = invoke(["--project", str(example_project), "contract", "export", name], capsys)
        assert result.code == 0, result.stderr
        document = yaml.safe_load(result.stdout)
        errors = sorted(validator.iter_errors(document), key=str)
        assert errors == [], (name, [e.message for e in errors])
        assert document["apiVersion"] == "v3.2.0" and document["kind"] == "DataContract"
    logins = yaml.safe_load(invoke(["--project", str(example_project), "contract", "export",
                                    "crm_logins"], capsys).stdout)
    assert logins["team"]["members"][0] == {"username": "crm-platform@example.com",
                                            "role": "owner"}
    assert logins["slaProperties"][0]["property"] == "freshness"
    assert logins["slaProperties"][0]["value"] == 2 and logins["slaProperties"][0]["unit"] == "d"
    [obj] = logins["schema"]
    props = {p["name"]: p for p in obj["properties"]}
    assert props["seconds"]["logicalTypeOptions"]["minimum"] == 0
    assert props["user_id"]["required"] is True and props["seconds"]["required"] is False
    assert obj["quality"][0]["arguments"]["properties"] == ["account_id", "user_id", "event_ts"]


def test_rich_source_round_trips_and_validates() -> None:
    document = to_odcs(RICH)
    assert list(_schema_validator().iter_errors(json.loads(json.dumps(document)))) == []
    back = Source.model_validate(from_odcs(yaml.safe_load(yaml.safe_dump(document))))
    assert spec_to_yaml_dict(back) == spec_to_yaml_dict(RICH)
    assert back == RICH


def test_every_example_source_round_trips(example_project: Path) -> None:
    project = load_project(example_project)
    for source in project.sources.values():
        assert Source.model_validate(from_odcs(to_odcs(source))) == source


def test_export_to_file_then_import_registers_it(
        example_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "renewals.odcs.yaml"
    project = ["--project", str(example_project)]
    result = invoke([*project, "contract", "export", "renewals", "--out", str(out)], capsys)
    assert result.code == 0 and result.stdout == "" and out.is_file()
    # importing the same name clashes, like `tally register`
    clash = invoke([*project, "contract", "import", str(out)], capsys)
    assert clash.code == 1 and "already exists in metrics/renewals.yaml" in clash.stderr
    assert str(out) in clash.stderr
    # a renamed copy is a new source, validated with the project and written under metrics/
    document = yaml.safe_load(out.read_text())
    document["id"] = document["name"] = document["schema"][0]["name"] = "renewals_copy"
    out.write_text(yaml.safe_dump(document, sort_keys=False))
    before = load_project(example_project).sources["renewals"]
    imported = invoke([*project, "contract", "import", str(out)], capsys)
    assert imported.code == 0, imported.stderr
    written = example_project / "metrics" / "renewals_copy.contract.yaml"
    assert written.is_file()
    after = load_project(example_project).sources["renewals_copy"]
    assert after == before.model_copy(update={"name": "renewals_copy"})
    # --replace moves the source into its own file, leaving the rest of renewals.yaml alone
    document["id"] = document["name"] = document["schema"][0]["name"] = "renewals"
    document["slaProperties"] = [{"property": "freshness", "value": 400, "unit": "d"}]
    out.write_text(yaml.safe_dump(document, sort_keys=False))
    replaced = invoke([*project, "contract", "import", str(out), "--replace"], capsys)
    assert replaced.code == 0, replaced.stderr
    reloaded = load_project(example_project)
    assert reloaded.definitions["renewals"].file == "metrics/renewals.contract.yaml"
    assert reloaded.sources["renewals"].contract.freshness == "400d"
    assert reloaded.definitions["last_contract_value"].file == "metrics/renewals.yaml"


def test_import_of_a_foreign_contract_needs_tally_fields(
        example_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = {
        "apiVersion": "v3.0.2", "kind": "DataContract", "id": "53581432", "version": "1.0.0",
        "status": "active", "name": "Seat Counts",
        "description": {"purpose": "Seats per account."},
        "team": [{"username": "seats@example.com", "role": "owner"}],
        "servers": [{"server": "prod", "type": "local", "path": "data/seats.parquet",
                     "format": "parquet"}],
        "schema": [{"name": "seat_counts", "properties": [
            {"name": "account_id", "logicalType": "integer", "required": True},
            {"name": "seen_at", "logicalType": "timestamp"},
            {"name": "seats", "logicalType": "integer",
             "logicalTypeOptions": {"minimum": 0}},
        ]}],
    }
    assert list(_schema_validator().iter_errors(foreign)) == []
    path = tmp_path / "seats.yaml"
    path.write_text(yaml.safe_dump(foreign))
    project = ["--project", str(example_project)]
    refused = invoke([*project, "contract", "import", str(path)], capsys)
    assert refused.code == 1 and "--entity" in refused.stderr
    assert not (example_project / "metrics" / "seat_counts.contract.yaml").exists()
    done = invoke([*project, "contract", "import", str(path), "--entity", "account"], capsys)
    assert done.code == 0, done.stderr
    source = load_project(example_project).sources["seat_counts"]
    assert source.owner == "seats@example.com" and source.timestamp_field == "seen_at"
    assert source.contract is not None
    assert source.contract.columns["seats"].min == 0
    assert source.contract.columns["account_id"].nullable is False


def test_import_refuses_what_is_not_odcs(
        example_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in (example_project / "metrics").iterdir())
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v3.2.0\nkind: DataContract\nschema: 5\n")
    result = invoke(["--project", str(example_project), "contract", "import", str(bad)], capsys)
    assert result.code == 1 and "not an ODCS v3 document" in result.stderr
    assert str(bad) in result.stderr and "Traceback" not in result.stderr
    unknown = invoke(["--project", str(example_project), "contract", "export", "nope"], capsys)
    assert unknown.code == 1 and "no source named 'nope'" in unknown.stderr
    assert sorted(p.name for p in (example_project / "metrics").iterdir()) == before
