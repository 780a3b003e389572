import hashlib
import json
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pymysql
import pytest
from sqlalchemy import text

from recsys.config import Settings
from recsys.errors import ExtractError, SourceUnavailableError
from recsys.ingest.extract import backfill, extract_all, extract_interval
from recsys.lake import day_interval, partition_path
from recsys.sources.db import source_engine
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site

CFG = SimulationConfig(days=3, n_users=30, initial_items=40, new_items_per_day=5)
DAY1 = date(2026, 11, 2)


@pytest.fixture
def site_settings(settings: Settings) -> Settings:
    write_site(settings, simulate(CFG))
    return settings


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_interval_contains_exactly_its_events(site_settings: Settings) -> None:
    start, end = day_interval(DAY1)
    result = extract_interval(site_settings, "events", start, end)
    table = pq.read_table(result.partition)
    expected = [e for e in simulate(CFG).events if start <= e["received_at"].replace(tzinfo=UTC) < end]
    assert table.num_rows == result.rows == len(expected)
    assert set(table.column("event_id").to_pylist()) == {e["event_id"] for e in expected}
    assert table.schema.field("occurred_at").type.tz == "UTC"


def test_rerun_replaces_the_partition_with_identical_bytes(site_settings: Settings) -> None:
    start, end = day_interval(DAY1)
    first = {t: sha(r.partition) for t, r in extract_all(site_settings, start, end).items()}
    second = {t: sha(r.partition) for t, r in extract_all(site_settings, start, end).items()}
    assert first == second
    files = list((site_settings.lake / "raw" / "events").rglob("*"))
    assert [f.name for f in files if f.is_file()] == ["part-0.parquet"]  # no temp files, no duplicates


def test_failure_mid_write_leaves_no_partition(site_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import recsys.ingest.extract as ex

    start, end = day_interval(DAY1)

    def broken(*args, **kwargs):
        yield from list(ex._sql_batches(*args, **kwargs))[:2]
        raise ConnectionError("source went away")

    monkeypatch.setattr(ex, "source_batches", broken)
    with pytest.raises(ConnectionError):
        extract_interval(site_settings, "events", start, end, batch_size=2)
    target = partition_path(site_settings.lake, "events", start)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_unparseable_rows_are_quarantined_with_a_reason(site_settings: Settings) -> None:
    start, end = day_interval(DAY1)
    engine = source_engine(site_settings)
    with engine.begin() as conn:  # SQLite keeps whatever type it is given: a realistic dirty source
        conn.execute(
            text(
                "INSERT INTO events (event_id, user_id, item_id, event_type, occurred_at, received_at) "
                "VALUES ('bad-1', 'not-a-number', 3, 'click', '2026-11-02 10:00:00', '2026-11-02 10:00:01')"
            )
        )
    result = extract_interval(site_settings, "events", start, end)
    assert result.quarantined == 1
    qfile = site_settings.lake / "quarantine" / "events" / "dt=2026-11-02" / "rows.jsonl"
    entry = json.loads(qfile.read_text().splitlines()[0])
    assert entry["row"]["event_id"] == "bad-1"
    assert "not-a-number" in entry["reason"] or "int" in entry["reason"].lower()
    assert "bad-1" not in pq.read_table(result.partition).column("event_id").to_pylist()


def test_empty_interval_writes_an_empty_partition(site_settings: Settings) -> None:
    start, end = day_interval(date(2027, 1, 1))
    result = extract_interval(site_settings, "events", start, end)
    assert result.rows == 0
    assert pq.read_table(result.partition).num_rows == 0


def test_backfill_is_resumable(site_settings: Settings) -> None:
    first = backfill(site_settings, date(2026, 11, 1), date(2026, 11, 2))
    assert len(first) == 4  # 2 days x 2 tables (events, items)
    again = backfill(site_settings, date(2026, 11, 1), date(2026, 11, 3))
    assert [r.partition.parent.name for r in again] == ["dt=2026-11-03"] * 2


def test_bad_interval_and_table_are_rejected(site_settings: Settings) -> None:
    start, end = day_interval(DAY1)
    with pytest.raises(ExtractError, match="inverted"):
        extract_interval(site_settings, "events", end, start)
    with pytest.raises(ExtractError, match="unknown source table"):
        extract_interval(site_settings, "orders", start, end)


def test_unreachable_source_names_host_not_password(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, source_url="mysql+pymysql://app:s3cret@127.0.0.1:1/shop")
    with pytest.raises(SourceUnavailableError) as err:
        source_engine(s, retries=2, backoff_s=0.01)
    assert "127.0.0.1:1/shop" in str(err.value)
    assert "s3cret" not in str(err.value)


def test_late_data_overlap_rereads_the_previous_hours(site_settings: Settings) -> None:
    from datetime import timedelta

    wide = site_settings.model_copy(update={"late_data_overlap": timedelta(hours=6)})
    start, end = day_interval(DAY1)
    narrow_rows = extract_interval(site_settings, "events", start, end).rows
    wide_rows = extract_interval(wide, "events", start, end).rows
    assert wide_rows > narrow_rows
    assert datetime(2026, 11, 2, tzinfo=UTC) == start


@pytest.mark.parametrize(
    ("driver_error", "retried"),
    [
        (pymysql.err.OperationalError(2013, "Lost connection to server during query"), True),
        (pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'"), True),
        (pymysql.err.OperationalError(1054, "Unknown column 'occurred_at' in 'SELECT'"), False),
        (pymysql.err.OperationalError(1045, "Access denied for user 'root'@'localhost'"), False),
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("no such column: occurred_at"), False),
    ],
)
def test_only_a_lost_or_refused_connection_is_retried(driver_error: Exception, retried: bool) -> None:
    from sqlalchemy.exc import OperationalError

    from recsys.ingest.extract import _source_lost

    assert _source_lost(OperationalError("SELECT ...", {}, driver_error)) is retried


def test_a_temporary_file_left_by_a_killed_writer_goes_and_a_live_writers_stays(site_settings: Settings) -> None:
    import os
    import subprocess

    start, end = day_interval(DAY1)
    folder = partition_path(site_settings.lake, "events", start).parent
    folder.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is free: the writer was killed (a lost Celery worker)
    (folder / f".part-0.parquet.tmp-{dead.pid}").write_bytes(b"PAR1 half a file")
    (folder / f".part-0.parquet.tmp-{os.getppid()}").write_bytes(b"PAR1 another writer, alive")
    extract_all(site_settings, start, end)
    assert sorted(f.name for f in folder.iterdir()) == [f".part-0.parquet.tmp-{os.getppid()}", "part-0.parquet"]
