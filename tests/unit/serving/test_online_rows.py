"""Lean online reads (recsys.serving.online) against a real Feast apply + materialize, SQLite and Redis."""

from __future__ import annotations

import math
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.config import Settings
from recsys.errors import FeatureStoreError
from recsys.features import PROJECT, apply, feature_store, materialize
from recsys.serving.online import FeastSdkRows, RedisRows, SqliteRows, UserRow, open_online_rows
from servers import free_port, unavailable

# Feast's DuckDB offline store goes through ibis, which calls a deprecated duckdb method.
pytestmark = pytest.mark.filterwarnings("ignore:fetch_arrow_table:DeprecationWarning")

SERVICE = "recommender_v1_user"
NAMES = ["user_impressions_28d", "user_clicks_28d", "user_ctr_28d"]
TS = pa.timestamp("us", tz="UTC")
START, END = datetime(2023, 10, 1, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)
OLD, DAY1, DAY2 = date(2023, 11, 1), date(2024, 1, 1), date(2024, 1, 2)
# (user, day, impressions, clicks, ctr): 1 has two days (the later wins), 4 a null and 5 a NaN ctr,
# 7 a row far older than the views' 28-day TTL (get_online_features still returns it).
STATS = [
    (1, DAY1, 10, 2, 0.1),
    (1, DAY2, 20, 5, 0.2),
    (2, DAY1, 4, 0, 0.05),
    (4, DAY2, 3, 1, None),
    (5, DAY2, 3, 1, math.nan),
    (6, DAY2, 7, 2, 0.3),
    (7, OLD, 9, 3, 0.4),
]
# (user, day, recent items): 2 and 7 have none, 3 has recent items but no stats, 6 an empty list.
RECENT = [(1, DAY1, [10]), (1, DAY2, [11, 10]), (3, DAY2, [12]), (4, DAY2, [13]), (5, DAY2, [14]), (6, DAY2, [])]
USERS = [1, 2, 3, 4, 5, 6, 7, 999, 1]
EXPECTED = [
    UserRow([20.0, 5.0, 0.2], [11, 10]),
    UserRow([4.0, 0.0, 0.05], []),
    UserRow(None, [12]),
    UserRow(None, [13]),
    UserRow(None, [14]),
    UserRow([7.0, 2.0, 0.3], []),
    UserRow([9.0, 3.0, 0.4], []),
    UserRow(None, []),
    UserRow([20.0, 5.0, 0.2], [11, 10]),
]


def _stamp(day: date) -> datetime:
    """A daily mart row is stamped at the end of its day."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def _write_user_marts(settings: Settings) -> None:
    marts = settings.marts
    marts.mkdir(parents=True, exist_ok=True)
    stats = {
        "user_id": pa.array([r[0] for r in STATS], pa.int64()),
        "feature_date": pa.array([r[1] for r in STATS], pa.date32()),
        "event_timestamp": pa.array([_stamp(r[1]) for r in STATS], TS),
        "user_impressions_28d": pa.array([r[2] for r in STATS], pa.int64()),
        "user_clicks_28d": pa.array([r[3] for r in STATS], pa.int64()),
        "user_ctr_28d": pa.array([r[4] for r in STATS], pa.float64()),
    }
    pq.write_table(pa.table(stats), marts / "user_daily_features.parquet")
    recent = {
        "user_id": pa.array([r[0] for r in RECENT], pa.int64()),
        "feature_date": pa.array([r[1] for r in RECENT], pa.date32()),
        "event_timestamp": pa.array([_stamp(r[1]) for r in RECENT], TS),
        "recent_item_ids": pa.array([r[2] for r in RECENT], pa.list_(pa.int64())),
    }
    pq.write_table(pa.table(recent), marts / "user_recent_items.parquet")


def _build(settings: Settings, project: str = PROJECT) -> None:
    """Apply the repo and materialize the user views (in one chunk) into ``settings``' online store."""
    _write_user_marts(settings)
    apply(settings, project=project)
    materialize(settings, START, END, ["user_stats", "user_recent_items"], project=project, chunk=END - START)


