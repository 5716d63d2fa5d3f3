"""Explore: perturb / resample / custom, with the operations recorded."""

import math

import numpy as np
import pytest

from keras_pbt.core.explore import Explorer
from keras_pbt.core.explore import explore
from keras_pbt.core.space import Choice
from keras_pbt.core.space import IntUniform
from keras_pbt.core.space import LogUniform
from keras_pbt.core.space import Uniform

SPACE = {
    "lr": LogUniform(1e-4, 1e-1),
    "momentum": Uniform(0.0, 0.99),
    "units": IntUniform(8, 256),
    "act": Choice(["relu", "gelu", "swish"]),
}
HP = {"lr": 0.01, "momentum": 0.5, "units": 64, "act": "gelu"}


# --- validation -------------------------------------------------------------


@pytest.mark.parametrize(
    "factors", [(0.8, 0.0), (-1.2,), (0.8, math.nan), (math.inf,), (True, 1.2), ("1.2",)]
)
def test_bad_factors(factors):
    with pytest.raises(ValueError, match=r"`factors`.*positive finite.*factors="):
        Explorer(factors=factors)


def test_empty_or_non_list_factors():
    with pytest.raises(ValueError, match=r"`factors` must not be empty.*factors=\(\)"):
        Explorer(factors=[])
    for bad in (1.2, "12", None):
        with pytest.raises(TypeError, match=r"`factors`.*factors="):
            Explorer(factors=bad)


@pytest.mark.parametrize("p", [-0.1, 1.01, math.nan, math.inf, True, False, "0.5", None])
def test_bad_resample_probability(p):
    with pytest.raises(ValueError, match=rf"`resample_probability`.*\[0, 1\].*resample_probability={p!r}"):
        Explorer(resample_probability=p)


def test_non_callable_explore_fn():
    with pytest.raises(TypeError, match=r"`explore_fn` must be callable.*explore_fn=3"):
        Explorer(explore_fn=3)


def test_defaults_and_normalisation():
    ex = Explorer()
    assert ex.factors == (0.8, 1.2) and ex.resample_probability == 0.25 and ex.explore_fn is None
    ex = Explorer(factors=[1, np.float64(2.0)], resample_probability=1)
    assert ex.factors == (1.0, 2.0) and all(type(f) is float for f in ex.factors)
    assert type(ex.resample_probability) is float
    Explorer(resample_probability=0)
    Explorer(resample_probability=np.float32(0.5))


# --- perturb / resample -----------------------------------------------------


def test_p0_never_resamples_and_ops_are_recorded_per_name():
    ex = Explorer(factors=(0.8, 1.2), resample_probability=0.0)
    rng = np.random.default_rng(0)
    for _ in range(500):
        new, ops = ex(HP, SPACE, rng)
        assert set(ops) == set(SPACE) == set(new)
        assert "resample" not in ops.values()
        for name in ("lr", "momentum", "units"):
            assert ops[name] in ("* 0.8", "* 1.2")  # nothing clips from HP
        assert ops["act"] in ("shift left", "shift right")
        factor = float(ops["lr"][2:])
        assert new["lr"] == pytest.approx(HP["lr"] * factor)
        assert new["momentum"] == pytest.approx(HP["momentum"] * float(ops["momentum"][2:]))
        assert new["units"] == round(HP["units"] * float(ops["units"][2:]))
        assert new["act"] == ("relu" if ops["act"] == "shift left" else "swish")


def test_p1_always_resamples():
    ex = Explorer(resample_probability=1.0)
    rng = np.random.default_rng(0)
    values = []
    for _ in range(300):
        new, ops = ex(HP, SPACE, rng)
        assert ops == {name: "resample" for name in SPACE}
        for name, spec in SPACE.items():
            assert spec.clip(new[name]) == new[name]
        values.append(new["lr"])
    assert len(set(values)) == len(values)  # fresh draws, not the parent's value


def test_resample_fraction_matches_probability():
    p, n = 0.25, 4000
    ex = Explorer(resample_probability=p)
    rng = np.random.default_rng(42)
    space = {"lr": SPACE["lr"]}
    resampled = sum(ex({"lr": 0.01}, space, rng)[1]["lr"] == "resample" for _ in range(n))
    sd = math.sqrt(n * p * (1 - p))
    assert abs(resampled - n * p) < 5 * sd, resampled


def test_both_factors_are_used_evenly():
    ex = Explorer(factors=(0.5, 2.0), resample_probability=0.0)
    rng = np.random.default_rng(1)
    space = {"lr": LogUniform(1e-6, 1.0)}
    ops = [ex({"lr": 1e-3}, space, rng)[1]["lr"] for _ in range(2000)]
    assert set(ops) == {"* 0.5", "* 2"}
    assert abs(ops.count("* 2") - 1000) < 5 * math.sqrt(500)


