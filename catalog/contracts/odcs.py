"""Open Data Contract Standard (ODCS v3) out and in, for a Tally source and its contract.

Mapping (Tally -> ODCS): name -> id/name and the one schema object; description ->
description.purpose; owner -> team member (role owner) and an email support channel;
path/format -> a `local` server; tags -> tags; each contract column -> a schema property
(logicalType + physicalType = the Tally type, required = not nullable, logicalTypeOptions
minimum/maximum, enum, unique for a one-column key); a several-column unique key -> a
schema-level `duplicateValues` quality rule; freshness -> slaProperties `freshness` on the
timestamp element. Tally-only fields (entity, timestamp fields, allow_extra_columns, min/max
of non-numeric columns) go to customProperties with vendor `tally`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tally.catalog.errors import LookupFailedError, TallyError, UsageError
from tally.catalog.spec.durations import DURATION_RE
from tally.catalog.spec.models import ColumnRule, ColumnType, Source
from tally.catalog.spec.project import Project
from tally.catalog.store.paths import METRICS_DIR

API_VERSION = "v3.2.0"
VENDOR = "tally"
_LOGICAL = {"int32": ("integer", "i32"), "int64": ("integer", "i64"),
            "float32": ("number", "f32"), "float64": ("number", "f64"),
            "string": ("string", None), "bool": ("boolean", None),
            "timestamp": ("timestamp", None), "date": ("date", None)}
_FROM_LOGICAL = {"integer": "int64", "number": "float64", "string": "string",
                 "boolean": "bool", "timestamp": "timestamp", "date": "date"}
_UNITS = {"s": "s", "sec": "s", "second": "s", "seconds": "s", "m": "m", "min": "m",
          "minute": "m", "minutes": "m", "h": "h", "hr": "h", "hour": "h", "hours": "h",
          "d": "d", "day": "d", "days": "d", "w": "w", "week": "w", "weeks": "w"}
_TYPES = set(_LOGICAL)


class OdcsError(TallyError):
    """An ODCS document Tally cannot turn into a source."""


def _custom(prop: str, value: Any) -> dict[str, Any]:
    return {"property": prop, "value": value, "vendor": VENDOR}


def _odcs_property(name: str, rule: ColumnRule, unique: list[str]) -> dict[str, Any]:
    """One contract column as an ODCS schema property."""
    logical, width = _LOGICAL[rule.type]
    prop: dict[str, Any] = {"name": name, "logicalType": logical, "physicalType": rule.type,
                            "required": not rule.nullable}
    if rule.description:
        prop["description"] = rule.description
    options: dict[str, Any] = {}
    custom = []
    if logical in ("integer", "number"):
        if width and logical == "integer":
            options["format"] = width
        if rule.min is not None:
            options["minimum"] = rule.min
        if rule.max is not None:
            options["maximum"] = rule.max
    else:
        if rule.min is not None:
            custom.append(_custom("tallyMin", rule.min))
        if rule.max is not None:
            custom.append(_custom("tallyMax", rule.max))
    if options:
        prop["logicalTypeOptions"] = options
    if rule.values is not None:
        prop["enum"] = [{"value": v} for v in rule.values]
    if unique == [name]:
        prop["unique"] = True
    if custom:
        prop["customProperties"] = custom
    return prop


def _odcs_object(source: Source) -> dict[str, Any]:
    """The source as the contract's one schema object: its columns, a compound unique key
    as a quality rule, and Tally's own fields as custom properties."""
    contract = source.contract
    columns = contract.columns if contract else {}
    unique = list(contract.unique) if contract else []
    obj: dict[str, Any] = {
        "name": source.name, "physicalName": source.path, "physicalType": "file",
        "logicalType": "object", "description": source.description,
        "properties": [_odcs_property(name, rule, unique) for name, rule in columns.items()]}
    if len(unique) > 1:
        obj["quality"] = [{"type": "library", "metric": "duplicateValues", "mustBe": 0,
                           "arguments": {"properties": unique}, "dimension": "uniqueness",
                           "description": f"rows are unique over ({', '.join(unique)})"}]
    custom = [_custom("tallyEntity", source.entity),
              _custom("tallyTimestampField", source.timestamp_field)]
    if source.created_timestamp_field:
        custom.append(_custom("tallyCreatedTimestampField", source.created_timestamp_field))
    if contract is not None:
        custom.append(_custom("tallyAllowExtraColumns", contract.allow_extra_columns))
    obj["customProperties"] = custom
    return obj


