"""Expectation suites as code: one factory per suite, taking the window and thresholds, returning the suite.

Nothing runs at import; GX is imported inside each factory. Raw suites check one lake partition; mart suites
check the mart rows of one data interval.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from recsys.config import EventsQuality, ItemsQuality, MartsQuality, RowCountRule
from recsys.lake import EVENT_TYPES, EXTRA, partition_schema

# Source columns outside the contract (schema drift, e.g. a renamed column) arrive as JSON in _extra.
DRIFT_COLUMN = EXTRA
# Derived column the events gate adds: item_id where the item is in no raw items partition so far, else null.
UNKNOWN_ITEM_COLUMN = "unknown_item_id"
# Derived column the events gate adds: event_id on events of a duplicate-exempt type (tags), else null. It
# joins the duplicate key, so exempt events never collide, without a row condition (which would make GX
# filter the whole frame once per metric: a third of the gate's time on 1M rows).
DUPLICATE_EXEMPT_COLUMN = "duplicate_exempt_event_id"
# Derived column the user_recent_items mart gate adds: the length of recent_item_ids.
RECENT_COUNT = "recent_item_count"


def row_count_expectations(rule: RowCountRule, previous_rows: int | None) -> list[Any]:
    """Absolute minimum, and change against the previous partition when that one is big enough to compare."""
    import great_expectations.expectations as gxe

    expectations = []
    if rule.min_rows > 0:
        expectations.append(gxe.ExpectTableRowCountToBeBetween(min_value=rule.min_rows))
    if previous_rows is not None and previous_rows >= max(rule.row_count_baseline_min_rows, 1):
        expectations.append(
            gxe.ExpectTableRowCountToBeBetween(
                min_value=math.ceil(previous_rows * rule.row_count_min_ratio),
                max_value=math.floor(previous_rows * rule.row_count_max_ratio),
                meta={"previous_partition_rows": previous_rows},
            )
        )
    return expectations


def duplicate_exempt_ids(frame: Any, exempt_types: tuple[str, ...]) -> Any:
    """``event_id`` where the event type may legitimately repeat, else null (the ``DUPLICATE_EXEMPT_COLUMN``)."""
    import pandas as pd

    if "event_id" not in frame.columns or "event_type" not in frame.columns:
        return pd.Series(pd.NA, index=frame.index, dtype="string")
    return frame["event_id"].where(frame["event_type"].isin(list(exempt_types)))


def raw_events_suite(
    window_start: datetime,
    window_end: datetime,
    config: EventsQuality | None = None,
    now: datetime | None = None,
    previous_rows: int | None = None,
    check_catalog: bool = False,
) -> Any:
    """The ``raw_events`` suite for events extracted from ``[window_start, window_end)``.

    ``now`` adds the not-in-the-future check; ``previous_rows`` the row-count change check;
    ``check_catalog`` the unknown-item check on the derived column ``unknown_item_id``. With duplicate-exempt
    event types the frame must carry :func:`duplicate_exempt_ids` as ``duplicate_exempt_event_id``.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    cfg = config or EventsQuality()
    exempt = [DUPLICATE_EXEMPT_COLUMN] if cfg.duplicate_key and cfg.duplicate_exempt_event_types else []
    columns = [*partition_schema("events").names, *([UNKNOWN_ITEM_COLUMN] if check_catalog else []), *exempt]
    expectations = [
        gxe.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=True),
        gxe.ExpectColumnValuesToBeNull(column=DRIFT_COLUMN),
        gxe.ExpectColumnValuesToNotBeNull(column="event_id"),
        gxe.ExpectColumnValuesToBeUnique(column="event_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
        gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
        gxe.ExpectColumnValuesToNotBeNull(column="occurred_at"),
        gxe.ExpectColumnValuesToBeBetween(
            column="occurred_at", min_value=window_start, max_value=window_end, strict_max=True
        ),
        gxe.ExpectColumnValuesToBeBetween(column="value", min_value=cfg.min_value, max_value=cfg.max_value),
        gxe.ExpectColumnValuesToBeBetween(column="position", min_value=0, max_value=cfg.max_position),
    ]
    if now is not None:
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="occurred_at", max_value=now + cfg.future_tolerance, meta={"check": "not in the future"}
            )
        )
    if cfg.duplicate_key:
        expectations.append(
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=[*cfg.duplicate_key, *exempt],
                meta={"check": "one event logged twice under different event_ids"},
            )
        )
    if check_catalog:
        expectations.append(gxe.ExpectColumnValuesToBeNull(column=UNKNOWN_ITEM_COLUMN))
    expectations += row_count_expectations(cfg, previous_rows)
    return gx.ExpectationSuite(name="raw_events", expectations=expectations)


