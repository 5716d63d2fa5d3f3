"""Devices for a population: which slice of the machine each member uses.

On TensorFlow each member trains under its own
`tf.distribute.MirroredStrategy` over its slice (see
`keras_pbt.backend.tensorflow_backend` for the cross-device ops that let
several run at once). On JAX and PyTorch a member has one device, entered
with `keras.device` (`keras_pbt.backend.device_scope.DeviceScope`).
"""

from keras_pbt import backend as backend_lib
from keras_pbt.core.validation import check_int


def configure_cpu_devices(n):
    """Splits the CPU into `n` devices, so members can each have their own.

    TensorFlow: `n` logical devices `/device:CPU:0..n-1`; JAX: `n` CPU
    devices `cpu:0..n-1` (as `XLA_FLAGS=--xla_force_host_platform_device_count=n`);
    PyTorch has one CPU device, shared by all members. Must run before the
    backend initialises its devices (before any op, model or tensor is
    created). Returns the CPU devices that exist afterwards; if the backend
    is already initialised with another number, raises `RuntimeError`
    saying so.

    Args:
        n: number of CPU devices, >= 1.

    Example:

    >>> import keras_pbt
    >>> keras_pbt.configure_cpu_devices(4)   # first thing in the script
    """
    check_int("n", n)
    return backend_lib.current().configure_cpu_devices(n)


def available_devices(num_cpu_devices=None):
    """The devices a population uses by default.

    Every GPU if there is one; otherwise the CPU devices, asking for
    `num_cpu_devices` of them if the backend is not initialised yet.
    """
    return backend_lib.current().available_devices(num_cpu_devices)


def assign_devices(size, devices="auto", devices_per_member=1, num_cpu_devices=None):
    """Gives each of `size` members a slice of devices.

    Slices are consecutive groups of `devices_per_member` devices. With more
    members than slices, members share slices round-robin.

    Args:
        size: number of members.
        devices: `"auto"` (every GPU, else logical CPU devices) or a list of
            device names such as `["/gpu:0", "/gpu:1"]`.
        devices_per_member: devices in each member's slice.
        num_cpu_devices: logical CPU devices to create when there is no GPU
            (only possible before TensorFlow initialises).

    Returns:
        A list of `size` lists of canonical device names.

    Raises:
        ValueError: naming a device that does not exist, a slice larger
            than the devices given, or `num_cpu_devices` not a positive int.
    """
    check_int("devices_per_member", devices_per_member)
    check_int("num_cpu_devices", num_cpu_devices, allow_none=True)
    backend = backend_lib.current()
    if devices_per_member > 1 and not backend.supports_device_slices:
        raise ValueError(
            f"On the {backend_lib.name()} backend a member trains on one device: several "
            "devices per member (data parallelism) need TensorFlow's MirroredStrategy. "
            f"Pass devices_per_member=1. Received: devices_per_member={devices_per_member}"
        )
    if devices == "auto":
        names = available_devices(num_cpu_devices)
    else:
        if isinstance(devices, str) or not hasattr(devices, "__iter__"):
            raise TypeError(
                f"`devices` must be 'auto' or a list of device names. Received: devices={devices!r}"
            )
        requested = list(devices)
        if not requested:
            raise ValueError("`devices` must not be empty. Received: devices=[]")
        known = backend.known_devices()
        names = []
        for name in requested:
            try:
                canonical = backend.canonical_device(str(name), known)
            except ValueError:
                canonical = None
            if canonical is None:
                raise ValueError(
                    f"Device {name!r} does not exist on this machine. Available: {known}. "
                    f"Received: devices={requested!r}"
                )
            names.append(canonical)
        if len(set(names)) != len(names):
            raise ValueError(f"`devices` names a device twice. Received: devices={requested!r}")
    if devices_per_member > len(names):
        raise ValueError(
            f"`devices_per_member={devices_per_member}` exceeds the {len(names)} device(s) "
            f"available: {names}"
        )
    slices = [names[i:i + devices_per_member] for i in range(0, len(names) - devices_per_member + 1,
                                                            devices_per_member)]
    return [list(slices[i % len(slices)]) for i in range(size)]


def member_strategy(devices):
    """What a member is built and trained in: on TensorFlow a
    `MirroredStrategy` over `devices` that can run beside other members';
    on JAX and PyTorch a `DeviceScope` of its one device.

    Raises:
        ValueError: several devices per member on JAX or PyTorch.
    """
    return backend_lib.current().member_strategy(devices)


def fit_scope(strategy):
    """The context a member's `fit` runs in (its device on JAX and PyTorch;
    Keras' TensorFlow trainer enters the strategy itself)."""
    return backend_lib.current().fit_scope(strategy)
