"""The bento build context holds the service and only the recsys modules it runs with, and they are enough:
the service starts and answers with nothing but the staged files on the path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.config import Settings
from recsys.registry.build_context import runtime_modules, stage_build_context
from recsys.registry.serve import serving_env
from recsys.registry.store import save_model
from recsys.serving.testing import ExampleArtifact, materialize_example_users

RUNTIME = [  # what a served request and the service start-up run
    "recsys/__init__.py",
    "recsys/config.py",
    "recsys/errors.py",
    "recsys/artifact.py",
    "recsys/scoring.py",
    "recsys/features/store.py",
    "recsys/serving/http.py",
    "recsys/serving/startup.py",
    "recsys/serving/runtime.py",
    "recsys/serving/recommender.py",
    "recsys/serving/online.py",
    "recsys/serving/features.py",
    "recsys/serving/breaker.py",
]
NOT_SHIPPED = [  # tests, training, bench protocol, serve tooling, tool faces: the service imports none of them
    "recsys/serving/testing.py",
    "recsys/registry",
    "recsys/model",
    "recsys/features/training_set.py",
    "recsys/pipeline.py",
    "recsys/orchestration",
    "recsys/cli.py",
    "recsys/demo.py",
    "recsys/timing.py",
    "recsys/sources/simulator.py",
    "recsys/sources/movielens.py",
    "recsys/sources/writer.py",
    "recsys/transform/lint.py",
    "recsys/transform/dbt.py",
    "recsys/transform/warehouse.py",
    "recsys/validation",
    "recsys/ingest",
    "recsys/sources",
]
ONLINE = {101: ([40.0, 6.0, 0.14], [1003, 1005])}  # user 101 has online rows; 999 is unknown


def _files(context: Path) -> set[str]:
    return {str(p.relative_to(context)) for p in context.rglob("*") if p.is_file()}


def _shipped(files: set[str], entry: str) -> list[str]:
    return sorted(f for f in files if f == entry or f.startswith(entry + "/"))


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("context")
    return stage_build_context(Settings(home=home / "home"), home / "context")


def test_the_context_holds_the_service_and_the_runtime(context: Path) -> None:
    files = _files(context)
    assert {"service.py", "bentofile.yaml", *RUNTIME} <= files
    assert {f for f in files if not f.endswith(".py")} == {"bentofile.yaml"}  # no caches, no data


def test_the_context_leaves_out_what_the_service_does_not_import(context: Path) -> None:
    files = _files(context)
    assert {entry: _shipped(files, entry) for entry in NOT_SHIPPED} == {entry: [] for entry in NOT_SHIPPED}


# Run with only the staged files: the editable install's path is dropped (python -I ignores PYTHONPATH and the
# user site, not site-packages .pth files), then the service module is imported as `bentoml serve` does and
# driven through its ASGI app: start-up (load, bind, open the online reader), requests, and the postgres
# offline-store config (a lazy import). Every staged module must import too.
STAGED_RUN = """
import importlib, json, sys
from pathlib import Path

context = Path(sys.argv[1])
sys.path[:] = [p for p in sys.path if not (Path(p or ".") / "recsys").exists()]
sys.path.insert(0, str(context))
import service
from starlette.testclient import TestClient

with TestClient(app=service.RecommenderService.to_asgi()) as client:
    ready = client.get("/readyz").status_code
    known = client.post("/v1/recommend", json={"user_id": 101, "k": 3}).json()
    unknown = client.post("/v1/recommend", json={"user_id": 999, "k": 3}).json()
from recsys.config import Settings
from recsys.features.store import offline_store_config

postgres = offline_store_config(Settings(warehouse={"target": "postgres"}))["type"]
for path in sorted((context / "recsys").rglob("*.py")):
    parts = path.relative_to(context).with_suffix("").parts
    importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
loaded = {n: m.__file__ for n, m in sys.modules.items() if n.split(".")[0] == "recsys"}
outside = sorted(n for n, f in loaded.items() if not Path(f).resolve().is_relative_to(context.resolve()))
print(json.dumps({"ready": ready, "known": known, "unknown": unknown, "postgres": postgres, "outside": outside}))
"""


def test_the_service_starts_and_answers_with_only_the_staged_files(
    context: Path, registry_artifact: ExampleArtifact, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home")
    materialize_example_users(settings, ONLINE)
    tag = save_model(settings, registry_artifact.directory, {"code_version": "test"})
    env = {**os.environ, **serving_env(settings), "RECSYS_MODEL_TAG": tag}

    done = subprocess.run(
        [sys.executable, "-I", "-c", STAGED_RUN, str(context)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )

    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outside"] == []
    assert result["ready"] == 200
    features, seen = ONLINE[101]
    expected = [i for i in registry_artifact.expected_ranking(101, features) if i not in seen][:3]
    assert result["known"]["items"] == expected and result["known"]["fallback"] is False
    assert result["unknown"]["fallback"] is True
    assert result["known"]["model_version"] == tag
    assert result["postgres"] == "postgres"


def test_runtime_modules_follow_lazy_relative_and_parent_imports(tmp_path: Path) -> None:
    package = tmp_path / "recsys"
    sources = {
        "__init__.py": "",
        "a.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from recsys import typing_only\n"
            "else:\n    import recsys.runtime_else\n\ndef run():\n    from recsys.b import helper\n    return helper\n"
        ),
        "b.py": "try:\n    from .pkg import c\nexcept ImportError:\n    from . import fallback\nhelper = 1\n",
        "pkg/__init__.py": "from recsys.pkg.d import thing\n",
        "pkg/c.py": "",
        "pkg/d.py": "thing = 1\n",
        "pkg/unused.py": "",
        "fallback.py": "",
        "runtime_else.py": "",
        "typing_only.py": "",
        "never.py": "",
    }
    for name, text in sources.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    service = tmp_path / "service.py"
    service.write_text("import os\nwith open(os.devnull):\n    from recsys.a import run\n")

    found = runtime_modules(service, package)

    assert list(found) == [
        "recsys",
        "recsys.a",
        "recsys.b",
        "recsys.fallback",
        "recsys.pkg",
        "recsys.pkg.c",
        "recsys.pkg.d",
        "recsys.runtime_else",
    ]
    assert found["recsys.pkg"] == package / "pkg" / "__init__.py"
