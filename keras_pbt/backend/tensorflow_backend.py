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


def host_copy(variable):
    """A NumPy copy of `variable`'s value that nothing else holds: one copy.

    `variable.numpy()` reads the variable and returns a new NumPy array
    (`EagerTensor.numpy` copies; a `MirroredVariable` reads one replica the
    same way), which training can never write to
    (tests/test_snapshot_copy.py). It is kept as it is. Only what is not an
    array owning its memory (a 0-d value comes back as a NumPy scalar; a
    view of a buffer someone else owns) is copied (again).
    """
    value = variable.numpy()
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
    value = variable.value  # the tf.Variable (or MirroredVariable) behind it
    with tf.device(value.device):
        return tf.raw_ops.Snapshot(input=value)


@functools.lru_cache(maxsize=None)
def has_gpu():
    # Asked once: by the first capture TensorFlow has initialised its
    # devices (a model exists), and logical devices never change afterwards.
    return bool(tf.config.list_logical_devices("GPU"))


def on_gpu(variable):
    return has_gpu() and ":GPU:" in variable.value.device.upper()


def assign(variable, value):
    """TensorFlow converts `value` into a new tensor (it never keeps a view
    of NumPy memory), and copies a device tensor into the variable's buffer."""
    variable.assign(value)


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
