"""Tally's DuckDB offline store for Feast, named in feature_store.yaml as
`tally.feature_repo.offline_store.TallyDuckDBOfflineStore`.

It plans the point-in-time join itself (offline_store_join.py: per feature view the
candidate plan of offline_store_scan.py, else the row-id plan of offline_store_sql.py) and
assembles the columns in the entity frame's order with Arrow, never through pandas.
Results are those of Feast's stock DuckDB store (Feast's rule: newest row with
t - ttl <= event_timestamp <= t, ties by created timestamp), plus:

* the entity frame may be a DataFrame or a DuckDB SQL query;
* rows come back in the entity frame's order, every entity column kept, duplicates kept;
* timestamps without a time zone are read as UTC (entity frame and tables alike);
* a relative FileSource path is resolved against the repo path (the stock store reads it
  against the current folder), so a frame asked for from another folder works.

Fallback to the stock store's logic (then results are re-ordered to the entity frame's
order) for what this store does not plan itself: on-demand feature views, batch sources
that are not parquet FileSources (Delta, Iceberg, ...), and a missing entity frame.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeGuard

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import (
    OfflineStore,
    RetrievalJob,
    RetrievalMetadata,
)
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import RepoConfig
from tally.catalog.store.paths import is_glob
from tally.feature_repo.offline_store_join import arrow_table, connect, point_in_time, stamp_sql
from tally.feature_repo.offline_store_sql import ROW, ViewPlan, latest_sql
from tally.feature_repo.offline_store_write import (
    append_rows,
    check_batch_columns,
    persist_table,
    write_logs,
)

TIMESTAMP = "event_timestamp"


class TallyDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    type: Literal["tally.feature_repo.offline_store.TallyDuckDBOfflineStore"] = (
        "tally.feature_repo.offline_store.TallyDuckDBOfflineStore"
    )


# -- paths and entity frames ---------------------------------------------------------------
def resolve_path(config: RepoConfig, path: str) -> str:
    """A FileSource path: absolute and URIs as they are; a relative one against the repo
    path when it exists there, else against the current folder (the stock behaviour)."""
    if "://" in path or os.path.isabs(path):
        return path
    repo = getattr(config, "repo_path", None)
    if repo is not None:
        candidate = Path(repo) / path
        if candidate.exists() or is_glob(path):
            return str(candidate)
    return path


def entity_frame(entity_df: pd.DataFrame | str | None) -> pd.DataFrame | None:
    """A DataFrame for an entity frame given as a DataFrame or as DuckDB SQL."""
    if entity_df is None or isinstance(entity_df, pd.DataFrame):
        return entity_df
    frame: pd.DataFrame = arrow_table(connect().sql(entity_df)).to_pandas()
    return frame


def _timestamp_column(schema: pa.Schema) -> str:
    if TIMESTAMP in schema.names:
        return TIMESTAMP
    stamps = [str(f.name) for f in schema if pa.types.is_timestamp(f.type)]
    if len(stamps) == 1:
        return stamps[0]
    from feast.errors import EntityTimestampInferenceException

    raise EntityTimestampInferenceException(TIMESTAMP)


def entity_table(con: Any, entity_df: pd.DataFrame | str) -> tuple[pa.Table, str]:
    """The entity frame as Arrow, its event timestamp column as UTC timestamps, plus a
    row-number column that fixes the output order."""
    if isinstance(entity_df, str):
        table = arrow_table(con.sql(entity_df))
    else:
        frame = entity_df
        if TIMESTAMP in frame.columns and not pd.api.types.is_datetime64_any_dtype(
                frame[TIMESTAMP]):
            frame = frame.copy()
            frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)  # as Feast does
        table = pa.Table.from_pandas(frame, preserve_index=False)
    ts_col = _timestamp_column(table.schema)
    i = table.schema.get_field_index(ts_col)
    column = table.column(i)
    if not pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.timestamp("us", tz="UTC"))
    unit = "us" if column.type.unit in ("s", "ms", "us") else "ns"
    target = pa.timestamp("us", tz="UTC")
    if column.type.tz is None:
        column = pc.assume_timezone(column.cast(pa.timestamp(unit)), "UTC")
    table = table.set_column(i, ts_col, pc.cast(column, target, safe=False))
    table = table.append_column(ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    return table, ts_col


# -- planning ------------------------------------------------------------------------------
def _is_parquet_file_source(source: Any) -> TypeGuard[FileSource]:
    if not isinstance(source, FileSource):
        return False
    from feast.data_format import ParquetFormat

    fmt = source.file_format
    return isinstance(fmt, ParquetFormat) or (fmt is None and source.path.endswith(".parquet"))


def _view_plans(config: RepoConfig, feature_views: list[FeatureView], feature_refs: list[str],
                full_feature_names: bool, filter_created: bool) -> list[ViewPlan]:
    plans = []
    for view in feature_views:
        source = view.batch_source
        assert _is_parquet_file_source(source)  # the caller routes other sources elsewhere
        prefix = view.projection.name_to_use()
        wanted = [r.split(":", 1)[1] for r in feature_refs if r.startswith(f"{prefix}:")]
        reverse = {new: old for old, new in (source.field_mapping or {}).items()}
        base = view.projection.name_alias or view.name
        features = [(reverse.get(f, f), f"{base}__{f}" if full_feature_names else f)
                    for f in wanted]
        key_map = view.projection.join_key_map or {
            e.name: e.name for e in view.entity_columns} or {k: k for k in view.join_keys}
        keys = [(reverse.get(k, k), ent) for k, ent in key_map.items()]
        ts = reverse.get(source.timestamp_field, source.timestamp_field)
        created = source.created_timestamp_column or None
        created = reverse.get(created, created) if created else None
        plans.append(ViewPlan(resolve_path(config, source.path), keys, ts, created, features,
                              view.ttl or None, filter_created, prefix))
    return plans


# -- jobs ----------------------------------------------------------------------------------
class TallyRetrievalJob(RetrievalJob):
    """Lazy: nothing runs until to_arrow()/to_df()."""

    def __init__(self, compute: Any, full_feature_names: bool = False,
                 on_demand_feature_views: list[Any] | None = None,
                 metadata: RetrievalMetadata | None = None,
                 plans: dict[str, str] | None = None):
        self._compute = compute
        self._plans = plans if plans is not None else {}
        self._full_feature_names = full_feature_names
        self._odfvs = on_demand_feature_views or []
        self._metadata = metadata

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        return self._compute()

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        frame: pd.DataFrame = self._to_arrow_internal(timeout=timeout).to_pandas()
        return frame

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[Any]:
        return self._odfvs

    @property
    def metadata(self) -> RetrievalMetadata | None:
        return self._metadata

    @property
    def plans(self) -> dict[str, str]:
        """Per feature view, the plan that answered its last computation ("candidates",
        "row ids" or "payload"; docs/offline_store.md); empty until the job has run."""
        return dict(self._plans)

    def persist(self, storage: Any, allow_overwrite: bool = False,
                timeout: int | None = None) -> None:
        source = storage.to_data_source()
        if not isinstance(source, FileSource):
            raise NotImplementedError("TallyDuckDBOfflineStore persists to FileSource only")
        persist_table(self.to_arrow(), source.path, allow_overwrite)


class OrderedRetrievalJob(TallyRetrievalJob):
    """The stock store's job (fallback), its rows put back in entity-frame order."""

    def __init__(self, inner: RetrievalJob, ordered: bool):
        def compute() -> pa.Table:
            table = inner._to_arrow_internal()
            if ordered and ROW in table.column_names:
                table = table.sort_by(ROW).drop_columns([ROW])
            return table

        super().__init__(compute, bool(inner.full_feature_names),
                         list(inner.on_demand_feature_views), inner.metadata)


