"""Keep one cluster component running: ``python -m recsys.orchestration.supervise NAME -- COMMAND...``.

What systemd's ``Restart=always`` or a Kubernetes restart policy does for an Airflow deployment, for the local
cluster: Airflow's scheduler, DAG processor and API server exit when their metadata database connection fails
mid-loop (a Postgres restart or failover) and expect their process manager to start them again.

- The command runs as a child in the supervisor's process group, so ``recsys cluster down`` (SIGTERM, then
  SIGKILL, to the group) stops both: on SIGTERM or SIGINT the supervisor waits for the child (which got the
  same signal) and exits with its code, and starts nothing more.
- A child that exits on its own is started again after a back-off (1 s, doubling, at most ``MAX_BACKOFF_S``),
  and the restart is logged (to the component's log, where the child writes too) and counted in
  ``{cluster}/NAME.restarts``.
- A child that exits within ``--start-seconds`` of its first start is not restarted: the supervisor exits with
  its code, so ``cluster up`` reports a component that cannot start (a bad setting) at once instead of looping.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

MAX_BACKOFF_S = 30.0


def _say(name: str, message: str) -> None:
    print(f"[{datetime.now(UTC).isoformat(timespec='seconds')}] supervise {name}: {message}", flush=True)


def supervise(name: str, command: list[str], restarts_file: Path | None, start_seconds: float) -> int:
    """Run ``command`` until told to stop; returns the exit code to exit with."""
    stopping: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        # The signal went to the whole process group (`cluster down`, Ctrl-C): the child has it too. Forwarding
        # it would be a second SIGTERM/SIGINT, which Celery takes as a cold shutdown.
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts, backoff, first = 0, 1.0, True
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command)
        code = child.wait()
        if stopping:
            return code
        if first and time.monotonic() - started < start_seconds:
            _say(
                name, f"exited with code {code} {time.monotonic() - started:.0f} s after its first start: not restarted"
            )
            return code or 1
        first = False
        if time.monotonic() - started > 10 * MAX_BACKOFF_S:  # it ran a good while: start the back-off afresh
            backoff = 1.0
        restarts += 1
        if restarts_file is not None:
            restarts_file.write_text(f"{restarts}\n")
        _say(name, f"exited with code {code}; restart {restarts} in {backoff:.0f} s")
        deadline = time.monotonic() + backoff
        while time.monotonic() < deadline and not stopping:
            time.sleep(0.2)
        if stopping:
            return code
        backoff = min(backoff * 2, MAX_BACKOFF_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--restarts-file", type=Path)
    parser.add_argument("--start-seconds", type=float, default=20.0)
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("no command to supervise: NAME [options] -- COMMAND...")
    cut = argv.index("--")
    args, command = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    code = supervise(args.name, command, args.restarts_file, args.start_seconds)
    if code < 0:  # the child ended by a signal: end the same way, so the caller sees that signal
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main())
