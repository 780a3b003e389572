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
    from recsys.ingest.extract import day_interval, extract_all, extract_interval

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
    from recsys.orchestration import run_dag_test

    run_dag_test(get_settings(), day.date())


@app.command()
def recommend(
    user_id: list[int],
    k: int = 10,
    bento: Annotated[str | None, typer.Option(help="Bento tag; default the latest build.")] = None,
    port: int = 3000,
) -> None:
    """Serve a bento on localhost, ask it for recommendations, print them, stop it."""
    from recsys.demo import query_bento

    query_bento(get_settings(), user_id, k=k, bento_tag=bento, port=port)


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
