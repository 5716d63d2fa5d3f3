"""`Policy`: the PBT policy's settings as one object. Pure Python + NumPy.

The callback, the population, the oracle and the tuner all take `policy=`;
their `quantile=`, `selection=`, `factors=`, ... keywords are shortcuts
resolved by `resolve_policy`.
"""

import dataclasses
import warnings
from typing import Any, Callable, Optional, Tuple

from keras_pbt.core import explore as explore_lib
from keras_pbt.core import pb2 as pb2_lib
from keras_pbt.core import policy as policy_lib
from keras_pbt.core import ranking as ranking_lib
from keras_pbt.core import selection as selection_lib

# The shortcut keywords of the front doors, in the order of `Policy`'s fields.
FIELDS = ("quantile", "selection", "ranking", "factors", "resample_probability", "explore_fn",
          "explore", "copy_optimizer_state")


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
            self.explore_fn, seed=seed, ranking=self.ranking, explore=self.explore)
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


def _same(a, b):
    if a is b:
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an object that cannot compare is not the same
        return False


def resolve_policy(policy=None, **shortcuts):
    """The `Policy` from `policy=` and the front door's shortcut keywords.

    A keyword left at `None` is not given. Without `policy`, the given
    keywords make a new `Policy`; with it, a given keyword must agree
    with the policy's value.

    Args:
        policy: a `Policy`, or `None`.
        **shortcuts: `quantile=`, `selection=`, ... (the fields of `Policy`).

    Returns:
        A `Policy`.

    Raises:
        ValueError: a keyword disagrees with `policy`; names both.
        TypeError: `policy` is not a `Policy`.

    Example:

    >>> resolve_policy(None, quantile=0.25, selection=None).quantile
    0.25
    """
    unknown = sorted(set(shortcuts) - set(FIELDS))
    if unknown:
        raise TypeError(f"Unknown policy keywords {unknown}. Received: {shortcuts!r}")
    given = {k: v for k, v in shortcuts.items() if v is not None}
    if policy is None:
        return Policy(**given)
    if not isinstance(policy, Policy):
        raise TypeError(f"`policy` must be a keras_pbt.Policy. Received: policy={policy!r}")
    for name, value in given.items():
        if not _same(value, getattr(policy, name)):
            raise ValueError(
                f"`{name}` is given both in `policy` ({name}={getattr(policy, name)!r}) and as "
                f"a keyword with another value: give it in one place. Received: "
                f"policy={policy!r}, {name}={value!r}"
            )
    return policy


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
    return out
