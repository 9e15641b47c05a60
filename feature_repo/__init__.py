"""Tally's Feast side: the bridge from definitions to Feast objects, the offline store,
training frames. Importing this package is cheap; Feast loads only when used."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def training_frame(entity_df: Any, model: str | None = None, features: list[str] | None = None,
                   project: str | Path = ".", timestamp_column: str = "event_timestamp") -> Any:
    """A point-in-time-correct training frame as a pandas DataFrame (see docs/serving.md)."""
    from tally.feature_repo.serving import training_frame as _training_frame

    return _training_frame(entity_df, model=model, features=features, project=project,
                           timestamp_column=timestamp_column)
