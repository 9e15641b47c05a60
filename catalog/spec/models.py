"""Pydantic models for every kind of definition in a project's metrics/ YAML."""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from tally.catalog.spec.durations import parse_duration

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
# a metric or score as a reader names it: `name` (the current version) or `name@N` (pinned)
REFERENCE_PATTERN = r"^[a-z][a-z0-9_]{0,62}(@[1-9][0-9]{0,5})?$"
Reference = Annotated[str, Field(pattern=REFERENCE_PATTERN)]


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


def _duration_has_unit(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"{value} has no unit; write a duration with one, e.g. "
                         f"{value}d (units: s, m, h, d, w)")
    return value


Duration = Annotated[str, BeforeValidator(_duration_has_unit), AfterValidator(_check_duration)]
Email = Annotated[str, Field(min_length=1, max_length=320)]
Text = Annotated[str, Field(min_length=1, max_length=4000)]
Tag = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
# abbreviations and synonyms as people write them: capitals and spaces allowed (MAU, ARR,
# monthly active users); search matches them without regard to case or punctuation
Alias = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.&/+-]{0,62}$")]
Status = Literal["draft", "certified", "deprecated"]
ColumnType = Literal[
    "int32", "int64", "float32", "float64", "string", "bool", "timestamp", "date"
]
Aggregation = Literal["count", "count_distinct", "sum", "avg", "min", "max"]
KIND_KEYS = ("entities", "sources", "metrics", "models", "scores")


