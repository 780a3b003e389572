"""Infra validation: serve a new bento on a free port and check it before it may be deployed.

Checks, in order (the first that fails stops the validation):

* ``readiness``: ``bentoml serve`` starts and ``/readyz`` answers 200;
* ``known_user``: a user the model was trained on gets a model answer (not a fallback), from this bento's model;
* ``unknown_user``: a user the model never saw gets the popularity fallback;
* ``bad_request``: a malformed request gets a 4xx with a message;
* ``p99_latency``: the p99 of ``requests`` sequential ``/v1/recommend`` calls (over the known users) stays within
  the budget (``settings.orchestration.infra_requests`` and ``infra_p99_budget_ms``).

Every validation, passed or failed, is recorded on the bento's model in the model store (label
``infra_validation: passed|failed``, the summary under its metadata ``infra_validations[<bento tag>]``), so
:func:`deploy_validated` deploys only a bento whose own validation passed. A failed check raises
:class:`InfraValidationError` naming the check, what was seen and what to do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from recsys.errors import InfraValidationError, RegistryError, ServingError

if TYPE_CHECKING:
    import httpx
    import pandas as pd

    from recsys.config import Settings
    from recsys.registry.production import DeployRecord

log = logging.getLogger(__name__)

PASSED, FAILED = "passed", "failed"
CHECKS = ("readiness", "known_user", "unknown_user", "bad_request", "p99_latency")
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Check:
    """One check's outcome: what was seen, and what to do when it failed."""

    name: str
    passed: bool
    seen: str
    todo: str = ""


@dataclass
class Probe:
    """What the checks send: the users, how many timed requests, the budget, and the service's API key."""

    model_tag: str
    known_users: list[int]
    unknown_user: int
    requests: int
    budget_ms: float
    k: int = 10
    api_key: str | None = None
    latencies_ms: list[float] = field(default_factory=list)


def pick_users(train: pd.DataFrame, test: pd.DataFrame, n: int = 20) -> tuple[list[int], int]:
    """Up to ``n`` users of the training positives, most recently active first (the first is the known user:
    the freshest online features), and an id no training or holdout row has (the unknown user)."""
    if train.empty:
        raise RegistryError("the run's training set has no positives: no known user to validate a bento with.")
    last = train.groupby("user_id")["event_timestamp"].max().reset_index()
    ordered = last.sort_values(["event_timestamp", "user_id"], ascending=[False, True], kind="stable")
    known = [int(u) for u in ordered["user_id"].head(n)]
    unknown = int(max(train["user_id"].max(), test["user_id"].max() if len(test) else 0)) + 1
    return known, unknown


def validate_bento(
    settings: Settings,
    bento_tag: str,
    known_users: Sequence[int],
    unknown_user: int,
    requests: int | None = None,
    budget_ms: float | None = None,
    ready_timeout_s: float | None = None,
) -> dict[str, Any]:
    """Serve ``bento_tag`` on a free port, run the checks, record the summary on its model and return it.

    ``known_users`` (the first is the known user, all take turns in the timed requests) must be users the model
    was trained on; ``requests`` and ``budget_ms`` default to ``settings.orchestration``'s. Raises
    :class:`InfraValidationError` (with the recorded summary) at the first failed check.
    """
    from recsys.registry.serve import DEFAULT_READY_TIMEOUT_S, serve_bento
    from recsys.registry.store import bento_models, resolve_bento

    if not known_users:
        raise RegistryError("infra validation needs at least one known user (a user of the training set).")
    tag = resolve_bento(settings, bento_tag)
    models = bento_models(settings, tag)
    if len(models) != 1:
        raise RegistryError(f"bento {tag} names {len(models)} models {models}; a deployable bento names exactly one.")
    orchestration = settings.orchestration
    key = settings.serving.api_key
    probe = Probe(
        model_tag=models[0],
        known_users=[int(u) for u in known_users],
        unknown_user=int(unknown_user),
        requests=int(requests or orchestration.infra_requests),
        budget_ms=float(budget_ms if budget_ms is not None else orchestration.infra_p99_budget_ms),
        k=settings.model.top_k,
        api_key=key.get_secret_value() if key is not None else None,
    )
    started = time.perf_counter()
    checks: list[Check] = []
    try:
        with serve_bento(settings, tag, ready_timeout_s=ready_timeout_s or DEFAULT_READY_TIMEOUT_S) as base_url:
            checks = run_checks(base_url, probe)
    except ServingError as exc:  # serve_bento did not see /readyz answer 200: the readiness check failed
        checks = [Check("readiness", False, f"the bento did not become ready: {exc}", TODO["readiness"])]
    summary = _summary(tag, probe, checks, time.perf_counter() - started)
    record(settings, summary)
    failed = next((c for c in checks if not c.passed), None)
    if failed is not None:
        raise InfraValidationError(
            f"infra validation of bento {tag} failed at check '{failed.name}': {failed.seen}. {failed.todo}",
            failed.name,
            summary,
        )
    log.info("bento %s passed infra validation: p99 %.1f ms", tag, summary["latency_ms"]["p99"])
    return summary


