"""Write rows into the configured sources: users/events to SQL, items to SQL or MongoDB."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from recsys.errors import SourceUnavailableError
from recsys.sources import mongo
from recsys.sources.corruption import CorruptionManifest, apply_after_insert, apply_before_insert
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


def _refuse_or_recreate(conn: Connection, tables: list[str], replace: bool) -> None:
    """Refuse to mix with existing rows; with ``replace``, drop and recreate (which also undoes schema drift)."""
    for name in tables:
        count = conn.execute(select(func.count()).select_from(TABLES[name])).scalar_one()
        if count and not replace:
            raise SourceUnavailableError(
                f"source table {name} already holds {count} rows; pass replace=True (--replace) to overwrite them."
            )
        if replace:
            log.warning("replacing %d rows in source table %s", count, name)
            TABLES[name].drop(conn)
            TABLES[name].create(conn)


def write_rows(
    settings: Settings,
    users: Sequence[dict[str, Any]],
    items: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
    replace: bool = False,
    corruption: CorruptionManifest | None = None,
) -> dict[str, int]:
    """Write a site's rows in one transaction per store; refuses to mix with existing rows unless ``replace``.

    ``corruption`` applies the schema changes an injected corruption needs (see ``recsys.sources.corruption``).
    """
    engine = source_engine(settings)
    init_schema(engine)
    in_sql = {"users": users, "events": events, "items": items}
    in_mongo = {name: in_sql.pop(name) for name in ("items", "events") if _source(settings, name) == "mongo"}
    with engine.begin() as conn:
        _refuse_or_recreate(conn, list(in_sql), replace)
        if "events" in in_sql:
            apply_before_insert(conn, corruption)
        for name, rows in in_sql.items():
            _insert(conn, name, rows)
        if "events" in in_sql:
            apply_after_insert(conn, corruption)
    engine.dispose()
    if in_mongo:
        _write_mongo(settings, in_mongo, replace)
    return {"users": len(users), "items": len(items), "events": len(events)}


def _source(settings: Settings, table: str) -> str:
    return str(getattr(settings, f"{table}_source", "sql"))


def _write_mongo(settings: Settings, collections: dict[str, Sequence[dict[str, Any]]], replace: bool) -> None:
    db = mongo.mongo_database(settings)
    try:
        mongo.init_collections(db)
        for name, rows in collections.items():
            count = db[name].count_documents({})
            if count and not replace:
                raise SourceUnavailableError(
                    f"MongoDB collection {name} already holds {count} documents; pass replace=True (--replace)."
                )
            db[name].delete_many({})
            if name == "items":
                mongo.upsert_items(db, rows)
            else:
                mongo.insert_events(db, rows)
    finally:
        db.client.close()


def write_site(
    settings: Settings, site: Site, replace: bool = False, corruption: CorruptionManifest | None = None
) -> dict[str, int]:
    """Write a simulated site, its ground truth and any corruption manifest under ``{home}/simulation/``."""
    counts = write_rows(settings, site.users, site.items, site.events, replace=replace, corruption=corruption)
    site.save_ground_truth(settings.home / "simulation" / "ground_truth.json")
    if corruption is not None:
        corruption.save(settings.home / "simulation" / "corruption_manifest.json")
    return counts
