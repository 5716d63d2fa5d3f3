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
                "MirroredStrategy. Pass devices_per_member=1. "
                f"Received: devices_per_member={len(devices)}"
            )
        self.devices = devices
        self.device = devices[0]

    def scope(self):
        """A context in which Keras creates and computes on this device."""
        return keras.device(self.device)

    def __repr__(self):
        return f"DeviceScope({self.device!r})"
