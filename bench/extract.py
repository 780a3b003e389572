"""Extraction throughput and peak RSS for 1 million events, from MariaDB and from a MongoDB-wire server.

Each side is compared with its floor: the same query streamed by the same driver into nothing. Floor and
extraction run interleaved, each in a fresh subprocess (so its peak RSS is its own); medians are reported.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta

import numpy as np

N_EVENTS = int(os.environ.get("RECSYS_BENCH_EVENTS", "1000000"))
# secantusdb (the test MongoDB-wire server) is pure Python: ~1.1k inserts/s, so its default size is smaller.
N_MONGO_EVENTS = int(os.environ.get("RECSYS_BENCH_MONGO_EVENTS", "200000"))
REPEATS = int(os.environ.get("RECSYS_BENCH_REPEATS", "3"))
DAY = datetime(2026, 11, 2)
MARIADB = os.environ.get("RECSYS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
DB_NAME = "recsys_bench_extract"
CHUNK = 20_000


def events(n: int, seed: int = 0):
    """``n`` synthetic events received within DAY, as row dicts in chunks (vectorised generation)."""
    rng = np.random.default_rng(seed)
    types = np.array(["impression", "click", "rating"])
    for lo in range(0, n, CHUNK):
        size = min(CHUNK, n - lo)
        offsets = rng.integers(0, 86_400_000_000, size)  # microseconds into the day
        kinds = types[rng.choice(3, size, p=[0.85, 0.12, 0.03])]
        users, items = rng.integers(1, 50_000, size), rng.integers(1, 20_000, size)
        positions = rng.integers(0, 10, size)
        stars = rng.integers(1, 6, size).astype(float)
        yield [
            {
                "event_id": f"ev{lo + i:012d}",
                "user_id": int(users[i]),
                "item_id": int(items[i]),
                "event_type": str(kinds[i]),
                "value": float(stars[i]) if kinds[i] == "rating" else None,
                "session_id": f"s{users[i]}-{lo // 50_000}",
                "position": int(positions[i]),
                "occurred_at": DAY + timedelta(microseconds=int(offsets[i]) - 1_000_000),
                "received_at": DAY + timedelta(microseconds=int(offsets[i])),
            }
            for i in range(size)
        ]


def _load_mariadb() -> str:
    from sqlalchemy import create_engine, func, select, text

    from recsys.sources.schema import events as events_table
    from recsys.sources.schema import metadata

    server = create_engine(MARIADB)
    with server.begin() as conn:
        conn.execute(text(f"CREATE DATABASE IF NOT EXISTS {DB_NAME}"))
    url = f"{MARIADB}/{DB_NAME}"
    engine = create_engine(url)
    metadata.create_all(engine, tables=[events_table])
    with engine.connect() as conn:
        have = conn.execute(select(func.count()).select_from(events_table)).scalar_one()
    if have != N_EVENTS:
        with engine.begin() as conn:
            conn.execute(events_table.delete())
            for chunk in events(N_EVENTS):
                conn.execute(events_table.insert(), chunk)
    engine.dispose()
    return url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_mongo(storage: str) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("secantusd-py", path=os.path.dirname(sys.executable))
    port = _free_port()
    proc = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port), "--storage-path", storage],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"mongodb://127.0.0.1:{port}/?directConnection=true"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("secantusdb did not start")


def _load_mongo(url: str) -> None:
    from pymongo import MongoClient

    client = MongoClient(url)
    coll = client["bench"]["events"]
    coll.create_index("event_id", unique=True)
    coll.create_index("received_at")
    for chunk in events(N_MONGO_EVENTS):
        coll.insert_many(chunk, ordered=False)
    client.close()


CASE = """
import json, resource, time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from recsys.config import Settings
from recsys.ingest.extract import extract_interval
start = datetime(2026, 11, 2, tzinfo=timezone.utc); end = start + timedelta(days=1)
s = Settings(home=Path({home!r}), **{settings!r})
t = time.perf_counter()
if {floor!r} == "sql":
    from sqlalchemy import create_engine, text
    eng = create_engine(s.source_url.get_secret_value())
    with eng.connect() as c:
        q = text("SELECT * FROM events WHERE received_at >= :a AND received_at < :b ORDER BY event_id")
        rows = sum(1 for _ in c.execution_options(stream_results=True, yield_per=50000).execute(
            q, {{"a": start.replace(tzinfo=None), "b": end.replace(tzinfo=None)}}))
elif {floor!r} == "mongo":
    from pymongo import MongoClient
    coll = MongoClient(s.mongo_url.get_secret_value())[s.mongo_db]["events"]
    cur = coll.find({{"received_at": {{"$gte": start.replace(tzinfo=None), "$lt": end.replace(tzinfo=None)}}}},
                    {{"_id": False}}).sort("event_id", 1).batch_size(50000)
    rows = sum(1 for _ in cur)
else:
    rows = extract_interval(s, "events", start, end).rows
seconds = time.perf_counter() - t
print(json.dumps({{"rows": rows, "seconds": seconds,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def _case(home: str, settings: dict, floor: str | None) -> dict:
    code = CASE.format(home=home, settings=settings, floor=floor)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _compare(home: str, settings: dict, floor: str) -> dict:
    floors, extracts = [], []
    for _ in range(REPEATS):
        floors.append(_case(home, settings, floor))
        extracts.append(_case(home, settings, None))
    f_rate = statistics.median(r["rows"] / r["seconds"] for r in floors)
    e_rate = statistics.median(r["rows"] / r["seconds"] for r in extracts)
    return {
        "rows": extracts[0]["rows"],
        "floor_rows_per_s": round(f_rate),
        "extract_rows_per_s": round(e_rate),
        "ratio_extract_to_floor": round(e_rate / f_rate, 3),
        "extract_peak_rss_mib": round(max(r["peak_rss_mib"] for r in extracts), 1),
        "floor_peak_rss_mib": round(max(r["peak_rss_mib"] for r in floors), 1),
        "repeats": REPEATS,
    }


def run() -> dict:
    home = tempfile.mkdtemp(prefix="recsys-bench-extract-")
    result: dict = {"events": N_EVENTS, "mongo_events": N_MONGO_EVENTS}
    t = time.perf_counter()
    url = _load_mariadb()
    result["mariadb_load_s"] = round(time.perf_counter() - t, 1)
    result["mariadb"] = _compare(home, {"source_url": url}, "sql")
    print(json.dumps({"mariadb": result["mariadb"]}), flush=True)
    storage = tempfile.mkdtemp(prefix="recsys-bench-mongo-")
    proc, mongo_url = _start_mongo(storage)
    try:
        t = time.perf_counter()
        _load_mongo(mongo_url)
        result["mongo_load_s"] = round(time.perf_counter() - t, 1)
        mongo_settings = {"source_url": url, "events_source": "mongo", "mongo_url": mongo_url, "mongo_db": "bench"}
        result["mongo_wire_secantusdb"] = _compare(home, mongo_settings, "mongo")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(storage, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
