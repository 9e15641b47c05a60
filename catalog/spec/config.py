"""The optional project config `tally.yaml` at the project root.

```yaml
allowed_data_dirs:          # folders outside the project that sources may read
  - /mnt/lake/product_usage # absolute, or relative to the project root
engine: spark               # duckdb (the default) | spark: where compute and check run
spark_conf:                 # SparkSession settings when engine: spark (docs/spark.md)
  spark.master: local[2]
  spark.driver.memory: 2g
cost:                       # prices for `tally portfolio` (docs/portfolio.md); defaults:
  cpu_hour: 0.05            #   one CPU hour of compute and serving
  storage_gb_month: 0.023   #   one GB of computed tables kept for a month
  maintenance_hour: 100     #   one hour of a person maintaining an app
  currency: USD
```

Without it a source may only read files inside the project root (symlinks resolved), and
compute and contracts run in DuckDB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from tally.catalog.errors import DefinitionError, Issue
from tally.catalog.spec.issues import pydantic_issues
from tally.catalog.spec.models import Spec
from tally.catalog.spec.yamlio import read_yaml_file
from tally.catalog.store.paths import CONFIG_FILE

Price = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]


class CostConfig(Spec):
    cpu_hour: Price = 0.05
    storage_gb_month: Price = 0.023
    maintenance_hour: Price = 100.0
    currency: Annotated[str, Field(pattern=r"^[A-Za-z]{3}$")] = "USD"


class ProjectConfig(Spec):
    allowed_data_dirs: list[Annotated[str, Field(min_length=1, max_length=1024)]] = []
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark_conf: dict[Annotated[str, Field(min_length=1, max_length=256)], str] = {}
    cost: CostConfig = CostConfig()

    @field_validator("spark_conf", mode="before")
    @classmethod
    def _conf_as_text(cls, value: Any) -> Any:
        """YAML gives `spark.executor.instances: 2` as a number; Spark takes text."""
        if not isinstance(value, dict):
            return value
        return {k: (str(v).lower() if isinstance(v, bool) else str(v))
                if isinstance(v, int | float | bool) else v for k, v in value.items()}


@dataclass(frozen=True)
class LoadedConfig:
    config: ProjectConfig
    allowed_dirs: tuple[Path, ...] = ()  # real paths of allowed_data_dirs
    issues: list[Issue] = field(default_factory=list)


def read_config(root: Path) -> LoadedConfig:
    """The project's config and its problems (file, line, key); never raises."""
    path = root / CONFIG_FILE
    if not path.exists() and not path.is_symlink():
        return LoadedConfig(ProjectConfig())
    loaded, issues = read_yaml_file(path, CONFIG_FILE)
    if loaded is None:
        return LoadedConfig(ProjectConfig(), (), issues)
    data = loaded.data if loaded.data is not None else {}
    if not isinstance(data, dict):
        return LoadedConfig(ProjectConfig(), (), [
            Issue(CONFIG_FILE, 1, "", "the top level must be a mapping with the keys "
                  "allowed_data_dirs, engine, spark_conf, cost")])
    try:
        config = ProjectConfig.model_validate(data)
    except ValidationError as exc:
        return LoadedConfig(ProjectConfig(), (), pydantic_issues(exc, (), loaded, ProjectConfig))
    allowed: list[Path] = []
    for index, folder in enumerate(config.allowed_data_dirs):
        if folder.startswith("~") or "\x00" in folder:
            issues.append(Issue(CONFIG_FILE, loaded.line_of(("allowed_data_dirs", index)),
                                f"allowed_data_dirs[{index}]", f"{folder!r}: write the folder "
                                "as an absolute path or relative to the project root"))
            continue
        allowed.append(Path(os.path.realpath(root / folder)))
    return LoadedConfig(config, tuple(allowed), issues)


def load_config(root: Path | str) -> LoadedConfig:
    """The project's config; raises DefinitionError when tally.yaml is invalid."""
    loaded = read_config(Path(root).resolve())
    if loaded.issues:
        raise DefinitionError(loaded.issues)
    return loaded
