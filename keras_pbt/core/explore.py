"""Explore: new hyperparameters from a parent's, with the operations applied.

Pure Python + NumPy.
"""

import math
import numbers

from keras_pbt.core import space as space_lib


class Explorer:
    """Perturbs or resamples hyperparameters after an exploit.

    For each hyperparameter: with probability `resample_probability` a fresh
    value is drawn from the space (op `"resample"`); otherwise a factor is
    drawn from `factors` and applied (`"* 1.2"`; ints are rounded, choices
    move to a neighbour: `"shift left"` / `"shift right"`). Values are
    clipped to the space's bounds (`"* 1.2 (clipped)"`).

    A user `explore_fn(hparams, rng)` replaces all of that: it returns a
    new dict, or `(new_dict, ops_dict)`. Its values are clipped to the space
    too.

    Args:
        factors: perturbation factors, positive and finite. Defaults to
            `(0.8, 1.2)`.
        resample_probability: chance, in `[0, 1]`, of resampling a value
            instead of perturbing it. Defaults to `0.25`.
        explore_fn: optional custom function, see above. Defaults to `None`.

    Example:

    >>> import numpy as np
    >>> from keras_pbt.core.space import LogUniform
    >>> ex = Explorer(factors=(0.5, 2.0), resample_probability=0.0)
    >>> hp, ops = ex({"lr": 0.01}, {"lr": LogUniform(1e-4, 1.0)},
    ...              np.random.default_rng(0))
    """

    def __init__(self, factors=(0.8, 1.2), resample_probability=0.25, explore_fn=None):
        if isinstance(factors, (str, bytes)) or not hasattr(factors, "__iter__"):
            raise TypeError(
                f"`factors` must be a list of numbers. Received: factors={factors!r}"
            )
        factors = tuple(factors)
        if not factors:
            raise ValueError("`factors` must not be empty. Received: factors=()")
        for f in factors:
            if (
                isinstance(f, bool)
                or not isinstance(f, numbers.Real)
                or not math.isfinite(f)
                or f <= 0
            ):
                raise ValueError(
                    "`factors` must be positive finite numbers. "
                    f"Received: factors={factors!r}"
                )
        if (
            isinstance(resample_probability, bool)
            or not isinstance(resample_probability, numbers.Real)
            or not 0 <= resample_probability <= 1
        ):
            raise ValueError(
                "`resample_probability` must be in [0, 1]. "
                f"Received: resample_probability={resample_probability!r}"
            )
        if explore_fn is not None and not callable(explore_fn):
            raise TypeError(
                f"`explore_fn` must be callable. Received: explore_fn={explore_fn!r}"
            )
        self.factors = tuple(float(f) for f in factors)
        self.resample_probability = float(resample_probability)
        self.explore_fn = explore_fn

    def __call__(self, hparams, space, rng):
        """Returns `(new_hparams, ops)`.

        Args:
            hparams: the parent's hyperparameters (dict name -> value).
            space: dict name -> `Hyperparameter`.
            rng: a `numpy.random.Generator`.

        Returns:
            A new dict of hyperparameters (in range) and a dict name -> op text.
        """
        if self.explore_fn is not None:
            return self._custom(hparams, space, rng)
        new, ops = dict(hparams), {}
        for name, spec in space.items():
            if rng.random() < self.resample_probability:
                new[name], ops[name] = spec.sample(rng), "resample"
            else:
                factor = self.factors[int(rng.integers(len(self.factors)))]
                new[name], ops[name] = spec.perturb(hparams[name], factor, rng)
        return new, ops

    def _custom(self, hparams, space, rng):
        out = self.explore_fn(dict(hparams), rng)
        ops = None
        if isinstance(out, tuple) and len(out) == 2:
            out, ops = out
        if not hasattr(out, "items"):
            raise TypeError(
                "`explore_fn` must return a dict of hyperparameters or "
                f"(dict, ops). Received: {out!r}"
            )
        new = dict(hparams)
        new.update(out)
        ops = dict(ops or {})
        for name, spec in space.items():
            clipped = spec.clip(new[name])
            op = ops.get(name, "custom")
            if clipped != new[name]:
                op += " (clipped)"
            new[name], ops[name] = clipped, op
        return new, ops


def explore(hparams, space, rng, factors=(0.8, 1.2), resample_probability=0.25,
            explore_fn=None):
    """Functional form of `Explorer(...)(hparams, space, rng)`."""
    return Explorer(factors, resample_probability, explore_fn)(
        hparams, space_lib.validate_space(space), rng
    )
