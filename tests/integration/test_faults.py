"""Faults injected into real components: a source database and an online store that die during a run.

Each outcome is one of two: the run heals by retry, or it fails with a message that names the fault and what
to do; nothing partial is left behind, and a re-run after the fault gives what a run without it gives
(docs/reliability.md lists each fault and its test).

The source is a private ``mariadbd`` (own datadir, port and socket; never the shared server on 3306, which
other tests use), killed with SIGKILL; the online store a private ``redis-server``, terminated.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from recsys.config import RetryPolicy, RetrySettings, Settings
from recsys.errors import FeatureStoreError, SourceUnavailableError
from recsys.ingest import extract as extract_module
from recsys.ingest.extract import extract_all
from recsys.lake import day_interval
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site
from servers import MariaDBServer
from serving_fixtures import EXAMPLE_ROWS, RedisServer, redis_settings

pytestmark = [pytest.mark.services, pytest.mark.filterwarnings("ignore:fetch_arrow_table:DeprecationWarning")]

CFG = SimulationConfig(days=2, n_users=20, initial_items=30, new_items_per_day=5)
DAY = date(2026, 11, 2)


def _retries(attempts: int, backoff_s: float, online: bool = False) -> RetrySettings:
    policy = RetryPolicy(attempts=attempts, backoff_s=backoff_s)
    return RetrySettings(online_store=policy) if online else RetrySettings(source=policy)


def _lake_files(settings: Settings) -> list[str]:
    """Every file under the lake (temporary files included), relative, sorted."""
    return sorted(str(p.relative_to(settings.lake)) for p in settings.lake.rglob("*") if p.is_file())


def _attempts_logged(caplog: pytest.LogCaptureFixture, marker: str) -> list[str]:
    return [r.getMessage().split("(attempt ")[1].split(")")[0] for r in caplog.records if marker in r.getMessage()]


# --- the MariaDB source down during extract -------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    server: MariaDBServer
    url: str
    clean: dict[str, tuple[str, int]]  # table -> (sha256 of the partition, rows) of a run without a fault


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    """The simulated site in a private MariaDB, and the partitions an uninterrupted extraction writes."""
    root = tmp_path_factory.mktemp("faults_mariadb")
    server = MariaDBServer(root / "server")
    server.start()
    try:
        engine = create_engine(server.url)
        with engine.begin() as conn:
            conn.execute(text("CREATE DATABASE shop CHARACTER SET utf8mb4"))
        engine.dispose()
        url = f"{server.url}/shop?charset=utf8mb4"
        clean_settings = Settings(home=root / "clean", source_url=url)
        write_site(clean_settings, simulate(CFG))
        results = extract_all(clean_settings, *day_interval(DAY))
        clean = {t: (hashlib.sha256(r.partition.read_bytes()).hexdigest(), r.rows) for t, r in results.items()}
        yield Source(server, url, clean)
    finally:
        server.stop()


def _extracted(settings: Settings) -> dict[str, tuple[str, int]]:
    results = extract_all(settings, *day_interval(DAY))
    return {t: (hashlib.sha256(r.partition.read_bytes()).hexdigest(), r.rows) for t, r in results.items()}


def test_source_killed_mid_extract_heals_by_retry(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL after the connection check passed and the partition's temporary file was opened; the server comes
    back during the backoff and the retry writes the partition an uninterrupted run writes."""
    settings = Settings(home=tmp_path, source_url=source.url, retries=_retries(attempts=4, backoff_s=2.0))
    reflect, restarts = extract_module._live_table, []

    def killed_then_restarted(engine: Any, table: str) -> Any:
        if not restarts:
            source.server.kill()
            restarter = threading.Thread(target=source.server.start)
            restarter.start()
            restarts.append(restarter)
        return reflect(engine, table)

    monkeypatch.setattr(extract_module, "_live_table", killed_then_restarted)
    caplog.set_level(logging.WARNING, logger="recsys.ingest.extract")
    extracted = _extracted(settings)
    restarts[0].join(timeout=60)
    assert extracted == source.clean  # byte-identical partitions, the same row counts: 0 rows lost
    attempts = _attempts_logged(caplog, "lost (attempt")
    assert attempts[0] == "1/4" and attempts == [f"{n}/4" for n in range(1, len(attempts) + 1)]
    assert len(attempts) in (1, 2)  # back within the first wait (2 s) or, on a slow machine, the second (4 s)
    assert _lake_files(settings) == [
        "raw/events/dt=2026-11-02/part-0.parquet",
        "raw/items/dt=2026-11-02/part-0.parquet",
    ]


def test_source_down_fails_clearly_and_the_rerun_is_identical(source: Source, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, source_url=source.url, retries=_retries(attempts=2, backoff_s=0.05))
    source.server.kill()
    try:
        with pytest.raises(SourceUnavailableError) as failed:
            extract_all(settings, *day_interval(DAY))
        assert _lake_files(settings) == []  # no partition, no temporary file
    finally:
        source.server.start()
    message = str(failed.value)
    assert message.startswith(
        f"extracting events [2026-11-02 00:00, 2026-11-03 00:00) UTC failed: source database "
        f"mysql+pymysql://root@127.0.0.1:{source.server.port}/shop?charset=utf8mb4 was unreachable or dropped the "
        "connection on each of 2 tries (last: (2003, "
    )
    assert "No partition was written for this interval. Start the source" in message
    assert "RECSYS_SOURCE_URL" in message and "re-run the interval" in message
    assert _extracted(settings) == source.clean
    assert _lake_files(settings) == [
        "raw/events/dt=2026-11-02/part-0.parquet",
        "raw/items/dt=2026-11-02/part-0.parquet",
    ]


