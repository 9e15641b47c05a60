"""Tally's wrapper of Feast's Spark offline store, named in a Spark project's
feature_store.yaml as `tally.feature_repo.spark_store.TallySparkOfflineStore`.

Feast's Spark store returns a training frame's rows in no particular order, and entity rows
that repeat a key and timestamp can come back once per tied feature row. This store tags
each entity row with its position before delegating, and its job drops the repeats of a
tag, sorts by it and drops it, so `FeatureStore.get_historical_features` gives one row per
entity row in the entity frame's order, as the DuckDB stores do. Everything else
(materialize's pulls, writes, saved datasets, monitoring) is Feast's Spark store unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd
from feast.feature_view import FeatureView
from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
    SparkOfflineStore,
    SparkOfflineStoreConfig,
    SparkRetrievalJob,
    get_spark_session_or_start_new_with_repoconfig,
)
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import RepoConfig

# the position of each entity row, carried through Feast's query and dropped at the end
ENTITY_ROW = "__tally_entity_row"


class TallySparkOfflineStoreConfig(SparkOfflineStoreConfig):
    type: Literal["tally.feature_repo.spark_store.TallySparkOfflineStore"] = (
        "tally.feature_repo.spark_store.TallySparkOfflineStore"
    )


class EntityOrderedSparkJob(SparkRetrievalJob):
    """Feast's Spark job whose frame has one row per entity row, in entity-frame order."""

    def __init__(self, job: SparkRetrievalJob) -> None:
        super().__init__(spark_session=job.spark_session, query=job.query,
                         full_feature_names=job.full_feature_names, config=job._config,
                         on_demand_feature_views=job.on_demand_feature_views,
                         metadata=_untagged(job.metadata))

    def to_spark_df(self) -> Any:
        frame = super().to_spark_df()
        return frame.dropDuplicates([ENTITY_ROW]).orderBy(ENTITY_ROW).drop(ENTITY_ROW)


def _untagged(metadata: RetrievalMetadata | None) -> RetrievalMetadata | None:
    if metadata is None:
        return None
    return RetrievalMetadata(features=metadata.features,
                             keys=[k for k in metadata.keys if k != ENTITY_ROW],
                             min_event_timestamp=metadata.min_event_timestamp,
                             max_event_timestamp=metadata.max_event_timestamp)


def tagged_entities(session: Any, entity_df: pd.DataFrame | str | Any) -> Any:
    """The entity frame with each row's position in ENTITY_ROW: a pandas frame's index
    order, a Spark DataFrame's (or Spark SQL query's) row order as collected."""
    if isinstance(entity_df, pd.DataFrame):
        return entity_df.assign(**{ENTITY_ROW: range(len(entity_df))})
    from pyspark.sql import functions

    frame = session.sql(entity_df) if isinstance(entity_df, str) else entity_df
    # checkpointed: Feast's query reads the entity view several times, and the ids of
    # monotonically_increasing_id would otherwise be recomputed on each read
    return frame.withColumn(ENTITY_ROW, functions.monotonically_increasing_id()
                            ).localCheckpoint(eager=True)


class TallySparkOfflineStore(SparkOfflineStore):
    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | Any | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        if entity_df is None:  # a date-range retrieval: no entity rows to keep in order
            return SparkOfflineStore.get_historical_features(
                config, feature_views, feature_refs, None, registry, project,
                full_feature_names, filter_by_created_timestamp, **kwargs)
        session = get_spark_session_or_start_new_with_repoconfig(config.offline_store)
        job = SparkOfflineStore.get_historical_features(
            config, feature_views, feature_refs, tagged_entities(session, entity_df),
            registry, project, full_feature_names, filter_by_created_timestamp, **kwargs)
        assert isinstance(job, SparkRetrievalJob)
        return EntityOrderedSparkJob(job)
