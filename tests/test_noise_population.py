"""Noise-aware exploitation in a real population: the split size and spread it
measures with, and exploits only beyond the margin (tiny models)."""

import math

import keras
import numpy as np
import pytest

import keras_pbt
from keras_pbt.core.noise import StandardError
from keras_pbt.core.noise import proportion_spread
from keras_pbt.runtime.spread import per_example_fn
from tests.test_population import SPACE
from tests.test_population import XV
from tests.test_population import YV
from tests.test_population import X
from tests.test_population import Y
from tests.test_population import build

RX = np.random.default_rng(0).normal(size=(200, 4)).astype("float32")
RY = (RX @ np.array([1.0, -2.0, 0.5, 0.0], "float32") + 0.3).reshape(-1, 1)
RXV, RYV = RX[:60] + 0.1, RY[:60]


def build_regression(hp):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(hp["learning_rate"], momentum=hp["momentum"]), "mse")
    return model


def test_reports_carry_the_split_size_and_an_accuracys_spread():
    pop = keras_pbt.Population(build, SPACE, population_size=4, seed=0,
                               policy=keras_pbt.Policy(margin=StandardError(1.0)))
    pop.fit(X, Y, validation_data=(XV, YV), epochs=3, batch_size=32, verbose=0)
    for reports in pop.store.histories().values():
        for r in reports:
            assert r.count == len(XV)
            assert r.spread == pytest.approx(proportion_spread("val_accuracy", r.metric))
    # Every exploit was beyond one standard error of the difference.
    for rec in pop.lineage:
        if rec.action == "exploit":
            se = math.sqrt(rec.parent_metric * (1 - rec.parent_metric) / len(XV)
                           + rec.metric * (1 - rec.metric) / len(XV))
            assert rec.parent_metric - rec.metric > se


def test_a_losss_spread_is_measured_on_the_validation_data_only_when_a_margin_needs_it():
    space = {"learning_rate": keras_pbt.LogUniform(1e-3, 0.05), "momentum": SPACE["momentum"]}
    pop = keras_pbt.Population(build_regression, space, population_size=2, seed=0,
                               monitor="val_loss", policy=keras_pbt.Policy(margin=StandardError()))
    pop.fit(RX, RY, validation_data=(RXV, RYV), epochs=2, batch_size=32, verbose=0)
    for member in pop.members:
        last = pop.store.histories()[member.member_id][-1]  # at the end: the final weights
        squared = (np.asarray(member.model(RXV, training=False)) - RYV)[:, 0] ** 2
        assert last.count == 60
        assert last.spread == pytest.approx(float(np.std(squared, ddof=1)), rel=1e-4)
    plain = keras_pbt.Population(build_regression, space, population_size=2, seed=0,
                                 monitor="val_loss", policy=keras_pbt.Policy(margin=None))
    plain.fit(RX, RY, validation_data=(RXV, RYV), epochs=1, batch_size=32, verbose=0)
    assert all(r.spread is None for rs in plain.store.histories().values() for r in rs)


def test_per_example_fn():
    model = build_regression({"learning_rate": 0.01, "momentum": 0.0})
    fn = per_example_fn(model, "val_loss")
    y, p = np.array([[1.0], [2.0]], "float32"), np.array([[0.0], [4.0]], "float32")
    assert np.allclose(keras.ops.convert_to_numpy(fn(y, p)), [1.0, 4.0])
    mae = per_example_fn(model, "val_mae")
    assert np.allclose(keras.ops.convert_to_numpy(mae(y, p)), [1.0, 2.0])
    model.compile("sgd", keras.losses.Huber())
    assert per_example_fn(model, "loss") is not None
    assert per_example_fn(model, "val_auc") is None
