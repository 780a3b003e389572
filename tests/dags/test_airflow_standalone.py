"""`make airflow` (recsys airflow): Airflow standalone on the embedded home lists both DAGs over its REST API."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from recsys.config import Settings
from recsys.orchestration.local import _group_alive, standalone, stop_group
from servers import free_port

pytestmark = pytest.mark.slow
STARTUP_S = 300


def _token(base: str, passwords_file) -> str | None:
    if not passwords_file.is_file():
        return None
    password = json.loads(passwords_file.read_text())["admin"]
    answer = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=10)
    return answer.json()["access_token"] if answer.status_code in (200, 201) else None


def test_the_api_lists_both_dags(tmp_path) -> None:
    settings = Settings(home=tmp_path / "home")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = standalone(settings, port)
    passwords = settings.home / "airflow" / "simple_auth_manager_passwords.json.generated"
    seen: list[str] = []
    try:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                token = _token(base, passwords)
                if token:
                    answer = httpx.get(f"{base}/api/v2/dags", headers={"Authorization": f"Bearer {token}"}, timeout=10)
                    seen = sorted(d["dag_id"] for d in answer.json().get("dags", []))
                    if seen == ["recsys_features", "recsys_training"]:
                        break
            except httpx.TransportError:
                pass
            time.sleep(2)
    finally:
        stop_group(process)
    assert not _group_alive(process.pid), "standalone left processes behind"
    assert seen == ["recsys_features", "recsys_training"], f"the API listed {seen} within {STARTUP_S} s"
