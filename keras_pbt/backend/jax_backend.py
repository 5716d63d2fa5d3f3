"""keras-pbt on Keras' JAX backend.

Keras trains a JAX model with a jitted, stateless step: the trainable,
non-trainable, optimizer and metric variables go in as arguments and come
out updated, and Keras writes them back to the `keras.Variable`s only at
the end of an epoch (`model.jax_state_sync()`). Three consequences:

- In the middle of an epoch (a step interval) the variables are stale or
  empty: `sync_state` writes the state back first, and since that marks it
  synced, the next step reads the variables again, with whatever PBT
  assigned.
- A value the step reads that is not in its state is a constant of the
  trace. An optimizer float (`momentum`, `beta_1`, ...) is therefore backed
  by a `keras.Variable` carried in the optimizer's own variables while PBT
  manages it, and a user's `keras.Variable` (a loss weight) in the model's
  non-trainable variables. Both leave again at the end of `fit`, so the
  model saves and loads as usual, and snapshots never hold them (they are
  hyperparameters, applied after every copy).
- The step donates its input buffers: a snapshot must own a copy, and a
  restore must give the variable a copy, never the snapshot's own array.

Members run in threads, one device each (`jax.devices()`: every GPU, or
CPU devices: `keras_pbt.configure_cpu_devices(n)` before JAX initialises,
or `XLA_FLAGS=--xla_force_host_platform_device_count=n`).
"""

import atexit
import functools
import shutil
import tempfile
import threading

import jax
import keras
import numpy as np

from keras_pbt.backend.device_scope import canonical_device  # noqa: F401
from keras_pbt.backend.device_scope import fit_scope  # noqa: F401
from keras_pbt.backend.device_scope import member_strategy  # noqa: F401

# The dtype of the variable behind a TunableFloat.
tunable_dtype = 'float32'
carries_floats = True
supports_device_slices = False
# jit compiles outside the GIL, in parallel (keras_pbt.runtime.trace_lock).
serial_tracing = False

_HPARAM = "_keras_pbt_hparam"


def sync_state(model):
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


def step_captures_floats(model):
    """The jitted step bakes Python floats in as constants."""
    del model
    return True


# ----------------------------------------------------------------- snapshots


def host_copy(variable):
    # `np.asarray` of a CPU array may view its buffer, which the next
    # (donating) step reuses: always copy.
    return np.array(variable.value, copy=True)


def _copy_to(device, value):
    """A new buffer holding `value` on `device`, uncommitted (as Keras creates
    its variables: see `assign`). A transfer, not a computation: nothing is
    compiled (`jnp.array(copy=True)` would compile a copy for every shape on
    every device, 18 compilations in a 6-member population here)."""
    with jax.default_device(device):
        return jax.device_put(value, may_alias=False)


def device_copy(variable):
    # On the variable's own device.
    return _copy_to(_device_of(variable), variable.value)


def has_gpu():
    return jax.default_backend() == "gpu"


def on_gpu(variable):
    return any(d.platform == "gpu" for d in variable.value.devices())


def _device_of(variable):
    return next(iter(variable.value.devices()))


def assign(variable, value):
    """Assigns a copy of `value` on the variable's device (never an alias).

    The copy is left uncommitted, as Keras creates its variables: a jitted
    step caches its compilation by whether its inputs are committed to a
    device, and one committed input makes every output committed, so a
    committed copy would cost each member one more compile of its steps.
    """
    variable.assign(_copy_to(_device_of(variable), value))


def is_hparam_variable(variable):
    """True for the variables PBT carries in the state only as hyperparameters."""
    return getattr(variable, _HPARAM, False)


# ----------------------------------------------------------- tunable floats


def tunable_variable(value, name, model, optimizer):
    """A float32 `keras.Variable` on the optimizer's device, in its variables."""
    del model
    # On the optimizer's device, uncommitted as Keras' own variables (see `assign`).
    initial = _copy_to(_device_of(optimizer.iterations), np.float32(value))
    with jax.default_device(_device_of(optimizer.iterations)):
        variable = keras.Variable(initial, dtype="float32", trainable=False, name=f"pbt_{name}")
    _track_in_optimizer(optimizer, variable)
    return variable


def _track_in_optimizer(optimizer, variable):
    optimizer._track_variable(variable)
    setattr(variable, _HPARAM, True)
    if "save_own_variables" not in vars(optimizer):
        # A model saved in the middle of fit (ModelCheckpoint) holds the
        # optimizer's own state only, as after fit.
        optimizer.save_own_variables = functools.partial(_save_own_variables, optimizer)


