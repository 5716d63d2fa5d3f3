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

from keras_pbt.backend.device_scope import DeviceScope

# The dtype of the variable behind a TunableFloat.
tunable_dtype = None
carries_floats = False
supports_device_slices = False


def sync_state(model):
    del model


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


def is_hparam_variable(variable):
    del variable
    return False


# ----------------------------------------------------------- tunable floats
# Eager steps read plain floats: nothing stands in for them.


def tunable_variable(value, name, model, optimizer):
    raise NotImplementedError("PyTorch steps read optimizer floats directly.")


def read_tunable(variable, dtype=None):
    raise NotImplementedError("PyTorch steps read optimizer floats directly.")


def release_tunable(optimizer, variable):
    del optimizer, variable


def carry_variable(model, variable, optimizer=None):
    del model, variable, optimizer
    return False


def drop_variable(model, variable, optimizer=None):
    del model, variable, optimizer


def register_tunable_type(cls, read):
    del cls, read


# ------------------------------------------------------------------ devices


def _gpus():
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def configure_cpu_devices(n):
    """PyTorch has one CPU device, which every member shares."""
    del n
    return ["cpu"]


def available_devices(num_cpu_devices=None):
    del num_cpu_devices
    return _gpus() or ["cpu"]


def known_devices():
    return ["cpu"] + _gpus()


def canonical_device(name, known):
    """`"/gpu:1"`, `"GPU:1"`, `"cuda:1"` -> `"cuda:1"`; any CPU name -> `"cpu"`."""
    text = name.lower().replace("/device:", "").lstrip("/").replace("gpu", "cuda")
    kind, _, index = text.partition(":")
    if kind == "cpu":
        return "cpu" if not index or index == "0" else None
    candidate = f"{kind}:{int(index) if index.isdigit() else 0}"
    return candidate if candidate in known else None


def member_strategy(devices):
    return DeviceScope(devices)


def fit_scope(strategy):
    return strategy.scope()
