"""`step` on Uniform / IntUniform and `log` on IntUniform: the grids of keras-tuner's
`hp.Float(step=...)` and `hp.Int(step=...)`, so explore stays on the hp's own values."""

import numpy as np
import pytest

from keras_pbt.core.space import IntUniform
from keras_pbt.core.space import Uniform


def test_uniform_step_samples_clips_and_perturbs_on_the_grid():
    spec = Uniform(0.0, 0.5, step=0.1)
    grid = [0.0 + i * 0.1 for i in range(6)]  # keras-tuner computes min + i * step too
    rng = np.random.default_rng(0)
    assert {spec.sample(rng) for _ in range(300)} == set(grid)
    assert spec.clip(0.26) == grid[3] and spec.clip(-1) == 0.0 and spec.clip(0.9) == grid[5]
    for v in grid:
        for f in (0.8, 1.2, 0.5, 2.0):
            new, op = spec.perturb(v, f, rng)
            assert new in grid
            if 0 < v * f < 0.5 and v not in (0.0,):
                assert new != v  # rounding back onto the value would stop exploring


def test_uniform_step_moves_one_step_when_rounding_would_not_move():
    spec = Uniform(0.0, 1.0, step=0.25)
    assert spec.perturb(0.5, 1.2, None) == (0.75, "* 1.2")   # 0.6 rounds back to 0.5
    assert spec.perturb(0.5, 0.8, None) == (0.25, "* 0.8")
    assert spec.perturb(1.0, 1.2, None) == (1.0, "* 1.2 (clipped)")


def test_grid_top_is_the_last_step_at_most_high():
    spec = Uniform(0.0, 1.0, step=0.3)
    assert spec.clip(1.0) == pytest.approx(0.9)
    assert spec.to_dict() == {"type": "Uniform", "low": 0.0, "high": 1.0, "step": 0.3}
    assert Uniform(0.0, 1.0).to_dict() == {"type": "Uniform", "low": 0.0, "high": 1.0}


def test_int_step_grid_and_one_step_moves():
    spec = IntUniform(16, 128, step=16)
    grid = list(range(16, 129, 16))
    rng = np.random.default_rng(1)
    assert {spec.sample(rng) for _ in range(400)} == set(grid)
    assert spec.clip(40) == 48 and spec.clip(7) == 16 and spec.clip(1000) == 128
    assert spec.perturb(32, 1.2, rng) == (48, "* 1.2")       # 38.4 rounds back to 32: one step
    assert spec.perturb(32, 0.8, rng) == (16, "* 0.8")
    assert spec.perturb(128, 1.2, rng) == (128, "* 1.2 (clipped)")
    assert all(isinstance(spec.perturb(v, f, rng)[0], int) for v in grid for f in (0.8, 1.2))
    assert spec.to_dict() == {"type": "IntUniform", "low": 16, "high": 128, "step": 16}


def test_int_log_samples_small_values_more_often():
    spec = IntUniform(1, 1000, log=True)
    rng = np.random.default_rng(2)
    s = np.array([spec.sample(rng) for _ in range(4000)])
    assert s.min() >= 1 and s.max() <= 1000
    assert 0.25 < np.mean(s < 32) < 0.65   # about half below sqrt(1000) on a log scale
    assert IntUniform(1, 8).to_dict() == {"type": "IntUniform", "low": 1, "high": 8}


@pytest.mark.parametrize("make, message", [
    (lambda: Uniform(0.0, 1.0, step=0.0), "step"),
    (lambda: Uniform(0.0, 1.0, step=float("nan")), "step"),
    (lambda: IntUniform(0, 10, step=0), "step"),
    (lambda: IntUniform(0, 10, step=1.5), "step"),
    (lambda: IntUniform(0, 10, log=True), "low > 0"),
])
def test_bad_step_or_log_is_rejected_naming_it(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()
