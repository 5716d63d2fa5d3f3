"""The settings every front door takes as objects. Pure Python + NumPy.

* `Policy`: how a population ranks, selects and explores (`policy=`);
* `Interval`: when members decide (`interval=`: an int is every N epochs).

The callback, the population, the oracle and the tuner take the same two
keywords and read them with `get_policy` and `get_interval`, so a setting
is spelled once, here, for every front door.
"""

import dataclasses
import numbers
import warnings
from typing import Any, Callable, Optional, Tuple

from keras_pbt.core import explore as explore_lib
from keras_pbt.core import lines as lines_lib
from keras_pbt.core import noise as noise_lib
from keras_pbt.core import pb2 as pb2_lib
from keras_pbt.core import policy as policy_lib
from keras_pbt.core import ranking as ranking_lib
from keras_pbt.core import selection as selection_lib
from keras_pbt.core import wide_start as wide_lib
from keras_pbt.core.validation import check_int


@dataclasses.dataclass(frozen=True)
class Policy:
    """How a population ranks, selects and explores: one object for every front door.

    Give it as `policy=` to `PBTCallback`, `Population`, `PBTOracle` or
    `PBTTuner`. Every argument is checked here, when the policy is made.

    Args:
        quantile: fraction of losers and of possible parents, in `(0, 0.5]`.
            Defaults to `0.2`.
        selection: `"truncation"`, `"tournament"`, `"ttest"`, `"fire"` or a
            `keras_pbt.Selection` instance. Defaults to `"truncation"`.
        ranking: `"last"`, `"mean"` or a `keras_pbt.Ranking` instance.
            Defaults to `"last"`.
        factors: explore's perturbation factors, positive. Factors all on
            one side of 1 (`(1.2,)`: numeric values only grow) or all 1
            (nothing moves) warn and say what explore will do. Defaults to
            `(0.8, 1.2)`.
        resample_probability: chance, in `[0, 1]`, to resample a value
            instead of perturbing it. Defaults to `0.25`.
        explore_fn: optional `fn(hparams, rng) -> dict` replacing explore.
            Defaults to `None`.
        explore: `"perturb"`, `"pb2"` or an explorer instance (not with
            `explore_fn`). Defaults to `"perturb"`.
        copy_optimizer_state: on exploit, copy the parent's optimizer state
            (True) or reset it (False). Defaults to `True`.
        margin: how much better a parent must be for a loser to copy it:
            a `keras_pbt.Margin` such as `keras_pbt.StandardError(z=1.0)`
            (z standard errors of the difference the validation split can
            measure: the population knows the split's size; a bare
            `PBTCallback` needs its `validation_size` set), a number (a
            fixed difference in the metric's units), or `None` / `0` (any
            strictly better parent, the paper's rule). Measured on
            MNIST-1D (docs/search-quality.md), the standard error keeps
            decisions every epoch from copying noise. Defaults to
            `StandardError(1.0)`.
        lines: `None` or a `keras_pbt.KeepLines`: keep at least
            `min_lines` starting lines alive unless a parent is far better
            than the last member of a line. Defaults to `None`.
        start: how the population starts: `None` (from `population_size`
            configurations) or a `keras_pbt.WideStart` (from more, cut to
            `population_size` by successive halving within the same
            compute). Only `Population` follows it. Defaults to `None`.

    Example:

    >>> policy = Policy(quantile=0.25, factors=(0.5, 2.0))
    >>> policy.quantile, policy.selection
    (0.25, 'truncation')
    """

    quantile: float = 0.2
    selection: Any = "truncation"
    ranking: Any = "last"
    factors: Tuple[float, ...] = (0.8, 1.2)
    resample_probability: float = 0.25
    explore_fn: Optional[Callable] = None
    explore: Any = "perturb"
    copy_optimizer_state: bool = True
    margin: Any = noise_lib.StandardError(1.0)
    lines: Any = None
    start: Any = None

    def __post_init__(self):
        quantile = selection_lib.check_quantile(self.quantile)
        if self.selection != "fire":
            selection_lib.get_selection(self.selection, quantile)
        ranking_lib.get_ranking(self.ranking)
        explorer = explore_lib.Explorer(self.factors, self.resample_probability, self.explore_fn)
        if pb2_lib.get_explore(self.explore) is not None and self.explore_fn is not None:
            raise ValueError(
                "Give `explore_fn` or `explore`, not both. Received: "
                f"explore={self.explore!r}, explore_fn={self.explore_fn!r}"
            )
        if not isinstance(self.copy_optimizer_state, bool):
            raise TypeError("`copy_optimizer_state` must be True or False. "
                            f"Received: copy_optimizer_state={self.copy_optimizer_state!r}")
        noise_lib.get_margin(self.margin)
        if self.lines is not None and not isinstance(self.lines, lines_lib.KeepLines):
            raise ValueError("`lines` must be None or a keras_pbt.KeepLines. "
                             f"Received: lines={self.lines!r}")
        if self.start is not None and not isinstance(self.start, wide_lib.WideStart):
            raise ValueError("`start` must be None or a keras_pbt.WideStart. "
                             f"Received: start={self.start!r}")
        if self.explore_fn is None and pb2_lib.get_explore(self.explore) is None:
            _warn_one_sided(explorer.factors, explorer.resample_probability)
        object.__setattr__(self, "quantile", quantile)
        object.__setattr__(self, "factors", explorer.factors)
        object.__setattr__(self, "resample_probability", explorer.resample_probability)

    def make(self, space, mode, seed=None):
        """The `PBTPolicy` (the decisions) for one population.

        Args:
            space: dict name -> `Hyperparameter`.
            mode: `"min"` or `"max"`.
            seed: the population's seed (same for every member).

        Returns:
            A `PBTPolicy` whose `config` is this `Policy`.
        """
        engine = policy_lib.PBTPolicy(
            space, mode, self.selection, self.quantile, self.factors, self.resample_probability,
            self.explore_fn, seed=seed, ranking=self.ranking, explore=self.explore,
            margin=self.margin, lines=self.lines)
        engine.config = self
        return engine


