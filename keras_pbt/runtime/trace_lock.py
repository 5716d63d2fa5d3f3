"""Members trace their compiled steps one at a time.

Several members training in threads of one process (a `Population`, the
worker threads of `PBTTuner(devices=...)`) each trace their train step at
their first step, and their test step at their first validation, so they
trace at the same moment. On TensorFlow 2.21 with each member under its own
`MirroredStrategy`, that crashed the process with a segmentation fault in
graph construction (the replica threads of several members' strategies
adding operations to their graphs at once, in `ops._create_c_op`; about 1
fit start in 50 here). Tracing is Python holding the GIL, so doing it one
member at a time costs little; the steps themselves still run at once.

`guard(model, name)` makes the next call of `model.<name>` (the call that
traces a function Keras has just made) take `TRACE_LOCK`, then puts the
function back, so later steps call it directly with nothing in between.
`TraceLock` guards the train function of each `fit` and the test function
of each validation; `keras_pbt.HyperparameterApplier` guards the train
function it remakes. On JAX and PyTorch (no `serial_tracing`) nothing is
guarded: JAX compiles members in parallel, outside the GIL.
"""

import threading

import keras

from keras_pbt import backend as backend_lib

TRACE_LOCK = threading.Lock()


def guard(model, name):
    """Makes the next call of `model.<name>` hold `TRACE_LOCK`.

    Args:
        model: a `keras.Model`.
        name: `"train_function"` or `"test_function"`.

    Returns:
        True if the function is now guarded (False: there is none, it is
        already guarded, or the backend traces safely in parallel).
    """
    function = getattr(model, name, None)
    if function is None or getattr(function, "_pbt_trace_guard", False):
        return False
    if not backend_lib.current().serial_tracing:
        return False

    def first_call(*args, **kwargs):
        with TRACE_LOCK:
            try:
                return function(*args, **kwargs)
            finally:
                if getattr(model, name, None) is first_call:
                    setattr(model, name, function)

    first_call._pbt_trace_guard = True
    setattr(model, name, first_call)
    return True


class TraceLock(keras.callbacks.Callback):
    """Guards the functions Keras made for this `fit` (train) and for each
    validation (test): see the module docstring. It hooks no batch."""

    def on_train_begin(self, logs=None):
        guard(self.model, "train_function")

    def on_test_begin(self, logs=None):
        guard(self.model, "test_function")
