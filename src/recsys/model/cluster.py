"""TensorFlow multi-worker training: the ``TF_CONFIG`` each worker gets, and reading it back.

``MultiWorkerMirroredStrategy`` learns the cluster from the ``TF_CONFIG`` env var: every worker's ``host:port``
(the same list, in the same order, on each of them) and this worker's index in it. Worker 0 is the chief: it
alone keeps the model artifact. No TensorFlow import here: the DAGs build the pods' env from these functions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from recsys.errors import ConfigError

ENV = "TF_CONFIG"


def tf_config(hosts: Sequence[str], index: int) -> dict[str, Any]:
    """``TF_CONFIG`` of worker ``index`` in a cluster of ``hosts`` (``host:port`` each, worker 0 the chief)."""
    if not hosts:
        raise ConfigError("a TensorFlow cluster needs at least one worker host:port.")
    if len(set(hosts)) != len(hosts):
        raise ConfigError(f"TensorFlow worker addresses must be distinct: {list(hosts)}.")
    if not 0 <= index < len(hosts):
        raise ConfigError(f"worker index {index} is outside the cluster of {len(hosts)} worker(s).")
    return {"cluster": {"worker": list(hosts)}, "task": {"type": "worker", "index": index}}


def tf_config_json(hosts: Sequence[str], index: int) -> str:
    """:func:`tf_config` as the JSON text of the env var."""
    return json.dumps(tf_config(hosts, index), separators=(",", ":"))


def worker_hosts(workers: int, *, hostname: str, service: str, namespace: str, port: int) -> list[str]:
    """DNS names of ``workers`` pods named ``{hostname}-{i}`` under the headless Service ``service``."""
    return [f"{hostname}-{i}.{service}.{namespace}.svc:{port}" for i in range(workers)]


def current(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """This process's parsed ``TF_CONFIG`` (None when unset or empty: single-machine training)."""
    text = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{ENV} is not a TensorFlow cluster spec ({exc}): {text[:200]}") from None
    if not isinstance(workers, list) or not workers or task.get("type") not in {"worker", "chief"}:
        raise ConfigError(f"{ENV} needs a non-empty cluster.worker list and a worker or chief task: {text[:200]}")
    return dict(config)


def is_multi_worker(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``TF_CONFIG`` names a cluster (training runs under MultiWorkerMirroredStrategy)."""
    return current(environ) is not None


def is_chief(environ: Mapping[str, str] | None = None) -> bool:
    """True on the worker that keeps the artifact: no cluster, a ``chief`` task, or worker 0 without a chief."""
    config = current(environ)
    if config is None:
        return True
    task = config["task"]
    if task["type"] == "chief":
        return True
    return "chief" not in config["cluster"] and int(task.get("index", 0)) == 0
