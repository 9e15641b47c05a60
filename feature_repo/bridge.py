"""Definitions -> Feast objects: one Entity per entity, one FeatureView per table, one
FeatureService per model. Used by `tally apply` and by feature_repo/definitions.py, so
`feast -c feature_repo apply` builds exactly the same registry."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from tally.catalog.spec.loading import load_project
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import TableSpec, table_owners, table_specs
from tally.catalog.store.paths import FEATURE_REPO_DIR

REPO_DIR = FEATURE_REPO_DIR.as_posix()  # kept: registry and tests import it from here
_CONTRACT_TYPES = {"int32": "Int32", "int64": "Int64", "float32": "Float32",
                   "float64": "Float64", "string": "String", "bool": "Bool",
                   "timestamp": "UnixTimestamp", "date": "UnixTimestamp"}


def _tags(**values: Any) -> dict[str, str]:
    out = {}
    for key, value in values.items():
        if value is None or value == [] or value == "":
            continue
        out[key] = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return out


def _dtype(project: Project, spec: TableSpec, feature: str) -> Any:
    from feast import types

    metric = project.metrics.get(feature)
    if metric is None:
        return types.Float64
    if metric.type == "aggregate":
        return types.Int64 if metric.aggregation in ("count", "count_distinct") else (
            types.Float64)
    if metric.type == "funnel":
        return types.Float64 if metric.measure == "rate" else types.Int64
    if metric.type == "column" and spec.source:
        source = project.sources[spec.source]
        rule = source.contract.columns.get(metric.sql) if source.contract else None
        if rule is not None:
            return getattr(types, _CONTRACT_TYPES[rule.type])
        return _dtype_from_file(project, spec, metric.sql)
    return types.Float64


def _dtype_from_file(project: Project, spec: TableSpec, column: str) -> Any:
    from feast import types

    path = spec.path(project)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        field = pq.read_schema(path).field(column).type
    except Exception:  # noqa: BLE001 - no file yet: serve as float, the safest numeric type
        return types.Float64
    if pa.types.is_integer(field):
        return types.Int64
    if pa.types.is_boolean(field):
        return types.Bool
    if pa.types.is_string(field) or pa.types.is_large_string(field):
        return types.String
    return types.Float64


def _owner_of(project: Project, spec: TableSpec) -> str:
    return ", ".join(table_owners(project, spec))


def _score_fields(project: Project, spec: TableSpec) -> list[Any]:
    """A score view also serves its band and each component's contribution."""
    from feast import Field, types
    from tally.catalog.scores.plans import served_columns

    score = project.scores[spec.features[0]]
    return [Field(name=column, dtype=types.String if kind == "string" else types.Float64,
                  description=f"{'Band' if kind == 'string' else 'Contribution'} of score "
                              f"{score.name} (docs/scores.md)",
                  tags=_tags(owner=score.owner, tally_score=score.name))
            for column, kind in served_columns(score)[1:]]


def _funnel_step_fields(project: Project, spec: TableSpec) -> list[Any]:
    """A funnel view also serves, per step, the starts counted that reached it."""
    from feast import Field, types

    name = spec.features[0]
    metric = project.metrics[name]
    return [Field(name=column, dtype=types.Int64,
                  description=f"Starts of funnel {name} counted at the snapshot that reached "
                              f"step {step} (docs/definitions.md)",
                  tags=_tags(owner=metric.owner, tally_funnel=name, tally_step=step))
            for step, column in enumerate(spec.extra_columns, start=1)]


def _batch_source_class(project: Project) -> Any:
    """FileSource, or with `engine: spark` in tally.yaml a SparkSource over the same parquet
    file (Feast's Spark offline store reads only SparkSources; docs/spark.md)."""
    from tally.catalog.sql.engines import project_engine

    if project_engine(project.root) != "spark":
        from feast import FileSource

        return FileSource
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    def spark_source(**kwargs: Any) -> Any:
        return SparkSource(file_format="parquet", **kwargs)

    return spark_source


def feast_objects(project_root: Path | str | Project) -> dict[str, Any]:
    """Every Feast object of the project, by Python name (for a definitions module)."""
    from feast import Entity, FeatureService, FeatureView, Field, ValueType

    project = project_root if isinstance(project_root, Project) else load_project(project_root)
    FileSource = _batch_source_class(project)  # noqa: N806
    entities = {
        name: Entity(
            name=name, join_keys=[e.join_key],
            value_type=ValueType.INT64 if e.value_type == "int64" else ValueType.STRING,
            description=e.description, owner=e.owner, tags=_tags(tally_tags=e.tags),
        )
        for name, e in sorted(project.entities.items())
    }
    views: dict[str, Any] = {}
    for spec in table_specs(project):
        if spec.kind == "column" and spec.source:
            source = project.sources[spec.source]
            mapping = {project.metrics[f].sql: f for f in spec.features
                       if project.metrics[f].sql != f}  # Feast refuses x->x
            batch = FileSource(
                name=f"{spec.name}_source", path=str(spec.path(project).resolve()),
                timestamp_field=source.timestamp_field,
                created_timestamp_column=source.created_timestamp_field or "",
                field_mapping=mapping, description=source.description, owner=source.owner,
            )
            description = f"Column metrics served from source {source.name}: {source.description}"
        else:
            batch = FileSource(
                name=f"{spec.name}_source", path=str(spec.path(project).resolve()),
                timestamp_field="event_timestamp", created_timestamp_column="created_timestamp",
            )
            description = (f"Tally {spec.kind} table of {spec.source or spec.entity}: "
                           + ", ".join(spec.features))
        fields = []
        for feature in spec.features:
            definition = project.get(feature)
            fspec = definition.spec if definition else None
            fields.append(Field(
                name=feature, dtype=_dtype(project, spec, feature),
                description=getattr(fspec, "description", ""),
                tags=_tags(owner=getattr(fspec, "owner", None),
                           status=getattr(fspec, "status", None),
                           version=getattr(fspec, "version", None),
                           tally_tags=getattr(fspec, "tags", None)),
            ))
        if spec.kind == "score":
            fields += _score_fields(project, spec)
        elif spec.kind == "funnel":
            fields += _funnel_step_fields(project, spec)
        ttl = spec.ttl(project)
        views[spec.name] = FeatureView(
            name=spec.name, entities=[entities[spec.entity]], ttl=ttl or timedelta(0),
            schema=fields, source=batch, online=True, description=description,
            owner=_owner_of(project, spec),
            tags=_tags(tally_kind=spec.kind, tally_source=spec.source),
        )
    services = {}
    view_of = {field.name: name for name, view in views.items() for field in view.schema}
    for name, model in sorted(project.models.items()):
        projections = []
        for view_name in sorted({view_of[f] for f in model.features if f in view_of}):
            wanted = [f for f in model.features if view_of.get(f) == view_name]
            projections.append(views[view_name][wanted])
        services[name] = FeatureService(
            name=name, features=projections, description=model.description, owner=model.owner,
            tags=_tags(status=model.status, version=model.version, tally_tags=model.tags),
        )
    objects: dict[str, Any] = {}
    objects.update({f"entity_{k}": v for k, v in entities.items()})
    objects.update({f"view_{k}": v for k, v in views.items()})
    objects.update({f"service_{k}": v for k, v in services.items()})
    return objects
