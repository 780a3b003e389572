"""Scale: 1M, 3M and 10M synthetic events of one day through the features stages on the services mode.

The source is MariaDB (events and a 5,000-item catalog), the warehouse and Feast offline store Postgres, the
online store Redis. For each size the day runs ``extract → validate_raw → dbt_build → validate_marts →
materialize``, each stage as ``recsys stage TASK DAY`` in its own process (what a Kubernetes pod task runs), so
its wall time and peak RSS (``os.wait4``) are its own; the servers' memory is not counted. The growth exponent
of a stage is the least-squares slope of log(wall time) on log(events) over the sizes (time ∝ events^b); the
targets are b ≤ 1.1 for every stage, and peak RSS flat in the event count (RSS exponent ≤ 0.1, i.e. at most
1.26x for 10x the events) for extract, the GX gates and materialize.

The user population is fixed (100,000 users, each with more events as the day grows), so materialize writes
the same number of entity rows at every size: its cost follows users and days, not events.

Events are generated inside MariaDB from its sequence engine (deterministic CRC32 draws, no client round
trips): ``RECSYS_BENCH_SCALE_SIZES=100000,300000`` for a quick look.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

SIZES = tuple(int(n) for n in os.environ.get("RECSYS_BENCH_SCALE_SIZES", "1000000,3000000,10000000").split(","))
USERS, ITEMS = 100_000, 5_000
STAGES = ("extract", "validate_raw", "dbt_build", "validate_marts", "materialize")
FLAT_RSS = ("extract", "validate_raw", "validate_marts", "materialize")
DAY = date(2026, 11, 2)
MARIADB = os.environ.get("RECSYS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
POSTGRES = os.environ.get("RECSYS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("RECSYS_BENCH_REDIS", "127.0.0.1:6379,db=7")
SOURCE_DB = "recsys_bench_scale"
MAX_TIME_EXPONENT, MAX_RSS_EXPONENT = 1.1, 0.1

# One day of events drawn in SQL: user, item, type (85% impressions, 12% clicks, 3% ratings), rating value,
# session, position, and a received_at spread over the day (occurred_at one second before it).
EVENTS_SQL = """
INSERT INTO events (event_id, user_id, item_id, event_type, value, session_id, position, occurred_at, received_at)
SELECT CONCAT('ev', LPAD(seq, 12, '0')), u, 1 + CRC32(CONCAT('i', seq)) % {items},
       CASE WHEN t < 85 THEN 'impression' WHEN t < 97 THEN 'click' ELSE 'rating' END,
       CASE WHEN t >= 97 THEN 1 + CRC32(CONCAT('v', seq)) % 5 END,
       CONCAT('s', u, '-', seq DIV 50000), seq % 10,
       received - INTERVAL 1 SECOND, received
FROM (
  SELECT seq, 1 + CRC32(CONCAT('u', seq)) % {users} AS u, CRC32(CONCAT('t', seq)) % 100 AS t,
         TIMESTAMP('{day}') + INTERVAL ((CRC32(CONCAT('o', seq)) * 20 + seq % 20) % 86400000000) MICROSECOND
           AS received
  FROM seq_1_to_{n}
) AS draws
"""


def load_source(n: int) -> float:
    """Fill the MariaDB source with the catalog and ``n`` events of DAY; returns the seconds it took."""
    from sqlalchemy import create_engine, text

    from recsys.sources.schema import events, items, metadata

    t = time.perf_counter()
    server = create_engine(MARIADB)
    with server.begin() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {SOURCE_DB}"))
        conn.execute(text(f"CREATE DATABASE {SOURCE_DB} CHARACTER SET utf8mb4"))
    server.dispose()
    engine = create_engine(f"{MARIADB}/{SOURCE_DB}?charset=utf8mb4")
    metadata.create_all(engine, tables=[events, items])
    midnight = datetime(DAY.year, DAY.month, DAY.day)
    catalog = [
        {
            "item_id": i,
            "title": f"Item {i}",
            "body": f"Synthetic item {i} of category {i % 20}.",
            "category": f"c{i % 20}",
            "tags": ["synthetic"],
            "published_at": midnight,
            "updated_at": midnight + timedelta(seconds=i),
        }
        for i in range(1, ITEMS + 1)
    ]
    with engine.begin() as conn:
        conn.execute(items.insert(), catalog)
        conn.execute(text(EVENTS_SQL.format(n=n, users=USERS, items=ITEMS, day=DAY.isoformat())))
    engine.dispose()
    return time.perf_counter() - t


def _postgres(statement: str) -> None:
    import psycopg2

    conn = psycopg2.connect(POSTGRES)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def _flush_redis() -> None:
    import redis

    host_port, *options = REDIS.split(",")
    host, port = host_port.split(":")
    db = int(next((o.split("=", 1)[1] for o in options if o.startswith("db=")), 0))
    redis.Redis(host=host, port=int(port), db=db).flushdb()


def run_stage(task: str, env: dict[str, str], log: Path) -> dict[str, float]:
    """``recsys stage TASK DAY`` in its own process: wall seconds and its peak RSS in MiB."""
    recsys = Path(sys.executable).parent / "recsys"
    t = time.perf_counter()
    with log.open("ab") as out:
        process = subprocess.Popen([str(recsys), "stage", task, DAY.isoformat()], env=env, stdout=out, stderr=out)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - t
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"recsys stage {task} {DAY} exited {process.returncode}; log {log}:\n{tail}")
    return {"wall_s": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def run_size(n: int, root: Path) -> dict:
    """Load ``n`` events and run the day's stages on fresh stores; per-stage wall time and peak RSS."""
    load_s = load_source(n)
    warehouse = f"recsys_bench_scale_{n}"
    _postgres(f"DROP DATABASE IF EXISTS {warehouse}")
    _postgres(f"CREATE DATABASE {warehouse}")
    _flush_redis()
    home = root / f"home-{n}"
    env = {
        **os.environ,
        "RECSYS_HOME": str(home),
        "RECSYS_SOURCE_URL": f"{MARIADB}/{SOURCE_DB}?charset=utf8mb4",
        "RECSYS_WAREHOUSE__TARGET": "postgres",
        "RECSYS_WAREHOUSE__POSTGRES": json.dumps({"dbname": warehouse}),
        "RECSYS_ONLINE_STORE": "redis",
        "RECSYS_REDIS_URL": REDIS,
    }
    stages = {}
    try:
        for task in STAGES:
            stages[task] = run_stage(task, env, root / f"stages-{n}.log")
            print(f"  {n:>10,} events  {task:<15} {stages[task]['wall_s']:>8.1f} s  "
                  f"{stages[task]['peak_rss_mib']:>7.0f} MiB", flush=True)  # fmt: skip
        summary = _summary(home, n)
    finally:
        _postgres(f"DROP DATABASE IF EXISTS {warehouse}")
        shutil.rmtree(home, ignore_errors=True)
    return {"events": n, "source_load_s": round(load_s, 1), "stages": stages, **summary}


