"""``recsys``: the command line over the same stage functions the DAGs call."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from recsys.config import Settings, get_settings

app = typer.Typer(help="BERT two-tower recommender workflow.", no_args_is_help=True, add_completion=False)
sources_app = typer.Typer(help="Source databases.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
bento_app = typer.Typer(
    help="Built bentos and the production pointer (the bento `recsys serve` runs).", no_args_is_help=True
)
app.add_typer(bento_app, name="bento")
dbt_app = typer.Typer(help="The dbt project (dbt/).", no_args_is_help=True)
app.add_typer(dbt_app, name="dbt")

Day = Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="Data interval day (UTC).")]


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at each record, so a live progress bar (which redirects it while it
    draws) prints log lines above itself instead of being overwritten by them."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[_StderrHandler()],
    )


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Configuration comes from RECSYS_* environment variables or the YAML file in RECSYS_CONFIG."""
    _setup_logging(verbose)


@sources_app.command("init")
def sources_init() -> None:
    """Create the source tables (and MongoDB indexes) with the indexes extraction needs."""
    from recsys.sources import mongo
    from recsys.sources.db import init_schema, source_engine

    settings = get_settings()
    created = init_schema(source_engine(settings))
    if "mongo" in (settings.items_source, settings.events_source):
        mongo.init_collections(mongo.mongo_database(settings))
    typer.echo(f"created tables: {created or 'none (all existed)'}")


@dbt_app.command("parse")
def dbt_parse() -> None:
    """Parse dbt/ into the manifest the Airflow dbt task group is rendered from (again after changing dbt/)."""
    from recsys.transform.dbt import parse_manifest

    typer.echo(f"dbt manifest: {parse_manifest(get_settings())}")


@app.command()
def simulate(
    days: int = 8,
    users: int = 300,
    items: int = 300,
    new_items_per_day: int = 20,
    seed: int = 42,
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"])] = datetime(2026, 11, 1),
    replace: Annotated[bool, typer.Option(help="Overwrite rows already in the source tables.")] = False,
) -> None:
    """Write a seeded simulated site (users, items with text, impressions, clicks) into the sources."""
    from recsys.sources.simulator import SimulationConfig
    from recsys.sources.simulator import simulate as run_simulation
    from recsys.sources.writer import write_site

    cfg = SimulationConfig(
        seed=seed, start=start, days=days, n_users=users, initial_items=items, new_items_per_day=new_items_per_day
    )
    counts = write_site(get_settings(), run_simulation(cfg), replace=replace)
    typer.echo(json.dumps(counts))


@app.command("import-movielens")
def import_movielens(
    folder: Annotated[Path, typer.Argument(help="A MovieLens release folder (ratings.csv, tags.csv, movies.csv).")],
    replace: Annotated[bool, typer.Option(help="Overwrite rows already in the source tables.")] = False,
) -> None:
    """Import a MovieLens release (ml-latest-small format, or a larger one) into the sources.

    A bar on stderr counts the events inserted, chunk by chunk (only on a terminal).
    """
    from recsys.progress import progress_bar
    from recsys.sources.movielens import import_movielens as run_import

    with progress_bar("importing MovieLens events") as advance:
        result = run_import(get_settings(), folder, replace=replace, progress=advance)
    typer.echo(result)


@app.command()
def extract(day: Day, table: Annotated[str | None, typer.Option(help="One table; default all.")] = None) -> None:
    """Extract one day's interval of the sources into raw Parquet partitions."""
    from recsys.ingest.extract import extract_all, extract_interval
    from recsys.lake import day_interval

    settings = get_settings()
    start, end = day_interval(day.date())
    if table:
        results = [extract_interval(settings, table, start, end)]
    else:
        results = list(extract_all(settings, start, end).values())
    for r in results:
        typer.echo(f"{r.table}: {r.rows} rows, {r.quarantined} quarantined -> {r.partition}")


