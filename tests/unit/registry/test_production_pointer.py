"""The production pointer: deploy, rollback, their history, locking, and the promotion gate that moves it.

Two real bentos (each pinned to its own model) are built once per module (a few seconds each); every test
starts from an empty pointer and an empty gate decision log.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime

import pytest

from recsys.config import Settings
from recsys.errors import InfraValidationError, RegistryError
from recsys.registry import gate, infra, production, store
from recsys.registry.gate import production_tag
from recsys.registry.production import (
    DeployRecord,
    deploy,
    deploy_if_promoted,
    deployments,
    list_bentos,
    pointer_path,
    production_bento,
    promotion_reason,
    rollback,
)
from recsys.registry.store import build_bento, save_model
from recsys.serving.testing import ExampleArtifact

METRICS_A = {"model": {"ndcg@10": 0.21, "recall@10": 0.30}, "popularity": {"ndcg@10": 0.10, "recall@10": 0.15}}
METRICS_B = {"model": {"ndcg@10": 0.25, "recall@10": 0.33}, "popularity": {"ndcg@10": 0.11, "recall@10": 0.16}}


@dataclass(frozen=True)
class BuiltStore:
    settings: Settings
    model_a: str
    bento_a: str
    model_b: str
    bento_b: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, registry_artifact: ExampleArtifact) -> BuiltStore:
    """A store with bento A (model A, interval 11-01..11-02) and the newer bento B (model B, 11-02..11-03)."""
    settings = Settings(home=tmp_path_factory.mktemp("production") / "home")
    tags = []
    for day, metrics in ((1, METRICS_A), (2, METRICS_B)):
        meta = {
            "metrics": metrics,
            "data_interval_start": f"2026-11-0{day}T00:00:00+00:00",
            "data_interval_end": f"2026-11-0{day + 1}T00:00:00+00:00",
        }
        model = save_model(settings, registry_artifact.directory, meta)
        tags += [model, build_bento(settings, model)]
    return BuiltStore(settings, *tags)


@pytest.fixture
def store_(built: BuiltStore) -> Iterator[BuiltStore]:
    """The built store with no production pointer and no gate decisions (removed again afterwards)."""

    def clean() -> None:
        pointer_path(built.settings).unlink(missing_ok=True)
        for name in ("production.json", "decisions.jsonl"):
            (built.settings.home / "registry" / name).unlink(missing_ok=True)

    clean()
    yield built
    clean()


def test_no_pointer_before_the_first_deploy(settings: Settings) -> None:
    assert production_bento(settings) is None
    assert production.production(settings) is None
    assert deployments(settings) == []


def test_deploy_round_trips_through_the_pointer_file(store_: BuiltStore) -> None:
    s = store_.settings

    record = deploy(s, store_.bento_a, reason="first")

    assert record == DeployRecord(store_.bento_a, store_.model_a, record.deployed_at, "first")
    assert datetime.fromisoformat(record.deployed_at).tzinfo is not None
    assert production_bento(s) == store_.bento_a and deployments(s) == [record]
    path = pointer_path(s)
    assert path == s.bentoml_home / "production.json"  # type: ignore[operator]
    raw = json.loads(path.read_text())
    assert raw == {
        "current": {"bento": store_.bento_a, "model": store_.model_a, "deployed_at": record.deployed_at,
                    "reason": "first"},
        "history": [],
    }  # fmt: skip
    assert not list(path.parent.glob(".production.json.*.tmp"))  # written via a temp file, then replaced


def test_deploy_accepts_a_bare_version_or_latest_and_records_the_full_tag(store_: BuiltStore) -> None:
    s = store_.settings

    assert deploy(s, store_.bento_a.split(":", 1)[1]).bento == store_.bento_a
    assert deploy(s, "latest").bento == store_.bento_b


def test_deploy_refuses_a_bento_that_is_not_in_the_store(store_: BuiltStore) -> None:
    deploy(store_.settings, store_.bento_a)

    with pytest.raises(RegistryError, match=r"recommender:nosuchversion is not in .*recsys bento list"):
        deploy(store_.settings, "nosuchversion")
    assert production_bento(store_.settings) == store_.bento_a  # unchanged
    assert len(deployments(store_.settings)) == 1


def test_deploy_refuses_a_bento_that_does_not_name_exactly_one_model(
    store_: BuiltStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "bento_models", lambda _settings, _tag: [store_.model_a, store_.model_b])

    with pytest.raises(RegistryError, match=r"names 2 models .* exactly one: rebuild it with build_bento"):
        deploy(store_.settings, store_.bento_a)
    assert production_bento(store_.settings) is None


def test_deploying_the_current_bento_again_is_a_no_op(store_: BuiltStore) -> None:
    s = store_.settings
    first = deploy(s, store_.bento_a)
    deploy(s, store_.bento_b)
    again = deploy(s, store_.bento_b, reason="again")

    assert again.bento == store_.bento_b and again.reason == "deploy"  # the existing entry, not a new one
    assert [d.bento for d in deployments(s)] == [store_.bento_a, store_.bento_b]
    assert deployments(s)[0] == first


def test_rollback_restores_the_previous_bento_and_a_second_one_flips_back(store_: BuiltStore) -> None:
    s = store_.settings
    deploy(s, store_.bento_a)
    deploy(s, store_.bento_b)

    back = rollback(s)

    assert back.bento == store_.bento_a and back.model == store_.model_a
    assert back.reason == f"rollback from {store_.bento_b}"
    assert production_bento(s) == store_.bento_a
    assert production_tag(s) == store_.model_a  # the gate's baseline follows what serves
    # history is the audit trail of every entry that was current; a rollback appends the one it leaves
    assert [d.bento for d in deployments(s)] == [store_.bento_a, store_.bento_b, store_.bento_a]

    assert rollback(s).bento == store_.bento_b  # twice: back where we started
    assert production_tag(s) == store_.model_b
    assert [d.bento for d in deployments(s)] == [store_.bento_a, store_.bento_b, store_.bento_a, store_.bento_b]


def test_rollback_with_nothing_before_says_so(store_: BuiltStore) -> None:
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(store_.settings)
    deploy(store_.settings, store_.bento_a)
    with pytest.raises(RegistryError, match=r"nothing to roll back to.*recsys bento deploy TAG"):
        rollback(store_.settings)
    assert production_bento(store_.settings) == store_.bento_a


def test_rollback_to_a_bento_no_longer_in_the_store_fails_and_keeps_production(
    store_: BuiltStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = store_.settings
    deploy(s, store_.bento_a)
    deploy(s, store_.bento_b)
    real = store.resolve_bento

    def gone(settings: Settings, tag: str) -> str:
        if tag == store_.bento_a:
            raise RegistryError(f"bento {tag} is not in the store")
        return real(settings, tag)

    monkeypatch.setattr(store, "resolve_bento", gone)

    with pytest.raises(RegistryError, match=f"cannot roll back from {store_.bento_b} to {store_.bento_a}"):
        rollback(s)
    assert production_bento(s) == store_.bento_b and len(deployments(s)) == 2


def test_concurrent_deploys_never_lose_an_entry(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """16 threads x 10 deploys of distinct tags: every one ends up in the history exactly once."""
    monkeypatch.setattr(production, "_check_bento", lambda _s, tag: (tag, f"recommender:model-of-{tag}"))
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def worker(n: int) -> None:
        try:
            start.wait()
            for i in range(10):
                deploy(settings, f"recommender:t{n}-{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    tags = [d.bento for d in deployments(settings)]
    assert sorted(tags) == sorted(f"recommender:t{n}-{i}" for n in range(16) for i in range(10))
    for n in range(16):  # each thread's own deploys keep their order
        mine = [t for t in tags if t.startswith(f"recommender:t{n}-")]
        assert mine == [f"recommender:t{n}-{i}" for i in range(10)]
    assert production_bento(settings) == tags[-1]


def test_a_corrupt_pointer_file_says_to_fix_or_delete_it(settings: Settings) -> None:
    path = pointer_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")

    with pytest.raises(RegistryError, match="fix or delete the file"):
        production_bento(settings)


def test_list_bentos_is_newest_first_with_model_metrics_interval_and_production(store_: BuiltStore) -> None:
    deploy(store_.settings, store_.bento_a)

    listed = list_bentos(store_.settings)

    assert [b.tag for b in listed] == [store_.bento_b, store_.bento_a]
    b, a = listed
    assert (a.model, a.is_production, b.model, b.is_production) == (store_.model_a, True, store_.model_b, False)
    assert a.metrics == METRICS_A and b.metrics == METRICS_B
    assert (a.data_interval_start, a.data_interval_end) == ("2026-11-01T00:00:00+00:00", "2026-11-02T00:00:00+00:00")
    assert b.created_at >= a.created_at


def test_list_bentos_of_an_empty_store(settings: Settings) -> None:
    assert list_bentos(settings) == []


# --- the promotion gate moves the pointer ------------------------------------------------------------


def _gate(settings: Settings, candidate: str, value: float, production: str | None, prod_value: float | None) -> None:
    """Record a gate decision the way the gate does (promotion updates the gate's production model)."""
    gate._record(settings, gate.decide(candidate, value, production, prod_value, "ndcg@10", 0.0))


def test_promotion_reason_for_the_first_promoted_refused_and_superseded_models(store_: BuiltStore) -> None:
    s = store_.settings
    assert promotion_reason(s, store_.model_a) is None  # no decision at all

    _gate(s, store_.model_a, 0.21, None, None)
    assert promotion_reason(s, store_.model_a) == "promoted: ndcg@10 0.2100, the first production model"

    _gate(s, store_.model_b, 0.20, store_.model_a, 0.21)  # refused
    assert promotion_reason(s, store_.model_b) is None

    _gate(s, store_.model_b, 0.25, store_.model_a, 0.21)  # a later run promotes it
    reason = promotion_reason(s, store_.model_b)
    assert reason == f"promoted: ndcg@10 0.2500 vs 0.2100 of {store_.model_a} (margin +0.0000)"
    assert promotion_reason(s, store_.model_a) is None  # superseded: no longer the gate's production model


def test_deploy_if_promoted_moves_the_pointer_only_for_a_promoted_model(store_: BuiltStore) -> None:
    s = store_.settings
    _gate(s, store_.model_a, 0.21, None, None)
    assert deploy_if_promoted(s, store_.bento_a, store_.model_a) is not None
    _gate(s, store_.model_b, 0.20, store_.model_a, 0.21)  # refused

    assert deploy_if_promoted(s, store_.bento_b, store_.model_b) is None
    assert production_bento(s) == store_.bento_a
    assert deployments(s)[-1].reason.startswith("promoted: ndcg@10 0.2100")


def _validated(settings: Settings, bento: str, model: str, failed_check: str | None = None) -> None:
    """Record an infra validation of ``bento`` the way the infra validation does (passed unless a check failed)."""
    checks = [{"name": name, "passed": name != failed_check, "seen": f"{name} seen"} for name in infra.CHECKS]
    if failed_check:
        checks = checks[: infra.CHECKS.index(failed_check) + 1]
    summary = {"bento_tag": bento, "model_tag": model, "passed": failed_check is None, "failed_check": failed_check,
               "checks": checks, "validated_at": "2026-11-03T00:00:00"}  # fmt: skip
    infra.record(settings, summary)


def test_deploy_stage_deploys_a_promoted_candidate_and_not_a_refused_one(store_: BuiltStore) -> None:
    from recsys.pipeline import deploy_stage

    s = store_.settings
    day = datetime(2026, 11, 3)
    _gate(s, store_.model_a, 0.21, None, None)
    _validated(s, store_.bento_a, store_.model_a)
    _validated(s, store_.bento_b, store_.model_b)  # validated, but its model is refused below

    promoted = deploy_stage(s, day, store_.bento_a, store_.model_a)

    assert promoted["deployed"] is True and promoted["production_bento"] == promoted["bento_tag"]
    assert production_bento(s) == promoted["bento_tag"]
    _gate(s, store_.model_b, 0.19, store_.model_a, 0.21)  # refused

    refused = deploy_stage(s, day, store_.bento_b, store_.model_b)

    assert refused["deployed"] is False and refused["production_bento"] == promoted["bento_tag"]
    assert production_bento(s) == promoted["bento_tag"] != refused["bento_tag"]
    assert [d.bento for d in deployments(s)] == [promoted["bento_tag"]]


# --- only an infra-validated bento is deployed ---------------------------------------------------------


def test_deploy_stage_refuses_a_promoted_models_bento_that_failed_infra_validation(store_: BuiltStore) -> None:
    from recsys.pipeline import deploy_stage

    s = store_.settings
    day = datetime(2026, 11, 3)
    _gate(s, store_.model_a, 0.21, None, None)
    _validated(s, store_.bento_a, store_.model_a)
    deploy_stage(s, day, store_.bento_a, store_.model_a)
    _gate(s, store_.model_b, 0.25, store_.model_a, 0.21)  # promoted, but its bento fails at the latency check
    _validated(s, store_.bento_b, store_.model_b, failed_check="p99_latency")

    failed = r"failed infra validation at check 'p99_latency' \(p99_latency seen\)"
    with pytest.raises(InfraValidationError, match=failed):
        deploy_stage(s, day, store_.bento_b, store_.model_b)

    assert production_bento(s) == store_.bento_a and [d.bento for d in deployments(s)] == [store_.bento_a]
    listed = {b.tag: b for b in list_bentos(s)}
    assert (listed[store_.bento_a].infra_validation, listed[store_.bento_b].infra_validation) == ("passed", "failed")


def test_deploy_stage_refuses_a_bento_that_was_never_validated(store_: BuiltStore) -> None:
    from recsys.pipeline import deploy_stage

    s = store_.settings
    _gate(s, store_.model_a, 0.21, None, None)
    gone = {k: v for k, v in store.get_model(s, store_.model_a).metadata.get(store.INFRA_METADATA, {}).items()
            if k != store_.bento_a}  # fmt: skip
    store.set_model_status(s, store_.model_a, {}, {store.INFRA_METADATA: gone})  # no record of bento A

    with pytest.raises(InfraValidationError, match="has not been infra-validated") as refused:
        deploy_stage(s, datetime(2026, 11, 3), store_.bento_a, store_.model_a)

    assert refused.value.check == "not_validated" and production_bento(s) is None


def test_the_gate_decision_is_stored_on_the_model_and_listed_with_its_bento(store_: BuiltStore) -> None:
    s = store_.settings
    gate.mark_decision(s, gate.decide(store_.model_a, 0.21, None, None, "ndcg@10", 0.0))
    refused = gate.decide(store_.model_b, 0.20, store_.model_a, 0.21, "ndcg@10", 0.0)
    gate.mark_decision(s, refused)

    a, b = store.get_model(s, store_.model_a), store.get_model(s, store_.model_b)
    assert (a.promotion, b.promotion) == ("promoted", "refused")
    assert b.metadata["promotion"] == asdict(refused) and "does not beat" in b.metadata["promotion"]["reason"]
    assert b.metadata["metrics"] == METRICS_B  # the rest of the metadata is kept
    listed = {info.tag: info for info in list_bentos(s)}
    assert (listed[store_.bento_a].promotion, listed[store_.bento_b].promotion) == ("promoted", "refused")
