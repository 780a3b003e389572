"""Freshness of the online store: each feature view's age against its SLA (``orchestration.freshness_slas``).

A view's age is ``as_of`` (a run's data interval end, or now) minus the end of its newest materialization into
the online store (``recsys.features.store.materialized_until``, the same reading serving start-up checks). A view
is fresh when its age is at most its SLA; one never materialized is stale. An age below zero means the view was
materialized past ``as_of`` (an older interval checked after newer ones ran): fresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from recsys import lake
from recsys.config import Settings
from recsys.errors import ConfigError, FeatureStoreError, FreshnessError
from recsys.features.store import PROJECT, feature_store, materialized_until

if TYPE_CHECKING:
    from feast import FeatureStore

NEXT_STEP = (
    "materialize them: run the recsys_features DAG for the missing days (recsys run --day DAY; history: recsys "
    "backfill), or raise orchestration.freshness_slas if the SLA is wrong"
)


@dataclass(frozen=True)
class ViewFreshness:
    """One feature view's newest materialization, its age at ``as_of`` and its SLA."""

    view: str
    sla: timedelta
    as_of: datetime
    materialized_until: datetime | None  # None: never materialized

    @property
    def age(self) -> timedelta | None:
        """``as_of`` minus the newest materialization end (None: never materialized)."""
        return None if self.materialized_until is None else self.as_of - self.materialized_until

    @property
    def fresh(self) -> bool:
        """Materialized, and not older than the SLA."""
        age = self.age
        return age is not None and age <= self.sla

    def describe(self) -> str:
        """``user_stats is 3 days, 0:00:00 old (materialized until ...), SLA 2 days, 0:00:00``."""
        if self.materialized_until is None:
            return f"{self.view} was never materialized, SLA {self.sla}"
        until = self.materialized_until.isoformat()
        return f"{self.view} is {self.age} old (materialized until {until}), SLA {self.sla}"

    def summary(self) -> dict[str, Any]:
        """JSON-able: ISO times, the age and the SLA in seconds, and whether the view is fresh."""
        age = self.age
        return {
            "materialized_until": self.materialized_until.isoformat() if self.materialized_until else None,
            "age_s": None if age is None else age.total_seconds(),
            "sla_s": self.sla.total_seconds(),
            "fresh": self.fresh,
        }


def _slas(settings: Settings, known: set[str]) -> dict[str, timedelta]:
    slas = dict(settings.orchestration.freshness_slas)
    if not slas:
        raise ConfigError(
            "orchestration.freshness_slas is empty: the freshness check has no feature view to check. "
            'Name each view with its SLA, e.g. RECSYS_ORCHESTRATION__FRESHNESS_SLAS=\'{"user_stats": "P2D"}\'.'
        )
    bad = {view: sla for view, sla in slas.items() if sla <= timedelta(0)}
    if bad:
        raise ConfigError(f"orchestration.freshness_slas must be positive durations; got {bad}.")
    unknown = sorted(set(slas) - known)
    if unknown:
        raise ConfigError(
            f"orchestration.freshness_slas names feature views the Feast registry does not know: {unknown} "
            f"(registered: {sorted(known)}). Fix the view names in the settings, or apply the feature repo "
            "that defines them."
        )
    return slas


def check(
    settings: Settings, as_of: datetime, *, store: FeatureStore | None = None, project: str = PROJECT
) -> list[ViewFreshness]:
    """Every view of ``orchestration.freshness_slas`` (in its order) with its newest materialization at ``as_of``.

    ConfigError when the SLAs are empty, not positive, or name a view the registry does not know;
    FeatureStoreError when the registry has no feature views. ``store``: a FeatureStore built from ``settings``.
    """
    if as_of.tzinfo is None:
        raise ConfigError(f"freshness as_of {as_of} must be timezone-aware (UTC).")
    as_of = lake.utc(as_of)
    store = store or feature_store(settings, project=project)
    known = {view.name for view in store.list_feature_views()}
    if not known:
        raise FeatureStoreError(
            f"The Feast registry {settings.feast_registry} has no feature views: run the recsys_features DAG "
            "(recsys run --day DAY) to apply and materialize them."
        )
    slas = _slas(settings, known)
    ends = materialized_until(store, list(slas))
    return [ViewFreshness(view, sla, as_of, ends[view]) for view, sla in slas.items()]


def require_fresh(
    settings: Settings, as_of: datetime, *, store: FeatureStore | None = None, project: str = PROJECT
) -> list[ViewFreshness]:
    """:func:`check`, raising FreshnessError naming each stale view, its age and its SLA."""
    views = check(settings, as_of, store=store, project=project)
    stale = [v for v in views if not v.fresh]
    if stale:
        raise FreshnessError(
            f"{len(stale)} feature view(s) older than their freshness SLA at {lake.utc(as_of).isoformat()}: "
            + "; ".join(v.describe() for v in stale)
            + f". {NEXT_STEP}."
        )
    return views
