"""keras-tuner integration: `PBTOracle` and `PBTTuner`.

`keras_pbt.tuner.convert`, `segments`, `records` and `snapshots` are plain
Python + NumPy; the oracle, the tuner and its workers import keras-tuner
(and with it Keras) on first use.
"""

import importlib

_LAZY = {
    "PBTOracle": "keras_pbt.tuner.oracle",
    "PBTTuner": "keras_pbt.tuner.tuner",
    "space_from_hyperparameters": "keras_pbt.tuner.convert",
    "spec_from_hyperparameter": "keras_pbt.tuner.convert",
}


_SUBMODULES = {"convert", "oracle", "records", "results", "roles", "segments", "snapshots",
               "tuner", "worker"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_pbt.tuner.{name}")
    raise AttributeError(f"module 'keras_pbt.tuner' has no attribute {name!r}")


__all__ = sorted(_LAZY)
