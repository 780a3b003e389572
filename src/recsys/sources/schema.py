"""Source tables (SQLAlchemy Core), the same DDL on SQLite and MySQL/MariaDB.

Their columns are the raw lake contract's (``recsys.lake.CONTRACT_SCHEMAS``; a test holds the two together).
Indexes cover what interval extraction filters on (``recsys.lake.INTERVAL_COLUMN``): ``events.received_at``
and ``updated_at`` of the dimension tables.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import mysql

metadata = MetaData()

# MySQL DATETIME drops sub-second precision unless asked for it.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

users = Table(
    "users",
    metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("created_at", Timestamp, nullable=False),
    Column("country", String(2)),
    Column("age_band", String(8)),
    Column("updated_at", Timestamp, nullable=False),
    Index("ix_users_updated_at", "updated_at"),
)

events = Table(
    "events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("user_id", BigInteger),
    Column("item_id", BigInteger),
    Column("event_type", String(16), nullable=False),
    Column("value", Float),
    Column("session_id", String(64)),
    Column("position", Integer),
    Column("occurred_at", Timestamp, nullable=False),  # event time, from the client
    Column("received_at", Timestamp, nullable=False),  # ingestion time, from the server: what intervals cut on
    Index("ix_events_received_at", "received_at"),
)

items = Table(
    "items",
    metadata,
    Column("item_id", BigInteger, primary_key=True, autoincrement=False),
    Column("title", String(512), nullable=False),
    Column("body", Text),
    Column("category", String(64)),
    Column("tags", JSON),
    Column("published_at", Timestamp),
    Column("updated_at", Timestamp, nullable=False),
    Index("ix_items_updated_at", "updated_at"),
)

TABLES = {"users": users, "events": events, "items": items}
