"""Infra validation of real bentos served by ``bentoml serve`` on a free port, and the deploy that follows it.

Two bentos are built from the example artifact (users 101..105, items 1001..1012) over a Feast SQLite online
store holding those users; each test serves one through ``pipeline.infra_validate_stage``, which picks the known
user from the run's training set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from recsys.config import Settings
from recsys.errors import InfraValidationError
from recsys.features.training_set import ITEM_FEATURES, USER_FEATURES, TrainingData
from recsys.pipeline import deploy_stage, infra_validate_stage, run_dir
from recsys.registry import gate
from recsys.registry.infra import CHECKS
from recsys.registry.production import deploy, deployments, list_bentos, production_bento
from recsys.registry.store import build_bento, get_model, save_model
from recsys.serving.testing import EXAMPLE_FEATURE_NAMES, materialize_example_users, write_example_artifact

pytestmark = pytest.mark.slow  # builds bentos and starts real `bentoml serve` processes

WEEK = datetime(2024, 1, 1, tzinfo=UTC)  # the run's interval starts here (the example artifact's data interval)
ONLINE = {u: ([10.0 + u % 3, 2.0, 0.2], [1001 + u % 4]) for u in range(101, 106)}  # features, recent items


@dataclass(frozen=True)
class Store:
    settings: Settings
    model_a: str
    bento_a: str
    model_b: str
    bento_b: str


def _training_set(users: list[int]) -> TrainingData:
    """Positives of ``users`` over six days, the last user the most recently active; a holdout on day seven."""
    cols = ["user_id", "item_id", "event_timestamp"]
    rows = [
        (u, 1001 + (u + d) % 11, WEEK + timedelta(days=d, minutes=n)) for n, u in enumerate(users) for d in range(6)
    ]
    train = pd.DataFrame(rows, columns=cols)
    train[USER_FEATURES] = 1.0
    test = pd.DataFrame([(u, 1012, WEEK + timedelta(days=6, hours=1)) for u in users], columns=cols)
    features = pd.DataFrame(1.0, index=pd.Index(users, name="user_id"), columns=USER_FEATURES)
    items = pd.DataFrame({"item_id": np.arange(1001, 1013), "embedding": list(np.eye(12, 4, dtype=np.float32))})
    items[ITEM_FEATURES] = 0.0
    return TrainingData(train, test, features, items, WEEK + timedelta(days=6), list(USER_FEATURES),
                        list(ITEM_FEATURES))  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Models A and B (the example artifact registered twice), a bento of each, the users in the online store."""
    root = tmp_path_factory.mktemp("infra_validation")
    settings = Settings(home=root / "home")
    assert USER_FEATURES == EXAMPLE_FEATURE_NAMES
    artifact = write_example_artifact(root / "artifact")
    materialize_example_users(settings, ONLINE)
    tags = []
    for name in ("a", "b"):
        model = save_model(settings, artifact.directory, {"code_version": name})
        tags += [model, build_bento(settings, model)]
    return Store(settings, *tags)


@pytest.fixture
def store_(built: Store) -> Iterator[Store]:
    """The built store with no production pointer, gate decisions or run folder."""

    def clean() -> None:
        from recsys.registry.production import pointer_path

        pointer_path(built.settings).unlink(missing_ok=True)
        for name in ("production.json", "decisions.jsonl"):
            (built.settings.home / "registry" / name).unlink(missing_ok=True)
        (run_dir(built.settings, WEEK) / "infra_validation.json").unlink(missing_ok=True)

    clean()
    _training_set([101, 102, 103, 104, 105]).save(run_dir(built.settings, WEEK))
    yield built
    clean()


def _promote(settings: Settings, model: str, production: str | None) -> None:
    """Record a promotion of ``model`` the way the gate does (the decision log, then the model's status)."""
    decision = gate.decide(model, 0.3, production, 0.2 if production else None, "ndcg@10", 0.0)
    gate._record(settings, decision)
    gate.mark_decision(settings, decision)


def test_a_real_bento_passes_and_is_then_deployed(store_: Store) -> None:
    s = store_.settings

    summary = infra_validate_stage(s, WEEK, store_.bento_a)

    assert summary["passed"] is True and summary["failed_check"] is None
    assert [c["name"] for c in summary["checks"]] == list(CHECKS) and all(c["passed"] for c in summary["checks"])
    assert summary["bento_tag"] == store_.bento_a and summary["model_tag"] == store_.model_a
    assert summary["known_user"] == 105 and summary["unknown_user"] == 106  # the most recent user; a new id
    latency = summary["latency_ms"]
    assert latency["requests"] == s.orchestration.infra_requests == 200
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"] and latency["p99"] <= latency["budget_p99"]
    assert json.loads((run_dir(s, WEEK) / "infra_validation.json").read_text()) == summary
    assert get_model(s, store_.model_a).labels["infra_validation"] == "passed"
    assert {b.tag: b.infra_validation for b in list_bentos(s)}[store_.bento_a] == "passed"

    _promote(s, store_.model_a, None)
    deployed = deploy_stage(s, WEEK, store_.bento_a, store_.model_a)

    assert deployed["deployed"] is True and production_bento(s) == store_.bento_a


def test_a_p99_budget_no_bento_meets_fails_at_the_latency_check_and_the_bento_is_not_deployed(store_: Store) -> None:
    budget = store_.settings.orchestration.model_copy(update={"infra_p99_budget_ms": 0.001})
    s = store_.settings.model_copy(update={"orchestration": budget})
    deploy(s, store_.bento_a)  # production before
    _promote(s, store_.model_b, store_.model_a)  # the gate promoted B: only the validation stands in the way

    with pytest.raises(InfraValidationError, match=r"check 'p99_latency': p99 .* ms over 200 requests") as failed:
        infra_validate_stage(s, WEEK, store_.bento_b)

    assert failed.value.check == "p99_latency" and "infra_p99_budget_ms" in str(failed.value)
    summary = failed.value.summary
    assert summary is not None and summary["passed"] is False
    assert [c["passed"] for c in summary["checks"]] == [True, True, True, True, False]
    assert json.loads((run_dir(s, WEEK) / "infra_validation.json").read_text()) == summary
    assert get_model(s, store_.model_b).labels["infra_validation"] == "failed"

    with pytest.raises(InfraValidationError, match="failed infra validation at check 'p99_latency'"):
        deploy_stage(s, WEEK, store_.bento_b, store_.model_b)
    assert production_bento(s) == store_.bento_a and [d.bento for d in deployments(s)] == [store_.bento_a]


def test_a_known_user_the_model_cannot_answer_fails_at_the_known_user_check(store_: Store) -> None:
    s = store_.settings
    _training_set([101, 102, 999]).save(run_dir(s, WEEK))  # 999, the most recent, has no online features

    with pytest.raises(InfraValidationError, match=r"check 'known_user': user 999, trained on, got a fallback") as e:
        infra_validate_stage(s, WEEK, store_.bento_b)

    assert "(no online features for this user)" in str(e.value) and "materialize the online store" in str(e.value)
    assert e.value.summary is not None and [c["name"] for c in e.value.summary["checks"]] == ["readiness", "known_user"]
    assert production_bento(s) is None
