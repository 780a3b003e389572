"""Shared fixtures: isolated settings per test, and real servers (MariaDB, MongoDB-wire, Redis, Postgres).

Helpers a test module imports itself (free ports, fresh databases) are in ``servers.py``.

A test that needs a server it cannot reach is skipped with the reason, unless RECSYS_REQUIRE_SERVICES=1
(set by CI), where it fails. Which servers, on which ports, and how CI starts them: README.md, "Test servers".
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.config import Settings, get_settings
from servers import MARIADB_URL, free_port, unavailable


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's RECSYS_* environment or a cached Settings."""
    for key in list(os.environ):
        if key.startswith("RECSYS_") and key not in {"RECSYS_REQUIRE_SERVICES", "RECSYS_TEST_MYSQL_URL"}:
            monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded-mode settings with every path under a fresh temporary home."""
    return Settings(home=tmp_path / "home")


@pytest.fixture(scope="session")
def mariadb_server_url() -> str:
    """URL of the real MariaDB/MySQL server (no database part)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    try:
        engine = create_engine(MARIADB_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except OperationalError:
        unavailable(f"MariaDB at {MARIADB_URL}")
    return MARIADB_URL


@pytest.fixture
def mariadb_url(mariadb_server_url: str) -> Iterator[str]:
    """A fresh, uniquely named database on the real MariaDB server, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = f"recsys_test_{uuid.uuid4().hex[:10]}"
    engine = create_engine(mariadb_server_url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    try:
        yield f"{mariadb_server_url}/{name}?charset=utf8mb4"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        engine.dispose()


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    """A real MongoDB-wire server (secantusdb, in memory) on a free port for the test session."""
    exe = shutil.which("secantusd-py", path=str(Path(sys.executable).parent)) or shutil.which("secantusd-py")
    if exe is None:
        unavailable("the secantusdb test server (secantusd-py)")
    port = free_port()
    proc = subprocess.Popen(
        [str(exe), "--host", "127.0.0.1", "--port", str(port), "--storage-path", ":memory:"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                unavailable(f"secantusdb (exited: {proc.stderr.read().decode()[-500:] if proc.stderr else ''})")
            time.sleep(0.1)
    else:
        proc.kill()
        unavailable("secantusdb (did not listen within 30 s)")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
