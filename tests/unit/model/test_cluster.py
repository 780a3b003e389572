"""TensorFlow multi-worker training: the TF_CONFIG each worker gets, and MultiWorkerMirroredStrategy built from it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from recsys.errors import ConfigError
from recsys.model.cluster import is_chief, is_multi_worker, tf_config_json, worker_hosts
from servers import free_port


def test_three_workers_get_the_same_cluster_and_their_own_index() -> None:
    hosts = worker_hosts(3, hostname="recsys-train", service="recsys-train", namespace="recsys", port=2222)
    assert [tf_config_json(hosts, i) for i in range(3)] == [
        '{"cluster":{"worker":["recsys-train-0.recsys-train.recsys.svc:2222",'
        '"recsys-train-1.recsys-train.recsys.svc:2222","recsys-train-2.recsys-train.recsys.svc:2222"]},'
        f'"task":{{"type":"worker","index":{i}}}}}'
        for i in range(3)
    ]
    assert [is_chief({"TF_CONFIG": tf_config_json(hosts, i)}) for i in range(3)] == [True, False, False]
    assert is_multi_worker({"TF_CONFIG": tf_config_json(hosts, 2)}) is True
    assert (is_multi_worker({}), is_chief({})) == (False, True)  # no cluster: single machine, keeps its artifact


def test_bad_clusters_are_refused() -> None:
    with pytest.raises(ConfigError, match="worker index 3 is outside the cluster of 3"):
        tf_config_json(["a:1", "b:1", "c:1"], 3)
    with pytest.raises(ConfigError, match="must be distinct"):
        tf_config_json(["a:1", "a:1"], 0)
    with pytest.raises(ConfigError, match="not a TensorFlow cluster spec"):
        is_chief({"TF_CONFIG": '{"cluster": {}}'})


def test_a_one_worker_cluster_builds_multi_worker_mirrored_strategy() -> None:
    """The train task's strategy under a TF_CONFIG: one worker on a free localhost port (its own process, since
    TensorFlow configures its collective ops once per process)."""
    config = tf_config_json([f"localhost:{free_port()}"], 0)
    probe = textwrap.dedent("""
        import json
        import tensorflow as tf
        from recsys.model.backend import distribution_strategy
        strategy = distribution_strategy()
        resolver = strategy.cluster_resolver
        multi = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        print(json.dumps([multi, strategy.num_replicas_in_sync, resolver.task_type,
                          resolver.task_id, strategy.extended._num_workers]))
    """)
    env = {"TF_CONFIG": config, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, 1, "worker", 0, 1]
