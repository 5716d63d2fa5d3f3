"""What differs between Keras' backends, in one small module per backend.

Everything else in keras-pbt is written once against `keras.ops` and
`keras.Variable`. Only these few operations depend on the backend Keras
runs on (`keras.backend.backend()`: `"tensorflow"`, `"jax"` or `"torch"`):

- `sync_state(model)`: make the model's variables hold its training state.
  JAX trains on a copy of the state that Keras writes back to the variables
  only at the end of an epoch; a callback that reads or assigns variables
  in the middle of one (a step interval) syncs first.
- `host_copy(variable)` / `device_copy(variable)` / `on_gpu(variable)`:
  the copies a snapshot is made of.
- `assign(variable, value)`: an assignment that never leaves the variable
  sharing memory with `value` (JAX donates the state's buffers to the
  next train step; a shared snapshot would be destroyed).
- `carries_floats`, `tunable_variable`, `read_tunable`, `release_tunable`:
  how an optimizer float (`momentum`, `beta_1`, ...) is read by the
  compiled train step (see `keras_pbt.runtime.tunable`).
- `carry_variable` / `drop_variable`: put a user's `keras.Variable` into
  the state the compiled step reads (JAX), for the duration of `fit`.
- `step_captures_floats(model)`: whether changing a plain Python attribute
  needs the train step retraced.
- Devices: `available_devices`, `known_devices`, `canonical_device`,
  `configure_cpu_devices`, `member_strategy`, `fit_scope`.

Example:

>>> from keras_pbt import backend
>>> backend.name()            # doctest: +SKIP
'jax'
>>> backend.current().sync_state(model)   # doctest: +SKIP
"""

import importlib

import keras

SUPPORTED = ("tensorflow", "jax", "torch")


def name():
    """The Keras backend in use: `"tensorflow"`, `"jax"` or `"torch"`."""
    return keras.backend.backend()


def current():
    """The keras-pbt module for the Keras backend in use.

    Raises:
        NotImplementedError: on a backend other than TensorFlow, JAX and
            PyTorch (e.g. `"numpy"`, which cannot train).
    """
    backend = name()
    if backend not in SUPPORTED:
        raise NotImplementedError(
            f"keras-pbt trains on the TensorFlow, JAX and PyTorch backends of Keras; "
            f"set KERAS_BACKEND to one of {list(SUPPORTED)}. Received: KERAS_BACKEND={backend!r}"
        )
    return importlib.import_module(f"keras_pbt.backend.{backend}_backend")


def __getattr__(attr):
    # `backend.sync_state(model)` etc. resolve on the current backend's module.
    if attr.startswith("__"):
        raise AttributeError(attr)
    return getattr(current(), attr)