def to_odcs(source: Source) -> dict[str, Any]:
    """The source and its contract as an ODCS v3 document (a plain mapping)."""
    contract = source.contract
    doc: dict[str, Any] = {
        "apiVersion": API_VERSION, "kind": "DataContract", "id": source.name,
        "name": source.name, "version": "1.0.0", "status": "active",
        "description": {"purpose": source.description},
        "team": {"name": source.owner,
                 "members": [{"username": source.owner, "role": "owner"}]},
        "support": [{"channel": "owner", "tool": "email", "url": f"mailto:{source.owner}",
                     "scope": "issues"}],
        "servers": [{"server": "local", "type": "local", "path": source.path,
                     "format": source.file_format}],
        "schema": [_odcs_object(source)],
    }
    if source.tags:
        doc["tags"] = list(source.tags)
    if contract and contract.freshness:
        match = DURATION_RE.match(contract.freshness)
        assert match is not None
        doc["slaProperties"] = [{"property": "freshness", "value": int(match.group(1)),
                                 "unit": match.group(2),
                                 "element": f"{source.name}.{source.timestamp_field}"}]
    return doc


def export_yaml(project: Project, source_name: str) -> str:
    source = project.sources.get(source_name)
    if source is None:
        known = ", ".join(sorted(project.sources)) or "none"
        raise LookupFailedError(f"no source named {source_name!r}; the sources are: {known}")
    from open_data_contract_standard.model import OpenDataContractStandard

    return str(OpenDataContractStandard.model_validate(to_odcs(source)).to_yaml())


# -- in ------------------------------------------------------------------------------------

def _customs(items: Any) -> dict[str, Any]:
    return {c.property: c.value for c in items or [] if c.property}


def _owner(doc: Any) -> str | None:
    team = doc.team
    members = team.members if team is not None and hasattr(team, "members") else team
    for member in members or []:
        if member.username and (member.role or "").lower() in ("owner", "producer",
                                                               "data owner"):
            return str(member.username)
    for item in doc.support or []:
        if item.url and item.url.startswith("mailto:"):
            return str(item.url.removeprefix("mailto:"))
    for member in members or []:
        if member.username:
            return str(member.username)
    if team is not None and getattr(team, "name", None) and "@" in team.name:
        return str(team.name)
    return None


def _column_type(prop: Any) -> str:
    if prop.physicalType in _TYPES:
        return str(prop.physicalType)
    logical = prop.logicalType
    width = (prop.logicalTypeOptions or {}).get("format")
    if logical == "integer" and width in ("i8", "i16", "i32", "u8", "u16"):
        return "int32"
    if logical in _FROM_LOGICAL:
        return _FROM_LOGICAL[logical]
    raise OdcsError(f"property {prop.name!r}: logicalType {logical!r} has no Tally column "
                    f"type; Tally knows {', '.join(sorted(_TYPES))}")


def _freshness(doc: Any) -> str | None:
    for sla in doc.slaProperties or []:
        if (sla.property or "").lower() in ("freshness", "latency") and sla.value is not None:
            unit = _UNITS.get(str(sla.unit or "d").lower())
            try:
                amount = int(float(sla.value))
            except (TypeError, ValueError):
                amount = -1
            if unit is None or amount <= 0:
                raise OdcsError(f"slaProperties {sla.property}: {sla.value} {sla.unit} is not "
                                "a whole number of s, m, h, d or w")
            return f"{amount}{unit}"
    return None


def _parsed(document: dict[str, Any]) -> Any:
    """The document as the ODCS model, or an OdcsError naming the first problem."""
    from open_data_contract_standard.model import OpenDataContractStandard
    from pydantic import ValidationError

    try:
        return OpenDataContractStandard.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise OdcsError(f"not an ODCS v3 document: {where}: {first['msg']}") from None


