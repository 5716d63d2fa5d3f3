"""keras-pbt on Keras' PyTorch backend.

Keras trains a PyTorch model eagerly (unless it is compiled with
`jit_compile=True`): every step reads the optimizer's Python floats and the
variables as they are now. A new hyperparameter is therefore set or
assigned and used by the next step, with no variable standing in for a
float and no retrace. Variables are `torch.nn.Parameter`s updated in
place; an assignment copies into them (`Tensor.copy_`), so they never
share memory with a snapshot.

Members run in threads, one device each: every CUDA GPU, or the CPU,
shared by all members (PyTorch has one CPU device; its intra-op thread
pool serves every member).
"""

import numpy as np
import torch

from keras_pbt.backend.device_scope import canonical_device  # noqa: F401
from keras_pbt.backend.device_scope import fit_scope  # noqa: F401
from keras_pbt.backend.device_scope import member_strategy  # noqa: F401
from keras_pbt.backend.stateful import carry_variable  # noqa: F401
from keras_pbt.backend.stateful import drop_variable  # noqa: F401
from keras_pbt.backend.stateful import is_hparam_variable  # noqa: F401
from keras_pbt.backend.stateful import release_tunable  # noqa: F401
from keras_pbt.backend.stateful import share_compilations  # noqa: F401
from keras_pbt.backend.stateful import sync_state  # noqa: F401

# The dtype of the variable behind a TunableFloat.
tunable_dtype = None
carries_floats = False
supports_device_slices = False
# Nothing is traced (keras_pbt.runtime.trace_lock).
serial_tracing = False



def step_captures_floats(model):
    """Only a `torch.compile`d step (`jit_compile=True`) may capture floats."""
    return bool(getattr(model, "jit_compile", False))


# ----------------------------------------------------------------- snapshots


def host_copy(variable):
    # `Tensor.numpy()` of a CPU tensor shares its memory: copy.
    return np.array(variable.value.detach().cpu().numpy(), copy=True)


def device_copy(variable):
    return variable.value.detach().clone()


def has_gpu():
    return torch.cuda.is_available()


def on_gpu(variable):
    return bool(variable.value.is_cuda)


def assign(variable, value):
    """Keras copies `value` into the parameter in place (`copy_`)."""
    variable.assign(value)



# ----------------------------------------------------------- tunable floats
# Eager steps read plain floats: nothing stands in for them.


def tunable_variable(value, name, model, optimizer):
    raise NotImplementedError("PyTorch steps read optimizer floats directly.")


def read_tunable(variable, dtype=None):
    raise NotImplementedError("PyTorch steps read optimizer floats directly.")





def register_tunable_type(cls, read):
    del cls, read


# ------------------------------------------------------------------ devices


def _gpus():
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def configure_cpu_devices(n):
    """PyTorch has one CPU device, which every member shares."""
    del n
    return ["cpu"]


def available_devices(num_cpu=None):
    del num_cpu
    return _gpus() or ["cpu"]


def known_devices():
    return ["cpu"] + _gpus()


