"""A wide start at equal compute: more starting configurations than members.

PBT with N members starts from N configurations, and once the population
has collapsed onto one line it can only refine that line's schedule; random
search with 4x the compute draws 4N configurations. `WideStart` gives PBT
that coverage within its own budget: the population starts from
`factor * N` configurations, each member's device trains several of them
in turn for `rung_epochs` epochs, and successive halving (divide by
`reduction` at each cut, on the monitored metric) cuts them to N, which
then train on as the population's members, with PBT's decisions.

**Compute.** Every member's device trains exactly the `epochs` given to
`fit`: the start takes the first `start_epochs` of them (the
configurations it trains in turn, one after the other), PBT the rest. So a
population of N members trains N * epochs epochs in all, as without a wide
start; the survivors' weights have trained `survivor_epochs` epochs when
PBT begins, and the final members `epochs - start_epochs + survivor_epochs`
(e.g. 4N configurations for 1 epoch cut to N: 4 epochs of start, the final
models trained 27 of 30 epochs). `StartPlan.epochs_trained` is the total.

Pure Python: the plan, the cut and who trains what. The population runs it
(`keras_pbt.population.wide_start`).
"""

import dataclasses
import math
from typing import Tuple

import numpy as np

from keras_pbt.core import selection as selection_lib
from keras_pbt.core.ancestry import member_order_key
from keras_pbt.core.validation import check_int


@dataclasses.dataclass(frozen=True)
class Rung:
    """One rung of the start.

    Attributes:
        configurations: how many configurations train in this rung.
        per_member: how many of them each member's device trains, in turn.
        epochs: epochs each configuration trains in this rung.
        keep: how many survive the cut at its end.
    """

    configurations: int
    per_member: int
    epochs: int
    keep: int


@dataclasses.dataclass(frozen=True)
class StartPlan:
    """What a `WideStart` does for one population and one `fit`.

    Attributes:
        rungs: the `Rung`s, in order; the last keeps `population_size`.
        population_size: the members (devices) training at once.
        epochs: the epochs each member's device trains in the `fit`.
        start_epochs: epochs of each device spent on the start.
        survivor_epochs: epochs a survivor's weights have when PBT begins.
    """

    rungs: Tuple[Rung, ...]
    population_size: int
    epochs: int
    start_epochs: int
    survivor_epochs: int

    @property
    def configurations(self):
        """How many configurations the population starts from."""
        return self.rungs[0].configurations

    @property
    def final_epochs(self):
        """Epochs the final members' weights have trained at the end of `fit`."""
        return self.survivor_epochs + self.epochs - self.start_epochs

    @property
    def epochs_trained(self):
        """Epochs trained in all: `population_size * epochs`, as without a start."""
        start = sum(r.configurations * r.epochs for r in self.rungs)
        return start + self.population_size * (self.epochs - self.start_epochs)


