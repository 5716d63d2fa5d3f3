"""Search-space specifications: what values a hyperparameter may take.

Pure Python + NumPy. Every spec can sample a value, clip a value into its
range, perturb a value by a factor and describe itself as a dict.
"""

import math
import numbers

import numpy as np


def _check_finite(name, value, arg):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{arg}` of {name} must be a real number. Received: {arg}={value!r}"
        )
    if not math.isfinite(value):
        raise ValueError(
            f"`{arg}` of {name} must be finite. Received: {arg}={value!r}"
        )


class Hyperparameter:
    """Base class of a search-space entry.

    Subclasses implement `sample`, `clip`, `perturb` and `to_dict`.
    """

    def sample(self, rng):
        """Draws a value from the space with `rng` (a `numpy.random.Generator`)."""
        raise NotImplementedError

    def clip(self, value):
        """Returns `value` moved into the space's range."""
        raise NotImplementedError

    def perturb(self, value, factor, rng):
        """Returns `(new_value, op)` for a factor-based explore step.

        Args:
            value: the current value.
            factor: a perturbation factor such as `0.8` or `1.2`.
            rng: a `numpy.random.Generator`, for specs that need a coin.

        Returns:
            The new value (already in range) and a short text naming the
            operation applied, e.g. `"* 1.2"`.
        """
        raise NotImplementedError

    def to_dict(self):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(
            f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type"
        )
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(repr(self))


class _Bounded(Hyperparameter):
    _log = False

    def __init__(self, low, high):
        name = type(self).__name__
        _check_finite(name, low, "low")
        _check_finite(name, high, "high")
        if not low < high:
            raise ValueError(
                f"{name} needs low < high. Received: low={low!r}, high={high!r}"
            )
        if self._log and low <= 0:
            raise ValueError(
                f"{name} needs low > 0 (log scale). Received: low={low!r}"
            )
        self.low = low
        self.high = high
        self.step = None

    def clip(self, value):
        value = float(value)
        if math.isnan(value):
            raise ValueError(
                f"{type(self).__name__} cannot clip NaN into [{self.low}, {self.high}]. "
                f"Received: value={value!r}"
            )
        return float(min(max(value, self.low), self.high))

    def perturb(self, value, factor, rng):
        new = self.clip(float(value) * factor)
        return new, _factor_op(factor, new != float(value) * factor)

    def to_dict(self):
        return {"type": type(self).__name__, "low": self.low, "high": self.high}


class _Grid:
    """Values `low + i * step` for `i = 0..n-1`, the largest at most `high`.

    The values are computed as `low + i * step`, as keras-tuner computes its
    own `hp.Float(step=...)` / `hp.Int(step=...)` values, so they compare
    equal to keras-tuner's.
    """

    def __init__(self, low, high, step, name, integer=False):
        if integer:
            if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 1:
                raise ValueError(
                    f"`step` of {name} must be a positive int. Received: step={step!r}"
                )
        else:
            _check_finite(name, step, "step")
            if step <= 0:
                raise ValueError(
                    f"`step` of {name} must be > 0. Received: step={step!r}"
                )
        self.low, self.step, self.integer = low, step, integer
        # The tolerance keeps float error from dropping the top value.
        self.n = int(math.floor((high - low) / step + 1e-9)) + 1

    def value(self, i):
        i = min(max(int(i), 0), self.n - 1)
        v = self.low + i * self.step
        return int(v) if self.integer else float(v)

    def index(self, value):
        return min(max(int(round((value - self.low) / self.step)), 0), self.n - 1)

    def perturb(self, value, factor):
        """The grid value nearest `value * factor`, at least one step away."""
        i = self.index(value)
        raw = value * factor
        j = min(max(int(round((raw - self.low) / self.step)), 0), self.n - 1)
        moved = j
        if j == i and factor != 1:
            # Rounding back onto the same value would stop exploring: move
            # one step in the direction multiplying moves the value.
            up = (factor > 1) == (value >= 0)
            moved = i + (1 if up else -1)
        k = min(max(moved, 0), self.n - 1)
        return self.value(k), k != moved or raw < self.value(0) or raw > self.value(self.n - 1)


def _factor_op(factor, clipped):
    op = f"* {factor:g}"
    return op + " (clipped)" if clipped else op


class Uniform(_Bounded):
    """A float drawn uniformly from `[low, high]`.

    Args:
        low: smallest value.
        high: largest value, greater than `low`.
        step: optional grid spacing: values are then `low + i * step` (as
            keras-tuner's `hp.Float(step=...)`), clipping and perturbing
            round to the grid, and a perturbation that rounds back to the
            same value moves one step instead. Defaults to `None`
            (continuous).

    Example:

    >>> space = {"momentum": Uniform(0.5, 0.99)}
    >>> space = {"dropout": Uniform(0.0, 0.5, step=0.1)}
    """

    def __init__(self, low, high, step=None):
        super().__init__(low, high)
        if step is not None:
            self._grid = _Grid(low, high, step, "Uniform")
            self.step = step
        else:
            self._grid = None

    def sample(self, rng):
        if self._grid is not None:
            return self._grid.value(rng.integers(self._grid.n))
        return float(rng.uniform(self.low, self.high))

    def clip(self, value):
        value = super().clip(value)
        if self._grid is not None:
            return self._grid.value(self._grid.index(value))
        return value

    def perturb(self, value, factor, rng):
        if self._grid is None:
            return super().perturb(value, factor, rng)
        new, clipped = self._grid.perturb(float(value), factor)
        return new, _factor_op(factor, clipped)

    def to_dict(self):
        d = super().to_dict()
        if self.step is not None:
            d["step"] = self.step
        return d


class LogUniform(_Bounded):
    """A positive float whose logarithm is uniform on `[log(low), log(high)]`.

    Args:
        low: smallest value, > 0.
        high: largest value, greater than `low`.

    Example:

    >>> space = {"learning_rate": LogUniform(1e-4, 1e-1)}
    """

    _log = True

    def sample(self, rng):
        # exp(log(x)) can round 1 ulp outside [low, high]: clip.
        return self.clip(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))


class IntUniform(Hyperparameter):
    """An integer drawn uniformly from `low..high` (both included).

    Perturbing multiplies and rounds; when rounding would leave the value
    unchanged it moves one unit (one `step`) in the factor's direction, so
    small integers still explore.

    Args:
        low: smallest value.
        high: largest value, greater than `low`.
        step: spacing of the allowed values `low, low + step, ...` (as
            keras-tuner's `hp.Int(step=...)`). Defaults to `1`.
        log: draw samples log-uniformly (as `hp.Int(sampling="log")`);
            needs `low > 0`. Defaults to `False`.

    Example:

    >>> space = {"units": IntUniform(16, 256)}
    >>> space = {"filters": IntUniform(16, 128, step=16)}
    """

    def __init__(self, low, high, step=1, log=False):
        for arg, v in (("low", low), ("high", high)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(
                    f"`{arg}` of IntUniform must be an int. Received: {arg}={v!r}"
                )
        if not low < high:
            raise ValueError(
                f"IntUniform needs low < high. Received: low={low!r}, high={high!r}"
            )
        if log and low <= 0:
            raise ValueError(
                f"IntUniform needs low > 0 with log=True. Received: low={low!r}"
            )
        self.low = int(low)
        self.high = int(high)
        self._grid = _Grid(self.low, self.high, step, "IntUniform", integer=True)
        self.step = int(step)
        self.log = bool(log)

    def sample(self, rng):
        if self.log:
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
            return self.clip(math.floor(x))
        return self._grid.value(rng.integers(self._grid.n))

    def clip(self, value):
        value = int(min(max(int(round(value)), self.low), self.high))
        if self.step != 1:
            value = self._grid.value(self._grid.index(value))
        return value

    def perturb(self, value, factor, rng):
        if self.step != 1:
            new, clipped = self._grid.perturb(int(value), factor)
            return new, _factor_op(factor, clipped)
        value = int(value)
        raw = int(round(value * factor))
        if raw == value and factor != 1:
            # One unit in the direction that multiplying moves the value
            # (away from zero for factor > 1; 0 moves up for factor > 1).
            step = 1 if factor > 1 else -1
            raw = value + (-step if value < 0 else step)
        new = self.clip(raw)
        return new, _factor_op(factor, new != raw)

    def to_dict(self):
        d = {"type": "IntUniform", "low": self.low, "high": self.high}
        if self.step != 1:
            d["step"] = self.step
        if self.log:
            d["log"] = True
        return d


class Choice(Hyperparameter):
    """One of an ordered list of values; explore moves to a neighbour.

    Args:
        values: the allowed values, in an order where neighbours are similar
            (e.g. `[16, 32, 64]` or `["relu", "gelu"]`). At least one, no
            duplicates.

    Example:

    >>> space = {"batch_norm": Choice([False, True])}
    """

    def __init__(self, values):
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise TypeError(
                f"`values` of Choice must be a list. Received: values={values!r}"
            )
        values = list(values)
        if not values:
            raise ValueError("`values` of Choice must not be empty. Received: values=[]")
        for i, v in enumerate(values):
            if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isnan(v):
                # NaN equals nothing, itself included: explore could never
                # find the member's value again.
                raise ValueError(
                    f"`values` of Choice must not hold NaN. Received: values={values!r}"
                )
            if v in values[:i]:
                raise ValueError(
                    f"`values` of Choice has a duplicate {v!r}. Received: values={values!r}"
                )
        self.values = values

    def index(self, value):
        """The position of `value` in `values` (a value of the same type first).

        Raises:
            ValueError: `value` is not one of the values.
        """
        for i, v in enumerate(self.values):
            if v == value and type(v) is type(value):
                return i
        for i, v in enumerate(self.values):
            if v == value:
                return i
        raise ValueError(f"{value!r} is not one of {self.values!r}")

    def sample(self, rng):
        return self.values[int(rng.integers(len(self.values)))]

    def clip(self, value):
        try:
            return self.values[self.index(value)]
        except ValueError:
            if isinstance(value, numbers.Real) and all(
                isinstance(v, numbers.Real) for v in self.values
            ):
                return min(self.values, key=lambda v: abs(v - value))
            raise

    def perturb(self, value, factor, rng):
        """Moves to a neighbouring value; the factor is not used."""
        if len(self.values) == 1:
            return self.values[0], "keep"
        i = self.index(value)
        if i == 0:
            step = 1
        elif i == len(self.values) - 1:
            step = -1
        else:
            step = 1 if rng.random() < 0.5 else -1
        return self.values[i + step], "shift right" if step > 0 else "shift left"

    def to_dict(self):
        return {"type": "Choice", "values": list(self.values)}


def validate_space(space):
    """Checks a search space and returns it as a plain dict.

    Args:
        space: a mapping from hyperparameter name (str) to a
            `Hyperparameter` spec.

    Returns:
        A new `dict` with the same entries.

    Raises:
        TypeError / ValueError naming `space` when it is not a non-empty
        mapping of names to specs.
    """
    if not hasattr(space, "items"):
        raise TypeError(
            f"`space` must be a dict of name -> Hyperparameter. Received: space={space!r}"
        )
    space = dict(space)
    if not space:
        raise ValueError("`space` must name at least one hyperparameter. Received: space={}")
    for name, spec in space.items():
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"`space` keys must be non-empty strings. Received key: {name!r}"
            )
        if not isinstance(spec, Hyperparameter):
            raise TypeError(
                f"`space[{name!r}]` must be a Uniform, LogUniform, IntUniform or "
                f"Choice. Received: {spec!r}"
            )
    return space


def sample_space(space, rng):
    """Draws one value per hyperparameter.

    Args:
        space: a dict of name -> `Hyperparameter`.
        rng: a `numpy.random.Generator`.

    Returns:
        A dict of name -> value (Python floats, ints or the choice values).

    Example:

    >>> rng = np.random.default_rng(0)
    >>> hp = sample_space({"lr": LogUniform(1e-3, 1e-1)}, rng)
    """
    return {name: spec.sample(rng) for name, spec in space.items()}


def default_rng(seed):
    """A `numpy.random.Generator` from an int seed, a sequence of ints, or a Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)
