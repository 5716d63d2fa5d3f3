"""The PBT arms of the search-quality benchmark, one entry each.

An arm is what differs between two PBT runs of the same task and seed: the
`keras_pbt.Policy`, other `Population` arguments, `fit` arguments, how many
configurations it starts from, and how the final model is chosen. What the
task fixes (data, model, space, epochs, batch size, monitor, mode) no arm
changes. Every arm is run at each interval of `--intervals` (1, 2 and 4
epochs by default) unless it fixes its own `intervals`.

To add an arm, add one entry to `ARMS`:

```python
ARMS["pbt-ttest"] = Arm(policy=keras_pbt.Policy(selection="ttest"),
                        note="t-test selection")
```

and run `python benchmarks/search_quality.py --arms pbt-ttest --label <label>`.
Its compute is counted from what trained (every epoch of every member, see
`search_baselines.EpochCounter`), so an arm that trains more than 1x (more
configurations early, restarts) is reported at its real cost.

Each run hands back one model per entry of `finals` (default: `""`, the
population's `best_model()`, and `"+select"`, `best_model(validation_data=
select)`, the README's recommended choice); the table calls them
`<arm> i<interval>` and `<arm> i<interval> +select`.
"""

import dataclasses
import json
from typing import Any, Callable, Mapping, Optional, Tuple

import keras_pbt
import search_tasks


def final_last(pop, data):
    """The population's own choice: the best member at its last boundary."""
    return pop.best_model()


def final_select(pop, data):
    """The README's recommended choice: the best member on the `select` split."""
    return pop.best_model(validation_data=data["select"], batch_size=500)


FINALS = {"": final_last, "+select": final_select}


@dataclasses.dataclass(frozen=True)
class Arm:
    """One PBT arm.

    Args:
        policy: a `keras_pbt.Policy`, or a function of no argument returning
            one (for a policy holding a stateful strategy object). Defaults
            to `Policy()`.
        population: more keyword arguments of `keras_pbt.Population` (they
            override the harness's, e.g. `synchronous=False`).
        fit: more keyword arguments of `Population.fit` (e.g.
            `validation_freq=1`; by default validation runs every interval).
        intervals: the `interval` values this arm runs at (e.g.
            `("auto",)`), or None for `--intervals`.
        configs: how many configurations it is handed as `initial_hparams`
            (the first `configs` of random search's draws: the first 8 are
            random search 1x's, all 32 random search 4x's). Defaults to 8.
        size: `population_size`. Defaults to 8.
        finals: name -> `fn(population, data) -> keras.Model`, the final
            choices to score (default `FINALS`).
        note: one line for the report.
    """

    policy: Any = None
    population: Mapping = dataclasses.field(default_factory=dict)
    fit: Mapping = dataclasses.field(default_factory=dict)
    intervals: Optional[Tuple] = None
    configs: int = search_tasks.SIZE
    size: int = search_tasks.SIZE
    finals: Mapping[str, Callable] = dataclasses.field(default_factory=lambda: dict(FINALS))
    note: str = ""

    def make_policy(self):
        """A fresh `keras_pbt.Policy` for one run."""
        if self.policy is None:
            return keras_pbt.Policy()
        return self.policy() if callable(self.policy) else self.policy

    def describe(self):
        """The arm's full description: part of its cache key.

        Raises:
            ValueError: when a part has no stable text (a repr with a memory
                address): give the object a `__repr__` naming its settings.
        """
        text = json.dumps({
            "policy": repr(self.make_policy()),
            "population": {k: repr(v) for k, v in sorted(self.population.items())},
            "fit": {k: repr(v) for k, v in sorted(self.fit.items())},
            "configs": self.configs, "size": self.size,
            "finals": {k: getattr(f, "__qualname__", repr(f)) for k, f in self.finals.items()},
        }, sort_keys=True)
        if " at 0x" in text:
            raise ValueError(
                "An arm's description names an object by its address, which changes between "
                f"runs; give it a __repr__ naming its settings. Received: {text}")
        return text


ARMS = {
    "pbt": Arm(note="the defaults: truncation 0.2, last value, perturb x0.8/x1.2, resample 0.25"),
    "pbt-mean": Arm(policy=keras_pbt.Policy(ranking="mean"), note="ranked by the mean of the "
                    "latest 3 reports"),
    "pbt-fire": Arm(policy=keras_pbt.Policy(selection="fire"),
                    note="half the population ranked by improvement rate"),
    "pb2": Arm(policy=keras_pbt.Policy(explore="pb2"), note="explore by PB2's GP bandit"),
}