def _chosen_object(doc: Any, name: str | None) -> Any:
    """The schema object that describes the source (the one named `name`, if given)."""
    if not doc.schema_:
        raise OdcsError("the contract has no schema object; Tally needs one (the source's "
                        "columns)")
    if len(doc.schema_) > 1 and name is None:
        raise OdcsError("the contract has several schema objects; pass `name` to pick one",
                        mentions=("name",))
    obj = next((o for o in doc.schema_ if name is None or o.name == name), None)
    if obj is None:
        raise OdcsError(f"no schema object named {name!r} in the contract")
    return obj


def _source_fields(doc: Any, obj: Any, custom: dict[str, Any], *, name: str | None,
                   entity: str | None, timestamp_field: str | None, path: str | None
                   ) -> dict[str, Any]:
    """The source's own fields (name, description, owner, path, entity, timestamps,
    format), options first, then the contract's."""
    server = doc.servers[0] if doc.servers else None
    source: dict[str, Any] = {
        "name": _name(name or obj.name or doc.name or doc.id),
        "description": (doc.description.purpose if doc.description and doc.description.purpose
                        else obj.description) or "",
        "owner": _owner(doc) or "",
        "path": path or (server.path if server and server.path else obj.physicalName) or "",
        "entity": entity or custom.get("tallyEntity") or "",
        "timestamp_field": timestamp_field or custom.get("tallyTimestampField") or "",
    }
    if custom.get("tallyCreatedTimestampField"):
        source["created_timestamp_field"] = custom["tallyCreatedTimestampField"]
    fmt = (server.format or "").lower() if server else ""
    inferred = "csv" if str(source["path"]).lower().endswith(".csv") else "parquet"
    if fmt in ("csv", "parquet") and fmt != inferred:
        source["format"] = fmt
    return source


def _column_rule(prop: Any) -> dict[str, Any]:
    """One schema property as a Tally column rule."""
    rule: dict[str, Any] = {"type": _column_type(prop)}
    if prop.required:
        rule["nullable"] = False
    options = prop.logicalTypeOptions or {}
    pcustom = _customs(prop.customProperties)
    for key, option, extra in (("min", "minimum", "tallyMin"), ("max", "maximum", "tallyMax")):
        value = options.get(option, pcustom.get(extra))
        if value is not None:
            rule[key] = value
    if prop.enum:
        rule["values"] = [e.value for e in prop.enum]
    if prop.description:
        rule["description"] = prop.description
    return rule


def _columns_and_key(obj: Any) -> tuple[dict[str, Any], list[str]]:
    """The column rules and the unique key (a unique property, or a duplicateValues
    quality rule over several)."""
    columns: dict[str, Any] = {}
    unique: list[str] = []
    for prop in obj.properties or []:
        if not prop.name:
            raise OdcsError("a schema property has no name")
        if prop.unique:
            unique = [prop.name]
        columns[prop.name] = _column_rule(prop)
    for quality in obj.quality or []:
        keys = (quality.arguments or {}).get("properties")
        if (quality.metric or quality.rule) == "duplicateValues" and isinstance(keys, list):
            unique = [str(k) for k in keys]
    return columns, unique


def _timestamp_from_columns(doc: Any, columns: dict[str, Any]) -> str:
    """A timestamp field the contract implies: an SLA's element, else the one timestamp
    column ("" when neither says)."""
    found = ""
    for sla in doc.slaProperties or []:
        element = (sla.element or "").split(".")[-1]
        if not found and element in columns:
            found = element
    if not found:
        stamps = [c for c, r in columns.items() if r["type"] == "timestamp"]
        if len(stamps) == 1:
            found = stamps[0]
    return found


def _contract(doc: Any, custom: dict[str, Any], columns: dict[str, Any],
              unique: list[str]) -> dict[str, Any] | None:
    contract: dict[str, Any] = {}
    freshness = _freshness(doc)
    if freshness:
        contract["freshness"] = freshness
    if columns:
        contract["columns"] = columns
    if unique:
        contract["unique"] = unique
    if custom.get("tallyAllowExtraColumns"):
        contract["allow_extra_columns"] = True
    if contract or "tallyAllowExtraColumns" in custom:
        return contract
    return None


