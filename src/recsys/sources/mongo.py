"""Item documents (and optionally events) in MongoDB."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from recsys.errors import SourceUnavailableError

if TYPE_CHECKING:
    from pymongo.database import Database

    from recsys.config import Settings


def describe(settings: Settings) -> str:
    """``host:port/db`` of the configured MongoDB, for messages (no credentials)."""
    from pymongo.uri_parser import parse_uri

    if settings.mongo_url is None:
        return f"(RECSYS_MONGO_URL unset)/{settings.mongo_db}"
    nodes = parse_uri(settings.mongo_url.get_secret_value())["nodelist"]
    return ",".join(f"{h}:{p}" for h, p in nodes) + f"/{settings.mongo_db}"


def mongo_database(settings: Settings, timeout_ms: int = 3000) -> Database[dict[str, Any]]:
    """The configured MongoDB database, pinged once so an unreachable server fails here, clearly."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError
    from pymongo.uri_parser import parse_uri

    if settings.mongo_url is None:
        raise SourceUnavailableError("RECSYS_MONGO_URL is not set: set it to mongodb://host:port to use MongoDB.")
    url = settings.mongo_url.get_secret_value()
    hosts = ",".join(f"{h}:{p}" for h, p in parse_uri(url)["nodelist"])
    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=timeout_ms, tz_aware=False)
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        client.close()
        raise SourceUnavailableError(
            f"cannot reach MongoDB at {hosts} (database {settings.mongo_db}): {type(exc).__name__}. "
            "Check that the server is running and RECSYS_MONGO_URL is right."
        ) from exc
    return client[settings.mongo_db]


def init_collections(db: Database[dict[str, Any]]) -> None:
    """Unique item ids and an ``updated_at`` index for interval extraction."""
    db.items.create_index("item_id", unique=True)
    db.items.create_index("updated_at")
    db.events.create_index("event_id", unique=True)
    db.events.create_index("received_at")


def upsert_items(db: Database[dict[str, Any]], rows: Iterable[dict[str, Any]]) -> int:
    """Insert or replace item documents keyed by ``item_id``; returns how many were written."""
    from pymongo import ReplaceOne

    ops = [ReplaceOne({"item_id": r["item_id"]}, dict(r), upsert=True) for r in rows]
    if ops:
        db.items.bulk_write(ops, ordered=False)
    return len(ops)


def insert_events(db: Database[dict[str, Any]], rows: Iterable[dict[str, Any]], chunk: int = 10_000) -> int:
    """Append event documents (unique ``event_id``), in chunks; returns how many were written."""
    batch: list[dict[str, Any]] = []
    written = 0
    for row in rows:
        batch.append(dict(row))
        if len(batch) >= chunk:
            written += len(db.events.insert_many(batch, ordered=False).inserted_ids)
            batch = []
    if batch:
        written += len(db.events.insert_many(batch, ordered=False).inserted_ids)
    return written


def iter_interval(
    db: Database[dict[str, Any]], collection: str, column: str, start: datetime, end: datetime, batch: int
) -> Iterator[dict[str, Any]]:
    """Documents with ``start <= column < end`` in a stable order, streamed in batches."""
    key = "item_id" if collection == "items" else "event_id"
    cursor = db[collection].find({column: {"$gte": start, "$lt": end}}, {"_id": False}).sort(key, 1).batch_size(batch)
    yield from cursor
