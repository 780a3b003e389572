"""Thresholds of the data quality gates, as one typed object with defaults.

Loaded from the YAML file named by ``RECSYS_CONFIG`` under a ``quality:`` key when present (every field is
optional there), else the defaults below. Example::

    quality:
      events:
        min_rows: 1
        row_count_min_ratio: 0.2
      items:
        max_body_length: 50000
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from recsys.errors import ConfigError


class RowCountRule(BaseModel):
    """Row count of a partition, absolute and against the previous day's partition of the same table."""

    model_config = ConfigDict(extra="forbid")

    min_rows: int = Field(1, ge=0, description="Fewest rows a partition may have (0 allows an empty interval).")
    row_count_min_ratio: float = Field(
        0.2, ge=0, description="Rows at least this fraction of the previous partition's rows."
    )
    row_count_max_ratio: float = Field(5.0, gt=0, description="Rows at most this multiple of the previous partition's.")
    row_count_baseline_min_rows: int = Field(
        100, ge=0, description="Compare with the previous partition only when it has at least this many rows."
    )


class EventsQuality(RowCountRule):
    """Raw events partition."""

    min_value: float = Field(0.0, description="Smallest rating value.")
    max_value: float = Field(5.0, description="Largest rating value.")
    max_position: int = Field(1000, ge=0, description="Largest rank an impression can have.")
    future_tolerance: timedelta = Field(
        timedelta(minutes=5), description="Clock skew allowed before an occurred_at counts as in the future."
    )
    duplicate_key: tuple[str, ...] = Field(
        ("user_id", "item_id", "event_type", "session_id", "position", "occurred_at"),
        description="Two events equal on these columns are one event logged twice under two event_ids.",
    )
    duplicate_exempt_event_types: tuple[str, ...] = Field(
        ("tag",), description="Event types that may legitimately repeat (several tags at one instant)."
    )


class ItemsQuality(RowCountRule):
    """Raw items partition (change capture: a quiet day has no item versions, hence min_rows 0)."""

    min_rows: int = 0
    min_title_length: int = Field(1, ge=0)
    max_title_length: int = Field(500, ge=1)
    max_body_length: int = Field(100_000, ge=1)
    max_body_null_fraction: float = Field(0.05, ge=0, le=1, description="Share of items that may lack a body.")
    max_category_null_fraction: float = Field(0.05, ge=0, le=1)


class MartsQuality(BaseModel):
    """Marts, validated on the rows of the data interval."""

    model_config = ConfigDict(extra="forbid")

    min_text_length: int = Field(1, ge=0, description="Shortest item text the encoder may get.")
    max_text_length: int = Field(200_000, ge=1)
    max_ctr: float = Field(1.0, gt=0, description="Smoothed CTR above this means more clicks than impressions.")


class QualityConfig(BaseModel):
    """Every gate threshold (the ``quality:`` section of the RECSYS_CONFIG YAML)."""

    model_config = ConfigDict(extra="forbid")

    events: EventsQuality = EventsQuality()
    items: ItemsQuality = ItemsQuality()
    marts: MartsQuality = MartsQuality()


def quality_config(settings: Any) -> QualityConfig:
    """``settings.quality`` once Settings has that field, else :func:`load_quality_config`."""
    configured = getattr(settings, "quality", None)
    if isinstance(configured, QualityConfig):
        return configured
    if isinstance(configured, dict):  # Settings.quality: the YAML section or RECSYS_QUALITY__* env vars
        return QualityConfig.model_validate(configured)
    return load_quality_config()


def load_quality_config(path: Path | None = None) -> QualityConfig:
    """The ``quality:`` section of ``path`` (default: the file named by RECSYS_CONFIG), else the defaults."""
    import yaml

    if path is None:
        env = os.environ.get("RECSYS_CONFIG")
        if not env:
            return QualityConfig()
        path = Path(env)
    if not path.is_file():
        raise ConfigError(f"Quality config file {path} does not exist: fix RECSYS_CONFIG or create it.")
    document: Any = yaml.safe_load(path.read_text()) or {}
    section = document.get("quality") if isinstance(document, dict) else None
    try:
        return QualityConfig.model_validate(section or {})
    except ValueError as exc:
        raise ConfigError(f"Invalid `quality:` section in {path}: {exc}") from exc
