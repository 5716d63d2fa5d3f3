"""PB2Explorer: the GP bandit's data, its fit, and the point it chooses."""

import math
import re

import numpy as np
import pytest

from keras_pbt.core.pb2 import PB2Explorer
from keras_pbt.core.pb2 import decode
from keras_pbt.core.pb2 import encode
from keras_pbt.core.pb2 import fit_gp
from keras_pbt.core.pb2 import get_explore
from keras_pbt.core.policy import PBTPolicy
from keras_pbt.core.selection import Report
from keras_pbt.core.space import Choice
from keras_pbt.core.space import IntUniform
from keras_pbt.core.space import LogUniform
from keras_pbt.core.space import Uniform


@pytest.mark.parametrize("spec,values", [
    (Uniform(0.0, 2.0), [0.0, 0.5, 2.0]),
    (LogUniform(1e-4, 1e-1), [1e-4, 1e-3, 0.1]),
    (IntUniform(8, 64, step=8), [8, 32, 64]),
    (IntUniform(1, 1000, log=True), [1, 10, 1000]),
    (Choice(["relu", "gelu", "tanh"]), ["relu", "gelu", "tanh"]),
])
def test_encode_decode_round_trip(spec, values):
    for v in values:
        u = encode(v, spec)
        assert 0.0 <= u <= 1.0
        back = decode(u, spec)
        assert back == pytest.approx(v) if isinstance(v, float) else back == v
    assert encode(1e-3, LogUniform(1e-4, 1e-2)) == pytest.approx(0.5)


def test_gp_interpolates_its_data():
    rng = np.random.default_rng(0)
    x = rng.random((20, 2))
    t = np.repeat(np.arange(4.0), 5)
    y = np.sin(3 * x[:, 0]) + x[:, 1]
    y = (y - y.mean()) / y.std()
    predict, (length, eps, noise) = fit_gp(x, t, y)
    mean, std = predict(x, t)
    assert np.corrcoef(mean, y)[0, 1] > 0.95
    # Far from every data point the GP is unsure.
    _, far = predict(np.array([[5.0, 5.0]]), np.array([3.0]))
    assert far[0] > std.max()


def history(peak=1e-2, intervals=4, members=8, seed=0, mode="max"):
    """Reports whose improvement peaks at lr = `peak` (log scale)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(1, intervals + 1):
        for m in range(members):
            lr = float(10 ** rng.uniform(-4, -1))
            gain = math.exp(-((math.log10(lr) - math.log10(peak)) ** 2) / 0.2)
            sign = 1 if mode == "max" else -1
            out.append(Report(m, 10 * k, 0.5 + sign * gain, {"lr": lr}, interval=k,
                              start_metric=0.5))
    return out


@pytest.mark.parametrize("mode", ["max", "min"])
def test_chooses_near_the_best_region(mode):
    space = {"lr": LogUniform(1e-4, 1e-1)}
    explorer = PB2Explorer()
    chosen = []
    for seed in range(5):
        hp, ops = explorer({"lr": 1e-4}, space, np.random.default_rng(seed),
                           history=history(seed=seed, mode=mode), mode=mode)
        assert ops == {"lr": "pb2"}
        chosen.append(hp["lr"])
    # Within a factor of 3 of the peak, from a parent at the far end.
    assert all(abs(math.log10(v) - (-2)) < math.log10(3) for v in chosen), chosen


def test_too_little_data_resamples():
    space = {"lr": LogUniform(1e-4, 1e-1), "units": IntUniform(8, 64)}
    explorer = PB2Explorer(min_data=4)
    few = history(intervals=1, members=3)
    hp, ops = explorer({"lr": 1e-3, "units": 8, "other": 1}, space, np.random.default_rng(0),
                       history=few)
    assert set(ops.values()) == {"resample (pb2: too little data)"}
    assert hp["other"] == 1 and 1e-4 <= hp["lr"] <= 1e-1 and 8 <= hp["units"] <= 64


def test_data_uses_only_usable_recent_reports():
    space = {"lr": LogUniform(1e-4, 1e-1)}
    reports = history(intervals=10, members=2)
    reports.append(Report(9, 5, 0.9, {"lr": 1e-3}, interval=10))  # no start: unusable
    reports.append(Report(9, 5, math.nan, {"lr": 1e-3}, interval=10, start_metric=0.5))
    x, t, y = PB2Explorer(window=3).data(reports, space, "max")
    assert len(y) == 6 and set(t) == {8.0, 9.0, 10.0}
    _, _, y_min = PB2Explorer(window=3).data(reports, space, "min")
    assert np.allclose(y_min, -y)


def test_policy_with_pb2_needs_and_uses_history():
    space = {"lr": LogUniform(1e-4, 1e-1)}
    policy = PBTPolicy(space, seed=0, explore="pb2")
    assert policy.uses_history
    reports = [Report(m, 40, 0.1 * m, {"lr": 1e-3}, 4, start_metric=0.0) for m in range(5)]
    d = policy.decide(0, reports, 4, np.random.default_rng(0), history=history())
    assert d.action == "exploit" and d.ops == {"lr": "pb2"}
    d = policy.decide(0, reports, 4, np.random.default_rng(0))  # no history: resample
    assert d.ops == {"lr": "resample (pb2: too little data)"}
    assert not PBTPolicy(space, seed=0).uses_history


def test_explore_errors():
    with pytest.raises(ValueError, match=re.escape("Received: explore='gp'")):
        get_explore("gp")
    with pytest.raises(ValueError, match="not both"):
        PBTPolicy({"lr": LogUniform(1e-4, 1e-1)}, explore="pb2", explore_fn=lambda h, r: h)
    for kwargs in ({"kappa": -1}, {"kappa": math.inf}, {"candidates": 0}, {"min_data": 1}):
        with pytest.raises((ValueError, TypeError), match=re.escape(f"{next(iter(kwargs))}=")):
            PB2Explorer(**kwargs)
