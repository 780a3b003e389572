"""The main job on the embedded default, end to end, with a timing for every stage."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from recsys import lake
from recsys.errors import ConfigError

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
    """Simulate a site, run recsys_features for every day, recsys_training for the last whole week, then serve.

    Both DAGs run with ``airflow dags test`` on SQLite metadata (no scheduler, no server).
    """
    from recsys.orchestration.local import last_complete_week, run_features_day, run_training_week
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

    first, last = cfg.start.date(), cfg.start.date() + timedelta(days=days - 1)
    week = last_complete_week(first, last)
    if week is None:
        raise ConfigError(f"the demo needs a whole ISO week (Monday to Sunday) in [{first}, {last}]: add days.")
    logs = settings.home / "logs"
    t = time.perf_counter()
    for n, day in enumerate(lake.days_between(first, last), 1):
        print(f"recsys_features {day} ({n}/{days}; log: {logs / f'features-{day}.log'})", flush=True)
        run_features_day(settings, day, log_file=logs / f"features-{day}.log")
    extra["recsys_features_dag_total"] = time.perf_counter() - t

    t = time.perf_counter()
    print(f"recsys_training week {week} (log: {logs / f'training-{week}.log'})", flush=True)
    run_training_week(settings, week, log_file=logs / f"training-{week}.log")
    extra["recsys_training_dag_total"] = time.perf_counter() - t

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
    _print_reports(settings, lake.day_start(week))


def _print_reports(settings: Settings, week_start: datetime) -> None:
    from recsys.pipeline import run_dir
    from recsys.validation.gates import data_docs_index

    report = run_dir(settings, week_start) / "report.html"
    print(f"\nevaluation report: {report.as_uri() if report.exists() else f'(not written: {report})'}")
    print(f"data docs (GX validation results): {data_docs_index(settings).as_uri()}")
