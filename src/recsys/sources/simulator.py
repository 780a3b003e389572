"""A seeded simulated site with planted preferences, written through the same code paths as real sources.

Each item belongs to one topic and its text is drawn from that topic's vocabulary; each user likes one or
two topics (the ground truth, saved so tests can check the model recovers it). Every day new items arrive,
each user has a few sessions of ranked impressions, and clicks follow topic affinity times a position bias.
Deterministic for a given ``SimulationConfig``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TOPICS: dict[str, list[str]] = {
    "science": "galaxy quantum protein telescope neutron genome fossil orbit climate molecule physics lab".split(),
    "sports": "football league striker goal tennis marathon coach playoff stadium medal season sprint".split(),
    "cooking": "recipe garlic oven pasta spice bake sauce kitchen flavor dough grill dessert".split(),
    "music": "guitar album concert melody jazz drummer lyrics orchestra vinyl chorus tour singer".split(),
    "travel": "island passport hiking beach museum flight hostel mountain journey harbor desert map".split(),
    "finance": "stocks budget interest market savings inflation invest bond credit pension tax bank".split(),
}
FILLER = "the a new story about how why best guide notes from with and of".split()
COUNTRIES = ["US", "DE", "FR", "BR", "IN", "JP", "GB", "CN"]
AGE_BANDS = ["18-24", "25-34", "35-44", "45-54", "55+"]


@dataclass(frozen=True)
class SimulationConfig:
    """Size and shape of the simulated site."""

    seed: int = 42
    start: datetime = datetime(2026, 11, 1)
    days: int = 8
    n_users: int = 300
    initial_items: int = 300
    new_items_per_day: int = 20
    sessions_per_user_day: float = 1.0
    impressions_per_session: int = 10
    base_click_rate: float = 0.05
    liked_click_rate: float = 0.45
    rating_rate: float = 0.3
    late_arrival_rate: float = 0.01
    topics: tuple[str, ...] = tuple(TOPICS)
    # Share of users whose liked topics follow their country (two topics per country) instead of being drawn
    # independently of it: 0 (default) plants no demographic signal; benches use it as a positive control.
    country_topic_share: float = 0.0


@dataclass
class Site:
    """The simulated rows, ready to write to the sources."""

    config: SimulationConfig
    users: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    user_topics: dict[int, list[str]] = field(default_factory=dict)
    item_topic: dict[int, str] = field(default_factory=dict)

    def ground_truth(self) -> dict[str, Any]:
        """Planted preferences, for checking what a model recovered."""
        return {
            "config": {k: str(v) if isinstance(v, datetime) else v for k, v in asdict(self.config).items()},
            "user_topics": {str(u): t for u, t in self.user_topics.items()},
            "item_topic": {str(i): t for i, t in self.item_topic.items()},
        }

    def save_ground_truth(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.ground_truth(), indent=1))


def _event_id(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:24]


def _make_item(rng: np.random.Generator, item_id: int, topic: str, at: datetime) -> dict[str, Any]:
    vocab = TOPICS[topic]
    title_words = rng.choice(vocab, size=3, replace=False).tolist()
    body_words = rng.choice(vocab + FILLER, size=24).tolist()
    return {
        "item_id": item_id,
        "title": " ".join(w.capitalize() for w in title_words),
        "body": " ".join(body_words),
        "category": topic,
        "tags": sorted(set(rng.choice(vocab, size=2).tolist())),
        "published_at": at,
        "updated_at": at,
    }


def _users(rng: np.random.Generator, cfg: SimulationConfig, site: Site) -> None:
    for user_id in range(1, cfg.n_users + 1):
        created = cfg.start + timedelta(seconds=int(rng.integers(0, 3600)))
        n_liked = int(rng.integers(1, 3))
        site.user_topics[user_id] = sorted(rng.choice(cfg.topics, size=n_liked, replace=False).tolist())
        site.users.append(
            {
                "user_id": user_id,
                "created_at": created,
                "country": str(rng.choice(COUNTRIES)),
                "age_band": str(rng.choice(AGE_BANDS)),
                "updated_at": created,
            }
        )


def _plant_country_topics(cfg: SimulationConfig, site: Site) -> None:
    """Make ``country_topic_share`` of the users like their country's two topics (a separate seeded stream, so the
    rest of the site is drawn as without it)."""
    rng = np.random.default_rng([cfg.seed, 1])
    for user in site.users:
        if rng.random() < cfg.country_topic_share:
            first = COUNTRIES.index(user["country"]) % len(cfg.topics)
            site.user_topics[user["user_id"]] = sorted({cfg.topics[first], cfg.topics[(first + 1) % len(cfg.topics)]})


def _new_items(rng: np.random.Generator, site: Site, count: int, day_start: datetime) -> None:
    first = len(site.items) + 1
    for item_id in range(first, first + count):
        topic = str(rng.choice(site.config.topics))
        at = day_start + timedelta(seconds=int(rng.integers(0, 3600)))
        site.item_topic[item_id] = topic
        site.items.append(_make_item(rng, item_id, topic, at))


def _arrival(rng: np.random.Generator, cfg: SimulationConfig, at: datetime) -> datetime:
    """Server receive time: seconds after the event, or hours for the few that arrive late (offline clients)."""
    if rng.random() < cfg.late_arrival_rate:
        return at + timedelta(seconds=int(rng.integers(3600, 4 * 3600)))
    return at + timedelta(milliseconds=int(rng.integers(50, 3000)))


def _day_events(rng: np.random.Generator, site: Site, day: int, popularity: np.ndarray) -> Iterator[dict[str, Any]]:
    cfg = site.config
    day_start = cfg.start + timedelta(days=day)
    n_items = len(site.items)
    position_bias = 1.0 / np.log2(np.arange(cfg.impressions_per_session) + 2.0)
    for user_id in range(1, cfg.n_users + 1):
        liked = set(site.user_topics[user_id])
        for session in range(int(rng.poisson(cfg.sessions_per_user_day))):
            # Impressions come from a popularity-skewed feed, so popularity drifts with clicks.
            weights = popularity[:n_items] + 1.0
            shown = rng.choice(n_items, size=cfg.impressions_per_session, replace=False, p=weights / weights.sum())
            t = day_start + timedelta(seconds=int(rng.integers(3600, 86400 - 600)))
            session_id = _event_id("s", user_id, day, session)
            for pos, idx in enumerate(shown.tolist()):
                item_id = idx + 1
                at = t + timedelta(seconds=pos * 3)
                is_liked = site.item_topic[item_id] in liked
                yield _event(user_id, item_id, "impression", at, _arrival(rng, cfg, at), session_id, pos, day)
                rate = cfg.liked_click_rate if is_liked else cfg.base_click_rate
                if rng.random() < rate * position_bias[pos]:
                    popularity[idx] += 1.0
                    click_at = at + timedelta(seconds=1)
                    yield _event(
                        user_id, item_id, "click", click_at, _arrival(rng, cfg, click_at), session_id, pos, day
                    )
                    if rng.random() < cfg.rating_rate:
                        stars = float(rng.integers(4, 6) if is_liked else rng.integers(1, 4))
                        rated_at = click_at + timedelta(seconds=int(rng.integers(60, 600)))
                        rating = _event(user_id, item_id, "rating", rated_at, _arrival(rng, cfg, rated_at), session_id,
                                        pos, day)  # fmt: skip
                        yield {**rating, "value": stars}


def _event(
    user_id: int, item_id: int, kind: str, at: datetime, received: datetime, session_id: str, pos: int, day: int
) -> dict[str, Any]:
    return {
        "event_id": _event_id(kind, user_id, item_id, session_id, pos, day),
        "user_id": user_id,
        "item_id": item_id,
        "event_type": kind,
        "value": None,
        "session_id": session_id,
        "position": pos,
        "occurred_at": at,
        "received_at": received,
    }


def simulate(cfg: SimulationConfig | None = None) -> Site:
    """Generate the whole site in memory, deterministically."""
    cfg = cfg or SimulationConfig()
    rng = np.random.default_rng(cfg.seed)
    site = Site(config=cfg)
    _users(rng, cfg, site)
    if cfg.country_topic_share > 0:
        _plant_country_topics(cfg, site)
    _new_items(rng, site, cfg.initial_items, cfg.start)
    max_items = cfg.initial_items + cfg.new_items_per_day * cfg.days
    popularity = np.zeros(max_items)
    for day in range(cfg.days):
        if day > 0:
            _new_items(rng, site, cfg.new_items_per_day, cfg.start + timedelta(days=day))
        site.events.extend(_day_events(rng, site, day, popularity))
    log.info("simulated %d users, %d items, %d events", len(site.users), len(site.items), len(site.events))
    return site
