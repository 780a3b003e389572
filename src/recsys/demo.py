"""The main job on the embedded default, end to end, with a timing for every stage."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys.config import Settings

log = logging.getLogger(__name__)
UNKNOWN_USER = 10_000_000


def _print_timings(settings: Settings, since: float, extra: dict[str, float]) -> None:
    path = settings.home / "timings.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    print("\nstage timings (s):")
    for name, seconds in extra.items():
        print(f"  {name:<22} {seconds:8.1f}")
    for row in rows:
        print(f"  {row['stage']:<22} {row['seconds']:8.1f}   ({row.get('interval', '')})")
    print(f"  {'total':<22} {time.perf_counter() - since:8.1f}")


def _describe(items: dict[int, dict[str, Any]], item_ids: list[int]) -> str:
    return ", ".join(f"{i}:{items[i]['category']}" if i in items else str(i) for i in item_ids)


def query_bento(
    settings: Settings, user_ids: list[int], k: int = 10, bento_tag: str | None = None, port: int = 3000
) -> list[dict[str, Any]]:
    """Serve a bento (default: production, else the latest build) on localhost, ask it for ``user_ids``, stop it."""
    from recsys.registry import latest_bento
    from recsys.registry.production import production_bento
    from recsys.registry.serve import recommend_http, serve_bento

    tag = bento_tag or production_bento(settings) or latest_bento(settings)
    answers = []
    with serve_bento(settings, tag, port) as base_url:
        print(f"\nserving bento {tag} at {base_url}")
        for user_id in user_ids:
            answers.append(recommend_http(base_url, user_id, k))
    return answers


def run_demo(settings: Settings, days: int = 8, users: int = 300, items: int = 300, port: int = 3000) -> None:
    """Simulate a site, backfill its history, run the daily DAG for the last day, then serve and query."""
    from recsys.ingest.extract import backfill
    from recsys.orchestration.local import run_dag_test
    from recsys.sources.simulator import SimulationConfig, simulate
    from recsys.sources.writer import write_site
    from recsys.transform.warehouse import read_mart

    t0 = time.perf_counter()
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "timings.jsonl").unlink(missing_ok=True)
    extra: dict[str, float] = {}

    t = time.perf_counter()
    cfg = SimulationConfig(days=days, n_users=users, initial_items=items)
    site = simulate(cfg)
    counts = write_site(settings, site, replace=True)
    extra["simulate"] = time.perf_counter() - t
    print(f"simulated site: {counts}")

    t = time.perf_counter()
    first, last = cfg.start.date(), cfg.start.date() + timedelta(days=days - 1)
    backfill(settings, first, last - timedelta(days=1))
    extra["backfill_history"] = time.perf_counter() - t

    t = time.perf_counter()
    log_file = settings.home / "logs" / f"dag-{last}.log"
    print(f"running DAG recsys_daily for data interval {last} (log: {log_file})")
    run_dag_test(settings, last, log_file=log_file)
    extra["airflow_dag_total"] = time.perf_counter() - t

    from recsys.registry.gate import decisions

    gate = decisions(settings)[-1]
    verdict = "PROMOTED" if gate["promoted"] else "kept as candidate"
    print(f"promotion gate: {verdict} {gate['candidate']}: {gate['reason']}")

    t = time.perf_counter()
    known = [u["user_id"] for u in site.users[:2]]
    answers = query_bento(settings, [*known, UNKNOWN_USER], k=settings.model.top_k, port=port)
    extra["serve_and_query"] = time.perf_counter() - t

    catalog = read_mart(settings, "item_texts").set_index("item_id").to_dict("index")
    for answer in answers:
        user = answer["user_id"]
        planted = site.user_topics.get(user, ["(unknown user)"])
        fallback = f" [popularity fallback: {answer.get('fallback_reason')}]" if answer["fallback"] else ""
        print(f"\nuser {user} (planted topics: {', '.join(planted)}) model {answer['model_version']}{fallback}")
        print(f"  {_describe(catalog, answer['items'])}")
    _print_timings(settings, t0, extra)
