"""Connections to the source databases, with bounded retries and errors that never show a password."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

from recsys.errors import SourceUnavailableError
from recsys.sources.schema import metadata

if TYPE_CHECKING:
    from recsys.config import Settings

log = logging.getLogger(__name__)


def describe_url(url: str) -> str:
    """``driver://user@host:port/db`` with the password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def source_engine(settings: Settings, retries: int | None = None, backoff_s: float | None = None) -> Engine:
    """An engine for the events/users database, checked with ``SELECT 1`` (bounded retries).

    ``retries`` (tries in all) and ``backoff_s`` default to ``settings.retries.source``.
    """
    assert settings.source_url is not None
    policy = settings.retries.source
    if retries is not None:
        policy = policy.model_copy(update={"attempts": retries})
    if backoff_s is not None:
        policy = policy.model_copy(update={"backoff_s": backoff_s})
    url = settings.source_url.get_secret_value()
    if url.startswith("sqlite"):
        _ensure_parent(make_url(url).database or "")
    engine = create_engine(url, pool_pre_ping=True, future=True)
    last: Exception | None = None
    delays = policy.delays()
    for attempt in range(1, policy.attempts + 1):
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return engine
        except OperationalError as exc:
            last = exc
            log.warning("source %s unreachable (attempt %d/%d)", describe_url(url), attempt, policy.attempts)
            if attempt < policy.attempts:
                time.sleep(delays[attempt - 1])
    engine.dispose()
    raise SourceUnavailableError(
        f"cannot reach source database {describe_url(url)} after {policy.attempts} attempts ({first_line(last)}). "
        "Check that the server is running and RECSYS_SOURCE_URL names the right host, port and database."
    ) from last


def first_line(exc: BaseException | None) -> str:
    """The driver's own message of ``exc`` (SQLAlchemy wraps it as ``orig``), first line only."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0] if exc is not None else ""


def _ensure_parent(path: str) -> None:
    """SQLite creates the file, not its folder."""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def init_schema(engine: Engine) -> list[str]:
    """Create the source tables and their indexes if missing; returns the tables that were created."""
    existing = set(inspect(engine).get_table_names())
    metadata.create_all(engine)
    return [name for name in metadata.tables if name not in existing]