def _save_own_variables(optimizer, store):
    own = [v for v in optimizer.variables if not is_hparam_variable(v)]
    for i, variable in enumerate(own):
        store[str(i)] = variable.numpy()


def read_tunable(variable, dtype=None):
    # Inside the step, `.value` is the traced value from the optimizer's state.
    return keras.ops.cast(variable.value, dtype or "float32")


def release_tunable(optimizer, variable):
    variables = optimizer._variables
    for i, v in enumerate(variables):
        if v is variable:
            del variables[i]
            break
    setattr(variable, _HPARAM, False)
    if "save_own_variables" in vars(optimizer) and not any(map(is_hparam_variable, variables)):
        del optimizer.save_own_variables


def carry_variable(model, variable, optimizer=None):
    """Puts `variable` in the training state unless it is part of it already:
    in `optimizer`'s variables when given (read by the optimizer), else in
    the model's non-trainable variables. Returns True if it was added."""
    known = {id(v) for v in model.variables}
    for opt in _all_optimizers(model):
        known |= {id(v) for v in opt.variables}
    if id(variable) in known:
        return False
    if optimizer is not None:
        _track_in_optimizer(optimizer, variable)
        return True
    locked = model._tracker.locked
    model._tracker.unlock()
    try:
        model._track_variable(variable)
    finally:
        if locked:
            model._tracker.lock()
    setattr(variable, _HPARAM, True)
    return True


def drop_variable(model, variable, optimizer=None):
    if optimizer is not None:
        release_tunable(optimizer, variable)
        return
    model._untrack_variable(variable)
    setattr(variable, _HPARAM, False)


def _all_optimizers(model):
    from keras_pbt.runtime.snapshot import optimizers

    return [opt for _, opt in optimizers(model)]


def register_tunable_type(cls, read):
    # JAX converts any object with `__jax_array__` (TunableFloat has it).
    del cls, read


# ------------------------------------------------------- shared compilations

_SHARED_CACHE = []
_SHARED_CACHE_LOCK = threading.Lock()


def share_compilations():
    """Lets members of one architecture share their compiled steps.

    Keras jits each model's train and test steps itself, so N members of
    the same architecture compile the same XLA program N times (per batch
    shape): most of JAX's extra fit time against TensorFlow here. JAX's
    persistent compilation cache hands a program compiled once to every
    later member on the same device (its key holds the program and the
    device, not the model). Unless the user configured a cache
    (`jax_compilation_cache_dir`), this turns one on for the process, in a
    temporary directory removed at exit, for compilations of any duration.
    Called before the first member is built; later calls do nothing.
    """
    with _SHARED_CACHE_LOCK:
        if _SHARED_CACHE or jax.config.jax_compilation_cache_dir is not None:
            return
        if not jax.config.jax_enable_compilation_cache:
            return
        path = tempfile.mkdtemp(prefix="keras-pbt-jax-cache-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        _SHARED_CACHE.append(path)


# ------------------------------------------------------------------ devices


def _ask_for_cpu_devices(n):
    # Only heard before JAX starts (its first device query starts it).
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        pass  # already started: it keeps the devices it has


def configure_cpu_devices(n):
    """Asks JAX for `n` CPU devices; only possible before JAX initialises."""
    _ask_for_cpu_devices(n)
    have = jax.devices("cpu")
    if len(have) != n:
        raise RuntimeError(
            f"JAX is already initialised with {len(have)} CPU device(s); call "
            f"keras_pbt.configure_cpu_devices({n}) before creating any model or array, "
            f"set XLA_FLAGS=--xla_force_host_platform_device_count={n}, or pass devices= "
            "explicitly."
        )
    return [_name(d) for d in have]


def _name(device):
    return f"{device.platform}:{device.id}"


def available_devices(num_cpu=None):
    if num_cpu is not None:
        _ask_for_cpu_devices(num_cpu)  # before has_gpu() starts JAX
    if has_gpu():
        return [_name(d) for d in jax.devices("gpu")]
    return [_name(d) for d in jax.devices("cpu")]


def known_devices():
    names = [_name(d) for d in jax.devices("cpu")]
    if has_gpu():
        names += [_name(d) for d in jax.devices("gpu")]
    return names