TODO = {
    "readiness": "Read the server log above; check the model loads and the online store is reachable "
    "(`recsys serve` the bento to reproduce it).",
    "known_user": "A trained user must get the model's answer: materialize the online store for the run's "
    "interval (the features DAG) so the user has online features, and check the bento serves this run's model.",
    "unknown_user": "A user the model never saw must get the popularity fallback: check the service's unknown-user "
    "path (recsys.serving.recommender) and the model's user vocabulary.",
    "bad_request": "The service must refuse a malformed request with a 4xx and a message: check the API's "
    "request validation (recsys.serving.http).",
    "p99_latency": "Profile the bento (docs/serving.md), or raise orchestration.infra_p99_budget_ms "
    "(RECSYS_ORCHESTRATION__INFRA_P99_BUDGET_MS) if the budget is too tight for this machine.",
}


def run_checks(base_url: str, probe: Probe) -> list[Check]:
    """The checks against a served bento at ``base_url``, in order, up to the first that fails."""
    import httpx

    headers = {"X-API-Key": probe.api_key} if probe.api_key else {}
    steps: list[Callable[[httpx.Client, Probe], Check]] = [
        _readiness, _known_user, _unknown_user, _bad_request, _p99_latency,
    ]  # fmt: skip
    checks: list[Check] = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_S) as client:
        for step in steps:
            try:
                check = step(client, probe)
            except httpx.HTTPError as exc:
                name = step.__name__.lstrip("_")
                check = Check(name, False, f"the request failed: {exc!r}", TODO[name])
            checks.append(check)
            if not check.passed:
                break
    return checks


def _recommend(client: httpx.Client, user_id: int, k: int) -> httpx.Response:
    return client.post("/v1/recommend", json={"user_id": user_id, "k": k})


def _answer(response: httpx.Response) -> str:
    return f"HTTP {response.status_code} {response.text[:300]}"


def _readiness(client: httpx.Client, probe: Probe) -> Check:
    response = client.get("/readyz")
    return Check("readiness", response.status_code == 200, f"GET /readyz answered {response.status_code}",
                 TODO["readiness"])  # fmt: skip


def _known_user(client: httpx.Client, probe: Probe) -> Check:
    user = probe.known_users[0]
    response = _recommend(client, user, probe.k)
    if response.status_code != 200:
        return Check("known_user", False, f"user {user} got {_answer(response)}", TODO["known_user"])
    body = response.json()
    if body.get("fallback") or not body.get("items"):
        why = body.get("fallback_reason") or "no items"
        seen = f"user {user}, trained on, got a fallback answer ({why}) instead of the model's"
        return Check("known_user", False, seen, TODO["known_user"])
    if body.get("model_version") != probe.model_tag:
        seen = f"user {user} was answered by model {body.get('model_version')}, not the bento's {probe.model_tag}"
        return Check("known_user", False, seen, TODO["known_user"])
    return Check("known_user", True, f"user {user}: {len(body['items'])} items from model {probe.model_tag}")


def _unknown_user(client: httpx.Client, probe: Probe) -> Check:
    user = probe.unknown_user
    response = _recommend(client, user, probe.k)
    body = response.json() if response.status_code == 200 else {}
    if response.status_code != 200 or not body.get("fallback") or not body.get("items"):
        seen = f"user {user}, never trained on, got {_answer(response)} instead of the popularity fallback"
        return Check("unknown_user", False, seen, TODO["unknown_user"])
    return Check("unknown_user", True, f"user {user}: popularity fallback ({body.get('fallback_reason')})")


def _bad_request(client: httpx.Client, probe: Probe) -> Check:
    response = client.post("/v1/recommend", json={"user_id": "not-a-user-id", "k": probe.k})
    is_json = response.headers.get("content-type", "").startswith("application/json")
    detail = response.json().get("detail") if is_json else None
    if not 400 <= response.status_code < 500 or not detail:
        seen = f"a request with user_id 'not-a-user-id' got {_answer(response)}, not a 4xx with a message"
        return Check("bad_request", False, seen, TODO["bad_request"])
    return Check("bad_request", True, f"HTTP {response.status_code} with a message")


