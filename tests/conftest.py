"""Test set-up: four CPU devices, so multi-device code runs without a GPU.

The whole suite runs on TensorFlow. `make test` runs the modules marked
`all_backends` (callback, hyperparameters, snapshots, population, backends)
again under `KERAS_BACKEND=jax` and `KERAS_BACKEND=torch`; a test in them
that cannot run there is marked `tensorflow_only` (it says why).

The devices must be set up before the backend initialises them, hence here:
TensorFlow gets four logical CPU devices, JAX four host devices (PyTorch has
one CPU device, which members share).
"""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NUM_CPU_DEVICES = 4
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")

if BACKEND == "jax":
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={NUM_CPU_DEVICES}"
    ).strip()


def pytest_configure(config):
    config.addinivalue_line("markers", "all_backends: runs under every Keras backend")
    config.addinivalue_line("markers", "tensorflow_only(reason): runs on TensorFlow only")
    if BACKEND != "tensorflow":
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(NUM_CPU_DEVICES)]
    )


def pytest_collection_modifyitems(config, items):
    # KERAS_PBT_ALL_TESTS=1 runs every module on this backend (to try more).
    if BACKEND == "tensorflow" or os.environ.get("KERAS_PBT_ALL_TESTS"):
        return
    keep, drop = [], []
    for item in items:
        (keep if item.get_closest_marker("all_backends") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_setup(item):
    marker = item.get_closest_marker("tensorflow_only")
    if marker is not None and BACKEND != "tensorflow":
        pytest.skip(f"TensorFlow only: {marker.kwargs.get('reason') or (marker.args or [''])[0]}")