def _warn_one_sided(factors, resample_probability):
    """Warns when perturbing by `factors` cannot move numeric values both ways."""
    up, down = any(f > 1 for f in factors), any(f < 1 for f in factors)
    if up and down:
        return
    if up or down:
        what = (f"explore can only {'raise' if up else 'lower'} numeric hyperparameters: "
                f"a perturbation multiplies them by {_listed(factors)}")
    else:
        what = "perturbing leaves numeric hyperparameters unchanged (every factor is 1)"
    resampling = (f"only resampling (resample_probability={resample_probability:g}) moves them "
                  f"{'the other way' if up or down else 'at all'}" if resample_probability
                  else f"with resample_probability=0 nothing moves them "
                       f"{'the other way' if up or down else 'at all'}")
    warnings.warn(f"`factors`: {what}; {resampling}. Give factors on both sides of 1, such "
                  f"as (0.8, 1.2). Received: factors={tuple(factors)!r}", UserWarning, stacklevel=4)


def _listed(factors):
    return " or ".join(f"{f:g}" for f in dict.fromkeys(factors))


def get_policy(policy):
    """The `Policy` a front door was given (`Policy()` for `None`).

    Args:
        policy: a `Policy`, or `None`.

    Returns:
        A `Policy`.

    Raises:
        TypeError: `policy` is not a `Policy`.

    Example:

    >>> get_policy(None).quantile
    0.2
    """
    if policy is None:
        return Policy()
    if not isinstance(policy, Policy):
        raise TypeError(
            "`policy` must be a keras_pbt.Policy, e.g. policy=keras_pbt.Policy(quantile=0.25). "
            f"Received: policy={policy!r}")
    return policy


def refuse_policy_keywords(door, kwargs):
    """Raises for `Policy` fields given to a front door's `**kwargs`.

    Args:
        door: the front door's name, for the message.
        kwargs: the keyword arguments it was given.

    Raises:
        TypeError: naming the fields and how to give them.
    """
    fields = sorted(set(kwargs) & {f.name for f in dataclasses.fields(Policy)})
    if fields:
        given = ", ".join(f"{k}={kwargs[k]!r}" for k in fields)
        raise TypeError(
            f"{door} takes the policy's settings in one object: "
            f"policy=keras_pbt.Policy({given}). Received: {given}")


@dataclasses.dataclass(frozen=True)
class Interval:
    """When members decide: every `epochs` epochs, or every `steps` optimizer steps.

    Give it as `interval=` to any front door; an int there is `Interval(epochs=n)`.

    Args:
        epochs: decide every this many epochs. Defaults to `1` when
            `steps` is not given.
        steps: decide every this many optimizer steps instead (the callback
            then hooks batches, which turns off Keras' asynchronous batch
            dispatch; the monitored metric must be in the batch logs).
        burn_in: no decisions until this many epochs (or steps, with
            `steps`) are trained. Defaults to `0`.

    Example:

    >>> Interval(steps=100, burn_in=500).unit
    'steps'
    >>> get_interval(2) == Interval(epochs=2)
    True
    """

    epochs: Optional[int] = None
    steps: Optional[int] = None
    burn_in: int = 0

    def __post_init__(self):
        if self.epochs is not None and self.steps is not None:
            raise ValueError(
                "Give `epochs` or `steps` to Interval, not both. Received: "
                f"epochs={self.epochs!r}, steps={self.steps!r}")
        epochs = check_int("epochs", self.epochs, allow_none=True)
        steps = check_int("steps", self.steps, allow_none=True)
        object.__setattr__(self, "epochs", 1 if epochs is None and steps is None else epochs)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "burn_in", check_int("burn_in", self.burn_in, minimum=0))

    @property
    def unit(self):
        """`"epochs"` or `"steps"`."""
        return "steps" if self.steps is not None else "epochs"

    @property
    def length(self):
        """The interval in its unit."""
        return self.steps if self.steps is not None else self.epochs


