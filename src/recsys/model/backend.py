"""Keras backend guard and device strategy, shared by the encoder and the trainer.

Importing the model package chooses no backend: Keras takes ``KERAS_BACKEND`` (default TensorFlow) when it is
first imported. The model build (``recsys.model.build``) is backend-neutral Keras, so the accelerator check
(``bench/gpu_check.py``) runs it on JAX; the code that is TensorFlow-only (``train``: ``tf.data`` input and
``MirroredStrategy``, or ``MultiWorkerMirroredStrategy`` under a ``TF_CONFIG``) calls ``require_tensorflow`` first.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from typing import Any

from recsys.errors import ConfigError

log = logging.getLogger(__name__)


def keras_backend() -> str:
    """The Keras backend of this process: Keras' own once imported, else what ``KERAS_BACKEND`` will give it."""
    if "keras" in sys.modules:
        import keras

        return str(keras.backend.backend())
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def require_tensorflow(what: str) -> None:
    """Refuse to run TensorFlow-only code (``what``, for the message) on another Keras backend.

    Called before Keras is imported, it chooses TensorFlow when ``KERAS_BACKEND`` is unset (Keras' default).
    """
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        if os.environ["KERAS_BACKEND"] != "tensorflow":
            raise ConfigError(
                f"KERAS_BACKEND is {os.environ['KERAS_BACKEND']!r}, but {what} runs on TensorFlow: "
                "unset KERAS_BACKEND or set it to 'tensorflow'."
            )
        return
    backend = keras_backend()
    if backend != "tensorflow":
        raise ConfigError(
            f"Keras was imported with the {backend!r} backend, but {what} runs on TensorFlow: set "
            "KERAS_BACKEND=tensorflow (or unset it) before anything imports keras."
        )


def gpus() -> list[Any]:
    """Visible GPU devices (an empty list on a CPU-only machine)."""
    import tensorflow as tf

    return list(tf.config.list_physical_devices("GPU"))


def distribution_strategy() -> Any:
    """``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names a cluster (``recsys.model.cluster``), else
    ``MirroredStrategy`` over the visible GPUs, else TensorFlow's default (single-device) strategy."""
    import tensorflow as tf

    from recsys.model.cluster import current

    if (config := current()) is not None:
        task = config["task"]
        log.info(
            "training as %s %s of %d worker(s) with MultiWorkerMirroredStrategy",
            task["type"],
            task.get("index", 0),
            len(config["cluster"]["worker"]),
        )
        return _multi_worker_strategy(json.dumps(config, sort_keys=True))
    devices = gpus()
    if devices:
        log.info("training on %d GPU(s) with MirroredStrategy", len(devices))
        return tf.distribute.MirroredStrategy()
    log.info("no GPU visible: training on CPU")
    return tf.distribute.get_strategy()


@functools.cache
def _multi_worker_strategy(config: str) -> Any:
    """One ``MultiWorkerMirroredStrategy`` per process and cluster: TensorFlow configures its collective ops once,
    so each ensemble member reuses it (``config`` is the cache key, the strategy reads ``TF_CONFIG`` itself)."""
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()
