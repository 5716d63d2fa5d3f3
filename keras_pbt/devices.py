"""Devices for a population: which slice of the machine each member uses.

Each member trains under its own `tf.distribute.MirroredStrategy` over its
slice. Strategies of several members run at the same time in threads of one
process. Their default cross-device ops clash: on CPU the collective ops of
two strategies join the same group ("joining a group that is already full"),
and NCCL all-reduces launched from several threads on the same GPUs can
interleave and hang. Every member therefore uses
`ReductionToOneDevice(reduce_to_device=<first device of its slice>)`: plain
copies and adds between the slice's own devices, no collective group shared
with other strategies. A slice of one device needs no reduction at all.
"""


import tensorflow as tf

from keras_pbt.validation import check_int


def configure_cpu_devices(n):
    """Splits the physical CPU into `n` logical devices (`/device:CPU:0..n-1`).

    Must run before TensorFlow initialises its devices (before any op, model
    or tensor is created). Returns the logical CPU devices that exist
    afterwards; if TensorFlow is already initialised with another number,
    raises `RuntimeError` saying so.

    Args:
        n: number of logical CPU devices, >= 1.

    Example:

    >>> import keras_pbt
    >>> keras_pbt.configure_cpu_devices(4)   # first thing in the script
    """
    check_int("n", n)
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == n:
        return [d.name for d in tf.config.list_logical_devices("CPU")]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError:
        have = tf.config.list_logical_devices("CPU")
        if len(have) == n:
            return [d.name for d in have]
        raise RuntimeError(
            f"TensorFlow is already initialised with {len(have)} logical CPU device(s); "
            f"call keras_pbt.configure_cpu_devices({n}) before creating any model or "
            "tensor, or pass devices= explicitly."
        ) from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def available_devices(num_cpu_devices=None):
    """The devices a population uses by default.

    Every GPU if there is one; otherwise the logical CPU devices, asking for
    `num_cpu_devices` of them if TensorFlow is not initialised yet.
    """
    # list_physical_devices does not initialise TensorFlow; listing logical
    # devices does, after which CPU devices can no longer be split.
    if tf.config.list_physical_devices("GPU"):
        return [d.name for d in tf.config.list_logical_devices("GPU")]
    if num_cpu_devices is not None:
        try:
            return configure_cpu_devices(num_cpu_devices)
        except RuntimeError:
            pass
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _canonical(name, known):
    spec = tf.DeviceSpec.from_string(name)
    for k in known:
        ks = tf.DeviceSpec.from_string(k)
        if (ks.device_type or "").upper() == (spec.device_type or "").upper() and ks.device_index == (
            spec.device_index if spec.device_index is not None else 0
        ):
            return k
    return None


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
        ValueError: naming a device that does not exist, or a slice larger
            than the devices given.
    """
    check_int("devices_per_member", devices_per_member)
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
        known = [d.name for d in tf.config.list_logical_devices()]
        names = []
        for name in requested:
            try:
                canonical = _canonical(str(name), known)
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
    """A `MirroredStrategy` over `devices` that can run beside other members'.

    See the module docstring for why the cross-device ops are
    `ReductionToOneDevice`.
    """
    return tf.distribute.MirroredStrategy(
        devices=list(devices),
        cross_device_ops=tf.distribute.ReductionToOneDevice(reduce_to_device=devices[0]),
    )

