"""`keras_pbt.Policy`: one policy object, checked when made (pure, no TensorFlow)."""

import re

import numpy as np
import pytest

import keras_pbt
from keras_pbt.core.config import Policy
from keras_pbt.core.config import resolve_policy
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


def test_resolve_without_policy_builds_one_from_the_keywords():
    p = resolve_policy(None, quantile=0.25, selection=None, factors=(0.5,))
    assert p == Policy(quantile=0.25, factors=(0.5,))


def test_resolve_accepts_a_keyword_that_agrees_and_refuses_one_that_does_not():
    p = Policy(quantile=0.5, factors=(0.8, 1.2))
    assert resolve_policy(p, quantile=0.5, factors=[0.8, 1.2], explore_fn=None) is p
    with pytest.raises(ValueError, match=re.escape("Received: policy=Policy(quantile=0.5")) as e:
        resolve_policy(p, quantile=0.3)
    assert "quantile=0.3" in str(e.value) and "`quantile` is given both" in str(e.value)
    with pytest.raises(ValueError, match=r"copy_optimizer_state=False"):
        resolve_policy(Policy(), copy_optimizer_state=False)
    with pytest.raises(TypeError, match=r"Received: policy=\{'quantile': 0.5\}"):
        resolve_policy({"quantile": 0.5})


def test_the_tuner_supports_last_value_perturb_and_copying_only():
    assert unsupported_by_tuner(Policy(quantile=0.5)) == {}
    assert unsupported_by_tuner(Policy(ranking=keras_pbt.LastValue())) == {}
    assert unsupported_by_tuner(Policy(ranking="mean", explore="pb2",
                                       copy_optimizer_state=False)) == {
        "ranking": "mean", "explore": "pb2", "copy_optimizer_state": False}
