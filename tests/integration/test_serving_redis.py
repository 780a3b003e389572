"""A real ``bentoml serve`` of a built bento over a Feast store materialized into a private redis-server.

One bento (the example artifact, registered and built once) is served three ways, each server shared by the
tests that need it: the main server (API key set) over a fresh store, then over a store too old for the model
(it must refuse to start, and start with ``degraded_ok``). The main server's tests run in file order: the
Redis outage and recovery test stops and restarts the redis-server, so it comes last among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from recsys.config import ServingSettings, Settings
from recsys.errors import ServingError
from recsys.registry.serve import serve_bento
from recsys.registry.store import build_bento, save_model
from recsys.serving.recommender import REASON_NO_FEATURES, REASON_STORE_UNAVAILABLE
from recsys.serving.testing import ExampleArtifact, materialize_example_users, write_example_artifact
from serving_fixtures import EXAMPLE_ROWS, EXAMPLE_USERS, RedisServer, redis_settings

pytestmark = [
    pytest.mark.services,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:fetch_arrow_table:DeprecationWarning"),
]

API_KEY = f"k3y-{uuid.uuid4().hex}"  # distinctive, so a leak into the log cannot be a coincidence
KEY = {"X-API-Key": API_KEY}
FEATURE_SERVICE = "recommender_v1_user"
STORE_TIMEOUT_S = 0.05
BREAKER_FAILURES = 3
BREAKER_RESET_S = 1.0
SERVING_ENV = {
    "RECSYS_SERVING__STORE_TIMEOUT_S": str(STORE_TIMEOUT_S),
    "RECSYS_SERVING__BREAKER_FAILURES": str(BREAKER_FAILURES),
    "RECSYS_SERVING__BREAKER_RESET_S": str(BREAKER_RESET_S),
}
READY_TIMEOUT_S = 120.0
STALE_DAY = "2023-06-01"  # far before the model's data interval end (2024-01-08)


@dataclass(frozen=True)
class Bento:
    settings: Settings
    artifact: ExampleArtifact
    model_tag: str
    bento_tag: str
    redis: RedisServer


@dataclass(frozen=True)
class Server:
    url: str
    log: Any  # () -> str | None: the server's log so far (None where it cannot be read)


STARTUP_FAILED = "Application startup failed"  # BentoML's line when the service's __init__ raised


def _children() -> set[int]:
    """Pids of this process's children (Linux /proc; empty elsewhere)."""
    me, found = str(os.getpid()), set()
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else []:
        if entry.name.isdigit():
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                    found.add(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


class _Watcher(threading.Thread):
    """Finds the ``bentoml serve`` child that serve_bento starts (it renames itself ``circusd``, and serve_bento
    does not expose it), reads its log (its stdout: serve_bento's unlinked temp file) through /proc, and stops
    it as soon as the log says the service failed to start: BentoML's arbiter respawns the failing worker
    forever, so without this serve_bento would only give up after its ready timeout.
    """

    def __init__(self, before: set[int]) -> None:
        super().__init__(daemon=True)
        self.before = before
        self.pid: int | None = None
        self.done = threading.Event()

    def log(self) -> str | None:
        if self.pid is None:
            return None
        try:
            return Path(f"/proc/{self.pid}/fd/1").read_bytes().decode(errors="replace")
        except OSError:
            return None

    def run(self) -> None:
        while not self.done.wait(0.2):
            if self.pid is None:
                new = sorted(_children() - self.before)
                self.pid = new[0] if len(new) == 1 else None
                continue
            if STARTUP_FAILED in (self.log() or ""):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGTERM)
                return


@contextmanager
def _serve(settings: Settings, bento_tag: str, env: dict[str, str]) -> Iterator[Server]:
    """serve_bento with ``env``'s ``RECSYS_SERVING__*`` values in the settings (serve_bento passes the serving
    section to the server process) and any other variables in the server's environment."""
    prefix = "RECSYS_SERVING__"
    serving = {key[len(prefix) :].lower(): value for key, value in env.items() if key.startswith(prefix)}
    settings = settings.model_copy(
        update={"serving": ServingSettings.model_validate({**settings.serving.model_dump(), **serving})}
    )
    watcher = _Watcher(_children())
    watcher.start()
    try:
        with ExitStack() as stack:
            with pytest.MonkeyPatch.context() as patch:
                for key, value in env.items():
                    if not key.startswith(prefix):
                        patch.setenv(key, value)
                url = stack.enter_context(serve_bento(settings, bento_tag, ready_timeout_s=READY_TIMEOUT_S))
            yield Server(url, watcher.log)
    finally:
        watcher.done.set()