@app.command()
def backfill(
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"])],
    end: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="Last day, inclusive.")],
    force: Annotated[bool, typer.Option(help="Run again the days that already passed.")] = False,
) -> None:
    r"""Run the features of every day in \[start, end] (inclusive), oldest first, through the gated stages.

    The same stages as recsys_features: extract, raw gates, dbt build, mart gates, encode, materialize, freshness.
    Resumable (days that passed are skipped); stops at the first day a gate refuses. A bar on stderr advances per
    day (only on a terminal).
    """
    from recsys.lake import days_between
    from recsys.pipeline import backfill_features
    from recsys.progress import progress_bar

    first, last = start.date(), end.date()
    with progress_bar("backfill (days)", len(days_between(first, last))) as advance:
        for day, summary in backfill_features(get_settings(), first, last, force=force):
            advance(1)
            typer.echo(f"{day}: {'already done, skipped' if summary is None else 'features done'}")


@app.command("stage")
def run_stage(
    task: Annotated[str, typer.Argument(help="A DAG task id: extract, dbt_build, encode_items, train, ...")],
    period_start: Annotated[
        datetime, typer.Argument(formats=["%Y-%m-%d"], help="The day (features) or the week's Monday (training).")
    ],
    result_file: Annotated[
        Path | None, typer.Option(help="Also write the summary here (/airflow/xcom/return.json in a pod).")
    ] = None,
) -> None:
    """Run one DAG task's stage for its day or week in this process (a Kubernetes pod task runs this) and print its
    summary as JSON."""
    from recsys.orchestration.context import interval
    from recsys.pipeline import INTERVAL_STAGES

    if task not in INTERVAL_STAGES:
        raise typer.BadParameter(f"{task!r} is not one of {', '.join(INTERVAL_STAGES)}.", param_hint="TASK")
    period, stage_function = INTERVAL_STAGES[task]
    start, end = interval({"params": {period: period_start.date().isoformat()}}, period)
    summary = json.dumps(stage_function(get_settings(), start, end), default=str, sort_keys=True)
    if result_file is not None:
        result_file.parent.mkdir(parents=True, exist_ok=True)
        result_file.write_text(summary)
    typer.echo(summary)


@app.command("run")
def run_dag(day: Day) -> None:
    """Run recsys_features for one UTC day with `airflow dags test` (embedded Airflow, no scheduler)."""
    from recsys.orchestration.local import run_features_day

    run_features_day(get_settings(), day.date())


@app.command("train")
def train_week(week: Annotated[datetime, typer.Argument(formats=["%Y-%m-%d"], help="The week's Monday.")]) -> None:
    """Run recsys_training for one ISO week with `airflow dags test` (embedded Airflow, no scheduler)."""
    from recsys.orchestration.local import run_training_week

    run_training_week(get_settings(), week.date())


@app.command("airflow")
def airflow_ui(port: Annotated[int, typer.Option(help="Port of the Airflow UI and API on 127.0.0.1.")] = 8080) -> None:
    """Airflow standalone on the embedded home (SQLite metadata, this project's DAGs) until Ctrl-C."""
    from recsys.orchestration.local import standalone, stop_group

    settings = get_settings()
    process = standalone(settings, port)
    passwords = settings.home / "airflow" / "simple_auth_manager_passwords.json.generated"
    typer.echo(f"Airflow UI: http://127.0.0.1:{port} (user admin, password in {passwords}); Ctrl-C stops it.")
    try:
        process.wait()
    except KeyboardInterrupt:
        stop_group(process)


