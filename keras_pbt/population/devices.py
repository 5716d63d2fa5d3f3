"""Devices for a population: which slice of the machine each member uses.

On TensorFlow each member trains under its own
`tf.distribute.MirroredStrategy` over its slice (see
`keras_pbt.backend.tensorflow_backend` for the cross-device ops that let
several run at once). On JAX and PyTorch a member has one device, entered
with `keras.device` (`keras_pbt.backend.device_scope.DeviceScope`).
"""

import dataclasses
from typing import Any, Optional

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


def available_devices(num_cpu=None):
    """The devices a population uses by default.

    Every GPU if there is one; otherwise the CPU devices, asking for
    `num_cpu` of them if the backend is not initialised yet.
    """
    return backend_lib.current().available_devices(num_cpu)


@dataclasses.dataclass(frozen=True)
class Devices:
    """Which devices a population's members train on, and how many each.

    Give it as `devices=` to `Population` or `PBTTuner`; `"auto"` there is
    `Devices()` and a list of names is `Devices(names=[...])`.

    Args:
        names: `"auto"` (every GPU, else CPU devices) or a list of device
            names such as `["/gpu:0", "/gpu:1"]`. Defaults to `"auto"`.
        per_member: devices in each member's slice (data parallelism,
            TensorFlow only). Defaults to `1`.
        num_cpu: CPU devices to create when there is no GPU (only before
            the backend initialises). Defaults to `None`: a population asks
            for `min(population_size, 4)`.

    Example:

    >>> Devices(per_member=2).names
    'auto'
    """

    names: Any = "auto"
    per_member: int = 1
    num_cpu: Optional[int] = None

    def __post_init__(self):
        names = self.names
        if names != "auto":
            if isinstance(names, str) or not hasattr(names, "__iter__"):
                raise TypeError(
                    "`names` must be 'auto' or a list of device names. "
                    f"Received: names={names!r}")
            names = tuple(names)
            if not names:
                raise ValueError("`names` must not be empty. Received: names=[]")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "per_member", check_int("per_member", self.per_member))
        object.__setattr__(self, "num_cpu", check_int("num_cpu", self.num_cpu, allow_none=True))


def get_devices(devices):
    """The `Devices` a front door was given.

    Args:
        devices: `"auto"`, a list of device names, or a `Devices`.

    Returns:
        A `Devices`.

    Raises:
        TypeError: anything else, naming the accepted forms.
    """
    if isinstance(devices, Devices):
        return devices
    if isinstance(devices, str) and devices == "auto":
        return Devices()
    if not isinstance(devices, str) and hasattr(devices, "__iter__"):
        devices = list(devices)
        if not devices:
            raise ValueError("`devices` must not be empty. Received: devices=[]")
        return Devices(names=devices)
    raise TypeError(
        "`devices` must be 'auto', a list of device names or keras_pbt.Devices(names=..., "
        f"per_member=..., num_cpu=...). Received: devices={devices!r}")


def assign_devices(population_size, devices="auto"):
    """Gives each of `population_size` members a slice of devices.

    Slices are consecutive groups of `per_member` devices. With more
    members than slices, members share slices round-robin.

    Args:
        population_size: number of members.
        devices: `"auto"`, a list of device names, or a `Devices`.
            Defaults to `"auto"`.

    Returns:
        A list of `population_size` lists of canonical device names.

    Raises:
        ValueError: naming a device that does not exist, or a slice larger
            than the devices given.
    """
    devices = get_devices(devices)
    per_member = devices.per_member
    backend = backend_lib.current()
    if per_member > 1 and not backend.supports_device_slices:
        raise ValueError(
            f"On the {backend_lib.name()} backend a member trains on one device: several "
            "devices per member (data parallelism) need TensorFlow's MirroredStrategy "
            "(pip install keras-pbt[tensorflow], KERAS_BACKEND=tensorflow). "
            f"Pass Devices(per_member=1). Received: per_member={per_member}"
        )
    if devices.names == "auto":
        names = available_devices(devices.num_cpu)
    else:
        requested = list(devices.names)
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
    if per_member > len(names):
        raise ValueError(
            f"`per_member={per_member}` exceeds the {len(names)} device(s) available: {names}"
        )
    slices = [names[i:i + per_member] for i in range(0, len(names) - per_member + 1, per_member)]
    return [list(slices[i % len(slices)]) for i in range(population_size)]


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
