"""The cluster's component supervisor on real processes: restarts a component that exits, counts and logs it,
gives up on one that cannot start, and stops with its process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _supervise(tmp_path: Path, child: str, start_seconds: float) -> tuple[subprocess.Popen[str], Path]:
    restarts = tmp_path / "worker.restarts"
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys.orchestration.supervise", "worker", "--restarts-file", str(restarts),
         "--start-seconds", str(start_seconds), "--", sys.executable, "-c", child],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    return process, restarts


def test_a_component_that_exits_is_started_again_and_counted(tmp_path: Path) -> None:
    marker = tmp_path / "starts"
    child = f"import sys, time; open({str(marker)!r}, 'a').write('x'); time.sleep(0.6); sys.exit(3)"
    process, restarts = _supervise(tmp_path, child, start_seconds=0.3)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (restarts.is_file() and restarts.read_text().strip() == "2"):
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGTERM)
    out, _ = process.communicate(timeout=30)

    assert restarts.read_text().strip() == "2"
    assert marker.read_text() in ("xx", "xxx")  # first start, restart 1, and restart 2 if it began before SIGTERM
    assert "supervise worker: exited with code 3; restart 1 in 1 s" in out
    assert "restart 2 in 2 s" in out


def test_a_component_that_cannot_start_is_not_restarted(tmp_path: Path) -> None:
    process, restarts = _supervise(tmp_path, "import sys; sys.exit(7)", start_seconds=20)
    out, _ = process.communicate(timeout=30)

    assert process.returncode == 7
    assert "after its first start: not restarted" in out
    assert not restarts.exists()


def test_sigterm_to_the_group_stops_the_component_and_starts_nothing(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    process, restarts = _supervise(tmp_path, child, start_seconds=0.1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not pid_file.is_file():
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())
    os.killpg(process.pid, signal.SIGTERM)
    process.communicate(timeout=30)

    assert process.returncode == -signal.SIGTERM  # the child's own end, passed on as the supervisor's
    assert not restarts.exists()
    assert not Path(f"/proc/{child_pid}").exists() or "Z" in Path(f"/proc/{child_pid}/stat").read_text().split()[2]
