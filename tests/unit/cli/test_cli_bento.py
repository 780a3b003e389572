"""`recsys bento list|deploy|rollback`, `recsys serve` and `recsys recommend`'s default bento, via CliRunner.

Two real bentos are built once per module (a few seconds each); each test starts with no production pointer.
`recsys serve` is checked with the child process replaced (fast), its foreground runner against a real child
(exit status, SIGTERM forwarding), and end to end against a real `bentoml serve` (slow).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from recsys import cli
from recsys.config import Settings
from recsys.errors import RegistryError, ServingError
from recsys.registry.production import deploy, deployments, pointer_path, production_bento
from recsys.registry.store import build_bento, save_model
from recsys.serving.testing import write_example_artifact

runner = CliRunner()


@dataclass(frozen=True)
class Built:
    home: Path
    model_a: str
    bento_a: str
    model_b: str
    bento_b: str

    @property
    def settings(self) -> Settings:
        return Settings(home=self.home)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Bento A (model A, ndcg@10 0.2100) and the newer bento B (model B, ndcg@10 0.2500) in one store."""
    root = tmp_path_factory.mktemp("cli_bento")
    artifact = write_example_artifact(root / "artifact")
    settings = Settings(home=root / "home")
    tags = []
    for day, ndcg in ((1, 0.21), (2, 0.25)):
        meta = {
            "metrics": {"model": {"ndcg@10": ndcg, "recall@10": 0.3}, "popularity": {"ndcg@10": 0.1}},
            "data_interval_start": f"2026-11-0{day}T00:00:00+00:00",
            "data_interval_end": f"2026-11-0{day + 1}T00:00:00+00:00",
        }
        model = save_model(settings, artifact.directory, meta)
        tags += [model, build_bento(settings, model)]
    return Built(root / "home", *tags)


@pytest.fixture
def home(built: Built, monkeypatch: pytest.MonkeyPatch) -> Iterator[Built]:
    """The CLI's settings point at the built store (RECSYS_HOME), with no production pointer."""
    monkeypatch.setenv("RECSYS_HOME", str(built.home))
    pointer_path(built.settings).unlink(missing_ok=True)
    yield built
    pointer_path(built.settings).unlink(missing_ok=True)


def test_bento_list_shows_every_bento_newest_first_and_marks_production(home: Built) -> None:
    deploy(home.settings, home.bento_a)

    result = runner.invoke(cli.app, ["bento", "list"])

    assert result.exit_code == 0, result.output
    header, first, second = result.output.splitlines()
    assert header.split() == ["BENTO", "MODEL", "METRICS", "DATA", "INTERVAL", "GATE/INFRA", "CREATED"]
    assert first.split()[:7] == [home.bento_b, home.model_b, "ndcg@10", "0.2500", "(pop", "0.1000)",
                                 "2026-11-02..2026-11-03"]  # fmt: skip
    assert second.split()[:3] == ["*", home.bento_a, home.model_a]
    assert "2026-11-01..2026-11-02" in second
    assert first.split()[7] == second.split()[8] == "candidate/-"  # registered; the gate and infra not run here