@pytest.fixture(scope="module")
def bento(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bento]:
    """The example artifact registered and built into a bento; its users materialized into a private Redis."""
    home = tmp_path_factory.mktemp("serving_redis")
    redis = RedisServer(dump_dir=home / "redis")
    redis.start()
    try:
        settings = redis_settings(home / "home", redis)
        artifact = write_example_artifact(home / "artifact", model_version="example-v1")
        materialize_example_users(settings, EXAMPLE_ROWS)
        redis.save()  # dump.rdb: a restarted server comes back with the same rows
        model_tag = save_model(settings, artifact.directory, {"code_version": "redis-test"})
        yield Bento(settings, artifact, model_tag, build_bento(settings, model_tag), redis)
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def server(bento: Bento) -> Iterator[Server]:
    """The bento served over the fresh store, with an API key."""
    with _serve(bento.settings, bento.bento_tag, {**SERVING_ENV, "RECSYS_SERVING__API_KEY": API_KEY}) as served:
        yield served


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=KEY, timeout=30.0) as c:
        yield c


def _recommend(client: httpx.Client, user_id: int, **options: Any) -> dict[str, Any]:
    response = client.post("/v1/recommend", json={"user_id": user_id, **options})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _expected(bento: Bento, user: int, k: int, exclude: set[int]) -> list[int]:
    features, _ = EXAMPLE_ROWS[user]
    return [i for i in bento.artifact.expected_ranking(user, features) if i not in exclude][:k]


# --- a known user, from the model ----------------------------------------------------------------------------


@pytest.mark.parametrize("user", EXAMPLE_USERS)
def test_known_users_are_answered_by_the_model_without_their_recent_items(
    bento: Bento, client: httpx.Client, user: int
) -> None:
    features, recent = EXAMPLE_ROWS[user]
    answer = _recommend(client, user, k=5)
    assert answer["fallback"] is False and answer["fallback_reason"] is None and answer["degraded"] is False
    assert answer["model_version"] == bento.model_tag
    assert answer["feature_service"] == FEATURE_SERVICE
    assert answer["user_id"] == user
    assert not set(answer["items"]) & set(recent)
    assert answer["items"] == _expected(bento, user, 5, set(recent))
    vector = bento.artifact.expected_user_vector(user, features)
    wanted = [float(bento.artifact.item_embeddings[int(i) - 1001] @ vector) for i in answer["items"]]
    assert answer["scores"] == pytest.approx(wanted, abs=1e-5)


def test_exclusions_and_exclude_seen(bento: Bento, client: httpx.Client) -> None:
    user = 101
    recent = set(EXAMPLE_ROWS[user][1])
    extra = set(_expected(bento, user, 2, recent))  # the two best unseen items
    excluded = _recommend(client, user, k=5, exclude_item_ids=sorted(extra))
    assert not set(excluded["items"]) & (extra | recent)
    assert excluded["items"] == _expected(bento, user, 5, extra | recent)

    everything = _recommend(client, user, k=12, exclude_seen=False)  # the whole catalog, seen items included
    assert recent <= set(everything["items"]) and len(everything["items"]) == 12
    assert everything["items"] == _expected(bento, user, 12, set())
    seen_only = _recommend(client, user, k=12, exclude_seen=False, exclude_item_ids=sorted(extra))
    assert recent <= set(seen_only["items"]) and not set(seen_only["items"]) & extra


def test_an_unknown_user_gets_popular_items_not_degraded(bento: Bento, client: httpx.Client) -> None:
    answer = _recommend(client, 999, k=4)
    assert answer["fallback"] is True and answer["degraded"] is False
    assert answer["fallback_reason"] == REASON_NO_FEATURES  # 999 has no row in the store
    assert answer["items"] == [int(i) for i in bento.artifact.popular_item_ids[:4]]


# --- API key -------------------------------------------------------------------------------------------------


