"""The DAGs on Kubernetes, by configuration: the KubernetesExecutor's worker pod and Airflow config, and the heavy
tasks as ``KubernetesPodOperator`` pods running ``recsys stage <task> <day|week>`` in the project's image.

Everything here is built from ``orchestration.kubernetes`` (:class:`~recsys.config.KubernetesSettings`):

- :func:`airflow_env` and :func:`worker_pod_template`: what Airflow's deployment sets (``AIRFLOW__*`` env, the
  ``pod_template_file`` every task's worker pod starts from), for the deployment to write out;
- :func:`pod_task`: the operator a DAG uses for a task of ``kubernetes.pod_tasks`` when
  ``orchestration.executor`` is ``kubernetes``: the same stage function, run by the CLI in a pod with that task's
  resources, its day or week rendered from the run (:func:`period_argument`), its summary pushed as the XCom;
- the ``train`` task with ``kubernetes.train_workers`` > 1: one pod per TensorFlow worker (``train``,
  ``train_worker_1``, ...), each with its ``TF_CONFIG`` (:mod:`recsys.model.cluster`) and a stable DNS name under
  the headless Service :func:`train_service`; worker 0 (the chief) keeps the artifact.

Every pod mounts the shared ``RECSYS_HOME`` claim (lake, run folders, model store) and takes the ``RECSYS_*``
settings from a ConfigMap and a Secret. Nothing here contacts a cluster; the provider is imported only by
:func:`pod_task`, so parsing a DAG file on the default executors does not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from recsys.model.cluster import ENV as TF_CONFIG_ENV
from recsys.model.cluster import tf_config_json, worker_hosts

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from recsys.config import KubernetesSettings, PodResources, Settings

Period = Literal["day", "week"]
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor", "kubernetes": "KubernetesExecutor"}
# The period of each task that can run as a pod: recsys.pipeline.INTERVAL_STAGES runs them (a test keeps both equal).
POD_TASK_PERIODS: dict[str, Period] = {
    "extract": "day",
    "validate_raw": "day",
    "dbt_prepare": "day",
    "dbt_build": "day",
    "dbt_finish": "day",
    "validate_marts": "day",
    "encode_items": "day",
    "materialize": "day",
    "check_freshness": "day",
    "training_set": "week",
    "train": "week",
    "evaluate": "week",
}
MACRO = "recsys_period_start"
XCOM_RESULT = "/airflow/xcom/return.json"  # the provider's sidecar reads the pod's XCom here
HOME_VOLUME = "recsys-home"
POD_TEMPLATE_FILE = "/opt/airflow/pod_templates/recsys_worker.yaml"
TRAIN_COMPONENT = "recsys-train"


def user_defined_macros() -> dict[str, Any]:
    """The DAGs' Jinja macros: ``recsys_period_start`` (see :func:`period_argument`)."""
    from recsys.orchestration.context import render_period_start

    return {MACRO: render_period_start}


def period_argument(period: Period) -> str:
    """The templated command-line argument that renders to the run's day or week (``YYYY-MM-DD``), resolved as a
    Python task resolves it (:func:`recsys.orchestration.context.period_start`)."""
    return f"{{{{ {MACRO}(dag_run, params, data_interval_start, data_interval_end, '{period}') }}}}"


def runs_as_pod(settings: Settings, task_id: str) -> bool:
    """True when ``task_id`` runs as a pod of the recsys image (executor kubernetes and listed in pod_tasks)."""
    orchestration = settings.orchestration
    return orchestration.executor == "kubernetes" and task_id in orchestration.kubernetes.pod_tasks


def pod_env(k8s_settings: KubernetesSettings) -> dict[str, str]:
    """The env every recsys pod sets itself: the shared home and the project inside the image."""
    return {"RECSYS_HOME": k8s_settings.home_mount, "RECSYS_PROJECT_DIR": k8s_settings.project_dir}


def resources(spec: PodResources) -> dict[str, dict[str, str]]:
    """Requests and limits of a pod: memory and GPUs limited, cpu requested (a pod may burst on idle cores)."""
    requests = {"cpu": spec.cpu, "memory": spec.memory}
    limits = {"memory": spec.memory}
    if spec.gpu:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(spec.gpu)
    return {"requests": requests, "limits": limits}