def from_odcs(document: dict[str, Any], *, name: str | None = None,
              entity: str | None = None, timestamp_field: str | None = None,
              path: str | None = None) -> dict[str, Any]:
    """An ODCS v3 document as a Tally source definition (a YAML-ready mapping).

    Options fill what a foreign contract lacks (Tally's entity, timestamp field, path)."""
    doc = _parsed(document)
    obj = _chosen_object(doc, name)
    custom = _customs(obj.customProperties)
    source = _source_fields(doc, obj, custom, name=name, entity=entity,
                            timestamp_field=timestamp_field, path=path)
    columns, unique = _columns_and_key(obj)
    if not source["timestamp_field"]:
        source["timestamp_field"] = _timestamp_from_columns(doc, columns)
    contract = _contract(doc, custom, columns, unique)
    if contract is not None:
        source["contract"] = contract
    if doc.tags:
        source["tags"] = list(doc.tags)
    missing = [k for k in ("owner", "path", "entity", "timestamp_field", "description")
               if not source[k]]
    if missing:
        hints = [k for k in missing if k in ("entity", "timestamp_field", "path")]
        raise OdcsError(f"the contract does not say the source's {', '.join(missing)}"
                        + (f"; give {', '.join(f'`{k}`' for k in hints)}" if hints else ""),
                        mentions=hints)
    return source


def _name(raw: str | None) -> str:
    name = re.sub(r"[^a-z0-9_]", "_", (raw or "").strip().lower()).strip("_")
    if not name:
        raise OdcsError("the contract has no name; pass `name`", mentions=("name",))
    return name if re.match(r"^[a-z]", name) else f"source_{name}"


def source_yaml(source: dict[str, Any]) -> str:
    from ruamel.yaml.comments import CommentedMap
    from tally.catalog.spec.authoring import yaml_text

    data = _tidy(dict(source))
    contract = data.get("contract")
    if contract and "columns" in contract:
        columns = CommentedMap()
        for col, rule in contract["columns"].items():
            flow = CommentedMap(rule)
            flow.fa.set_flow_style()
            columns[col] = flow
        contract = dict(contract, columns=columns)
        data["contract"] = contract
    return yaml_text({"sources": [data]})


def _tidy(value: Any) -> Any:
    """Whole floats as ints (min: 0, not 0.0), recursively."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _tidy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tidy(v) for v in value]
    return value


def load_document(file: Path) -> dict[str, Any]:
    import yaml

    if not file.is_file():
        raise UsageError(f"{file}: no such file")
    try:
        data = yaml.safe_load(file.read_text("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise OdcsError(f"{file}: not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise OdcsError(f"{file}: an ODCS document is a mapping at the top level")
    return data


def import_file(root: Path, file: Path, *, replace: bool = False, name: str | None = None,
                entity: str | None = None, timestamp_field: str | None = None,
                path: str | None = None, on_wait: Any = None) -> tuple[Path, str]:
    """Turn an ODCS file into metrics/<name>.contract.yaml through the same path as `tally register`
    (validated together with the project, written atomically). Returns (path, name)."""
    from tally.catalog.spec.authoring import register_text

    try:
        source = from_odcs(load_document(file), name=name, entity=entity,
                           timestamp_field=timestamp_field, path=path)
    except OdcsError as exc:
        raise OdcsError(f"{file}: {exc.message}", option=exc.option,
                        mentions=exc.mentions) from None
    # its own file, so --replace never replaces a file holding other definitions
    file_name = f"{source['name']}.contract.yaml"
    result = register_text(root, file_name, source_yaml(source), replace=replace,
                           shown_as=f"{file} (as {METRICS_DIR}/{file_name})", on_wait=on_wait)
    return result.path, source["name"]


__all__ = ["ColumnType", "OdcsError", "export_yaml", "from_odcs", "import_file", "to_odcs"]
