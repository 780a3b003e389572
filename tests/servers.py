"""Real servers for tests: reachability (skip on a laptop, fail under CI), fresh databases, free ports.

A test module imports these from here (``from servers import ...``): ``import conftest`` would find whichever
conftest.py was imported first.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


class MariaDBServer:
    """A private ``mariadbd`` (its own datadir, port and socket under ``root``) that a test may kill and restart.

    Never the shared server on 3306, which other tests use. ``kill()`` is SIGKILL (a crash: InnoDB recovers on
    the next ``start()``); root has no password, as on the shared server.
    """

    def __init__(self, root: Path) -> None:
        search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
        daemon, install = shutil.which("mariadbd", path=search), shutil.which("mariadb-install-db", path=search)
        if daemon is None or install is None:
            unavailable("a private MariaDB (mariadbd and mariadb-install-db, Debian package mariadb-server)")
        self.daemon, self.install = str(daemon), str(install)
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        as_root = ["--user=root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        self._user = as_root

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the server (no database part)."""
        return f"mysql+pymysql://root@127.0.0.1:{self.port}"

    def _initialise(self) -> None:
        done = subprocess.run(
            [self.install, "--no-defaults", f"--datadir={self.root / 'data'}", "--skip-test-db",
             "--auth-root-authentication-method=normal", *self._user],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            unavailable(f"a private MariaDB (mariadb-install-db failed: {done.stderr[-300:]})")

    def start(self, timeout_s: float = 60.0) -> None:
        """Start (initialising the datadir the first time) and wait until it answers ``SELECT 1``."""
        if not (self.root / "data" / "mysql").is_dir():
            self._initialise()
        log = (self.root / "mariadbd.log").open("ab")
        self.proc = subprocess.Popen(
            [self.daemon, "--no-defaults", f"--datadir={self.root / 'data'}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.root / 'mysqld.sock'}",
             f"--pid-file={self.root / 'mysqld.pid'}", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
             *self._user],
            stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.root / "mariadbd.log").read_text(errors="replace")[-400:]
                unavailable(f"a private MariaDB on port {self.port} (exited: {tail})")
            if self.answers():
                return
            time.sleep(0.1)
        self.stop()
        unavailable(f"a private MariaDB on port {self.port} (no answer within {timeout_s:.0f} s)")

    def answers(self) -> bool:
        import pymysql

        try:
            pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=1).close()
            return True
        except pymysql.err.OperationalError:
            return False

    def kill(self) -> None:
        """SIGKILL the server and wait for it: every connection drops, the port refuses new ones."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), killed if it takes over 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


class PostgresServer:
    """A private PostgreSQL (its own data directory, port and socket under ``root``) that a test may restart.

    Never the shared server on 5432, which other tests use. Trust authentication for ``postgres`` on 127.0.0.1,
    as on the shared server; ``fsync`` off (a test server). Run as the ``postgres`` user when the tests run as
    root (the server refuses root): its folder is then a fresh one under the system temp directory, owned by that
    user (a test's tmp_path is not reachable for it). ``restart()`` is a fast shutdown (every session is
    terminated, as in a failover or a maintenance restart) and a start on the same port; ``remove()`` stops the
    server and deletes its folder.
    """

    def __init__(self) -> None:
        search = os.pathsep.join(
            [os.environ.get("PATH", ""), *sorted(str(p) for p in Path("/usr/lib/postgresql").glob("*/bin"))]
        )
        initdb, daemon = shutil.which("initdb", path=search), shutil.which("postgres", path=search)
        if initdb is None or daemon is None:
            unavailable("a private PostgreSQL (initdb and postgres, Debian package postgresql)")
        self.initdb, self.daemon = str(initdb), str(daemon)
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="recsys-test-postgres-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        self._as: dict[str, str] = {"user": "postgres", "group": "postgres"} if as_root else {}
        if as_root:
            shutil.chown(self.root, "postgres", "postgres")

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL of a database on the server."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{dbname}"

    def _initialise(self) -> None:
        done = subprocess.run(
            [self.initdb, "-D", str(self.root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            capture_output=True, text=True, timeout=120, cwd=self.root, **self._as,
        )  # fmt: skip
        if done.returncode != 0:
            unavailable(f"a private PostgreSQL (initdb failed: {done.stderr[-300:]})")

    def start(self, timeout_s: float = 60.0) -> None:
        """Start (initialising the data directory the first time) and wait until it accepts a connection."""
        if not (self.root / "data" / "PG_VERSION").is_file():
            self._initialise()
        log = (self.root / "postgres.log").open("ab")
        self.proc = subprocess.Popen(
            [self.daemon, "-D", str(self.root / "data"), "-p", str(self.port), "-k", str(self.root),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=log, stderr=log, cwd=self.root, **self._as,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.root / "postgres.log").read_text(errors="replace")[-400:]
                unavailable(f"a private PostgreSQL on port {self.port} (exited: {tail})")
            if self.answers():
                return
            time.sleep(0.1)
        self.stop()
        unavailable(f"a private PostgreSQL on port {self.port} (no answer within {timeout_s:.0f} s)")

    def answers(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(
                host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=1
            ).close()
            return True
        except psycopg2.OperationalError:
            return False

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'create database "{name}"')
        conn.close()

    def stop(self) -> None:
        """A fast shutdown (SIGINT: sessions terminated, then a clean checkpoint); killed after 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