cluster_app = typer.Typer(
    help="A local CeleryExecutor cluster: Postgres metadata, Redis/RabbitMQ broker, scheduler, DAG processor, API "
    "server and Celery workers as processes (pids and logs under {home}/cluster).",
    no_args_is_help=True,
)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("up")
def cluster_up() -> None:
    """Start the cluster and wait until the API server, scheduler, DAG processor and every worker are ready."""
    from recsys.orchestration import cluster

    settings = get_settings()
    state = cluster.up(settings)
    passwords = settings.home / "airflow" / "simple_auth_manager_passwords.json.generated"
    typer.echo(f"Airflow API and UI: {state['api_url']} (user admin, password in {passwords})")
    for name, pid in state["pids"].items():
        typer.echo(f"  {name}: pid {pid}, log {cluster.log_file(settings, name)}")


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop every component by its pid (SIGTERM, then SIGKILL after a minute); nothing running is no error."""
    from recsys.orchestration import cluster

    outcome = cluster.down(get_settings())
    for name, what in outcome.items():
        typer.echo(f"{name}: {what}")
    if not outcome:
        typer.echo("the cluster is not running")


@cluster_app.command("status")
def cluster_status() -> None:
    """Each component's pid and whether it is alive."""
    from recsys.orchestration import cluster

    found = cluster.status(get_settings())
    for name, what in found.items():
        typer.echo(f"{name}: {what}")
    if not found:
        typer.echo("the cluster is not running")


@app.command()
def recommend(
    user_id: list[int],
    k: int = 10,
    bento: Annotated[
        str | None, typer.Option(help="Bento tag; default the production bento, else the latest build.")
    ] = None,
    port: int = 3000,
) -> None:
    """Serve a bento on localhost, ask it for recommendations, print them, stop it."""
    from recsys.demo import query_bento
    from recsys.registry.production import production_bento

    settings = get_settings()
    query_bento(settings, user_id, k=k, bento_tag=bento or production_bento(settings), port=port)


