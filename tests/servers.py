"""Real servers for tests: reachability (skip on a laptop, fail under CI), fresh databases, free ports.

A test module imports these from here (``from servers import ...``): ``import conftest`` would find whichever
conftest.py was imported first.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

REQUIRE_SERVICES = os.environ.get("RECSYS_REQUIRE_SERVICES") == "1"
MARIADB_URL = os.environ.get("RECSYS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")


def unavailable(what: str) -> None:
    """Skip (laptop) or fail (CI) because a server the test needs is unreachable."""
    msg = f"{what} is not reachable"
    if REQUIRE_SERVICES:
        pytest.fail(
            f"{msg}, and RECSYS_REQUIRE_SERVICES=1 makes that an error. Start it (README.md, Test servers; "
            ".ci/run starts them)."
        )
    pytest.skip(f"{msg}; start it to run this test")


@contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """A new, uniquely named database on the real PostgreSQL server (skip/fail when down), dropped after."""
    import psycopg2

    from recsys.config import PostgresSettings

    admin = PostgresSettings(dbname="postgres")
    try:
        conn = psycopg2.connect(host=admin.host, port=admin.port, user=admin.user, dbname="postgres", connect_timeout=5)
    except psycopg2.OperationalError:
        unavailable(f"PostgreSQL at {admin.host}:{admin.port}")
    conn.autocommit = True
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with conn.cursor() as cur:
        cur.execute(f"create database {name}")
    try:
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"drop database if exists {name} with (force)")
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