class FieldError(ValueError):
    """A cross-field rule broken by one field; validation reports it at that field's line."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Entity(Spec):
    name: Name
    join_key: Name
    description: Text
    owner: Email
    value_type: Literal["int64", "string"] = "int64"
    tags: list[Tag] = []
    aliases: list[Alias] = []


class ColumnRule(Spec):
    type: ColumnType
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    values: list[str | int | float | bool] | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _bounds_ordered(self) -> ColumnRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class Contract(Spec):
    freshness: Duration | None = None
    columns: dict[Name, ColumnRule] = {}
    unique: list[Name] = []
    allow_extra_columns: bool = False


class Source(Spec):
    name: Name
    description: Text
    owner: Email
    path: Annotated[str, Field(min_length=1, max_length=1024)]
    entity: Name
    timestamp_field: Name
    created_timestamp_field: Name | None = None
    format: Literal["parquet", "csv"] | None = None
    contract: Contract | None = None
    tags: list[Tag] = []
    aliases: list[Alias] = []

    @property
    def file_format(self) -> str:
        if self.format:
            return self.format
        return "csv" if self.path.lower().endswith(".csv") else "parquet"


class Expect(Spec):
    min: float | None = None
    max: float | None = None
    max_null_fraction: Annotated[float, Field(ge=0, le=1)] | None = None


SqlText = Annotated[str, Field(min_length=1, max_length=4000)]
FunnelOrder = Literal["sequential", "any"]
FunnelMeasure = Literal["rate", "completions", "starts"]
# keys only a funnel takes; the defaulted ones are refused elsewhere only when written
FUNNEL_KEYS = ("entity", "steps", "within", "same", "order", "measure")


class FunnelStep(Spec):
    """One step of a funnel: the rows of `source` that pass `filter`."""

    source: Name
    filter: SqlText


class Metric(Spec):
    name: Name
    description: Text
    owner: Email
    type: Literal["aggregate", "column", "derived", "funnel"] = "aggregate"
    source: Name | None = None
    aggregation: Aggregation | None = None
    expression: SqlText | None = None  # required by every type but funnel
    filter: SqlText | None = None
    window: Duration | None = None
    grain: Duration | None = None
    ttl: Duration | None = None
    entity: Name | None = None  # funnels only: the entity every step's source is about
    steps: list[FunnelStep] | None = None
    within: Duration | None = None
    order: FunnelOrder = "sequential"
    same: Name | None = None
    measure: FunnelMeasure = "rate"
    tags: list[Tag] = []
    aliases: list[Alias] = []
    status: Status = "draft"
    version: Annotated[int, Field(ge=1)] = 1
    deprecated_on: date | None = None
    expect: Expect | None = None

    @model_validator(mode="after")
    def _fields_fit_type(self) -> Metric:
        required: dict[str, tuple[str, ...]] = {
            "aggregate": ("source", "aggregation", "expression", "window"),
            "column": ("source", "expression"),
            "derived": ("expression",),
            "funnel": ("entity", "steps", "within", "window"),
        }
        refused: dict[str, tuple[str, ...]] = {
            "aggregate": (),
            "column": ("aggregation", "window", "filter", "grain"),
            "derived": ("source", "aggregation", "window", "filter", "grain"),
            "funnel": ("source", "aggregation", "expression", "filter"),
        }
        missing = [key for key in required[self.type] if getattr(self, key) is None]
        if missing:
            raise ValueError(f"a {self.type} metric needs {', '.join(missing)}")
        extra = [key for key in refused[self.type] if getattr(self, key) is not None]
        if self.type != "funnel":
            extra += [key for key in FUNNEL_KEYS if key in self.model_fields_set]
        if extra:
            raise FieldError(extra[0], f"a {self.type} metric does not take {', '.join(extra)}")
        if self.aggregation != "count" and self.sql == "*":
            raise FieldError("expression", "expression `*` only goes with aggregation count")
        return self

    @property
    def sql(self) -> str:
        """The expression, stripped ("" for a funnel, which has none)."""
        return (self.expression or "").strip()

    @property
    def within_delta(self) -> timedelta | None:
        return parse_duration(self.within) if self.within else None

    @property
    def grain_delta(self) -> timedelta:
        return parse_duration(self.grain or "1d")

    @property
    def window_delta(self) -> timedelta | None:
        return parse_duration(self.window) if self.window else None

    def own_ttl(self) -> timedelta | None:
        """The ttl the metric declares or implies, before derived inputs are considered."""
        if self.ttl:
            return parse_duration(self.ttl)
        if self.type == "aggregate" and self.window:
            return parse_duration(self.window) + self.grain_delta
        if self.type == "funnel" and self.window and self.within:
            return parse_duration(self.window) + parse_duration(self.within) + self.grain_delta
        return None


class Model(Spec):
    name: Name
    description: Text
    owner: Email
    features: Annotated[list[Reference], Field(min_length=1)]
    tags: list[Tag] = []
    aliases: list[Alias] = []
    status: Status = "draft"
    version: Annotated[int, Field(ge=1)] = 1
    outcome: Name | None = None  # the business metric (or score) the app exists to move
    maintenance_hours_per_month: Annotated[float, Field(ge=0, le=10_000)] = 0.0


class ScoreComponent(Spec):
    metric: Reference
    weight: Annotated[float, Field(gt=0, le=1e6)]
    transform: Literal["log1p"] | None = None
    direction: Literal["higher_is_better", "lower_is_better"] = "higher_is_better"
    normalize: Literal["percentile", "minmax"] | None = None
    bounds: tuple[float, float] | None = None
    segment_by: Name | None = None

    @model_validator(mode="after")
    def _bounds_ordered(self) -> ScoreComponent:
        if self.bounds is not None:
            low, high = self.bounds
            if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
                raise FieldError("bounds", f"bounds [{low}, {high}] must be finite with lo < hi")
            if self.transform == "log1p" and low <= -1:
                raise FieldError("bounds", "with transform log1p, bounds must be above -1")
        return self


class Score(Spec):
    name: Name
    entity: Name
    description: Text
    owner: Email
    normalize: Literal["percentile", "minmax"] = "percentile"
    missing: Literal["skip", "zero"] = "skip"
    components: Annotated[list[ScoreComponent], Field(min_length=1)]
    bands: dict[Name, tuple[float, float]] = {}
    ttl: Duration | None = None
    tags: list[Tag] = []
    aliases: list[Alias] = []
    status: Status = "draft"
    version: Annotated[int, Field(ge=1)] = 1

    def normalize_of(self, component: ScoreComponent) -> str:
        """The normalisation a component uses: its own, else the score's."""
        return component.normalize or self.normalize

    @model_validator(mode="after")
    def _bands_well_formed(self) -> Score:
        for band, (low, high) in self.bands.items():
            if not 0 <= low < high <= 100:
                raise ValueError(f"band {band} [{low}, {high}] must satisfy 0 <= lo < hi <= 100")
        spans = sorted(self.bands.values())
        for (_, high), (low, _) in zip(spans, spans[1:], strict=False):
            if low != high:
                raise ValueError("bands must tile 0..100 without gaps or overlaps")
        if spans and (spans[0][0] != 0 or spans[-1][1] != 100):
            raise ValueError("bands must start at 0 and end at 100")
        for component in self.components:
            if component.bounds is not None and self.normalize_of(component) != "minmax":
                raise ValueError(f"component {component.metric}: bounds go with normalize: "
                                 "minmax (a percentile rank needs no bounds)")
        return self


KIND_MODELS: dict[str, type[Spec]] = {
    "entities": Entity,
    "sources": Source,
    "metrics": Metric,
    "models": Model,
    "scores": Score,
}
KIND_SINGULAR = {
    "entities": "entity",
    "sources": "source",
    "metrics": "metric",
    "models": "model",
    "scores": "score",
}


def spec_to_yaml_dict(spec: Spec) -> dict[str, Any]:
    """The definition as a YAML-ready mapping, without defaulted fields."""
    return spec.model_dump(mode="json", exclude_defaults=True)