def train_hosts(k8s_settings: KubernetesSettings) -> list[str]:
    """``host:port`` of each TensorFlow worker pod of the train task (worker 0 first)."""
    return worker_hosts(
        k8s_settings.train_workers,
        hostname=TRAIN_COMPONENT,
        service=k8s_settings.train_service,
        namespace=k8s_settings.namespace,
        port=k8s_settings.train_port,
    )


def train_task_ids(settings: Settings) -> list[str]:
    """The train task's ids: ``train`` (the chief), then ``train_worker_1`` ... for more TensorFlow workers."""
    workers = settings.orchestration.kubernetes.train_workers if runs_as_pod(settings, "train") else 1
    return ["train", *(f"train_worker_{i}" for i in range(1, workers))]


def pod_task(
    settings: Settings, task_id: str, *, worker: int | None = None, **task_kwargs: Any
) -> KubernetesPodOperator:
    """The ``KubernetesPodOperator`` that runs ``task_id``'s stage as ``recsys stage`` in the recsys image.

    ``worker`` is the TensorFlow worker index of a train pod (its id is then ``train`` or ``train_worker_<i>``);
    ``task_kwargs`` are the task's own (retries, pool, queue, outlets), as for its Python task.
    """
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    k8s_settings = settings.orchestration.kubernetes
    stage = "train" if worker is not None else task_id
    spec = k8s_settings.pod_tasks[stage]
    env = pod_env(k8s_settings)
    extra: dict[str, Any] = {}
    if worker is not None and k8s_settings.train_workers > 1:
        env[TF_CONFIG_ENV] = tf_config_json(train_hosts(k8s_settings), worker)
        extra = {"hostname": f"{TRAIN_COMPONENT}-{worker}", "subdomain": k8s_settings.train_service}
    labels = {"app.kubernetes.io/name": "recsys", "app.kubernetes.io/component": stage}
    if worker is not None:
        labels["recsys/train-worker"] = str(worker)
    return KubernetesPodOperator(
        task_id=task_id,
        name=f"recsys-{task_id.replace('_', '-')}",
        namespace=k8s_settings.namespace,
        image=k8s_settings.image,
        image_pull_policy=k8s_settings.image_pull_policy,
        service_account_name=k8s_settings.service_account,
        cmds=["recsys"],
        arguments=["stage", stage, period_argument(POD_TASK_PERIODS[stage]), "--result-file", XCOM_RESULT],
        env_vars=[k8s.V1EnvVar(name=name, value=value) for name, value in env.items()],
        env_from=_env_from(k8s_settings),
        volumes=[_home_volume(k8s_settings)],
        volume_mounts=[k8s.V1VolumeMount(name=HOME_VOLUME, mount_path=k8s_settings.home_mount)],
        container_resources=k8s.V1ResourceRequirements(**resources(spec)),
        labels=labels,
        startup_timeout_seconds=k8s_settings.startup_timeout_s,
        do_xcom_push=True,
        on_finish_action="delete_pod",
        in_cluster=True,
        **extra,
        **task_kwargs,
    )


def _env_from(k8s_settings: KubernetesSettings) -> list[Any]:
    from kubernetes.client import models as k8s

    sources = []
    if k8s_settings.config_map:
        sources.append(k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=k8s_settings.config_map)))
    if k8s_settings.env_secret:
        sources.append(k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=k8s_settings.env_secret)))
    return sources


def _home_volume(k8s_settings: KubernetesSettings) -> Any:
    from kubernetes.client import models as k8s

    claim = k8s.V1PersistentVolumeClaimVolumeSource(claim_name=k8s_settings.home_claim)
    return k8s.V1Volume(name=HOME_VOLUME, persistent_volume_claim=claim)


def task_or_pod(settings: Settings, python_task: Any) -> Any:
    """``python_task`` (an ``@task``-decorated function of the DAG) called, or, when it runs as a pod, the pod task
    of the same id with the same retries, pool, queue and outlets."""
    task_id = python_task.function.__name__
    if not runs_as_pod(settings, task_id):
        return python_task()
    return pod_task(settings, task_id, **_task_kwargs(python_task))