# --- Redis down during materialize ----------------------------------------------------------------------------


def _online_state(server: RedisServer) -> dict[bytes, dict[bytes, bytes]]:
    """Every key of the online store with its whole hash (Feast keeps one hash per entity key)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        return {key: client.hgetall(key) for key in sorted(client.scan_iter())}
    finally:
        client.close()


def _flush(server: RedisServer) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        client.flushall()
        client.save()  # an empty snapshot: a restart must not bring back an earlier test's rows
    finally:
        client.close()


@pytest.fixture(scope="module")
def online(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, dict[bytes, dict[bytes, bytes]]]]:
    """A private redis-server, and the online state one uninterrupted materialization of the example users leaves."""
    from recsys.serving.testing import materialize_example_users

    root = tmp_path_factory.mktemp("faults_redis")
    server = RedisServer(dump_dir=root / "redis")  # persistent, as a production online store is
    server.start()
    try:
        materialize_example_users(redis_settings(root / "clean", server), EXAMPLE_ROWS)
        clean = _online_state(server)
        _flush(server)
        yield server, clean
    finally:
        server.stop()


def _kill_on_write(monkeypatch: pytest.MonkeyPatch, server: RedisServer, write: int, restart: bool) -> list[int]:
    """Stop the server just before the ``write``-th online batch write (after the earlier ones landed); its
    snapshot keeps them, as a persistent Redis does."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    original, calls = RedisOnlineStore.online_write_batch, []

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == write:
            server.save()
            server.stop()
            if restart:
                threading.Timer(0.2, server.start).start()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RedisOnlineStore, "online_write_batch", wrapped)
    return calls


def test_redis_killed_mid_materialize_heals_by_retry(
    online: tuple[RedisServer, dict[bytes, dict[bytes, bytes]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis goes away after the first view's rows were written and is back 0.2 s later. The Redis client's own
    retries (redis-py: 3, jittered exponential backoff) usually bridge that; when they run out first, the chunk
    is tried again whole. Either way the online store then holds exactly what an uninterrupted run left."""
    from recsys.serving.testing import materialize_example_users

    server, clean = online
    _flush(server)
    settings = redis_settings(tmp_path, server).model_copy(update={"retries": _retries(3, 2.0, online=True)})
    writes = _kill_on_write(monkeypatch, server, write=2, restart=True)
    caplog.set_level(logging.WARNING, logger="recsys.features.store")
    materialize_example_users(settings, EXAMPLE_ROWS)
    assert _online_state(server) == clean  # every entity, every view, the same bytes: 0 rows lost
    retried = _attempts_logged(caplog, "online store lost (attempt")
    assert (tuple(retried), len(writes)) in {((), 2), (("1/3",), 4)}  # healed by the client, or by a second try


@pytest.mark.slow  # ~20 s: each try sits out the Redis client's own retries (~7-10 s) before it fails
def test_redis_down_mid_materialize_fails_clearly_and_the_rerun_equals_a_clean_run(
    online: tuple[RedisServer, dict[bytes, dict[bytes, bytes]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recsys.features.store import feature_store, materialized_until
    from recsys.serving.testing import materialize_example_users

    server, clean = online
    _flush(server)
    settings = redis_settings(tmp_path, server).model_copy(update={"retries": _retries(2, 0.05, online=True)})
    _kill_on_write(monkeypatch, server, write=2, restart=False)
    try:
        with pytest.raises(FeatureStoreError) as failed:
            materialize_example_users(settings, EXAMPLE_ROWS)
        # the cut-off view is not recorded as materialized, so the freshness check sees the gap
        until = materialized_until(feature_store(settings), ["user_stats", "user_recent_items"])
    finally:
        server.start()
    message = str(failed.value)
    assert message.startswith("Materializing [2023-12-09 00:00:00+00:00, 2024-01-08 00:00:00+00:00] failed: the ")
    assert f"online store (Redis at 127.0.0.1:{server.port}) refused or dropped the connection on each of 2 tries" in (
        message
    )
    assert "Start the online store (check RECSYS_REDIS_URL), then re-run the materialization" in message
    assert sorted(v is None for v in until.values()) == [False, True]  # one view done, the cut-off one not
    half_written = _online_state(server)  # the restarted server loaded its snapshot: the first view's rows only
    # per user: user_stats' 3 features and its timestamp, of a clean run's 6 fields (+ user_recent_items, its ts)
    assert [len(fields) for fields in half_written.values()] == [4] * len(EXAMPLE_ROWS)
    assert [len(fields) for fields in clean.values()] == [6] * len(EXAMPLE_ROWS)
    monkeypatch.undo()
    materialize_example_users(settings, EXAMPLE_ROWS)  # the re-run, over the half-written state
    assert _online_state(server) == clean
