"""Write rows into the configured sources: users/events to SQL, items to SQL or MongoDB."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from recsys.errors import SourceUnavailableError
from recsys.sources import mongo
from recsys.sources.db import init_schema, source_engine
from recsys.sources.schema import TABLES

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from recsys.config import Settings
    from recsys.sources.simulator import Site

log = logging.getLogger(__name__)
CHUNK = 5000


def _insert(conn: Connection, table: str, rows: Sequence[dict[str, Any]]) -> None:
    for i in range(0, len(rows), CHUNK):
        conn.execute(TABLES[table].insert(), list(rows[i : i + CHUNK]))


def _refuse_or_clear(conn: Connection, tables: list[str], replace: bool) -> None:
    for name in tables:
        count = conn.execute(select(func.count()).select_from(TABLES[name])).scalar_one()
        if count and not replace:
            raise SourceUnavailableError(
                f"source table {name} already holds {count} rows; pass replace=True (--replace) to overwrite them."
            )
        if count:
            log.warning("replacing %d rows in source table %s", count, name)
            conn.execute(TABLES[name].delete())


def write_rows(
    settings: Settings,
    users: Sequence[dict[str, Any]],
    items: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
    replace: bool = False,
) -> dict[str, int]:
    """Write a site's rows in one transaction per store; refuses to mix with existing rows unless ``replace``."""
    engine = source_engine(settings)
    init_schema(engine)
    sql_tables = ["users", "events"] + (["items"] if settings.items_source == "sql" else [])
    with engine.begin() as conn:
        _refuse_or_clear(conn, sql_tables, replace)
        _insert(conn, "users", users)
        _insert(conn, "events", events)
        if settings.items_source == "sql":
            _insert(conn, "items", items)
    engine.dispose()
    if settings.items_source == "mongo":
        db = mongo.mongo_database(settings)
        mongo.init_collections(db)
        if replace:
            db.items.delete_many({})
        mongo.upsert_items(db, items)
        db.client.close()
    return {"users": len(users), "items": len(items), "events": len(events)}


def write_site(settings: Settings, site: Site, replace: bool = False) -> dict[str, int]:
    """Write a simulated site and its ground truth (``{home}/simulation/ground_truth.json``)."""
    counts = write_rows(settings, site.users, site.items, site.events, replace=replace)
    site.save_ground_truth(settings.home / "simulation" / "ground_truth.json")
    return counts