def _p99_latency(client: httpx.Client, probe: Probe) -> Check:
    import numpy as np

    probe.latencies_ms.clear()
    for i in range(probe.requests):
        user = probe.known_users[i % len(probe.known_users)]
        began = time.perf_counter()
        response = _recommend(client, user, probe.k)
        probe.latencies_ms.append((time.perf_counter() - began) * 1000.0)
        if response.status_code != 200:
            seen = f"request {i + 1} of {probe.requests} (user {user}) got {_answer(response)}"
            return Check("p99_latency", False, seen, TODO["p99_latency"])
    p99 = float(np.percentile(probe.latencies_ms, 99))
    seen = f"p99 {p99:.2f} ms over {probe.requests} requests, budget {probe.budget_ms:g} ms"
    return Check("p99_latency", p99 <= probe.budget_ms, seen, "" if p99 <= probe.budget_ms else TODO["p99_latency"])


def _summary(tag: str, probe: Probe, checks: list[Check], seconds: float) -> dict[str, Any]:
    import numpy as np

    failed = next((c.name for c in checks if not c.passed), None)
    lat = np.asarray(probe.latencies_ms, dtype=float)
    latency = {"requests": len(lat), "budget_p99": probe.budget_ms}
    if len(lat):
        latency.update({"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                        "max": float(lat.max())})  # fmt: skip
    return {
        "bento_tag": tag,
        "model_tag": probe.model_tag,
        "passed": failed is None and len(checks) == len(CHECKS),
        "failed_check": failed,
        "checks": [{k: v for k, v in asdict(c).items() if k != "todo"} for c in checks],
        "latency_ms": latency,
        "known_user": probe.known_users[0],
        "unknown_user": probe.unknown_user,
        "validated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 2),
    }


def record(settings: Settings, summary: dict[str, Any]) -> None:
    """Store ``summary`` on its bento's model: label ``infra_validation``, metadata ``infra_validations[bento]``."""
    from recsys.registry.store import INFRA_LABEL, INFRA_METADATA, get_model, set_model_status

    model = get_model(settings, summary["model_tag"])
    history = dict(model.metadata.get(INFRA_METADATA) or {})
    history[summary["bento_tag"]] = summary
    status = PASSED if summary["passed"] else FAILED
    set_model_status(settings, model.tag, {INFRA_LABEL: status}, {INFRA_METADATA: history})


def validation_of(settings: Settings, bento_tag: str) -> dict[str, Any] | None:
    """The newest recorded infra validation of ``bento_tag`` (from its model's metadata), or None."""
    from recsys.registry.store import INFRA_METADATA, bento_models, get_model, resolve_bento

    tag = resolve_bento(settings, bento_tag)
    models = bento_models(settings, tag)
    if len(models) != 1:
        return None
    found = (get_model(settings, models[0]).metadata.get(INFRA_METADATA) or {}).get(tag)
    return dict(found) if found else None


def require_passed(settings: Settings, bento_tag: str) -> dict[str, Any]:
    """The passed validation of ``bento_tag``; :class:`InfraValidationError` when it has none or it failed."""
    from recsys.registry.store import resolve_bento

    tag = resolve_bento(settings, bento_tag)
    summary = validation_of(settings, tag)
    if summary is None:
        raise InfraValidationError(
            f"bento {tag} has not been infra-validated, so it is not deployed: validate it first (the training "
            "DAG's infra_validate task, recsys.pipeline.infra_validate_stage).",
            "not_validated",
        )
    if not summary.get("passed"):
        check = summary.get("failed_check") or "unknown"
        seen = next((c["seen"] for c in summary.get("checks", []) if c["name"] == check), "no detail recorded")
        raise InfraValidationError(
            f"bento {tag} failed infra validation at check '{check}' ({seen}) at {summary.get('validated_at')}, "
            "so it is not deployed: fix it and validate it again, or deploy another bento.",
            check,
            summary,
        )
    return summary


def deploy_validated(settings: Settings, bento_tag: str, model_tag: str) -> DeployRecord | None:
    """Deploy ``bento_tag`` when the gate promoted ``model_tag`` and the bento passed infra validation.

    None (production unchanged) when the gate did not promote the model; :class:`InfraValidationError`
    (production unchanged) when it did but the bento was not validated or failed.
    """
    from recsys.registry.production import deploy, production_bento, promotion_reason

    reason = promotion_reason(settings, model_tag)
    if reason is None:
        log.info("%s was not promoted by the gate: the production pointer stays at %s", model_tag,
                 production_bento(settings))  # fmt: skip
        return None
    require_passed(settings, bento_tag)
    return deploy(settings, bento_tag, reason=reason)
