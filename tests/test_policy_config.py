"""`keras_pbt.Policy`: one policy object, checked when made (pure, no TensorFlow)."""

import dataclasses
import re

import numpy as np
import pytest

import keras_pbt
from keras_pbt.core.config import Policy
from keras_pbt.core.config import Interval
from keras_pbt.core.config import Iterated
from keras_pbt.core.config import get_interval
from keras_pbt.core.config import get_policy
from keras_pbt.core.config import unsupported_by_tuner
from keras_pbt.core.selection import Report
from keras_pbt.core.space import LogUniform


def test_defaults_are_those_of_every_front_door():
    p = Policy()
    assert (p.quantile, p.selection, p.ranking, p.factors, p.resample_probability, p.explore_fn,
            p.explore, p.copy_optimizer_state) == (0.2, "truncation", "last", (0.8, 1.2), 0.25,
                                                   None, "perturb", True)
    assert keras_pbt.Policy is Policy


@pytest.mark.parametrize("kwargs,error,received", [
    ({"quantile": 0.7}, ValueError, "quantile=0.7"),
    ({"selection": "pairwise"}, ValueError, "selection='pairwise'"),
    ({"ranking": "median"}, ValueError, "ranking='median'"),
    ({"factors": (0.0, 2.0)}, ValueError, "factors=(0.0, 2.0)"),
    ({"resample_probability": 1.5}, ValueError, "resample_probability=1.5"),
    ({"explore_fn": 3}, TypeError, "explore_fn=3"),
    ({"explore": "bayes"}, ValueError, "explore='bayes'"),
    ({"copy_optimizer_state": "yes"}, TypeError, "copy_optimizer_state='yes'"),
])
def test_bad_arguments_fail_at_construction_naming_the_value(kwargs, error, received):
    with pytest.raises(error, match=re.escape(f"Received: {received}")):
        Policy(**kwargs)


def test_explore_fn_with_pb2_is_refused():
    with pytest.raises(ValueError, match=r"not both.*explore='pb2'"):
        Policy(explore="pb2", explore_fn=lambda hp, rng: hp)


def test_policy_is_frozen_and_normalised():
    p = Policy(quantile=1 / 4, factors=[0.5, 2])
    assert p.factors == (0.5, 2.0) and p == Policy(quantile=0.25, factors=(0.5, 2.0))
    with pytest.raises(AttributeError):
        p.quantile = 0.5


def test_make_decides_with_its_settings():
    p = Policy(quantile=0.5, factors=(2.0,), resample_probability=0.0)
    engine = p.make({"lr": LogUniform(1e-4, 1.0)}, "max", seed=3)
    assert engine.config is p and engine.seed == 3 and engine.selection.quantile == 0.5
    reports = [Report(0, 10, 0.9, {"lr": 0.01}), Report(1, 10, 0.5, {"lr": 0.1})]
    d = engine.decide(1, reports, key=1, rng=np.random.default_rng(0))
    assert (d.action, d.parent, d.ops) == ("exploit", 0, {"lr": "* 2"})
    assert d.hparams["lr"] == pytest.approx(0.02)


def test_get_policy_takes_a_policy_or_none_only():
    p = Policy(quantile=0.5, factors=(0.8, 1.2))
    assert get_policy(p) is p and get_policy(None) == Policy()
    with pytest.raises(TypeError, match=r"Received: policy=\{'quantile': 0.5\}"):
        get_policy({"quantile": 0.5})


def test_interval_forms():
    assert get_interval(3) == Interval(epochs=3) and get_interval(3).unit == "epochs"
    steps = Interval(steps=100, burn_in=500)
    assert get_interval(steps) is steps and (steps.unit, steps.length, steps.epochs) == ("steps", 100, None)
    assert Interval() == Interval(epochs=1, burn_in=0)
    assert get_interval(Iterated()) == Iterated()  # tests/test_iterated.py
    for bad in ("auto", 1.5, 0, True, None):
        with pytest.raises(ValueError, match=re.escape(f"Received: interval={bad!r}")) as e:
            get_interval(bad)
        assert "keras_pbt.Interval(epochs=..., steps=..., burn_in=...)" in str(e.value)
    with pytest.raises(ValueError, match=r"epochs=2, steps=3"):
        Interval(epochs=2, steps=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        steps.steps = 5


def test_the_tuner_supports_last_value_perturb_and_copying_only():
    assert unsupported_by_tuner(Policy(quantile=0.5)) == {}
    assert unsupported_by_tuner(Policy(ranking=keras_pbt.LastValue())) == {}
    assert unsupported_by_tuner(Policy(ranking="mean", explore="pb2",
                                       copy_optimizer_state=False)) == {
        "ranking": "mean", "explore": "pb2", "copy_optimizer_state": False}
