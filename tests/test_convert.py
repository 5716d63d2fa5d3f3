"""The pure converter from keras-tuner hyperparameters to keras-pbt specs."""

import subprocess
import sys

import keras_tuner as kt
import numpy as np
import pytest

from keras_pbt import LogUniform
from keras_pbt.core.space import Choice
from keras_pbt.core.space import IntUniform
from keras_pbt.core.space import Uniform
from keras_pbt.tuner import space_from_hyperparameters


def test_converter_maps_every_keras_tuner_type_with_its_bounds_and_step():
    hp = kt.HyperParameters()
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Float("lr_grid", 1e-4, 1e-1, step=10, sampling="log")
    hp.Float("dropout", 0.0, 0.5, step=0.1)
    hp.Float("m", 0.5, 0.99)
    hp.Int("units", 16, 128, step=16)
    hp.Int("width", 2, 64, sampling="log")
    hp.Choice("act", ["relu", "tanh"])
    hp.Boolean("bn")
    hp.Fixed("batch", 32)
    space = space_from_hyperparameters(hp)
    assert space == {
        "lr": LogUniform(1e-4, 1e-1),
        "lr_grid": Choice(list(hp._hps["lr_grid"][0].values)),
        "dropout": Uniform(0.0, 0.4, step=0.1),  # keras-tuner's grid stops at 0.4 (float floor)
        "m": Uniform(0.5, 0.99),
        "units": IntUniform(16, 128, step=16),
        "width": IntUniform(2, 64, log=True),
        "act": Choice(["relu", "tanh"]),
        "bn": Choice([False, True]),
    }
    assert space["lr_grid"].values == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    # keras-tuner's own grid values are exactly the spec's.
    assert set(hp._hps["dropout"][0].values) == {space["dropout"].clip(v) for v in np.linspace(0, .5, 20)}
    # The config dicts of HyperParameters.get_config() convert the same way (no keras-tuner needed).
    assert space_from_hyperparameters(hp.get_config()) == space
    assert list(space_from_hyperparameters(hp, exclude=["units", "lr"])) == [
        "lr_grid", "dropout", "m", "width", "act", "bn"]


def test_converter_includes_conditional_hyperparameters():
    hp = kt.HyperParameters()
    hp.Choice("kind", ["mlp", "cnn"])
    with hp.conditional_scope("kind", ["cnn"]):
        hp.Int("filters", 8, 32)
    assert space_from_hyperparameters(hp) == {"kind": Choice(["mlp", "cnn"]),
                                              "filters": IntUniform(8, 32)}
    assert list(space_from_hyperparameters(hp, exclude=["kind"])) == ["filters"]


def test_converter_is_pure():
    code = ("import sys, keras_pbt.tuner.convert, keras_pbt.tuner.snapshots, "
            "keras_pbt.tuner.segments, keras_pbt.tuner.records\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'keras_tuner')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
