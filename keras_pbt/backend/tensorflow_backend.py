"""keras-pbt on Keras' TensorFlow backend.

Each member trains under its own `tf.distribute.MirroredStrategy` over its
slice of devices. Strategies of several members run at the same time in
threads of one process. Their default cross-device ops clash: on CPU the
collective ops of two strategies join the same group ("joining a group that
is already full"), and NCCL all-reduces launched from several threads on the
same GPUs can interleave and hang. Every member therefore uses
`ReductionToOneDevice(reduce_to_device=<first device of its slice>)`: plain
copies and adds between the slice's own devices, no collective group shared
with other strategies. A slice of one device needs no reduction at all.
"""

import contextlib
import functools

import keras
import numpy as np
import tensorflow as tf

from keras_pbt.backend.stateful import carry_variable  # noqa: F401
from keras_pbt.backend.stateful import drop_variable  # noqa: F401
from keras_pbt.backend.stateful import is_hparam_variable  # noqa: F401
from keras_pbt.backend.stateful import release_tunable  # noqa: F401
from keras_pbt.backend.stateful import share_compilations  # noqa: F401
from keras_pbt.backend.stateful import sync_state  # noqa: F401

# The compiled step reads optimizer floats through a variable (tunable.py).
# The dtype of the variable behind a TunableFloat.
tunable_dtype = 'float64'
carries_floats = True
# Several devices per member: MirroredStrategy.
supports_device_slices = True
# Members trace one at a time: concurrent tracing under several strategies
# crashed TF 2.21 (keras_pbt.runtime.trace_lock).
serial_tracing = True



def step_captures_floats(model):
    """`tf.function` bakes Python floats into the traced step."""
    del model
    return True


# ----------------------------------------------------------------- snapshots
#
# A member's variables are `MirroredVariable`s of its strategy. Reading or
# assigning one goes through `tf.distribute`'s cross-replica machinery
# (device-name canonicalisation, an update function per replica): about
# 0.1 ms per read and 0.2 ms per assign on a CPU, most of it Python holding
# the GIL while the other members train. Its replicas are plain
# `tf.Variable`s that always hold the same value (Keras creates them
# synchronised on write), so copies read the first replica and assigns go
# to every replica directly: a quarter of the cost, and the same result.


def local_variables(variable):
    """The `tf.Variable`s that hold `variable`'s value: its replicas under a
    strategy (`strategy.experimental_local_results`), else itself.

    Args:
        variable: a `keras.Variable` or a `tf.Variable` (mirrored or not).
    """
    value = variable.value if isinstance(variable, keras.Variable) else variable
    if isinstance(value, tf.distribute.DistributedValues):
        return value.distribute_strategy.experimental_local_results(value)
    return (value,)


def host_copy(variable):
    """A NumPy copy of `variable`'s value that nothing else holds: one copy.

    `tf.Variable.value()` reads the variable (its first replica under a
    strategy; without the extra identity op of `numpy()`, half the cost)
    and `EagerTensor.numpy` copies the tensor into a new NumPy array,
    which training can never write to (tests/test_snapshot_copy.py). It
    is kept as it is. Only what is not an array owning its memory (a 0-d
    value comes back as a NumPy scalar; a view of a buffer someone else
    owns) is copied (again).
    """
    value = local_variables(variable)[0].value().numpy()
    if isinstance(value, np.ndarray) and value.flags.owndata:
        return value
    return np.array(value, copy=True)


def device_copy(variable):
    """A copy of `variable`'s value made on the variable's own device.

    `tf.identity` would not do: on the same device it hands back the
    variable's buffer (no copy). TensorFlow's `Snapshot` op allocates a new
    buffer and copies into it (a device memcpy) whenever the input buffer
    has another owner, which a variable's buffer always has. The variable's
    later in-place updates copy on write and never reach it
    (tests/test_snapshot_device.py). A `MirroredVariable` is read on its
    primary device.
    """
    value = local_variables(variable)[0]
    with tf.device(value.device):
        return tf.raw_ops.Snapshot(input=value)


@functools.lru_cache(maxsize=None)
def has_gpu():
    # Asked once: by the first capture TensorFlow has initialised its
    # devices (a model exists), and logical devices never change afterwards.
    return bool(tf.config.list_logical_devices("GPU"))


def on_gpu(variable):
    return has_gpu() and ":GPU:" in local_variables(variable)[0].device.upper()


def assign(variable, value):
    """Assigns `value` to every replica of `variable` (a `keras.Variable` or
    a `tf.Variable`). TensorFlow converts `value` into a new tensor (it
    never keeps a view of NumPy memory), and copies a device tensor into
    each replica's buffer."""
    replicas = local_variables(variable)
    if len(replicas) > 1 and not tf.is_tensor(value):
        value = tf.convert_to_tensor(value, dtype=replicas[0].dtype)  # converted once
    for replica in replicas:
        replica.assign(value, read_value=False)  # no read back: a third of the cost


# ----------------------------------------------------------- tunable floats


def tunable_variable(value, name, model, optimizer):
    """A float64 `tf.Variable` in the model's strategy scope (every replica
    reads it); float64 keeps Python's precision for `1 - beta_2`."""
    del optimizer
    with model.distribute_strategy.scope():
        return tf.Variable(float(value), dtype=tf.float64, trainable=False, name=f"pbt_{name}")


def read_tunable(variable, dtype=None):
    return tf.cast(variable, dtype or tf.float32)





def register_tunable_type(cls, read):
    """Lets TensorFlow convert a `TunableFloat` to a tensor (ops.cast etc.)."""

    def convert(value, dtype=None, name=None, as_ref=False):
        del name, as_ref
        return read(value, dtype)

    tf.register_tensor_conversion_function(cls, convert)


# ------------------------------------------------------------------ devices


def configure_cpu_devices(n):
    """Splits the physical CPU into `n` logical devices (see `keras_pbt.population.devices`)."""
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


def available_devices(num_cpu=None):
    # list_physical_devices does not initialise TensorFlow; listing logical
    # devices does, after which CPU devices can no longer be split.
    if tf.config.list_physical_devices("GPU"):
        return [d.name for d in tf.config.list_logical_devices("GPU")]
    if num_cpu is not None:
        try:
            return configure_cpu_devices(num_cpu)
        except RuntimeError:
            pass
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def known_devices():
    return [d.name for d in tf.config.list_logical_devices()]


def canonical_device(name, known):
    spec = tf.DeviceSpec.from_string(name)
    for k in known:
        ks = tf.DeviceSpec.from_string(k)
        if (ks.device_type or "").upper() == (spec.device_type or "").upper() and ks.device_index == (
            spec.device_index if spec.device_index is not None else 0
        ):
            return k
    return None


def member_strategy(devices):
    """A `MirroredStrategy` over `devices` that can run beside other members'."""
    return tf.distribute.MirroredStrategy(
        devices=list(devices),
        cross_device_ops=tf.distribute.ReductionToOneDevice(reduce_to_device=devices[0]),
    )


def fit_scope(strategy):
    """Keras' TensorFlow trainer enters the model's strategy itself."""
    del strategy
    return contextlib.nullcontext()