def test_the_api_key_guards_the_api_and_not_the_health_endpoints(server: Server) -> None:
    body = {"user_id": 101, "k": 3}
    with httpx.Client(base_url=server.url, timeout=30.0) as bare:
        assert bare.post("/v1/recommend", json=body).status_code == 401
        assert bare.post("/v1/recommend", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert bare.post("/v1/recommend", json=body, headers={"X-API-Key": API_KEY[:-1]}).status_code == 401
        assert bare.post("/v1/score", json={"user_id": 101, "item_ids": [1001]}).status_code == 401
        assert bare.post("/v1/recommend", json=body, headers=KEY).status_code == 200
        for path in ("/readyz", "/livez"):
            assert bare.get(path).status_code == 200, path


# --- concurrency ---------------------------------------------------------------------------------------------


def test_concurrent_answers_equal_the_sequential_ones(server: Server, client: httpx.Client) -> None:
    requests = [
        {"user_id": u, "k": k, **extra}
        for u in [*EXAMPLE_USERS, 999]
        for k, extra in [(5, {}), (12, {"exclude_seen": False}), (3, {"exclude_item_ids": [1001, 1002]})]
    ]
    sequential = [_recommend(client, **r) for r in requests]
    assert not any(a["degraded"] for a in sequential)

    async def fire() -> list[list[dict[str, Any]]]:
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
        async with httpx.AsyncClient(base_url=server.url, headers=KEY, timeout=60.0, limits=limits) as c:
            rounds = []
            for _ in range(3):
                burst = [r for _ in range(4) for r in requests]  # 4 x 18 = 72 requests in flight at once
                responses = await asyncio.gather(*(c.post("/v1/recommend", json=r) for r in burst))
                assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
                rounds.append([r.json() for r in responses])
            return rounds

    for answers in asyncio.run(fire()):
        assert answers == sequential * 4  # exactly: items, scores and every other field


# --- Redis down, then back (last of the main server's tests) -------------------------------------------------


def _p99_ms(latencies: list[float]) -> float:
    return float(np.percentile(np.asarray(latencies) * 1000.0, 99))


def test_redis_down_answers_degraded_fast_then_recovers_without_a_restart(
    bento: Bento, server: Server, client: httpx.Client
) -> None:
    healthy = _recommend(client, 101, k=5)
    assert healthy["degraded"] is False
    bento.redis.stop()

    latencies, answers = [], []
    for n in range(200):
        start = time.perf_counter()
        answers.append(_recommend(client, EXAMPLE_USERS[n % len(EXAMPLE_USERS)], k=5))
        latencies.append(time.perf_counter() - start)
    for answer in answers:
        assert answer["degraded"] is True and answer["fallback"] is True, answer
        assert answer["fallback_reason"] == REASON_STORE_UNAVAILABLE
        assert answer["model_version"] == bento.model_tag
    assert answers[0]["items"] == [int(i) for i in bento.artifact.popular_item_ids[:5]]
    assert _p99_ms(latencies) <= 50.0, f"p99 {_p99_ms(latencies):.1f} ms with the store down"

    # Readiness stays true once the store has answered (runtime.ready): an outage is served degraded, not
    # taken out of the load balancer on every replica at once.
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200

    bento.redis.start()  # the same port, the same data (dump.rdb)
    deadline = time.monotonic() + BREAKER_RESET_S * 2 + 5.0
    recovered: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        answer = _recommend(client, 101, k=5)
        if not answer["degraded"]:
            recovered = answer
            break
        time.sleep(0.1)
    assert recovered is not None, f"still degraded {BREAKER_RESET_S * 2 + 5.0:.0f} s after Redis came back"
    assert recovered == healthy
    assert client.get("/readyz").status_code == 200


def test_the_api_key_is_not_in_the_server_log(server: Server) -> None:
    log = server.log()
    if log is None:
        pytest.skip("the server log (serve_bento's unlinked temp file) is not readable through /proc here")
    assert "refusing" not in log and len(log) > 0
    assert API_KEY not in log


# --- binding at start ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stale(bento: Bento, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings over another private Redis materialized with rows of STALE_DAY, sharing the bento store."""
    home = tmp_path_factory.mktemp("stale")
    redis = RedisServer()
    redis.start()
    try:
        settings = redis_settings(home, redis).model_copy(update={"bentoml_home": bento.settings.bentoml_home})
        materialize_example_users(settings, EXAMPLE_ROWS, day=STALE_DAY)
        yield settings
    finally:
        redis.stop()


def test_a_stale_store_refuses_to_start_and_says_what_to_run(bento: Bento, stale: Settings) -> None:
    with pytest.raises(ServingError) as refused, _serve(stale, bento.bento_tag, SERVING_ENV):
        pass
    message = str(refused.value)
    assert "refusing to serve" in message and bento.model_tag in message
    assert "recsys run --day" in message and "RECSYS_SERVING__DEGRADED_OK=true" in message
    assert "2024-01-08" in message  # the model's data interval end


@pytest.fixture(scope="module")
def degraded(bento: Bento, stale: Settings) -> Iterator[Server]:
    """The bento over the stale store, started with degraded_ok."""
    with _serve(stale, bento.bento_tag, {**SERVING_ENV, "RECSYS_SERVING__DEGRADED_OK": "true"}) as served:
        yield served


def test_a_stale_store_starts_with_degraded_ok_and_answers_from_the_fallback(bento: Bento, degraded: Server) -> None:
    with httpx.Client(base_url=degraded.url, timeout=30.0) as c:
        assert c.get("/livez").status_code == 200 and c.get("/readyz").status_code == 200
        response = c.post("/v1/recommend", json={"user_id": 101, "k": 5})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_version"] == bento.model_tag
    assert answer["degraded"] is True and answer["fallback"] is True  # not the stale rows, as if bound
    assert answer["items"] == [int(i) for i in bento.artifact.popular_item_ids[:5]]
    log = degraded.log()
    if log is not None:
        assert "serving degraded (degraded_ok is set)" in log and "older than the model's data interval end" in log