def raw_items_suite(
    window_start: datetime,
    window_end: datetime,
    config: ItemsQuality | None = None,
    now: datetime | None = None,
    previous_rows: int | None = None,
) -> Any:
    """The ``raw_items`` suite: item versions whose ``updated_at`` lies in ``[window_start, window_end)``."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    cfg = config or ItemsQuality()
    expectations = [
        gxe.ExpectTableColumnsToMatchSet(column_set=partition_schema("items").names, exact_match=True),
        gxe.ExpectColumnValuesToBeNull(column=DRIFT_COLUMN),
        gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
        gxe.ExpectColumnValuesToBeUnique(column="item_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="title"),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="title", min_value=cfg.min_title_length, max_value=cfg.max_title_length
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="body", mostly=1 - cfg.max_body_null_fraction),
        gxe.ExpectColumnValueLengthsToBeBetween(column="body", max_value=cfg.max_body_length),
        gxe.ExpectColumnValuesToNotBeNull(column="category", mostly=1 - cfg.max_category_null_fraction),
        gxe.ExpectColumnValuesToNotBeNull(column="updated_at"),
        gxe.ExpectColumnValuesToBeBetween(
            column="updated_at", min_value=window_start, max_value=window_end, strict_max=True
        ),
    ]
    if now is not None:
        expectations.append(gxe.ExpectColumnValuesToBeBetween(column="updated_at", max_value=now))
    expectations += row_count_expectations(cfg, previous_rows)
    return gx.ExpectationSuite(name="raw_items", expectations=expectations)


def mart_suites(
    config: MartsQuality | None = None, min_interactions: int = 1, recent_items_limit: int = 10
) -> dict[str, Any]:
    """``{mart name: suite}`` for the mart rows of one data interval (``recent_items_limit``: the settings')."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    cfg = config or MartsQuality()

    def daily(entity: str, prefix: str) -> list[Any]:
        return [
            gxe.ExpectColumnValuesToNotBeNull(column=entity),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=[entity, "feature_date"]),
            gxe.ExpectColumnValuesToNotBeNull(column="event_timestamp"),
            gxe.ExpectColumnValuesToBeBetween(column=f"{prefix}_impressions_28d", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column=f"{prefix}_clicks_28d", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column=f"{prefix}_ctr_28d", min_value=0, max_value=cfg.max_ctr),
        ]

    suites = {
        "interactions": [
            gxe.ExpectTableRowCountToBeBetween(min_value=min_interactions),
            gxe.ExpectColumnValuesToNotBeNull(column="event_id"),
            gxe.ExpectColumnValuesToBeUnique(column="event_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
            gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
            gxe.ExpectColumnValuesToBeInSet(column="is_positive", value_set=[True, False]),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="event_timestamp", column_B="occurred_at"),
        ],
        "user_daily_features": daily("user_id", "user"),
        "item_daily_features": daily("item_id", "item"),
        "item_texts": [
            gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
            gxe.ExpectColumnValuesToBeUnique(column="item_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="text"),
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="text", min_value=cfg.min_text_length, max_value=cfg.max_text_length
            ),
            gxe.ExpectColumnValueLengthsToEqual(column="content_hash", value=32),
        ],
        "user_recent_items": [
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "feature_date"]),
            gxe.ExpectColumnValuesToNotBeNull(column="recent_item_ids"),
            # GX measures string lengths; the gate derives the list length (RECENT_COUNT) before validating.
            gxe.ExpectColumnValuesToBeBetween(column=RECENT_COUNT, min_value=0, max_value=recent_items_limit),
        ],
    }
    return {name: gx.ExpectationSuite(name=f"mart_{name}", expectations=exps) for name, exps in suites.items()}
