"""Test set-up: four logical CPU devices, so multi-device code runs without a GPU.

This must happen before TensorFlow initialises its devices, hence here.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NUM_CPU_DEVICES = 4


def pytest_configure(config):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(NUM_CPU_DEVICES)]
    )
