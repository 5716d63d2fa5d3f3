"""Iterated PBT: restart a stagnating population with a longer interval. Pure Python + NumPy.

Iterated PBT (Chebykin, Alderliesten and Bosman 2025, arXiv 2511.09190)
answers "how often should members decide?" by not asking: a population
starts deciding every short interval; when the population's best metric
stops improving for `patience` boundaries, every member restarts at that
boundary with an interval `growth` times longer. At a restart each member
takes new hyperparameters (a `random_fraction` of the members from the
space, the others by exploring the best member's) and new weights (a
`fresh_fraction` of the members from their initial weights, the others
shrunk and perturbed: `shrink * w + perturb * w_initial`). A restart is
made only when at least two boundaries of the longer interval fit in the
epochs left; the best member at the restart is kept (a "champion"), so a
restart never loses the best model found.

This module decides; `keras_pbt.runtime.iterated` acts. The settings are
`keras_pbt.Iterated` (`keras_pbt.core.config`).

Differences from the paper, on purpose: the hyperparameters of the
explored half come from the population's own explore (perturb, or PB2's
GP with `explore="pb2"`) rather than a second, time-varying GP over
restarts; the perturbation adds the member's *initial* weights rather than
a new draw (the initializers of an arbitrary Keras model cannot be re-run
in general); the population is not widened at a restart; stagnation is
"no better best for `patience` boundaries" rather than a GP fit to the
best's curve.
"""

import zlib

import numpy as np

from keras_pbt.core import selection as selection_lib
from keras_pbt.core.validation import check_mode


class IterationTracker:
    """One member's view of the current iteration: its interval, the
    population's best at each boundary since the last restart, restarts so far.

    Every member of a synchronous population sees the same reports at each
    boundary, so every member's tracker decides the same restarts.

    Args:
        length: the first interval, in epochs.
        mode: `"min"` or `"max"`.

    Attributes:
        length: the interval now, in epochs.
        next_boundary: the epoch count at which the next boundary falls.
        bests: the population's best metric at each judged boundary of
            this iteration.
        restarts: restarts so far.

    Example:

    >>> t = IterationTracker(1, "max")
    >>> for best in (0.5, 0.6, 0.6, 0.6, 0.6):
    ...     t.observe(best)
    >>> t.stagnated(patience=3)
    True
    """

    def __init__(self, length, mode):
        self.mode = check_mode(mode)
        self.length = int(length)
        self.next_boundary = int(length)
        self.bests = []
        self.restarts = 0

    def is_boundary(self, epochs):
        """Whether `epochs` trained epochs end an interval."""
        return int(epochs) >= self.next_boundary

    def passed(self, epochs):
        """A boundary at `epochs` was passed: the next one is an interval later."""
        self.next_boundary = int(epochs) + self.length

    def observe(self, best):
        """Adds the population's best metric at a judged boundary."""
        self.bests.append(float(best))

    def stagnated(self, patience):
        """Whether the last `patience` bests failed to beat every best before them."""
        patience = int(patience)
        if len(self.bests) <= patience:
            return False
        best_before = _best(self.bests[:-patience], self.mode)
        best_recent = _best(self.bests[-patience:], self.mode)
        if best_before is None:
            return False
        if best_recent is None:
            return True
        return not (best_recent > best_before if self.mode == "max" else best_recent < best_before)

    def restart_allowed(self, epochs, total_epochs, growth):
        """Whether two intervals `growth` times longer fit in the epochs left."""
        if total_epochs is None:
            return False
        return int(epochs) + 2 * self.length * int(growth) <= int(total_epochs)

    def restarted(self, epochs, growth):
        """Begins the next iteration at `epochs`: a longer interval, no bests yet."""
        self.length *= int(growth)
        self.bests = []
        self.restarts += 1
        self.passed(epochs)

    def get_state(self):
        """JSON-friendly state, for `set_state` (member checkpoints)."""
        return {"length": self.length, "next_boundary": self.next_boundary,
                "bests": list(self.bests), "restarts": self.restarts}

    def set_state(self, state):
        """Puts back a `get_state()` dict."""
        self.length = int(state["length"])
        self.next_boundary = int(state["next_boundary"])
        self.bests = [float(b) for b in state["bests"]]
        self.restarts = int(state["restarts"])


def _best(values, mode):
    finite = [v for v in values if selection_lib.is_finite(v)]
    if not finite:
        return None
    return max(finite) if mode == "max" else min(finite)


def population_best(reports, mode):
    """The best finite metric of `reports` (NaN when none is finite)."""
    best = _best([r.metric for r in reports], mode)
    return float("nan") if best is None else best


def restart_draw(member_ids, seed, key, fresh_fraction, random_fraction):
    """Which members restart from their initial weights, and which draw
    their hyperparameters from the space, at one restart.

    The draw depends only on the population's seed, the boundary `key` and
    the member ids, so every member computes the same sets.

    Args:
        member_ids: the ids of every member restarting.
        seed: the population's seed.
        key: the boundary key of the restart.
        fresh_fraction: fraction of members given their initial weights.
        random_fraction: fraction of members given hyperparameters sampled
            from the space (the others explore the best member's).

    Returns:
        `(fresh, random)`: two sets of member ids.

    Example:

    >>> fresh, random = restart_draw([0, 1, 2, 3], seed=0, key=5, fresh_fraction=0.5,
    ...                              random_fraction=0.5)
    >>> len(fresh), len(random)
    (2, 2)
    """
    ids = sorted(member_ids, key=repr)
    rng = np.random.default_rng([int(seed), int(key), zlib.crc32(b"iterated")])
    n = len(ids)
    fresh = rng.permutation(n)[:int(round(fresh_fraction * n))]
    random = rng.permutation(n)[:int(round(random_fraction * n))]
    return {ids[i] for i in fresh}, {ids[i] for i in random}