def test_bento_list_of_an_empty_store_says_what_to_run(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_HOME", str(settings.home))

    result = runner.invoke(cli.app, ["bento", "list"])

    assert result.exit_code == 0 and "recsys train" in result.output


def test_bento_deploy_then_rollback_print_old_to_new(home: Built) -> None:
    first = runner.invoke(cli.app, ["bento", "deploy", home.bento_a])
    second = runner.invoke(cli.app, ["bento", "deploy", home.bento_b.split(":")[1], "--reason", "hotfix"])
    again = runner.invoke(cli.app, ["bento", "deploy", home.bento_b])
    back = runner.invoke(cli.app, ["bento", "rollback"])

    assert first.output == f"(none) -> {home.bento_a} (model {home.model_a})\n"
    assert second.output == f"{home.bento_a} -> {home.bento_b} (model {home.model_b})\n"
    assert again.output.startswith(f"{home.bento_b} is already production")
    assert back.output == f"{home.bento_b} -> {home.bento_a} (model {home.model_a})\n"
    assert [d.reason for d in deployments(home.settings)] == ["deploy", "hotfix", f"rollback from {home.bento_b}"]


def test_bento_deploy_of_an_unknown_tag_and_rollback_of_nothing_fail_with_the_reason(home: Built) -> None:
    unknown = runner.invoke(cli.app, ["bento", "deploy", "recommender:nosuchversion"])
    nothing = runner.invoke(cli.app, ["bento", "rollback"])

    assert isinstance(unknown.exception, RegistryError) and "not in" in str(unknown.exception)
    assert isinstance(nothing.exception, RegistryError) and "nothing to roll back to" in str(nothing.exception)
    assert production_bento(home.settings) is None


def test_serve_without_a_production_bento_says_what_to_run(home: Built) -> None:
    result = runner.invoke(cli.app, ["serve"])

    assert isinstance(result.exception, RegistryError)
    assert "training DAG" in str(result.exception) and "recsys bento deploy TAG" in str(result.exception)


def test_serve_runs_the_production_bento_with_the_worker_count(home: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    deploy(home.settings, home.bento_a)
    calls: list[tuple[list[str], dict[str, str]]] = []

    def fake_run(command: list[str], env: dict[str, str]) -> int:
        calls.append((command, env))
        return 3

    monkeypatch.setattr(cli, "_run_foreground", fake_run)

    result = runner.invoke(cli.app, ["serve", "--port", "3456", "--workers", "4", "--host", "0.0.0.0"])

    assert result.exit_code == 3  # the server's exit status is passed through
    [(command, env)] = calls
    assert command == [sys.executable, "-m", "bentoml", "serve", home.bento_a, "--host", "0.0.0.0", "--port", "3456"]
    assert env["RECSYS_SERVING__WORKERS"] == "4"
    assert env["BENTOML_HOME"] == str(home.settings.bentoml_home)


def test_serve_defaults_the_worker_count_to_the_setting(home: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    deploy(home.settings, home.bento_a)
    envs: list[dict[str, str]] = []
    monkeypatch.setattr(cli, "_run_foreground", lambda _command, env: envs.append(env) or 0)
    monkeypatch.setenv("RECSYS_SERVING__WORKERS", "2")

    assert runner.invoke(cli.app, ["serve"]).exit_code == 0
    assert envs[0]["RECSYS_SERVING__WORKERS"] == "2"


def test_run_foreground_passes_the_exit_status_through() -> None:
    assert cli._run_foreground([sys.executable, "-c", "raise SystemExit(7)"], dict(os.environ)) == 7


def test_run_foreground_forwards_sigterm_to_the_child(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    child = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(42))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )

    def terminate_us_once_the_child_is_up() -> None:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # what `docker stop` or a supervisor sends

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=terminate_us_once_the_child_is_up, daemon=True).start()
    started = time.monotonic()

    code = cli._run_foreground([sys.executable, "-c", child], dict(os.environ))

    assert code == 42 and time.monotonic() - started < 30
    assert signal.getsignal(signal.SIGTERM) is before  # our handler is restored


def test_recommend_defaults_to_the_production_bento(home: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    import recsys.demo

    asked: list[str | None] = []
    monkeypatch.setattr(recsys.demo, "query_bento", lambda _s, _users, k, bento_tag, port: asked.append(bento_tag))

    runner.invoke(cli.app, ["recommend", "101"])  # no production yet: None, so query_bento takes the latest
    deploy(home.settings, home.bento_a)
    runner.invoke(cli.app, ["recommend", "101"])
    runner.invoke(cli.app, ["recommend", "101", "--bento", home.bento_b])

    assert asked == [None, home.bento_a, home.bento_b]


def _alive(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/livez", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow
def test_after_a_bad_deploy_one_rollback_and_recsys_serve_runs_the_previous_bento_until_sigterm(
    home: Built, tmp_path: Path
) -> None:
    """A bad deploy (B) undone by one `recsys bento rollback`: a served request shows A's model version."""
    from recsys.registry.serve import free_port, recommend_http

    deploy(home.settings, home.bento_a)  # the older bento, not the latest build
    deploy(home.settings, home.bento_b)  # the bad deploy
    back = runner.invoke(cli.app, ["bento", "rollback"])
    assert (back.exit_code, back.output) == (0, f"{home.bento_b} -> {home.bento_a} (model {home.model_a})\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")} | {
        "RECSYS_HOME": str(home.home),
        "RECSYS_SERVING__DEGRADED_OK": "true",  # no Feast here: answer from the fallback
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        answer = None
        while answer is None:  # not /readyz: without an online store the service stays unready, and answers
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                answer = recommend_http(base_url, user_id=101, k=3, timeout_s=5)
            except ServingError:
                time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:  # a failed assertion above: take the bento server down with it
            import psutil

            children = psutil.Process(process.pid).children(recursive=True)
            process.kill()
            process.wait()
            for child in children:
                child.kill()
        log.close()

    assert answer["model_version"] == home.model_a != home.model_b
    assert code in (0, 128 + signal.SIGTERM), (tmp_path / "serve.log").read_text()[-3000:]
    assert not _alive(base_url)  # the server and its workers are gone
