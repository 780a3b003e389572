"""The point-in-time training set: marts interactions joined with Feast features, split by time.

Positives (``label = 1``) before ``end - holdout_days`` train; the rest of ``[.., end)`` is the holdout.
User features come from the ``recommender_vN_user`` feature service as of each interaction (training) or
as of the holdout start (evaluation); item features and text embeddings come from ``recommender_vN_item``
as of the holdout start, so nothing from the holdout leaks into training. The user service includes the
``user_recent_items`` view, so each training row's ``recent_item_ids`` is the point-in-time list serving
reads online for that user at that time (the dbt mart's newest-first positives before the day's end), not
a second derivation of it.

With ``model.ranking_loss_weight > 0`` the set also holds labelled impressions for the ranking loss
(``label_impressions``): every impression before the holdout start, label 1 when the same user had a
positive event (click, like, purchase, rating >= 4) on the same item at or after the impression and
before the end of that UTC day (and before the holdout start), with the user features and recent items
as of the impression (one more Feast point-in-time call over the distinct (user, timestamp) pairs).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
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
IMPRESSION = "impression"
IMPRESSION_COLUMNS = ["user_id", "item_id", "event_timestamp", "label"]


def _no_impressions() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64") for c in IMPRESSION_COLUMNS}).astype(
        {"event_timestamp": "datetime64[ns, UTC]"}
    )


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
    # user_id, item_id, event_timestamp, label, *USER_FEATURES, recent_item_ids (empty: ranking loss off)
    impressions: pd.DataFrame = field(default_factory=_no_impressions)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.train.to_parquet(folder / "train.parquet", index=False)
        self.test.to_parquet(folder / "test.parquet", index=False)
        self.test_user_features.to_parquet(folder / "test_user_features.parquet")
        self.items.to_parquet(folder / "items.parquet", index=False)
        (folder / "impressions.parquet").unlink(missing_ok=True)
        if len(self.impressions):
            self.impressions.to_parquet(folder / "impressions.parquet", index=False)
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
        impressions_path = folder / "impressions.parquet"
        return cls(
            train=pd.read_parquet(folder / "train.parquet"),
            test=pd.read_parquet(folder / "test.parquet"),
            test_user_features=pd.read_parquet(folder / "test_user_features.parquet"),
            items=pd.read_parquet(folder / "items.parquet"),
            holdout_start=datetime.fromisoformat(meta["holdout_start"]),
            user_feature_names=meta["user_feature_names"],
            item_feature_names=meta["item_feature_names"],
            impressions=pd.read_parquet(impressions_path) if impressions_path.exists() else _no_impressions(),
        )


def _events(settings: Settings, with_types: bool) -> pd.DataFrame:
    from recsys.transform.warehouse import read_mart  # the configured warehouse: Parquet (DuckDB) or PostgreSQL

    columns = ["user_id", "item_id", "is_positive", "event_timestamp", *(["event_type"] if with_types else [])]
    frame = read_mart(settings, "interactions", columns=columns)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def _positives(events: pd.DataFrame, end: datetime) -> pd.DataFrame:
    positives = events[events["is_positive"].astype(bool) & (events["event_timestamp"] < pd.Timestamp(end))]
    positives = positives[["user_id", "item_id", "event_timestamp"]]
    return positives.sort_values(["event_timestamp", "user_id", "item_id"], kind="stable")


def label_impressions(events: pd.DataFrame, cutoff: datetime) -> pd.DataFrame:
    """Impressions before ``cutoff``, labelled by whether the user engaged with the item later that day.

    ``events``: ``interactions`` mart rows (``user_id``, ``item_id``, ``event_type``, ``is_positive``,
    ``event_timestamp``). An impression at T gets label 1 when a positive row (``is_positive``) of the same user
    and item has ``T <= event_timestamp < min(end of T's UTC day, cutoff)``, else 0: a positive before the
    impression does not label it, and nothing at or after ``cutoff`` (the holdout start) is read. The mart
    has no session id, so the UTC day stands in for the session. Returns ``user_id``, ``item_id``,
    ``event_timestamp``, ``label`` (int64), one row per impression, in time order.
    """
    times = pd.to_datetime(events["event_timestamp"], utc=True)
    before = times < pd.Timestamp(cutoff)
    keys = ["user_id", "item_id"]
    is_shown, is_engaged = before & (events["event_type"] == IMPRESSION), before & events["is_positive"].astype(bool)
    if not is_shown.any():
        return _no_impressions()
    shown = events.loc[is_shown, keys].assign(event_timestamp=times[is_shown])
    engaged = events.loc[is_engaged, keys].assign(engaged_at=times[is_engaged])
    shown = shown.assign(_row=np.arange(len(shown))).sort_values(["event_timestamp", "_row"], kind="stable")
    engaged = engaged.sort_values("engaged_at", kind="stable")
    # The first positive of the same (user, item) at or after each impression.
    nxt = pd.merge_asof(shown, engaged, left_on="event_timestamp", right_on="engaged_at", by=keys, direction="forward")
    day_end = nxt["event_timestamp"].dt.floor("D") + pd.Timedelta(days=1)
    nxt["label"] = (nxt["engaged_at"].notna() & (nxt["engaged_at"] < day_end)).astype("int64")
    out = nxt[IMPRESSION_COLUMNS].astype({"user_id": "int64", "item_id": "int64"})
    return out.reset_index(drop=True)


def _impressions(settings: Settings, events: pd.DataFrame, cutoff: datetime) -> pd.DataFrame:
    """Labelled training impressions with the user features and recent items as of each impression."""
    labelled = label_impressions(events, cutoff)
    log.info("training set: %d labelled impressions (%d positive)", len(labelled), int(labelled["label"].sum()))
    if labelled.empty:
        return labelled.assign(**dict.fromkeys(USER_FEATURES, 0.0), **{RECENT_ITEMS: [[]] * 0})
    # One Feast call over the distinct (user, time) pairs: a feed shows many items at once.
    entities = labelled[["user_id", "event_timestamp"]].drop_duplicates(ignore_index=True)
    features = _user_features(settings, entities)[["user_id", "event_timestamp", *USER_FEATURES, RECENT_ITEMS]]
    return labelled.merge(features, on=["user_id", "event_timestamp"], how="left", validate="many_to_one")


def _user_features(settings: Settings, entities: pd.DataFrame) -> pd.DataFrame:
    from recsys.features.store import historical_features

    frame = historical_features(settings, entities, f"{settings.feature_service_name}_user")
    frame[USER_FEATURES] = frame[USER_FEATURES].astype("float64").fillna(0.0)
    if RECENT_ITEMS not in frame.columns:
        raise TrainingError(
            f"feature service {settings.feature_service_name}_user returned no {RECENT_ITEMS}: add the "
            "user_recent_items view to it (feature_repo/recsys_repo.py) and run recsys.features.apply()."
        )
    # No row within the view's TTL: no recent items (as serving sees it).
    frame[RECENT_ITEMS] = [[int(i) for i in v] if v is not None else [] for v in frame[RECENT_ITEMS]]
    return frame


def _items(settings: Settings, end: datetime, as_of: datetime) -> pd.DataFrame:
    from recsys.features.store import historical_features
    from recsys.transform.warehouse import read_mart

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
    ranking = settings.model.ranking_loss_weight > 0
    events = _events(settings, with_types=ranking)
    positives = _positives(events, end)
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
        impressions=_impressions(settings, events, holdout_start) if ranking else _no_impressions(),
    )