class TallyDuckDBOfflineStore(OfflineStore):
    supports_filter_by_created_timestamp = True

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        from feast.on_demand_feature_view import OnDemandFeatureView

        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry) if (
            registry is not None) else []
        supported = entity_df is not None and not odfvs and all(
            _is_parquet_file_source(v.batch_source) for v in feature_views)
        if entity_df is None or not supported:
            return _stock_historical(config, feature_views, feature_refs, entity_df, registry,
                                     project, full_feature_names, **kwargs)
        plans = _view_plans(config, feature_views, feature_refs, full_feature_names,
                            bool(kwargs.get("filter_by_created_timestamp")))
        con = connect()
        entities, ts_col = entity_table(con, entity_df)
        stamps = entities.column(ts_col)
        metadata = RetrievalMetadata(
            features=feature_refs,
            keys=[c for c in entities.column_names if c not in (ts_col, ROW)],
            min_event_timestamp=pc.min(stamps).as_py() if entities.num_rows else None,
            max_event_timestamp=pc.max(stamps).as_py() if entities.num_rows else None,
        )
        chosen: dict[str, str] = {}
        return TallyRetrievalJob(lambda: point_in_time(con, plans, entities, ts_col, chosen),
                                 full_feature_names, [], metadata, chosen)

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig, data_source: DataSource, join_key_columns: list[str],
        feature_name_columns: list[str], timestamp_field: str,
        created_timestamp_column: str | None, start_date: datetime, end_date: datetime,
    ) -> RetrievalJob:
        if not _is_parquet_file_source(data_source):
            return DuckDBOfflineStore.pull_latest_from_table_or_query(
                config, data_source, join_key_columns, feature_name_columns, timestamp_field,
                created_timestamp_column, start_date, end_date)
        return _pull(config, data_source, join_key_columns, feature_name_columns,
                     timestamp_field, created_timestamp_column, start_date, end_date, True)

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig, data_source: DataSource, join_key_columns: list[str],
        feature_name_columns: list[str], timestamp_field: str,
        created_timestamp_column: str | None = None, start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> RetrievalJob:
        if not _is_parquet_file_source(data_source):
            return DuckDBOfflineStore.pull_all_from_table_or_query(
                config, data_source, join_key_columns, feature_name_columns, timestamp_field,
                created_timestamp_column, start_date, end_date)
        return _pull(config, data_source, join_key_columns, feature_name_columns,
                     timestamp_field, created_timestamp_column, start_date, end_date, False)

    @staticmethod
    def offline_write_batch(config: RepoConfig, feature_view: FeatureView, table: pa.Table,
                            progress: Any) -> None:
        source = feature_view.batch_source
        if not (isinstance(source, FileSource) and _is_parquet_file_source(source)
                and source.path.endswith(".parquet")):
            DuckDBOfflineStore.offline_write_batch(config, feature_view, table, progress)
            return
        check_batch_columns(config, feature_view, table)
        append_rows(table, Path(resolve_path(config, source.path)))
        if progress:
            progress(table.num_rows)

    @staticmethod
    def write_logged_features(config: RepoConfig, data: pa.Table | Path, source: Any,
                              logging_config: Any, registry: BaseRegistry) -> None:
        from feast.infra.offline_stores.file_source import FileLoggingDestination

        destination = logging_config.destination
        if not isinstance(destination, FileLoggingDestination) or destination.partition_by:
            DuckDBOfflineStore.write_logged_features(config, data, source, logging_config,
                                                     registry)
            return
        write_logs(data, resolve_path(config, destination.path))