def train_tasks(settings: Settings, python_task: Any) -> list[Any]:
    """The train step: the Python task, one pod, or one pod per TensorFlow worker (all between the training set
    and the evaluation, run together: each worker waits for its peers)."""
    if not runs_as_pod(settings, "train"):
        return [python_task()]
    kwargs = _task_kwargs(python_task)
    return [pod_task(settings, task_id, worker=i, **kwargs) for i, task_id in enumerate(train_task_ids(settings))]


def _task_kwargs(python_task: Any) -> dict[str, Any]:
    return {k: v for k, v in python_task.kwargs.items() if k in {"retries", "retry_delay", "pool", "queue", "outlets"}}


def worker_pod_template(settings: Settings) -> dict[str, Any]:
    """The KubernetesExecutor's ``pod_template_file`` (as a dict): every Python task's worker pod, in the same image
    as the pod tasks (Airflow and recsys installed), with the shared home and the RECSYS_* settings.

    The executor fills in the container's command (``airflow ... task``) and runs it in the container named
    ``base``; the Airflow settings (metadata database, secrets) come from the ConfigMap and Secret as well.
    """
    k8s_settings = settings.orchestration.kubernetes
    env_from: list[dict[str, Any]] = []
    if k8s_settings.config_map:
        env_from.append({"configMapRef": {"name": k8s_settings.config_map}})
    if k8s_settings.env_secret:
        env_from.append({"secretRef": {"name": k8s_settings.env_secret}})
    container = {
        "name": "base",
        "image": k8s_settings.image,
        "imagePullPolicy": k8s_settings.image_pull_policy,
        "env": [{"name": name, "value": value} for name, value in pod_env(k8s_settings).items()],
        "envFrom": env_from,
        "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
        "volumeMounts": [{"name": HOME_VOLUME, "mountPath": k8s_settings.home_mount}],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "recsys-worker", "labels": {"app.kubernetes.io/name": "recsys"}},
        "spec": {
            "serviceAccountName": k8s_settings.service_account,
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [{"name": HOME_VOLUME, "persistentVolumeClaim": {"claimName": k8s_settings.home_claim}}],
        },
    }


def train_service(settings: Settings) -> dict[str, Any]:
    """The headless Service that gives each train worker pod the DNS name in its peers' ``TF_CONFIG``."""
    k8s_settings = settings.orchestration.kubernetes
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": k8s_settings.train_service, "namespace": k8s_settings.namespace},
        "spec": {
            "clusterIP": "None",
            "selector": {"app.kubernetes.io/name": "recsys", "app.kubernetes.io/component": "train"},
            "ports": [{"name": "tf-collective", "port": k8s_settings.train_port}],
        },
    }


def airflow_env(settings: Settings) -> dict[str, str]:
    """The ``AIRFLOW__*`` env of the scheduler and workers for ``orchestration.executor``."""
    orchestration = settings.orchestration
    env = {"AIRFLOW__CORE__EXECUTOR": EXECUTORS[orchestration.executor]}
    if orchestration.executor == "kubernetes":
        k8s_settings = orchestration.kubernetes
        repository, tag = image_repository_and_tag(k8s_settings.image)
        env.update(
            {
                "AIRFLOW__KUBERNETES_EXECUTOR__NAMESPACE": k8s_settings.namespace,
                "AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE": POD_TEMPLATE_FILE,
                "AIRFLOW__KUBERNETES_EXECUTOR__WORKER_CONTAINER_REPOSITORY": repository,
                "AIRFLOW__KUBERNETES_EXECUTOR__WORKER_CONTAINER_TAG": tag,
                "AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_PODS": "True",
                "AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_PODS_ON_FAILURE": "False",
            }
        )
    return env


def image_repository_and_tag(image: str) -> tuple[str, str]:
    """``registry/name:tag`` split into the repository and the tag (``latest`` when the image names none)."""
    repository, colon, tag = image.rpartition(":")
    if not colon or "/" in tag:  # no tag, or the colon was a registry's port
        return image, "latest"
    return repository, tag
