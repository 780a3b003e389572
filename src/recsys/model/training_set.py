"""The point-in-time training set: marts interactions joined with Feast features, split by time.

Positives (``label = 1``) before ``end - holdout_days`` train; the rest of ``[.., end)`` is the holdout.
User features come from the ``recommender_vN_user`` feature service as of each interaction (training) or
as of the holdout start (evaluation); item features and text embeddings come from ``recommender_vN_item``
as of the holdout start, so nothing from the holdout leaks into training. The user service includes the
``user_recent_items`` view, so each training row's ``recent_item_ids`` is the point-in-time list serving
reads online for that user at that time (the dbt mart's newest-first positives before the day's end), not
a second derivation of it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recsys.errors import TrainingError

if TYPE_CHECKING:
    from recsys.config import Settings

log = logging.getLogger(__name__)

USER_FEATURES = ["user_impressions_28d", "user_clicks_28d", "user_ctr_28d"]
RECENT_ITEMS = "recent_item_ids"  # from the user_recent_items view of the user feature service
ITEM_FEATURES = ["item_impressions_28d", "item_clicks_28d", "item_ctr_28d"]


@dataclass
class TrainingData:
    """Everything training and evaluation of one run read, saved beside the run's artifact."""

    train: pd.DataFrame  # user_id, item_id, event_timestamp, *USER_FEATURES, recent_item_ids
    test: pd.DataFrame  # user_id, item_id, event_timestamp
    test_user_features: pd.DataFrame  # index user_id, USER_FEATURES + recent_item_ids as of holdout_start
    items: pd.DataFrame  # item_id, embedding, *ITEM_FEATURES
    holdout_start: datetime
    user_feature_names: list[str]
    item_feature_names: list[str]

    @property
    def popular_item_ids(self) -> np.ndarray:
        """Items by descending training click count (ties by id), for the fallback and the baseline."""
        from recsys.model.evaluate import popular_item_ids

        return popular_item_ids(self.train[["user_id", "item_id"]])

    def recent_items(self, length: int = 10) -> dict[int, list[int]]:
        """Each test user's recent items as of the holdout start, newest first (at most ``length``).

        From the feature store's ``recent_item_ids`` (what serving reads); training sets saved without it
        fall back to the user's last training positives.
        """
        from recsys.model.data import recent_items_by_user

        if RECENT_ITEMS in self.test_user_features.columns:
            lists = self.test_user_features[RECENT_ITEMS]
            return {int(u): [int(i) for i in v][:length] for u, v in lists.items() if v is not None and len(v)}
        return recent_items_by_user(self.train[["user_id", "item_id", "event_timestamp"]], length)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.train.to_parquet(folder / "train.parquet", index=False)
        self.test.to_parquet(folder / "test.parquet", index=False)
        self.test_user_features.to_parquet(folder / "test_user_features.parquet")
        self.items.to_parquet(folder / "items.parquet", index=False)
        meta = {
            "holdout_start": self.holdout_start.isoformat(),
            "user_feature_names": self.user_feature_names,
            "item_feature_names": self.item_feature_names,
        }
        (folder / "training_set.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path) -> TrainingData:
        meta_path = folder / "training_set.json"
        if not meta_path.exists():
            raise TrainingError(f"no training set in {folder}: run the train stage for this interval first.")
        meta = json.loads(meta_path.read_text())
        return cls(
            train=pd.read_parquet(folder / "train.parquet"),
            test=pd.read_parquet(folder / "test.parquet"),
            test_user_features=pd.read_parquet(folder / "test_user_features.parquet"),
            items=pd.read_parquet(folder / "items.parquet"),
            holdout_start=datetime.fromisoformat(meta["holdout_start"]),
            user_feature_names=meta["user_feature_names"],
            item_feature_names=meta["item_feature_names"],
        )


def _positives(settings: Settings, end: datetime) -> pd.DataFrame:
    from recsys.transform import read_mart  # the configured warehouse: Parquet (DuckDB) or PostgreSQL

    frame = read_mart(settings, "fct_interactions", columns=["user_id", "item_id", "label", "event_timestamp"])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    positives = frame[(frame["label"] == 1) & (frame["event_timestamp"] < pd.Timestamp(end))]
    return positives.drop(columns="label").sort_values(["event_timestamp", "user_id", "item_id"], kind="stable")


def _user_features(settings: Settings, entities: pd.DataFrame) -> pd.DataFrame:
    from recsys.features import historical_features

    frame = historical_features(settings, entities, f"{settings.feature_service_name}_user")
    frame[USER_FEATURES] = frame[USER_FEATURES].astype("float64").fillna(0.0)
    if RECENT_ITEMS not in frame.columns:
        raise TrainingError(
            f"feature service {settings.feature_service_name}_user returned no {RECENT_ITEMS}: add the "
            "user_recent_items view to it (feature_repo/feature_services.py) and run recsys.features.apply()."
        )
    # No row within the view's TTL: no recent items (as serving sees it).
    frame[RECENT_ITEMS] = [[int(i) for i in v] if v is not None else [] for v in frame[RECENT_ITEMS]]
    return frame


def _items(settings: Settings, end: datetime, as_of: datetime) -> pd.DataFrame:
    from recsys.features import historical_features
    from recsys.transform import read_mart

    catalog = read_mart(settings, "item_texts", columns=["item_id", "updated_at"])
    catalog = catalog[pd.to_datetime(catalog["updated_at"], utc=True) < pd.Timestamp(end)]
    entities = pd.DataFrame({"item_id": catalog["item_id"].to_numpy(), "event_timestamp": pd.Timestamp(end)})
    # Embeddings as of the interval end (every catalog item is encoded); stats as of the holdout start.
    emb = historical_features(settings, entities, f"{settings.feature_service_name}_item")[["item_id", "embedding"]]
    stats = historical_features(
        settings, entities.assign(event_timestamp=pd.Timestamp(as_of)), f"{settings.feature_service_name}_item"
    )[["item_id", *ITEM_FEATURES]]
    items = emb.merge(stats, on="item_id", how="left").sort_values("item_id", kind="stable").reset_index(drop=True)
    missing = items["embedding"].isna()
    if missing.any():
        raise TrainingError(
            f"{int(missing.sum())} catalog items have no text embedding "
            f"(e.g. {items.loc[missing, 'item_id'].head(5).tolist()}); run the encode stage for this interval first."
        )
    items[ITEM_FEATURES] = items[ITEM_FEATURES].astype("float64").fillna(0.0)
    return items


def build(settings: Settings, end: datetime) -> TrainingData:
    """The training set for a model trained at ``end`` (the data interval end)."""
    end = end.astimezone(UTC)
    if settings.model.history_length > settings.recent_items_limit:
        log.warning(
            "model.history_length %d exceeds recent_items_limit %d: the feature store keeps only %d recent items "
            "per user, so the rest of the user tower's history is padding. Raise recent_items_limit (and rebuild "
            "the marts) or lower history_length.",
            settings.model.history_length,
            settings.recent_items_limit,
            settings.recent_items_limit,
        )
    holdout_start = end - timedelta(days=settings.model.holdout_days)
    positives = _positives(settings, end)
    is_test = positives["event_timestamp"] >= pd.Timestamp(holdout_start)
    train_pos, test_pos = positives[~is_test], positives[is_test].reset_index(drop=True)
    log.info("training set: %d train positives, %d holdout positives", len(train_pos), len(test_pos))
    train = (
        _user_features(settings, train_pos)
        if len(train_pos)
        else train_pos.assign(**dict.fromkeys(USER_FEATURES, 0.0), **{RECENT_ITEMS: [[]] * 0})
    )
    test_users = pd.DataFrame(
        {"user_id": sorted(test_pos["user_id"].unique()), "event_timestamp": pd.Timestamp(holdout_start)}
    )
    test_feats = (
        _user_features(settings, test_users).set_index("user_id")[[*USER_FEATURES, RECENT_ITEMS]]
        if len(test_users)
        else pd.DataFrame(columns=[*USER_FEATURES, RECENT_ITEMS])
    )
    return TrainingData(
        train=train[["user_id", "item_id", "event_timestamp", *USER_FEATURES, RECENT_ITEMS]].reset_index(drop=True),
        test=test_pos,
        test_user_features=test_feats,
        items=_items(settings, end, holdout_start),
        holdout_start=holdout_start,
        user_feature_names=list(USER_FEATURES),
        item_feature_names=list(ITEM_FEATURES),
    )