def _pull(config: RepoConfig, source: FileSource, keys: list[str], features: list[str],
          timestamp: str, created: str | None, start: datetime | None, end: datetime | None,
          latest: bool) -> RetrievalJob:
    sql = latest_sql(resolve_path(config, source.path), keys, features, timestamp,
                     created or None, stamp_sql(start), stamp_sql(end), latest)
    return TallyRetrievalJob(lambda: arrow_table(connect().sql(sql)))


def _stock_historical(config: RepoConfig, feature_views: list[FeatureView],
                      feature_refs: list[str], entity_df: pd.DataFrame | str | None,
                      registry: BaseRegistry, project: str, full_feature_names: bool,
                      **kwargs: Any) -> RetrievalJob:
    """Feast's stock DuckDB join, with SQL entity frames and entity order added."""
    frame = entity_frame(entity_df)
    if frame is None:
        raise ValueError("an entity frame is required: Feast's DuckDB offline store has no "
                         "retrieval without one")
    frame = frame.copy()
    frame[ROW] = range(len(frame))
    inner = DuckDBOfflineStore.get_historical_features(
        config, feature_views, feature_refs, frame, registry, project, full_feature_names,
        **kwargs)
    return OrderedRetrievalJob(inner, True)


__all__ = ["TallyDuckDBOfflineStore", "TallyDuckDBOfflineStoreConfig", "entity_frame"]