@pytest.fixture(scope="module")
def sqlite_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Embedded settings with the user marts applied and materialized into SQLite (shared: Feast costs seconds)."""
    s = Settings(home=tmp_path_factory.mktemp("online"))
    _build(s)
    return s


def _sdk_rows(settings: Settings, project: str = PROJECT) -> list[UserRow]:
    sdk = open_online_rows(settings, SERVICE, NAMES, project=project, sdk=True)
    assert isinstance(sdk, FeastSdkRows)
    return sdk.read(USERS)


def _same(got: list[UserRow], want: list[UserRow]) -> None:
    """Exact equality, with the expected list checked to float precision (Feast may round-trip through float)."""
    assert [r.recent_items for r in got] == [r.recent_items for r in want]
    for g, w in zip(got, want, strict=True):
        assert (g.features is None) == (w.features is None)
        if g.features is not None:
            assert g.features == pytest.approx(w.features)


def test_sqlite_rows_equal_get_online_features(sqlite_settings: Settings) -> None:
    sdk = _sdk_rows(sqlite_settings)
    _same(sdk, EXPECTED)
    rows = open_online_rows(sqlite_settings, SERVICE, NAMES)
    assert isinstance(rows, SqliteRows)
    assert rows.feature_names == NAMES
    assert rows.read(USERS) == sdk
    assert rows.read([]) == []
    rows.close()


def test_feature_names_match_bare_or_view_qualified(sqlite_settings: Settings) -> None:
    names = ["user_ctr_28d", "user_stats__user_clicks_28d"]
    lean = open_online_rows(sqlite_settings, SERVICE, names).read([1, 999])
    assert lean == open_online_rows(sqlite_settings, SERVICE, names, sdk=True).read([1, 999])
    assert lean == [UserRow([0.2, 5.0], [11, 10]), UserRow(None, [])]
    with pytest.raises(FeatureStoreError, match="user_age"):
        open_online_rows(sqlite_settings, SERVICE, ["user_age"])
    with pytest.raises(FeatureStoreError, match="not registered"):
        open_online_rows(sqlite_settings, "recommender_v9_user", NAMES)


def test_sqlite_missing_file_raises_and_later_reads_recover(sqlite_settings: Settings, tmp_path: Path) -> None:
    assert sqlite_settings.online_sqlite_path is not None
    path = tmp_path / "later" / "online.db"
    rows = open_online_rows(sqlite_settings.model_copy(update={"online_sqlite_path": path}), SERVICE, NAMES)
    with pytest.raises(FeatureStoreError, match="SQLite"):
        rows.read([1])
    assert not path.exists()  # read-only: the reader never creates the store
    path.parent.mkdir(exist_ok=True)  # feature_store() creates it
    shutil.copy(sqlite_settings.online_sqlite_path, path)
    assert rows.read([1]) == EXPECTED[:1]


def _redis_reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.services
def test_redis_rows_equal_get_online_features(tmp_path: Path) -> None:
    if not _redis_reachable(6379):
        unavailable("Redis at 127.0.0.1:6379")
    s = Settings(home=tmp_path, online_store="redis", redis_url="127.0.0.1:6379")
    project = f"{PROJECT}_test_{uuid.uuid4().hex[:10]}"  # Feast's Redis keys carry the project
    _build(s, project)
    try:
        sdk = _sdk_rows(s, project)
        _same(sdk, EXPECTED)
        rows = open_online_rows(s, SERVICE, NAMES, project=project)
        assert isinstance(rows, RedisRows)
        assert rows.read(USERS) == sdk
        rows.close()
    finally:
        feature_store(s, project=project).teardown()


class _RedisServer:
    """A private redis-server on a free port (never the shared one), which a test may stop and restart."""

    def __init__(self, exe: str, port: int) -> None:
        self.exe, self.port = exe, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _redis_reachable(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                unavailable(f"a private redis-server on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test left it paused
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def private_redis() -> Iterator[_RedisServer]:
    exe = shutil.which("redis-server")
    if exe is None:
        unavailable("redis-server (the binary, to start a private server)")
    server = _RedisServer(exe, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _timed_failure(rows: RedisRows) -> float:
    started = time.perf_counter()
    with pytest.raises(FeatureStoreError, match="Redis"):
        rows.read([1, 2])
    return time.perf_counter() - started


@pytest.mark.services
def test_redis_down_fails_fast_and_reconnects(private_redis: _RedisServer, tmp_path: Path) -> None:
    s = Settings(home=tmp_path, online_store="redis", redis_url=f"127.0.0.1:{private_redis.port},db=0")
    assert s.serving.store_timeout_s < 0.5
    _build(s)
    rows = open_online_rows(s, SERVICE, NAMES)
    assert isinstance(rows, RedisRows)
    before = rows.read(USERS)
    _same(before, EXPECTED)
    assert before == _sdk_rows(s)

    assert private_redis.proc is not None
    private_redis.proc.send_signal(signal.SIGSTOP)  # accepts connections, never answers: the read timeout
    try:
        assert _timed_failure(rows) < 0.5
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
    assert rows.read(USERS) == before  # a fresh connection: no late reply of the timed-out read

    private_redis.stop()  # refused
    assert _timed_failure(rows) < 0.5
    private_redis.start()  # same port, empty (no persistence): the same reader reconnects
    assert rows.read([1, 999]) == [UserRow(None, []), UserRow(None, [])]
    rows.close()