@dataclasses.dataclass(frozen=True)
class Iterated(Interval):
    """An interval chosen by the population: Iterated PBT's restarts.

    Members decide every `epochs` epochs at first. When the population's
    best monitored metric has not improved for `patience` boundaries, every
    member restarts at that boundary and from then on decides `growth`
    times less often; a restart is made only when two of the longer
    intervals fit in the epochs left. At a restart, a `random_fraction` of
    the members draw new hyperparameters from the space and the others
    explore the best member's; a `fresh_fraction` of the members go back to
    their initial weights and the others shrink and perturb theirs
    (`shrink * w + perturb * w_initial`, trainable weights only). The best
    member at each restart is kept, and `Population.choose` considers it
    beside the final members (Chebykin, Alderliesten and Bosman 2025,
    arXiv 2511.09190; `keras_pbt.core.iterated` lists what differs).

    It needs a synchronous population (`Population`, or `PBTCallback`s on
    a synchronous store) and epoch intervals; `PBTTuner` does not take it.
    It is an option, not the default, and there is no `interval="auto"`:
    on the search-quality benchmark it did not beat a fixed interval
    (docs/search-quality.md, "The interval between decisions").

    Args:
        epochs: the first interval, in epochs. Defaults to `1`.
        burn_in: no decisions until this many epochs. Defaults to `0`.
        patience: boundaries without a better population best before a
            restart. Defaults to `3`.
        growth: the factor by which each restart lengthens the interval,
            an int >= 2. Defaults to `2`.
        shrink: the factor on a member's own weights at a restart, in
            `[0, 1]`. Defaults to `0.2`.
        perturb: the factor on its initial weights added to them, in
            `[0, 1]`. Defaults to `0.1`.
        fresh_fraction: fraction of the members that restart from their
            initial weights, in `[0, 1]`. Defaults to `0.5`.
        random_fraction: fraction of the members that draw their
            hyperparameters from the space, in `[0, 1]`. Defaults to `0.5`.

    Example:

    >>> get_interval(Iterated(patience=2)).unit
    'epochs'
    >>> Iterated(patience=2).length
    1
    """

    patience: int = 3
    growth: int = 2
    shrink: float = 0.2
    perturb: float = 0.1
    fresh_fraction: float = 0.5
    random_fraction: float = 0.5

    def __post_init__(self):
        if self.steps is not None:
            raise ValueError("Iterated PBT lengthens an interval of epochs; it does not take "
                             f"`steps`. Received: steps={self.steps!r}")
        super().__post_init__()
        object.__setattr__(self, "patience", check_int("patience", self.patience))
        object.__setattr__(self, "growth", check_int("growth", self.growth, minimum=2))
        for name in ("shrink", "perturb", "fresh_fraction", "random_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                    0.0 <= value <= 1.0):
                raise ValueError(f"`{name}` must be a number in [0, 1]. "
                                 f"Received: {name}={value!r}")
            object.__setattr__(self, name, float(value))


def get_interval(interval):
    """The `Interval` a front door was given.

    Args:
        interval: an int (every that many epochs), an `Interval` or an
            `Iterated`.

    Returns:
        An `Interval`.

    Raises:
        ValueError: anything else (a string, a float, 0), naming the
            accepted forms.

    Example:

    >>> get_interval(3).epochs
    3
    """
    if isinstance(interval, Interval):
        return interval
    if isinstance(interval, bool) or not isinstance(interval, numbers.Integral) or interval < 1:
        raise ValueError(
            "`interval` must be a positive int (decide every that many epochs), "
            "keras_pbt.Interval(epochs=..., steps=..., burn_in=...) or keras_pbt.Iterated(...). "
            f"Received: interval={interval!r}")
    return Interval(epochs=int(interval))


def unsupported_by_tuner(policy):
    """The fields of `policy` that `PBTOracle` cannot follow, name -> value.

    The oracle ranks by the last value (its reports hold no history),
    explores by perturbing, and copies the optimizer state on exploit.

    Args:
        policy: a `Policy`.

    Returns:
        dict name -> value; empty when the oracle supports the policy.
    """
    out = {}
    if type(ranking_lib.get_ranking(policy.ranking)) is not ranking_lib.LastValue:
        out["ranking"] = policy.ranking
    if pb2_lib.get_explore(policy.explore) is not None:
        out["explore"] = policy.explore
    if not policy.copy_optimizer_state:
        out["copy_optimizer_state"] = policy.copy_optimizer_state
    if policy.start is not None:
        out["start"] = policy.start
    if policy.lines is not None:
        out["lines"] = policy.lines
    return out
