"""The infra-validation checks against a stand-in service (a local HTTP server whose answers a test breaks one at a
time): each check fails on what it must catch, with what was seen and what to do; the users come from the run's
training set. Real bentos are validated in tests/integration/test_infra_validation.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd
import pytest

from recsys.config import Settings
from recsys.errors import InfraValidationError, RegistryError, ServingError
from recsys.registry import infra, serve, store
from recsys.registry.infra import CHECKS, Probe, pick_users, run_checks

MODEL = "recommender:m1"
KNOWN, UNKNOWN = [7, 8], 99


class Service:
    """What the stand-in answers; a test changes one field to break one check."""

    def __init__(self) -> None:
        self.ready = 200
        self.known_fallback = False
        self.model_version = MODEL
        self.unknown_fallback = True
        self.bad_request_status = 422
        self.fail_after: int | None = None  # answer 500 from this many /v1/recommend calls on
        self.calls = 0

    def recommend(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            return 500, {"detail": "boom"}
        user = body.get("user_id")
        if not isinstance(user, int):
            return self.bad_request_status, {"detail": "user_id: Input should be a valid integer"}
        fallback = self.known_fallback if user in KNOWN else self.unknown_fallback
        reason = ("no online features for this user" if user in KNOWN else "user is not in the model's user "
                  "vocabulary") if fallback else None  # fmt: skip
        answer = {"user_id": user, "items": [3, 1], "scores": [0.5, 0.2], "fallback": fallback,
                  "fallback_reason": reason, "model_version": self.model_version}  # fmt: skip
        return 200, answer


@pytest.fixture
def service() -> Iterator[tuple[Service, str]]:
    """The stand-in service on a free port: (its behaviour, its base URL)."""
    behaviour = Service()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(behaviour.ready, {})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            self._send(*behaviour.recommend(body))

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield behaviour, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _probe(requests: int = 20, budget_ms: float = 10_000.0) -> Probe:
    return Probe(MODEL, list(KNOWN), UNKNOWN, requests, budget_ms)


def test_a_sound_service_passes_every_check(service: tuple[Service, str]) -> None:
    behaviour, url = service
    probe = _probe()

    checks = run_checks(url, probe)

    assert [(c.name, c.passed) for c in checks] == [(name, True) for name in CHECKS]
    assert len(probe.latencies_ms) == 20 and behaviour.calls == 3 + 20  # known, unknown, bad request, timed
    assert checks[-1].seen.startswith("p99 ") and "over 20 requests, budget 10000 ms" in checks[-1].seen


@pytest.mark.parametrize(
    ("breakage", "check", "seen"),
    [
        ({"ready": 503}, "readiness", "GET /readyz answered 503"),
        ({"known_fallback": True}, "known_user", "user 7, trained on, got a fallback answer (no online features"),
        ({"model_version": "recommender:other"}, "known_user", "answered by model recommender:other, not the bento's"),
        ({"unknown_fallback": False}, "unknown_user", "user 99, never trained on, got HTTP 200"),
        ({"bad_request_status": 200}, "bad_request", "got HTTP 200"),
        ({"bad_request_status": 500}, "bad_request", "got HTTP 500"),
        ({"fail_after": 10}, "p99_latency", "request 8 of 20 (user 8) got HTTP 500"),
    ],
)
def test_each_check_fails_on_what_it_must_catch(
    service: tuple[Service, str], breakage: dict[str, Any], check: str, seen: str
) -> None:
    behaviour, url = service
    for key, value in breakage.items():
        setattr(behaviour, key, value)

    checks = run_checks(url, _probe())

    assert [c.name for c in checks] == list(CHECKS[: CHECKS.index(check) + 1])  # stops at the failed one
    assert all(c.passed for c in checks[:-1]) and not checks[-1].passed
    assert seen in checks[-1].seen and checks[-1].todo == infra.TODO[check]


def test_a_p99_over_budget_fails_with_the_numbers(service: tuple[Service, str]) -> None:
    _, url = service

    failed = run_checks(url, _probe(requests=30, budget_ms=0.001))[-1]

    assert (failed.name, failed.passed) == ("p99_latency", False)
    assert "over 30 requests, budget 0.001 ms" in failed.seen and "infra_p99_budget_ms" in failed.todo


def test_a_bento_that_never_gets_ready_fails_at_readiness_and_the_failure_is_recorded(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded: list[dict[str, Any]] = []
    monkeypatch.setattr(store, "resolve_bento", lambda _s, tag: tag)
    monkeypatch.setattr(store, "bento_models", lambda _s, _tag: [MODEL])
    monkeypatch.setattr(infra, "record", lambda _s, summary: recorded.append(summary))

    def never_ready(*_args: Any, **_kwargs: Any) -> Any:
        raise ServingError("bentoml serve exited with 3 before ready:\nModel recommender:m1 not found")

    monkeypatch.setattr(serve, "serve_bento", never_ready)

    with pytest.raises(InfraValidationError, match=r"recommender:b1 failed at check 'readiness': .* exited") as failed:
        infra.validate_bento(settings, "recommender:b1", KNOWN, UNKNOWN)

    assert failed.value.check == "readiness" and failed.value.summary == recorded[0]
    assert recorded[0]["passed"] is False and recorded[0]["latency_ms"] == {"requests": 0, "budget_p99": 500.0}
    assert (recorded[0]["bento_tag"], recorded[0]["model_tag"]) == ("recommender:b1", MODEL)


def test_the_known_users_are_the_most_recently_active_and_the_unknown_one_is_new() -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    train = pd.DataFrame(
        {"user_id": [5, 3, 9, 3, 4], "event_timestamp": [t0 + timedelta(hours=h) for h in (1, 2, 3, 9, 9)]}
    )
    test = pd.DataFrame({"user_id": [12], "event_timestamp": [t0 + timedelta(days=1)]})

    assert pick_users(train, test) == ([3, 4, 9, 5], 13)  # ties: smaller id first
    assert pick_users(train, test, n=2) == ([3, 4], 13)
    assert pick_users(train, test.iloc[:0]) == ([3, 4, 9, 5], 10)
    with pytest.raises(RegistryError, match="no known user"):
        pick_users(train.iloc[:0], test)