def _summary(home: Path, n: int) -> dict:
    """What the run produced: rows extracted, gate chunking, online keys (a check that the work was done)."""
    import pyarrow.parquet as pq
    import redis

    partition = home / "lake" / "raw" / "events" / f"dt={DAY.isoformat()}" / "part-0.parquet"
    gate = json.loads((home / "validation" / "raw_events" / f"dt={DAY.isoformat()}" / "result.json").read_text())
    host_port, *options = REDIS.split(",")
    host, port = host_port.split(":")
    db = int(next((o.split("=", 1)[1] for o in options if o.startswith("db=")), 0))
    return {
        "raw_events_rows": pq.ParquetFile(partition).metadata.num_rows,
        "events_gate_buckets": [p["buckets"] for p in gate.get("chunked", {}).get("passes", [])],
        "events_gate_success": gate["success"],
        "redis_keys": redis.Redis(host=host, port=int(port), db=db).dbsize(),
    }


def exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def plot(runs: list[dict], path: Path) -> None:
    """Wall time and peak RSS per stage against events, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    sizes = [r["events"] for r in runs]
    for task in STAGES:
        left.plot(sizes, [r["stages"][task]["wall_s"] for r in runs], marker="o", label=task)
        right.plot(sizes, [r["stages"][task]["peak_rss_mib"] for r in runs], marker="o", label=task)
    left.plot(sizes, [runs[0]["stages"]["extract"]["wall_s"] * s / sizes[0] for s in sizes], "k:", label="linear")
    for ax, title in ((left, "wall time (s)"), (right, "peak RSS (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events in the day")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle("recsys features stages on MariaDB → Postgres → Redis, one stage per process")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run() -> dict:
    root = Path(tempfile.mkdtemp(prefix="recsys-bench-scale-"))
    try:
        runs = []
        for n in SIZES:
            print(f"scale: {n:,} events", flush=True)
            runs.append(run_size(n, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return summarize(runs)


def summarize(runs: list[dict]) -> dict:
    """Exponents over every size, and between the two largest (closer to the asymptote: a stage's fixed cost,
    such as the process start and imports, flattens the fit over small sizes); targets; the plot."""
    sizes = [r["events"] for r in runs]

    def fit(key: str, pick: slice = slice(None)) -> dict[str, float]:
        return {t: round(exponent(sizes[pick], [r["stages"][t][key] for r in runs[pick]]), 3) for t in STAGES}

    exponents, rss_exponents = fit("wall_s"), fit("peak_rss_mib")
    plot(runs, Path(__file__).parent / "results" / "scale.png")
    return {
        "sizes": sizes,
        "users": USERS,
        "items": ITEMS,
        "runs": runs,
        "exponents": exponents,
        "exponents_two_largest": fit("wall_s", slice(-2, None)) if len(runs) > 2 else exponents,
        "rss_exponents": rss_exponents,
        "targets": {
            "time_exponent_max": MAX_TIME_EXPONENT,
            "rss_exponent_max": MAX_RSS_EXPONENT,
            "flat_rss_stages": list(FLAT_RSS),
            "time_met": {t: b <= MAX_TIME_EXPONENT for t, b in exponents.items()},
            "rss_met": {t: rss_exponents[t] <= MAX_RSS_EXPONENT for t in FLAT_RSS},
        },
        "plot": "bench/results/scale.png",
    }