def _run_foreground(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` until it exits, forwarding SIGINT/SIGTERM to it; its exit status (128+N if killed by N).

    The child gets its own process group, so a terminal's Ctrl-C reaches it once, through us, not twice.
    """
    import signal
    import subprocess

    process = subprocess.Popen(command, env=env, process_group=0)

    def forward(signum: int, _frame: object) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 3000,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Service worker processes; default RECSYS_SERVING__WORKERS or 1.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 for every interface).")] = "127.0.0.1",
) -> None:
    """Run the production bento in the foreground (`bentoml serve`) until SIGINT/SIGTERM."""
    import sys

    from recsys.errors import RegistryError
    from recsys.registry.production import NEXT_STEP, pointer_path, production
    from recsys.registry.serve import bentoml_subprocess_env

    settings = get_settings()
    current = production(settings)
    if current is None:
        raise RegistryError(f"no production bento ({pointer_path(settings)} is absent): {NEXT_STEP}.")
    env = {**bentoml_subprocess_env(settings), "RECSYS_SERVING__WORKERS": str(workers or settings.serving.workers)}
    command = [sys.executable, "-m", "bentoml", "serve", current.bento, "--host", host, "--port", str(port)]
    typer.echo(f"serving production bento {current.bento} (model {current.model}) at http://{host}:{port}", err=True)
    code = _run_foreground(command, env)
    if code:
        raise typer.Exit(code)


def _metrics_summary(metrics: dict[str, object], metric: str) -> str:
    """``ndcg@10 0.1234 (pop 0.0567)``: the promotion metric of the model, and of popularity when recorded."""
    model = metrics.get("model", metrics)
    popularity = metrics.get("popularity")
    if not isinstance(model, dict) or metric not in model:
        return "-"
    text = f"{metric} {float(model[metric]):.4f}"
    if isinstance(popularity, dict) and metric in popularity:
        text += f" (pop {float(popularity[metric]):.4f})"
    return text


def _day(value: str | None) -> str:
    return value[:10] if value else "?"


@bento_app.command("list")
def bento_list() -> None:
    """Built bentos, newest first: model, its holdout metric, data interval, gate/infra status; * marks production."""
    from recsys.registry.production import list_bentos

    settings = get_settings()
    bentos = list_bentos(settings)
    if not bentos:
        typer.echo(f"no {settings.bento_name} bento built yet: run the training DAG (recsys train YYYY-MM-DD).")
        return
    rows = [
        (
            "*" if b.is_production else "",
            b.tag,
            b.model or "(not exactly one model)",
            _metrics_summary(b.metrics, settings.promotion_metric),
            f"{_day(b.data_interval_start)}..{_day(b.data_interval_end)}" if b.data_interval_start else "-",
            f"{b.promotion or '-'}/{b.infra_validation or '-'}",
            f"{b.created_at:%Y-%m-%d %H:%M:%S}",
        )
        for b in bentos
    ]
    _echo_table(("", "BENTO", "MODEL", "METRICS", "DATA INTERVAL", "GATE/INFRA", "CREATED"), rows)


def _echo_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``header`` and ``rows`` as left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@bento_app.command("deploy")
def bento_deploy(
    tag: Annotated[str, typer.Argument(help="Bento tag (name:version, a version, or latest).")],
    reason: Annotated[str, typer.Option(help="Recorded with the deploy.")] = "deploy",
) -> None:
    """Make a built bento the production one (what `recsys serve` runs)."""
    from recsys.registry.production import deploy, production_bento

    settings = get_settings()
    before = production_bento(settings)
    record = deploy(settings, tag, reason=reason)
    if record.bento == before:
        typer.echo(f"{record.bento} is already production (model {record.model}, since {record.deployed_at})")
    else:
        typer.echo(f"{before or '(none)'} -> {record.bento} (model {record.model})")


@bento_app.command("rollback")
def bento_rollback() -> None:
    """Make the previous production bento current again (twice: back where you started)."""
    from recsys.registry.production import production_bento, rollback

    settings = get_settings()
    before = production_bento(settings)
    record = rollback(settings)
    typer.echo(f"{before} -> {record.bento} (model {record.model})")


GATE_DECISIONS_SHOWN = 5


def _freshness_status(settings: Settings, as_of: datetime) -> dict[str, Any]:
    """``{"views": [per-view freshness]}``, or ``{"error": why none}`` (no registry yet, bad SLAs, ...)."""
    from recsys.errors import RecsysError
    from recsys.features.freshness import check

    assert settings.feast_registry is not None
    if not settings.feast_registry.exists():
        registry = settings.feast_registry
        return {"error": f"no Feast registry at {registry} yet: run recsys_features (recsys run --day DAY)"}
    try:
        return {"views": [{"view": v.view, **v.summary()} for v in check(settings, as_of)]}
    except RecsysError as exc:
        return {"error": str(exc)}


def _production_status(settings: Settings) -> dict[str, Any] | None:
    """The production bento's entry with its model's metrics and data interval (None before the first deploy)."""
    from dataclasses import asdict

    from recsys.errors import RegistryError
    from recsys.registry.production import production
    from recsys.registry.store import get_model

    record = production(settings)
    if record is None:
        return None
    status: dict[str, Any] = asdict(record)
    try:
        metadata = get_model(settings, record.model).metadata
    except RegistryError as exc:
        return {**status, "error": str(exc)}
    keys = ("data_interval_start", "data_interval_end")
    return {**status, "metrics": dict(metadata.get("metrics") or {}), **{k: metadata.get(k) for k in keys}}


def _runs_status(settings: Settings) -> dict[str, Any]:
    """``{dag_id: its newest run, or None}``, or ``{"error": why unreadable}``."""
    from recsys.errors import RecsysError
    from recsys.orchestration.runs import last_runs

    try:
        return {dag: run.summary() if run else None for dag, run in last_runs(settings).items()}
    except RecsysError as exc:
        return {"error": str(exc)}


def collect_status(settings: Settings, as_of: datetime) -> dict[str, Any]:
    """What `recsys status` reports, JSON-able: freshness at ``as_of``, production, last DAG runs, gate decisions."""
    from recsys.registry.gate import decisions

    return {
        "as_of": as_of.isoformat(),
        "freshness": _freshness_status(settings, as_of),
        "production": _production_status(settings),
        "dag_runs": _runs_status(settings),
        "gate_decisions": decisions(settings)[-GATE_DECISIONS_SHOWN:][::-1],
    }


def _duration(seconds: float | None) -> str:
    """``2 days, 12:00:00``; ``-12:00:00`` for a negative one; ``-`` for none."""
    from datetime import timedelta

    if seconds is None:
        return "-"
    return ("-" if seconds < 0 else "") + str(timedelta(seconds=abs(seconds)))


def _when(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "-"


def _echo_status(status: dict[str, Any], metric: str) -> None:
    """`recsys status` as plain text: a heading and a table (or one line) per section."""
    typer.echo(f"Feature freshness at {status['as_of']}")
    freshness = status["freshness"]
    if "error" in freshness:
        typer.echo(f"  {freshness['error']}")
    else:
        views = [
            (v["view"], v["materialized_until"] or "never", _duration(v["age_s"]), _duration(v["sla_s"]),
             "fresh" if v["fresh"] else "STALE")
            for v in freshness["views"]
        ]  # fmt: skip
        _echo_table(("VIEW", "MATERIALIZED UNTIL", "AGE", "SLA", "STATUS"), views)

    typer.echo("\nProduction")
    current = status["production"]
    if current is None:
        typer.echo("  no production bento yet")
    else:
        metrics = _metrics_summary(current.get("metrics") or {}, metric)
        interval = f"{_day(current.get('data_interval_start'))}..{_day(current.get('data_interval_end'))}"
        row = (current["bento"], current["model"], metrics, interval, _when(current["deployed_at"]), current["reason"])
        _echo_table(("BENTO", "MODEL", "METRICS", "DATA INTERVAL", "DEPLOYED", "REASON"), [row])
        if "error" in current:
            typer.echo(f"  {current['error']}")

    typer.echo("\nLast DAG runs")
    runs = status["dag_runs"]
    if "error" in runs:
        typer.echo(f"  {runs['error']}")
    else:
        last = [
            (dag, "no runs yet", "", "", "", "") if run is None else
            (dag, run["state"] or "-", run["run_id"], run["partition_key"] or _day(run["data_interval_start"]),
             _when(run["start_date"]), _when(run["end_date"]))
            for dag, run in runs.items()
        ]  # fmt: skip
        _echo_table(("DAG", "OUTCOME", "RUN", "PARTITION", "STARTED", "ENDED"), last)

    typer.echo(f"\nPromotion gate decisions (newest first, at most {GATE_DECISIONS_SHOWN})")
    if not status["gate_decisions"]:
        typer.echo("  no decisions yet")
    else:
        decided = [
            (_when(d.get("decided_at")), d["candidate"], "promoted" if d["promoted"] else "refused", d["reason"])
            for d in status["gate_decisions"]
        ]
        _echo_table(("DECIDED", "CANDIDATE", "OUTCOME", "REASON"), decided)


@app.command()
def status(
    as_of: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"], help="Judge freshness at this UTC time (default: now)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of tables.")] = False,
) -> None:
    """Freshness of each feature view against its SLA, the production bento, the DAGs' last runs, gate decisions.

    It reports and exits 0, stale or not.
    """
    from datetime import UTC

    from recsys import lake

    settings = get_settings()
    report = collect_status(settings, lake.utc(as_of) if as_of else datetime.now(UTC).replace(microsecond=0))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _echo_status(report, settings.promotion_metric)


@app.command()
def demo(days: int = 8, users: int = 300, items: int = 300, port: int = 3000) -> None:
    """The main job on the embedded default: simulate → recsys_features per day → recsys_training → serve and query."""
    from recsys.demo import run_demo

    run_demo(get_settings(), days=days, users=users, items=items, port=port)


def run() -> None:
    """Console entry point: a RecsysError ends the command with its message, not a traceback."""
    from recsys.errors import RecsysError

    try:
        app()
    except RecsysError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise SystemExit(1) from None


if __name__ == "__main__":
    run()
