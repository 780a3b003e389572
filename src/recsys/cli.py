"""``recsys``: the command line over the same stage functions the DAGs call."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from recsys.config import get_settings

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


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
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
    """Import a MovieLens release (ml-latest-small format, or a larger one) into the sources."""
    from recsys.sources.movielens import import_movielens as run_import

    typer.echo(run_import(get_settings(), folder, replace=replace))


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
    force: Annotated[bool, typer.Option(help="Re-extract days already present.")] = False,
) -> None:
    """Extract every day in [start, end]; resumable (days already extracted are skipped)."""
    from recsys.ingest.extract import backfill as run_backfill

    results = run_backfill(get_settings(), start.date(), end.date(), force=force)
    typer.echo(f"extracted {len(results)} partitions")


@app.command("run")
def run_dag(day: Day) -> None:
    """Run the daily DAG for one data interval with `airflow dags test` (embedded Airflow)."""
    from recsys.orchestration.local import run_dag_test

    run_dag_test(get_settings(), day.date())


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
    """Built bentos, newest first: model, its holdout metric, data interval; * marks production."""
    from recsys.registry.store import list_bentos

    settings = get_settings()
    bentos = list_bentos(settings)
    if not bentos:
        typer.echo(f"no {settings.bento_name} bento built yet: run the training DAG (recsys run --day YYYY-MM-DD).")
        return
    rows = [
        (
            "*" if b.is_production else "",
            b.tag,
            b.model or "(not exactly one model)",
            _metrics_summary(b.metrics, settings.promotion_metric),
            f"{_day(b.data_interval_start)}..{_day(b.data_interval_end)}" if b.data_interval_start else "-",
            f"{b.created_at:%Y-%m-%d %H:%M:%S}",
        )
        for b in bentos
    ]
    header = ("", "BENTO", "MODEL", "METRICS", "DATA INTERVAL", "CREATED")
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


@app.command()
def demo(days: int = 8, users: int = 300, items: int = 300, port: int = 3000) -> None:
    """The main job on the embedded default: simulate → backfill → daily DAG → serve and query the bento."""
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
