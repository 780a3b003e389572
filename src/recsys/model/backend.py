"""Keras backend selection and device strategy, shared by the encoder and the trainer."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from recsys.errors import ConfigError

log = logging.getLogger(__name__)


def use_tensorflow_backend() -> None:
    """Select the TensorFlow Keras backend (if unset) before Keras is imported; refuse any other backend."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if os.environ["KERAS_BACKEND"] != "tensorflow":
        raise ConfigError(
            f"KERAS_BACKEND is {os.environ['KERAS_BACKEND']!r}, but the model stage runs on TensorFlow: "
            "unset KERAS_BACKEND or set it to 'tensorflow'."
        )
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != "tensorflow":
            raise ConfigError(
                f"Keras was already imported with the {keras.backend.backend()!r} backend: set "
                "KERAS_BACKEND=tensorflow before anything imports keras."
            )


def gpus() -> list[Any]:
    """Visible GPU devices (an empty list on a CPU-only machine)."""
    import tensorflow as tf

    return list(tf.config.list_physical_devices("GPU"))


def distribution_strategy() -> Any:
    """``MirroredStrategy`` over the visible GPUs, else TensorFlow's default (single-device) strategy."""
    import tensorflow as tf

    devices = gpus()
    if devices:
        log.info("training on %d GPU(s) with MirroredStrategy", len(devices))
        return tf.distribute.MirroredStrategy()
    log.info("no GPU visible: training on CPU")
    return tf.distribute.get_strategy()
