"""Serve a built bento with ``bentoml serve`` and call it over HTTP: the deploy side of the registry (the
smoke-serve step, `recsys serve`, tests, demos and benches). Nothing here runs inside a bento."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from recsys.config import Settings
from recsys.errors import ConfigError, ServingError

log = logging.getLogger(__name__)

DEFAULT_READY_TIMEOUT_S = 180.0
LOG_TAIL_LINES = 40


def serving_env(settings: Settings) -> dict[str, str]:
    """``RECSYS_*`` and ``BENTOML_HOME`` variables that recreate ``settings`` in a service process."""
    env = settings.tool_env()
    fields: dict[str, Any] = {
        "FEAST_REPO": settings.feast_repo,
        "FEAST_REGISTRY": settings.feast_registry,
        "ONLINE_STORE": settings.online_store,
        "ONLINE_SQLITE_PATH": settings.online_sqlite_path,
        "REDIS_URL": settings.redis_url,
        "BENTOML_HOME": settings.bentoml_home,
        "MODEL_NAME": settings.model_name,
        "BENTO_NAME": settings.bento_name,
        "FEATURE_SERVICE_VERSION": settings.feature_service_version,
    }
    env.update({f"RECSYS_{key}": str(value) for key, value in fields.items() if value is not None})
    serving = settings.serving
    for name, value in serving.model_dump(mode="json").items():  # the service's own section (ISO durations)
        if value is not None:
            env[f"RECSYS_SERVING__{name.upper()}"] = str(value)
    if serving.api_key is not None:  # model_dump masks secrets; the service needs the key itself
        env["RECSYS_SERVING__API_KEY"] = serving.api_key.get_secret_value()
    return env


def bentoml_subprocess_env(settings: Settings) -> dict[str, str]:
    """Environment for ``bentoml`` subprocesses: the current env, the settings, BentoML home, uv on PATH.

    BentoML pip-installs uv from the network when it cannot find it; we require it on PATH instead.
    """
    uv = shutil.which("uv") or os.environ.get("UV")
    if not uv:
        raise ConfigError(
            "uv is not on PATH: BentoML would try to pip-install it from the network. "
            "Install uv (https://docs.astral.sh/uv/) or add it to PATH."
        )
    env = {**os.environ, **serving_env(settings), "BENTOML_DO_NOT_TRACK": "True"}
    env["PATH"] = os.pathsep.join([str(Path(uv).parent), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_text(log_file: IO[bytes]) -> str:
    log_file.flush()
    log_file.seek(0)
    return log_file.read().decode(errors="replace")


def _tail(log_file: IO[bytes]) -> str:
    return "\n".join(_log_text(log_file).splitlines()[-LOG_TAIL_LINES:])


STARTUP_FAILED = "Application startup failed"  # uvicorn's line when the service's __init__ raised


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], log_file: IO[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServingError(f"bentoml serve exited with {process.returncode} before ready:\n{_tail(log_file)}")
        text = _log_text(log_file)
        if STARTUP_FAILED in text:  # BentoML would restart the worker forever: fail now, with the reason
            failed = text[: text.index(STARTUP_FAILED)].splitlines()[-LOG_TAIL_LINES:]
            raise ServingError("the bento refused to start (its service raised):\n" + "\n".join(failed))
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise ServingError(f"bentoml serve not ready at {base_url} after {timeout_s:.0f} s:\n{_tail(log_file)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its workers (its own process group, started by us)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextmanager
def serve_bento(
    settings: Settings, bento_tag: str, port: int | None = None, ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
) -> Iterator[str]:
    """Run ``bentoml serve <bento_tag>`` on 127.0.0.1:``port`` until the block exits; yield its base URL.

    Waits for ``/readyz`` (raising :class:`ServingError` with the server log tail if it fails or times out).
    """
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile() as log_file:
        process = subprocess.Popen(
            command,
            env=bentoml_subprocess_env(settings),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so _stop reaches the workers too
        )
        try:
            _wait_ready(base_url, process, log_file, ready_timeout_s)
            log.info("serving %s at %s", bento_tag, base_url)
            yield base_url
        finally:
            _stop(process)


API_PREFIX = "/v1"


def recommend_http(
    base_url: str, user_id: int, k: int = 10, timeout_s: float = 30.0, api_key: str | None = None, **options: Any
) -> dict[str, Any]:
    """POST ``/v1/recommend`` and return the JSON answer; :class:`ServingError` on a non-2xx status."""
    return post_json(base_url, "/recommend", {"user_id": user_id, "k": k, **options}, timeout_s, api_key)


def post_json(
    base_url: str, path: str, body: dict[str, Any], timeout_s: float = 30.0, api_key: str | None = None
) -> dict[str, Any]:
    """POST ``body`` to the service API at ``path`` (under /v1); the JSON answer or :class:`ServingError`."""
    url = f"{base_url}{API_PREFIX}{path}"
    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        response = httpx.post(url, json=body, timeout=timeout_s, headers=headers)
    except httpx.TransportError as exc:
        raise ServingError(f"cannot reach {url}: {exc}") from exc
    if response.status_code >= 400:
        raise ServingError(f"{url} answered {response.status_code}: {response.text}", response.status_code)
    result: dict[str, Any] = response.json()
    return result
