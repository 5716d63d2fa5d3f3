"""Search-space specs: validation, sampling, clipping, perturbing."""

import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_pbt.core.space import Choice
from keras_pbt.core.space import Hyperparameter
from keras_pbt.core.space import IntUniform
from keras_pbt.core.space import LogUniform
from keras_pbt.core.space import Uniform
from keras_pbt.core.space import default_rng
from keras_pbt.core.space import sample_space
from keras_pbt.core.space import validate_space

BOUNDED = [Uniform, LogUniform]


# --- validation -------------------------------------------------------------


@pytest.mark.parametrize("cls", BOUNDED + [IntUniform])
@pytest.mark.parametrize("low,high", [(5, 1), (3, 3)])
def test_bounds_must_be_increasing(cls, low, high):
    with pytest.raises(ValueError, match=rf"low={low}, high={high}"):
        cls(low, high)


@pytest.mark.parametrize("cls", BOUNDED)
@pytest.mark.parametrize("arg", ["low", "high"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_bounds_must_be_finite(cls, arg, bad):
    kwargs = {"low": 0.5, "high": 2.0, arg: bad}
    with pytest.raises(ValueError, match=rf"`{arg}`.*finite.*{arg}={re.escape(repr(bad))}"):
        cls(**kwargs)


@pytest.mark.parametrize("low", [0, 0.0, -1e-3])
def test_log_uniform_needs_positive_low(low):
    with pytest.raises(ValueError, match=rf"low > 0.*low={re.escape(repr(low))}"):
        LogUniform(low, 1.0)


@pytest.mark.parametrize("cls", BOUNDED + [IntUniform])
@pytest.mark.parametrize("arg", ["low", "high"])
@pytest.mark.parametrize("bad", [True, False, "1", None, [1]])
def test_bounds_reject_bool_and_non_numbers(cls, arg, bad):
    kwargs = {"low": 1, "high": 10, arg: bad}
    with pytest.raises(TypeError, match=rf"`{arg}`.*{arg}={re.escape(repr(bad))}"):
        cls(**kwargs)


@pytest.mark.parametrize("bad", [1.5, 2.0, np.float64(3.0)])
def test_int_uniform_rejects_non_int(bad):
    with pytest.raises(TypeError, match=rf"IntUniform.*low={re.escape(repr(bad))}"):
        IntUniform(bad, 10)


def test_int_uniform_accepts_numpy_ints():
    spec = IntUniform(np.int64(1), np.int32(5))
    assert (spec.low, spec.high) == (1, 5)
    assert type(spec.low) is int and type(spec.high) is int


def test_choice_validation():
    with pytest.raises(ValueError, match=r"`values`.*empty.*values=\[\]"):
        Choice([])
    with pytest.raises(ValueError, match=r"duplicate 32.*values=\[16, 32, 32\]"):
        Choice([16, 32, 32])
    with pytest.raises(ValueError, match=r"duplicate 'relu'"):
        Choice(["relu", "gelu", "relu"])
    for bad in ("abc", b"ab", 3, None):
        with pytest.raises(TypeError, match=r"`values`.*values="):
            Choice(bad)
    assert Choice((x for x in (1, 2))).values == [1, 2]
    assert Choice([False, True]).values == [False, True]


def test_validate_space_errors():
    with pytest.raises(TypeError, match=r"`space`.*space=\[1\]"):
        validate_space([1])
    with pytest.raises(TypeError, match=r"`space`.*space=None"):
        validate_space(None)
    with pytest.raises(ValueError, match=r"`space`.*at least one.*space=\{\}"):
        validate_space({})
    with pytest.raises(TypeError, match=r"keys.*Received key: 3"):
        validate_space({3: Uniform(0, 1)})
    with pytest.raises(TypeError, match=r"keys.*Received key: ''"):
        validate_space({"": Uniform(0, 1)})
    with pytest.raises(TypeError, match=r"space\['lr'\].*Received: \(0, 1\)"):
        validate_space({"lr": (0, 1)})
    with pytest.raises(TypeError, match=r"space\['lr'\]"):
        validate_space({"lr": Hyperparameter})  # the class, not an instance


def test_validate_space_returns_a_new_dict():
    space = {"lr": LogUniform(1e-4, 1e-1), "units": IntUniform(8, 64)}
    out = validate_space(space)
    assert out == space and out is not space


def test_base_class_is_abstract():
    h = Hyperparameter()
    rng = np.random.default_rng(0)
    for call in (lambda: h.sample(rng), lambda: h.clip(1), lambda: h.perturb(1, 1.2, rng),
                 h.to_dict):
        with pytest.raises(NotImplementedError):
            call()


# --- repr / eq / to_dict ------------------------------------------------------


def test_to_dict_repr_eq_hash():
    assert Uniform(0.5, 0.99).to_dict() == {"type": "Uniform", "low": 0.5, "high": 0.99}
    assert LogUniform(1e-4, 0.1).to_dict() == {"type": "LogUniform", "low": 1e-4, "high": 0.1}
    assert IntUniform(1, 8).to_dict() == {"type": "IntUniform", "low": 1, "high": 8}
    assert Choice(["a", "b"]).to_dict() == {"type": "Choice", "values": ["a", "b"]}
    assert repr(Uniform(0.5, 0.99)) == "Uniform(low=0.5, high=0.99)"
    assert repr(Choice([1, 2])) == "Choice(values=[1, 2])"
    assert Uniform(0, 1) == Uniform(0, 1) and hash(Uniform(0, 1)) == hash(Uniform(0, 1))
    assert Uniform(0.1, 1) != LogUniform(0.1, 1)
    assert IntUniform(1, 3) != Uniform(1, 3)
    c = Choice([1, 2])
    c.to_dict()["values"].append(3)
    assert c.values == [1, 2]


# --- sampling ---------------------------------------------------------------


@pytest.mark.parametrize(
    "spec", [Uniform(-2.0, 3.0), LogUniform(1e-5, 1e-1), IntUniform(-3, 4), IntUniform(0, 1)]
)
def test_samples_stay_within_bounds(spec):
    rng = np.random.default_rng(1)
    draws = [spec.sample(rng) for _ in range(5000)]
    assert all(spec.low <= d <= spec.high for d in draws)
    if isinstance(spec, IntUniform):
        assert all(type(d) is int for d in draws)
        assert set(draws) == set(range(spec.low, spec.high + 1))  # both ends included
    else:
        assert all(type(d) is float for d in draws)


class _EdgeRng:
    """A generator stub whose `uniform` returns one end of its range exactly.

    `numpy.random.Generator.uniform` may return `high` through rounding, and
    returns `low` with probability 2**-53: both ends must still sample in range.
    """

    def __init__(self, end):
        self.end = end

    def uniform(self, low, high):
        return low if self.end == "low" else high


@pytest.mark.parametrize("end", ["low", "high"])
@pytest.mark.parametrize("cls", BOUNDED)
def test_sample_at_the_exact_ends_stays_in_bounds(cls, end):
    for low, high in [(1e-4, 0.1), (0.3, 0.7), (1e-3, 0.99), (0.01, 3.0), (2e-5, 5e-5)]:
        spec = cls(low, high)
        value = spec.sample(_EdgeRng(end))
        assert low <= value <= high, (spec, value)


def test_log_uniform_is_uniform_in_log_space():
    low, high, n = 1e-4, 1e-1, 4000
    rng = np.random.default_rng(123)
    logs = np.log([LogUniform(low, high).sample(rng) for _ in range(n)])
    u = (logs - math.log(low)) / (math.log(high) - math.log(low))  # ~ U(0, 1)
    # The sample median of U(0, 1) has sd 1/(2 sqrt(n)); allow 5 sd.
    assert abs(np.median(u) - 0.5) < 5 * 0.5 / math.sqrt(n)
    # So the median value is near the geometric mean sqrt(low * high).
    tol = 5 * 0.5 / math.sqrt(n) * math.log(high / low)
    assert abs(math.log(np.median(np.exp(logs))) - math.log(math.sqrt(low * high))) < tol
    # Each decade gets about a third of the draws (binomial, 5 sd).
    counts, _ = np.histogram(logs, bins=[math.log(x) for x in (1e-4, 1e-3, 1e-2, 1e-1)])
    sd = math.sqrt(n * (1 / 3) * (2 / 3))
    assert np.all(np.abs(counts - n / 3) < 5 * sd)
    # A plain Uniform over the same range would put ~90% in the top decade.
    assert counts[-1] < 0.5 * n


def test_uniform_is_uniform():
    n = 4000
    rng = np.random.default_rng(7)
    draws = np.array([Uniform(2.0, 4.0).sample(rng) for _ in range(n)])
    assert abs(draws.mean() - 3.0) < 5 * (2 / math.sqrt(12)) / math.sqrt(n)


def test_choice_samples_every_value_roughly_evenly():
    spec = Choice(["a", "b", "c", "d"])
    rng = np.random.default_rng(3)
    draws = [spec.sample(rng) for _ in range(4000)]
    counts = {v: draws.count(v) for v in spec.values}
    sd = math.sqrt(4000 * 0.25 * 0.75)
    assert all(abs(c - 1000) < 5 * sd for c in counts.values()), counts


def test_sample_space_and_seeding():
    space = {"lr": LogUniform(1e-4, 1e-1), "units": IntUniform(8, 64), "act": Choice(["a", "b"])}
    a = sample_space(space, default_rng(5))
    b = sample_space(space, default_rng(5))
    assert a == b and set(a) == set(space)
    assert a != sample_space(space, default_rng(6)) or a != sample_space(space, default_rng(7))
    g = np.random.default_rng(0)
    assert default_rng(g) is g
    assert default_rng([1, 2]).random() == np.random.default_rng([1, 2]).random()


# --- clip -------------------------------------------------------------------


def test_clip():
    u = Uniform(0.5, 0.99)
    assert u.clip(1.08) == 0.99 and u.clip(0.1) == 0.5 and u.clip(0.7) == 0.7
    assert type(u.clip(1)) is float
    assert u.clip(math.inf) == 0.99 and u.clip(-math.inf) == 0.5
    lu = LogUniform(1e-4, 1e-1)
    assert lu.clip(0.0) == 1e-4 and lu.clip(1.0) == 1e-1
    i = IntUniform(1, 10)
    assert i.clip(0) == 1 and i.clip(11) == 10 and i.clip(4.6) == 5 and type(i.clip(4.6)) is int
    c = Choice([16, 32, 64])
    assert c.clip(32) == 32 and c.clip(40) == 32 and c.clip(1000) == 64
    with pytest.raises(ValueError):
        Choice(["relu", "gelu"]).clip("tanh")


@pytest.mark.parametrize("spec", [Uniform(0.5, 0.99), LogUniform(1e-4, 1e-1), IntUniform(1, 10)])
def test_clip_never_returns_nan(spec):
    """A NaN must not pass through clip into an optimizer: it is rejected."""
    with pytest.raises(ValueError):
        spec.clip(math.nan)


def test_choice_clip_prefers_same_type():
    c = Choice([False, True])
    assert c.clip(True) is True and c.clip(False) is False


@given(x=st.floats(allow_nan=False))
@settings(max_examples=200, deadline=None)
def test_clip_is_in_range_and_idempotent(x):
    for spec in (Uniform(-1.0, 2.5), LogUniform(1e-3, 10.0)):
        c = spec.clip(x)
        assert spec.low <= c <= spec.high
        assert spec.clip(c) == c
        if spec.low <= x <= spec.high:
            assert c == x


# --- perturb ----------------------------------------------------------------


@pytest.mark.parametrize("cls", BOUNDED)
def test_float_perturb_multiplies(cls):
    rng = np.random.default_rng(0)
    spec = cls(1e-3, 1.0)
    value, op = spec.perturb(0.1, 1.2, rng)
    assert value == pytest.approx(0.12) and op == "* 1.2"
    value, op = spec.perturb(0.1, 0.8, rng)
    assert value == pytest.approx(0.08) and op == "* 0.8"
    value, op = spec.perturb(0.9, 1.2, rng)
    assert value == 1.0 and op == "* 1.2 (clipped)"
    value, op = spec.perturb(0.0011, 0.5, rng)
    assert value == 1e-3 and op == "* 0.5 (clipped)"
    value, op = spec.perturb(1.0, 1.0, rng)
    assert value == 1.0 and op == "* 1"


def test_momentum_perturb_is_clipped_to_the_legal_range():
    # DESIGN.md: SGD(momentum=1.08) raises; perturbing 0.9 by 1.2 must clip.
    value, op = Uniform(0.0, 0.99).perturb(0.9, 1.2, np.random.default_rng(0))
    assert value == 0.99 and op == "* 1.2 (clipped)"


@given(
    value=st.floats(0.01, 10.0),
    factor=st.sampled_from([0.5, 0.8, 1.2, 2.0]),
)
@settings(max_examples=200, deadline=None)
def test_float_perturb_property(value, factor):
    spec = Uniform(0.01, 10.0)
    new, op = spec.perturb(value, factor, np.random.default_rng(0))
    assert spec.low <= new <= spec.high and type(new) is float
    assert new == spec.clip(value * factor)
    assert op.startswith(f"* {factor:g}")
    assert op.endswith("(clipped)") == (new != value * factor)


def test_int_perturb():
    rng = np.random.default_rng(0)
    spec = IntUniform(1, 256)
    assert spec.perturb(100, 1.2, rng) == (120, "* 1.2")
    assert spec.perturb(100, 0.8, rng) == (80, "* 0.8")
    # Rounding would not change a small int: it moves one unit.
    assert spec.perturb(2, 1.2, rng) == (3, "* 1.2")
    assert spec.perturb(2, 0.8, rng) == (1, "* 0.8")
    assert spec.perturb(3, 1.1, rng) == (4, "* 1.1")
    # At a bound it is clipped and says so.
    assert spec.perturb(1, 0.8, rng) == (1, "* 0.8 (clipped)")
    assert spec.perturb(250, 1.2, rng) == (256, "* 1.2 (clipped)")
    assert spec.perturb(256, 1.2, rng) == (256, "* 1.2 (clipped)")
    # factor 1 keeps the value.
    assert spec.perturb(7, 1.0, rng) == (7, "* 1")


@given(
    low=st.integers(-50, 50),
    width=st.integers(1, 100),
    data=st.data(),
    factor=st.sampled_from([0.5, 0.8, 0.95, 1.05, 1.2, 2.0]),
)
@settings(max_examples=300, deadline=None)
def test_int_perturb_property(low, width, data, factor):
    spec = IntUniform(low, low + width)
    value = data.draw(st.integers(spec.low, spec.high))
    new, op = spec.perturb(value, factor, np.random.default_rng(0))
    assert type(new) is int and spec.low <= new <= spec.high
    clipped = op.endswith("(clipped)")
    assert op.startswith(f"* {factor:g}")
    if not clipped:
        assert new != value  # always moves unless it hit a bound
        # Moves the way multiplying moves it (0 moves up for factor > 1).
        expected = (factor > 1) == (value >= 0)
        assert (new > value) == expected
        assert abs(new - value) >= 1
    else:
        assert new in (spec.low, spec.high)


def test_choice_perturb_moves_to_a_neighbour():
    spec = Choice([16, 32, 64, 128])
    rng = np.random.default_rng(0)
    assert spec.perturb(16, 1.2, rng) == (32, "shift right")
    assert spec.perturb(16, 0.8, rng) == (32, "shift right")  # the factor is not used
    assert spec.perturb(128, 1.2, rng) == (64, "shift left")
    seen = {spec.perturb(32, 1.2, rng) for _ in range(200)}
    assert seen == {(16, "shift left"), (64, "shift right")}
    middle = [spec.perturb(64, 1.2, rng)[0] for _ in range(4000)]
    sd = math.sqrt(4000 * 0.25)
    assert abs(middle.count(128) - 2000) < 5 * sd


def test_choice_perturb_single_value_keeps():
    assert Choice(["adam"]).perturb("adam", 1.2, np.random.default_rng(0)) == ("adam", "keep")


def test_choice_perturb_bools_and_unknown_value():
    spec = Choice([False, True])
    rng = np.random.default_rng(0)
    assert spec.perturb(False, 1.2, rng) == (True, "shift right")
    assert spec.perturb(True, 1.2, rng) == (False, "shift left")
    with pytest.raises(ValueError, match="not one of"):
        Choice(["a", "b"]).perturb("z", 1.2, rng)


def test_perturb_is_reproducible_with_a_seed():
    spec = Choice(list(range(10)))
    a = [spec.perturb(5, 1.2, np.random.default_rng(s))[0] for s in range(50)]
    b = [spec.perturb(5, 1.2, np.random.default_rng(s))[0] for s in range(50)]
    assert a == b and set(a) == {4, 6}
