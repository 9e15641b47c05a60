"""Tally's DuckDB offline store for Feast, named in feature_store.yaml as
`feature_repo.offline_store.TallyDuckDBOfflineStore`.

This first version delegates the point-in-time join to Feast's stock DuckDB store and adds
what that store lacks: entity frames given as SQL, and rows returned in entity order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.offline_store import (
    OfflineStore,
    RetrievalJob,
    RetrievalMetadata,
)
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import RepoConfig

ROW_ID = "__tally_row"


class TallyDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    type: Literal["feature_repo.offline_store.TallyDuckDBOfflineStore"] = (
        "feature_repo.offline_store.TallyDuckDBOfflineStore"
    )


class OrderedRetrievalJob(RetrievalJob):
    """Lazy: the join runs on to_arrow()/to_df(); rows come back in entity-frame order."""

    def __init__(self, inner: RetrievalJob, ordered: bool):
        self._inner = inner
        self._ordered = ordered

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        table = self._inner._to_arrow_internal(timeout=timeout)
        if self._ordered and ROW_ID in table.column_names:
            table = table.sort_by(ROW_ID).drop_columns([ROW_ID])
        return table

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout=timeout).to_pandas()

    @property
    def full_feature_names(self) -> bool:
        return bool(self._inner.full_feature_names)

    @property
    def on_demand_feature_views(self) -> list[Any]:
        return list(self._inner.on_demand_feature_views)

    @property
    def metadata(self) -> RetrievalMetadata | None:
        return self._inner.metadata

    def persist(self, storage: Any, allow_overwrite: bool = False,
                timeout: int | None = None) -> None:
        self._inner.persist(storage, allow_overwrite=allow_overwrite, timeout=timeout)


def entity_frame(entity_df: pd.DataFrame | str | None) -> pd.DataFrame | None:
    """A DataFrame for an entity frame given as a DataFrame or as DuckDB SQL."""
    if entity_df is None or isinstance(entity_df, pd.DataFrame):
        return entity_df
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    con.execute("SET TimeZone = 'UTC'")
    return con.sql(entity_df).df()


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
        frame = entity_frame(entity_df)
        ordered = frame is not None
        if frame is not None:
            frame = frame.copy()
            frame[ROW_ID] = range(len(frame))
        inner = DuckDBOfflineStore.get_historical_features(
            config, feature_views, feature_refs, frame, registry, project, full_feature_names,
            **kwargs)
        return OrderedRetrievalJob(inner, ordered)

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig, data_source: DataSource, join_key_columns: list[str],
        feature_name_columns: list[str], timestamp_field: str,
        created_timestamp_column: str | None, start_date: datetime, end_date: datetime,
    ) -> RetrievalJob:
        return DuckDBOfflineStore.pull_latest_from_table_or_query(
            config, data_source, join_key_columns, feature_name_columns, timestamp_field,
            created_timestamp_column, start_date, end_date)

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig, data_source: DataSource, join_key_columns: list[str],
        feature_name_columns: list[str], timestamp_field: str,
        created_timestamp_column: str | None = None, start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> RetrievalJob:
        return DuckDBOfflineStore.pull_all_from_table_or_query(
            config, data_source, join_key_columns, feature_name_columns, timestamp_field,
            created_timestamp_column, start_date, end_date)
