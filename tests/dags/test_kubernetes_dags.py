"""The same DAG files on Kubernetes, by configuration: heavy tasks become KubernetesPodOperator pods running the
``recsys`` CLI image; the KubernetesExecutor's worker pod template loads with the provider's own loader.

Configuration only: no cluster here. What is checked is what Airflow would send to one (the operators' image,
command, arguments, env and resources; the rendered pod template and executor settings).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from recsys.config import Settings, get_settings

DAGS = Path(__file__).resolve().parents[2] / "dags"
IMAGE = "registry.example.com/recsys:1.2.3"
HOSTS = [f"recsys-train-{i}.recsys-train.ml.svc:2222" for i in range(3)]


@pytest.fixture
def k8s_dagbag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECSYS_ORCHESTRATION__EXECUTOR", "kubernetes")
    monkeypatch.setenv("RECSYS_ORCHESTRATION__DBT_TASKS", "single")  # no parsed manifest needed
    monkeypatch.setenv("RECSYS_ORCHESTRATION__KUBERNETES__IMAGE", IMAGE)
    monkeypatch.setenv("RECSYS_ORCHESTRATION__KUBERNETES__NAMESPACE", "ml")
    monkeypatch.setenv("RECSYS_ORCHESTRATION__KUBERNETES__TRAIN_WORKERS", "3")
    monkeypatch.setenv("RECSYS_ORCHESTRATION__TRAIN_POOL", "gpu")
    get_settings.cache_clear()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag


def _env(task) -> dict[str, str]:
    return {e.name: e.value for e in task.env_vars}


def test_heavy_tasks_run_the_recsys_cli_image_as_pods(k8s_dagbag) -> None:
    features, training = k8s_dagbag.dags["recsys_features"], k8s_dagbag.dags["recsys_training"]
    pods = {
        (dag.dag_id, t.task_id) for dag in (features, training) for t in dag.tasks
        if type(t).__name__ == "KubernetesPodOperator"
    }  # fmt: skip
    assert pods == {
        ("recsys_features", "encode_items"),
        ("recsys_training", "training_set"),
        ("recsys_training", "train"),
        ("recsys_training", "train_worker_1"),
        ("recsys_training", "train_worker_2"),
        ("recsys_training", "evaluate"),
    }
    encode = features.get_task("encode_items")
    assert (encode.image, encode.namespace, encode.cmds) == (IMAGE, "ml", ["recsys"])
    assert encode.arguments == [
        "stage",
        "encode_items",
        "{{ recsys_period_start(dag_run, params, data_interval_start, data_interval_end, 'day') }}",
        "--result-file",
        "/airflow/xcom/return.json",
    ]
    assert encode.container_resources.requests == {"cpu": "2", "memory": "8Gi"}
    assert encode.container_resources.limits == {"memory": "8Gi"}
    assert _env(encode) == {"RECSYS_HOME": "/var/lib/recsys", "RECSYS_PROJECT_DIR": "/opt/recsys"}
    assert [
        (f.config_map_ref and f.config_map_ref.name, f.secret_ref and f.secret_ref.name) for f in encode.env_from
    ] == [
        ("recsys-config", None),
        (None, "recsys-env"),
    ]
    assert [(v.name, v.persistent_volume_claim.claim_name) for v in encode.volumes] == [("recsys-home", "recsys-home")]
    assert [(m.name, m.mount_path) for m in encode.volume_mounts] == [("recsys-home", "/var/lib/recsys")]
    assert (encode.do_xcom_push, encode.service_account_name, encode.retries) == (True, "recsys", 2)
    # the other tasks stay Python tasks (in the executor's worker pods), in the same order as before
    assert type(features.get_task("dbt_build")).__name__ == "_PythonDecoratedOperator"
    assert features.get_task("encode_items").upstream_task_ids == {"validate_marts"}
    assert features.get_task("materialize").upstream_task_ids == {"encode_items"}


def test_the_train_step_is_one_pod_per_tensorflow_worker_with_its_tf_config(k8s_dagbag) -> None:
    training = k8s_dagbag.dags["recsys_training"]
    workers = [training.get_task(t) for t in ("train", "train_worker_1", "train_worker_2")]
    for i, pod in enumerate(workers):
        assert pod.arguments[:2] == ["stage", "train"]
        assert pod.arguments[2].endswith("'week') }}")
        assert json.loads(_env(pod)["TF_CONFIG"]) == {
            "cluster": {"worker": HOSTS},
            "task": {"type": "worker", "index": i},
        }
        assert (pod.hostname, pod.subdomain) == (f"recsys-train-{i}", "recsys-train")
        assert pod.container_resources.requests == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
        assert pod.container_resources.limits == {"memory": "16Gi", "nvidia.com/gpu": "1"}
        assert (pod.pool, pod.retries) == ("gpu", 1)
        assert pod.labels["app.kubernetes.io/component"] == "train"
        assert pod.upstream_task_ids == {"training_set"}
        assert pod.downstream_task_ids == {"evaluate"}


def test_a_pod_command_line_renders_the_runs_partition(k8s_dagbag) -> None:
    features, training = k8s_dagbag.dags["recsys_features"], k8s_dagbag.dags["recsys_training"]
    day_run = SimpleNamespace(partition_key="2026-11-08", conf={})
    week_run = SimpleNamespace(partition_key=None, conf={"week": "2026-11-02"})
    day = features.get_template_env().from_string(features.get_task("encode_items").arguments[2])
    week = training.get_template_env().from_string(training.get_task("train_worker_2").arguments[2])
    none = {"data_interval_start": None, "data_interval_end": None}
    assert day.render(dag_run=day_run, params={"day": None}, **none) == "2026-11-08"
    assert week.render(dag_run=week_run, params={"week": None}, **none) == "2026-11-02"
    interval = {
        "data_interval_start": datetime(2026, 11, 9, tzinfo=UTC),
        "data_interval_end": datetime(2026, 11, 10, tzinfo=UTC),
    }
    assert day.render(dag_run=SimpleNamespace(partition_key=None, conf={}), params={}, **interval) == "2026-11-09"


def test_the_default_executor_keeps_python_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("RECSYS_ORCHESTRATION__DBT_TASKS", "single")
    monkeypatch.setenv("RECSYS_ORCHESTRATION__KUBERNETES__TRAIN_WORKERS", "3")  # ignored off Kubernetes
    get_settings.cache_clear()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    kinds = {type(t).__name__ for dag in bag.dags.values() for t in dag.tasks}
    assert "KubernetesPodOperator" not in kinds
    assert bag.dags["recsys_training"].get_task("evaluate").upstream_task_ids == {"train"}


def test_every_pod_task_is_a_stage_the_cli_runs() -> None:
    from recsys.orchestration.kubernetes import POD_TASK_PERIODS
    from recsys.pipeline import INTERVAL_STAGES

    assert {name: period for name, (period, _) in INTERVAL_STAGES.items()} == POD_TASK_PERIODS


def test_the_executor_worker_pod_template_loads_with_the_providers_loader(tmp_path: Path) -> None:
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    from recsys.orchestration.kubernetes import airflow_env, worker_pod_template

    settings = Settings(home=tmp_path, orchestration={"executor": "kubernetes", "kubernetes": {"image": IMAGE}})
    path = tmp_path / "recsys_worker.yaml"
    path.write_text(yaml.safe_dump(worker_pod_template(settings)))
    pod = PodGenerator.deserialize_model_file(str(path))  # what the KubernetesExecutor does with pod_template_file
    (base,) = pod.spec.containers
    assert (base.name, base.image, base.image_pull_policy) == ("base", IMAGE, "IfNotPresent")
    assert {e.name: e.value for e in base.env} == {
        "RECSYS_HOME": "/var/lib/recsys",
        "RECSYS_PROJECT_DIR": "/opt/recsys",
    }
    assert [(m.name, m.mount_path) for m in base.volume_mounts] == [("recsys-home", "/var/lib/recsys")]
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == "recsys-home"
    assert (pod.spec.service_account_name, pod.spec.restart_policy) == ("recsys", "Never")
    assert airflow_env(settings) == {
        "AIRFLOW__CORE__EXECUTOR": "KubernetesExecutor",
        "AIRFLOW__KUBERNETES_EXECUTOR__NAMESPACE": "recsys",
        "AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE": "/opt/airflow/pod_templates/recsys_worker.yaml",
        "AIRFLOW__KUBERNETES_EXECUTOR__WORKER_CONTAINER_REPOSITORY": "registry.example.com/recsys",
        "AIRFLOW__KUBERNETES_EXECUTOR__WORKER_CONTAINER_TAG": "1.2.3",
        "AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_PODS": "True",
        "AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_PODS_ON_FAILURE": "False",
    }
    assert airflow_env(Settings(home=tmp_path, orchestration={"executor": "celery"})) == {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"
    }


def test_image_tags_split_like_a_registry_reference() -> None:
    from recsys.orchestration.kubernetes import image_repository_and_tag

    assert image_repository_and_tag("registry:5000/recsys") == ("registry:5000/recsys", "latest")
    assert image_repository_and_tag("registry:5000/recsys:2") == ("registry:5000/recsys", "2")
