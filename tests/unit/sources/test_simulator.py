from collections import Counter

from recsys.lake import EVENT_TYPES
from recsys.sources.simulator import SimulationConfig, simulate

SMALL = SimulationConfig(days=3, n_users=40, initial_items=60, new_items_per_day=5)


def test_simulation_is_deterministic() -> None:
    a, b = simulate(SMALL), simulate(SMALL)
    assert a.events == b.events
    assert a.items == b.items
    assert simulate(SimulationConfig(**{**SMALL.__dict__, "seed": 1})).events != a.events


def test_shape_of_the_site() -> None:
    site = simulate(SMALL)
    assert len(site.users) == 40
    assert len(site.items) == 60 + 5 * 2  # new items arrive from the second day on
    assert {e["event_type"] for e in site.events} <= set(EVENT_TYPES)
    assert len({e["event_id"] for e in site.events}) == len(site.events)
    days = Counter(e["occurred_at"].date() for e in site.events)
    assert len(days) == 3


def test_clicks_follow_planted_preferences() -> None:
    site = simulate(SimulationConfig(days=4, n_users=80, initial_items=120))
    liked = total = 0
    for e in site.events:
        if e["event_type"] == "click":
            total += 1
            liked += site.item_topic[e["item_id"]] in site.user_topics[e["user_id"]]
    # With 6 topics a user likes 1-2 (~25% of impressions); clicks on liked topics should dominate.
    assert total > 100
    assert liked / total > 0.6


def test_item_text_comes_from_the_topic_vocabulary() -> None:
    from recsys.sources.simulator import TOPICS

    site = simulate(SMALL)
    for item in site.items[:20]:
        vocab = set(TOPICS[item["category"]])
        assert {w.lower() for w in item["title"].split()} <= vocab