class WideStart:
    """Start PBT from `factor` times more configurations than members.

    Give it as `keras_pbt.Policy(start=WideStart(...))` to a `Population`
    (the callback and the keras-tuner tuner do not run it). See
    `keras_pbt.core.wide_start` for the compute accounting: the population
    trains `population_size * epochs` epochs in all, start included.

    Args:
        factor: starting configurations per member, >= 2; a power of
            `reduction`. Defaults to `4`.
        rung_epochs: epochs every configuration trains before each cut.
            Defaults to `1`.
        reduction: each cut keeps one configuration in `reduction`, >= 2.
            Defaults to `factor` (one cut, straight to the members).

    Example:

    >>> plan = WideStart(factor=4, rung_epochs=1).plan(population_size=8, epochs=30)
    >>> plan.configurations, plan.start_epochs, plan.final_epochs, plan.epochs_trained
    (32, 4, 27, 240)
    >>> [(r.configurations, r.keep) for r in WideStart(4, reduction=2).plan(8, 30).rungs]
    [(32, 16), (16, 8)]
    """

    def __init__(self, factor=4, rung_epochs=1, reduction=None):
        self.factor = check_int("factor", factor, minimum=2)
        self.rung_epochs = check_int("rung_epochs", rung_epochs)
        self.reduction = check_int("reduction", self.factor if reduction is None else reduction,
                                   minimum=2)
        cuts = round(math.log(self.factor, self.reduction))
        if self.reduction ** cuts != self.factor:
            raise ValueError(
                f"`factor` must be a power of `reduction` (each cut keeps 1 in {self.reduction}). "
                f"Received: factor={factor!r}, reduction={reduction!r}")
        self.cuts = cuts

    def plan(self, population_size, epochs):
        """The `StartPlan` for `population_size` members training `epochs` epochs.

        Args:
            population_size: the members, >= 2.
            epochs: the epochs every member's device trains in the `fit`.

        Returns:
            A `StartPlan`: the rungs (configurations, per member, epochs,
            kept) and how the epochs split between the start and PBT.

        Example:

        >>> plan = WideStart(4).plan(8, 30)
        >>> plan.configurations, plan.start_epochs, plan.final_epochs
        (32, 4, 27)

        Raises:
            ValueError: the start would take all of `epochs` (or more).
        """
        n = check_int("population_size", population_size, minimum=2)
        epochs = check_int("epochs", epochs)
        rungs, per_member = [], self.factor
        for _ in range(self.cuts):
            rungs.append(Rung(n * per_member, per_member, self.rung_epochs,
                              n * per_member // self.reduction))
            per_member //= self.reduction
        start = sum(r.per_member * r.epochs for r in rungs)
        if start >= epochs:
            raise ValueError(
                f"{self!r} trains {start} epochs on each member's device before PBT begins, "
                f"all of fit's epochs: train longer or start narrower. Received: epochs={epochs}")
        return StartPlan(tuple(rungs), n, epochs, start, self.cuts * self.rung_epochs)

    def __repr__(self):
        return (f"WideStart(factor={self.factor}, rung_epochs={self.rung_epochs}, "
                f"reduction={self.reduction})")

    def __eq__(self, other):
        return isinstance(other, WideStart) and (
            (self.factor, self.rung_epochs, self.reduction)
            == (other.factor, other.rung_epochs, other.reduction))

    def __hash__(self):
        return hash((WideStart, self.factor, self.rung_epochs, self.reduction))


def candidate_ids(member_ids, count):
    """Ids of `count` starting configurations: the members' own first, then new ones.

    Integer member ids go on with the next integers; other ids get
    `"candidate-<k>"` (a number that no member id uses).

    Example:

    >>> candidate_ids([0, 1], 4)
    [0, 1, 2, 3]
    >>> candidate_ids(["a", "b"], 4)
    ['a', 'b', 'candidate-2', 'candidate-3']
    """
    ids = list(member_ids)
    if all(isinstance(m, int) and not isinstance(m, bool) for m in ids):
        top = max(ids)
        return ids + list(range(top + 1, top + 1 + count - len(ids)))
    taken = {str(m) for m in ids}
    k = len(ids)
    while len(ids) < count:
        name = f"candidate-{k}"
        if name not in taken:
            ids.append(name)
        k += 1
    return ids


def cut(reports, keep, mode, rng):
    """The `keep` best configurations of a rung, best first.

    Args:
        reports: one `Report` per configuration (`member` is its id).
        keep: how many survive.
        mode: `"min"` or `"max"`.
        rng: a `numpy.random.Generator` breaking ties (non-finite metrics last).

    Returns:
        A list of configuration ids.
    """
    ranked = selection_lib.rank(list(reports), mode, rng)
    return [r.member_id for r in ranked[:keep]]


def assign(candidates, slots, per_slot):
    """Which configurations each member's device trains in a rung, in order.

    A configuration that is a member's own (its id is the member's) stays
    on that member's device, first; the others fill the devices in
    `candidates`' order, `per_slot` each.

    Args:
        candidates: configuration ids, `len(slots) * per_slot` of them.
        slots: the member ids.
        per_slot: configurations per device.

    Returns:
        dict member id -> list of configuration ids.

    Example:

    >>> assign([5, 1, 4, 7], slots=[0, 1], per_slot=2)
    {0: [5, 4], 1: [1, 7]}
    """
    if len(candidates) != len(slots) * per_slot:
        raise ValueError(f"{len(candidates)} configurations do not fill {len(slots)} devices "
                         f"with {per_slot} each. Received: candidates={list(candidates)!r}")
    out = {s: [] for s in slots}
    rest = []
    for c in candidates:
        if c in out and not out[c]:
            out[c].append(c)
        else:
            rest.append(c)
    for s in sorted(slots, key=member_order_key):
        while len(out[s]) < per_slot:
            out[s].append(rest.pop(0))
    return out


def cut_rng(seed, rung):
    """The tie-breaking generator of rung `rung`'s cut (the same for every member)."""
    return np.random.default_rng([int(seed), 1 << 20, int(rung)])

