"""Helpers shared by the serving tests: the example users' online rows, a private redis-server, a runtime.

Import it (``tests`` is on the pytest pythonpath); it defines no fixtures itself, so each test module keeps
the scope it needs.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from recsys.config import Settings
from servers import free_port, unavailable

# The example artifact's users (101..105) with EXAMPLE_FEATURE_NAMES values and recent items (newest first).
# 104 has no history; 105 has seen half the catalog. Users outside 101..105 are unknown to the model.
EXAMPLE_ROWS: dict[int, tuple[list[float], list[int]]] = {
    101: ([40, 6, 0.15], [1003, 1005]),
    102: ([10, 1, 0.1], [1001]),
    103: ([100, 30, 0.3], [1012, 1011, 1010]),
    104: ([5, 0, 0.0], []),
    105: ([70, 12, 0.17], [1002, 1004, 1006, 1008, 1009, 1007]),
}
EXAMPLE_USERS = sorted(EXAMPLE_ROWS)
MODEL_DAY = "2024-01-07"  # the rows' feature day: the example artifact's data interval ends 2024-01-08


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class RedisServer:
    """A private ``redis-server`` on a free port (never the shared one) that a test may stop and restart.

    ``dump_dir`` set: the server snapshots into ``dump_dir/dump.rdb`` on ``save()`` (and on a clean stop), and a
    restart loads it back, so a restarted server has the same data without re-materializing.
    """

    def __init__(self, port: int | None = None, dump_dir: Path | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            unavailable("redis-server (the Debian package redis-server)")
        self.exe: str = str(exe)
        self.port = port or free_port()
        self.dump_dir = dump_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Feast's Redis connection string."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        persistence = ["--save", ""]
        if self.dump_dir is not None:
            self.dump_dir.mkdir(parents=True, exist_ok=True)
            persistence += ["--dir", str(self.dump_dir), "--dbfilename", "dump.rdb"]
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", *persistence, "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                unavailable(f"a private redis-server on port {self.port} (exited: {err[-300:]})")
            if self._ping():
                return
            time.sleep(0.05)
        self.stop()
        unavailable(f"a private redis-server on port {self.port} (no PONG within {timeout_s:.0f} s)")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def save(self) -> None:
        """Write the snapshot now (SAVE)."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            client.save()
        finally:
            client.close()

    def stop(self) -> None:
        """Terminate the server (SIGTERM) and wait for it; the port refuses connections afterwards."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stderr:
            self.proc.stderr.close()


def redis_settings(home: Path, server: RedisServer, **serving: Any) -> Settings:
    """Settings with the online store in ``server``; ``serving`` overrides ``Settings.serving`` fields."""
    base = Settings(home=home, online_store="redis", redis_url=server.url)
    return base.model_copy(update={"serving": base.serving.model_copy(update=serving)})
