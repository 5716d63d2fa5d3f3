"""A member's place on JAX or PyTorch: one device, entered with `keras.device`."""

import keras


class DeviceScope:
    """What a `tf.distribute.MirroredStrategy` is to a TensorFlow member, for
    one device of JAX or PyTorch: `scope()` places what is built or trained
    in it on the device.

    Per-member data parallelism over several devices is TensorFlow's
    (`MirroredStrategy`); on JAX and PyTorch a member has one device.

    Args:
        devices: a list of one device name (`"gpu:0"`, `"cpu:0"`, `"cuda:1"`).

    Example:

    >>> place = DeviceScope(["cpu:1"])
    >>> with place.scope():
    ...     model = build()   # doctest: +SKIP
    """

    num_replicas_in_sync = 1

    def __init__(self, devices):
        devices = list(devices)
        if len(devices) != 1:
            raise ValueError(
                f"On the {keras.backend.backend()} backend a member trains on one device: "
                "several devices per member (data parallelism) need TensorFlow's "
                "MirroredStrategy (pip install keras-pbt[tensorflow], KERAS_BACKEND=tensorflow). "
                "Pass Devices(per_member=1). "
                f"Received: per_member={len(devices)}"
            )
        self.devices = devices
        self.device = devices[0]

    def scope(self):
        """A context in which Keras creates and computes on this device."""
        return keras.device(self.device)

    def __repr__(self):
        return f"DeviceScope({self.device!r})"


def member_strategy(devices):
    """A member's `DeviceScope` (JAX and PyTorch)."""
    return DeviceScope(devices)


def fit_scope(strategy):
    """A member's `fit` runs on its device: Keras' JAX and PyTorch trainers
    put their computations and batches where the current scope says."""
    return strategy.scope()


def canonical_device(name, known):
    """The name in `known` that `name` means, or None.

    `"/gpu:1"`, `"GPU:1"`, `"/device:GPU:1"`, `"cuda:1"` name the second GPU
    (JAX lists it as `"gpu:1"`, PyTorch as `"cuda:1"`); `"/cpu:0"`, `"cpu"`
    the first CPU device (`"cpu:0"` on JAX, `"cpu"` on PyTorch's one).
    """
    text = name.lower().replace("/device:", "").lstrip("/").replace("cuda", "gpu")
    kind, _, index = text.partition(":")
    index = int(index) if index.isdigit() else 0
    for candidate in (f"{kind}:{index}", f"cuda:{index}" if kind == "gpu" else None,
                      "cpu" if kind == "cpu" and index == 0 else None):
        if candidate in known:
            return candidate
    return None
