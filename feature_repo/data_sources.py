"""Batch sources: the Parquet exports of the dbt marts and the item text embeddings table.

Paths come from the environment (``RECSYS_MARTS_DIR``, ``RECSYS_EMBEDDINGS_PATH``, exported by
``recsys.config.Settings.tool_env()``), never from the current directory. Shapes: docs/contracts.md.
"""

import os
from pathlib import Path

from feast import FileSource


def _env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set. Export the recsys tool environment first "
            "(the variables of recsys.config.Settings().tool_env()), or use recsys.features.apply()."
        )
    return Path(value)


def _mart(name: str) -> FileSource:
    return FileSource(
        name=name,
        path=str(_env_path("RECSYS_MARTS_DIR") / f"{name}.parquet"),
        timestamp_field="event_timestamp",
        description=f"dbt mart `{name}` exported as Parquet.",
    )


user_daily_features_source = _mart("user_daily_features")
item_daily_features_source = _mart("item_daily_features")
user_recent_items_source = _mart("user_recent_items")

item_text_embedding_source = FileSource(
    name="item_text_embedding",
    path=str(_env_path("RECSYS_EMBEDDINGS_PATH")),
    timestamp_field="event_timestamp",
    description="L2-normalised BERT embeddings of item texts, one row per item and content version.",
)