def test_perturb_clips_and_says_so():
    ex = Explorer(factors=(1.2,), resample_probability=0.0)
    new, ops = ex({"momentum": 0.9}, {"momentum": Uniform(0.0, 0.99)}, np.random.default_rng(0))
    assert new == {"momentum": 0.99} and ops == {"momentum": "* 1.2 (clipped)"}


def test_extra_hparams_pass_through_and_input_is_not_mutated():
    hp = dict(HP, batch_size=32)
    frozen = dict(hp)
    new, ops = Explorer()(hp, SPACE, np.random.default_rng(0))
    assert hp == frozen
    assert new["batch_size"] == 32 and "batch_size" not in ops


def test_seeded_reproducibility():
    ex = Explorer()
    a = [ex(HP, SPACE, np.random.default_rng(s)) for s in range(20)]
    b = [ex(HP, SPACE, np.random.default_rng(s)) for s in range(20)]
    assert a == b
    # Different seeds give different outcomes.
    assert len({tuple(sorted(ops.items())) for _, ops in a}) > 5
    assert {0.008, 0.012} < {round(new["lr"], 12) for new, _ in a}  # both factors + resamples


def test_functional_form_validates_space():
    new, ops = explore(HP, SPACE, np.random.default_rng(0))
    assert set(ops) == set(SPACE)
    assert (new, ops) == Explorer()(HP, SPACE, np.random.default_rng(0))
    with pytest.raises(ValueError, match="`space`"):
        explore(HP, {}, np.random.default_rng(0))


# --- custom explore_fn ------------------------------------------------------


def test_custom_fn_returning_a_dict():
    seen = {}

    def fn(hparams, rng):
        seen["hparams"], seen["rng"] = hparams, rng
        return {"lr": hparams["lr"] * 10, "momentum": 2.0}

    rng = np.random.default_rng(0)
    new, ops = Explorer(explore_fn=fn)(HP, SPACE, rng)
    assert seen["rng"] is rng and seen["hparams"] == HP and seen["hparams"] is not HP
    assert new == {"lr": 0.1, "momentum": 0.99, "units": 64, "act": "gelu"}
    assert ops == {
        "lr": "custom",
        "momentum": "custom (clipped)",
        "units": "custom",
        "act": "custom",
    }


def test_custom_fn_returning_dict_and_ops():
    def fn(hparams, rng):
        return {"lr": 1.0, "units": 300, "act": "relu"}, {"lr": "x100", "units": "+236"}

    new, ops = Explorer(explore_fn=fn)(HP, SPACE, np.random.default_rng(0))
    assert new == {"lr": 0.1, "momentum": 0.5, "units": 256, "act": "relu"}
    assert ops == {
        "lr": "x100 (clipped)",
        "momentum": "custom",
        "units": "+236 (clipped)",
        "act": "custom",
    }


def test_custom_fn_int_and_choice_values_are_snapped():
    def fn(hparams, rng):
        return {"units": 63.6, "act": "gelu"}

    space = {"units": IntUniform(8, 256), "act": Choice(["relu", "gelu"])}
    new, ops = Explorer(explore_fn=fn)({"units": 64, "act": "relu"}, space, np.random.default_rng(0))
    assert new == {"units": 64, "act": "gelu"} and type(new["units"]) is int
    assert ops == {"units": "custom (clipped)", "act": "custom"}


def test_custom_fn_bad_output():
    for out in ([1, 2], None, 3.0, ("a", "b", "c")):
        with pytest.raises(TypeError, match="`explore_fn` must return"):
            Explorer(explore_fn=lambda hp, rng, out=out: out)(HP, SPACE, np.random.default_rng(0))


def test_custom_fn_nan_is_rejected_not_passed_on():
    ex = Explorer(explore_fn=lambda hp, rng: {"lr": math.nan})
    with pytest.raises(ValueError, match="NaN"):
        ex(HP, SPACE, np.random.default_rng(0))


def test_custom_fn_uses_rng_reproducibly():
    ex = Explorer(explore_fn=lambda hp, rng: {"lr": float(rng.uniform(1e-3, 1e-2))})
    a = ex(HP, SPACE, np.random.default_rng(3))
    b = ex(HP, SPACE, np.random.default_rng(3))
    c = ex(HP, SPACE, np.random.default_rng(4))
    assert a == b and a[0]["lr"] != c[0]["lr"]
