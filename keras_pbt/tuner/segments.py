"""How `PBTOracle` maps keras-tuner trials to PBT segments. Pure Python.

How trials map to PBT: **one trial is one segment of one member**, the
`interval.epochs` epochs between two PBT decisions. A population of `N`
members trained for `max_epochs` epochs in segments of `interval.epochs`
is `N * ceil(max_epochs / interval.epochs)` trials. Besides the member's
hyperparameters, a trial's values carry (as Hyperband's `tuner/trial_id`
does):

* `pbt/member`: the member (0..N-1);
* `pbt/segment`: the segment index (0 for the first);
* `pbt/action`: `"init"`, `"keep"`, `"exploit"` or `"restart"`;
* `pbt/parent_trial`: the trial whose checkpoint (weights and optimizer
  state) this segment starts from: the member's own previous segment
  (`keep`), the copied member's segment (`exploit`), or `""` (`init`);
* `pbt/initial_epoch`, `pbt/epochs`: the epochs this segment trains;
* `pbt/initial_step`: the member's own optimizer-step count at the start
  (an exploit copies the parent's optimizer, iteration count included, but
  the member's steps go on from its own, as in `PBTCallback`).

Hyperparameters are explored, except two kinds that a segment takes from
the trial it continues (its own previous segment, or the parent it
copies): `inherited` ones (those that change the weights' layout, found by
`PBTTuner`, and those that other hyperparameters depend on through
`parent_name` / `conditional_scope`), so an architecture spreads by
selection; and `frozen` ones, pinned per member, whose equal values form a
sub-population. A conditional hyperparameter is explored where it is
active.

A trial's score is the objective at the end of its segment, and its
`best_step` the member's optimizer step count there. Every decision is a
`keras_pbt.LineageRecord`, appended to `<project>/pbt_lineage.jsonl` and
written to TensorBoard (one run per member) as the `PBTCallback` writes it.

Only the standard oracle calls are used, so keras-tuner's distributed
chief/worker mode works unchanged: everything a worker needs is in the
trial's hyperparameter values.
"""

from keras_pbt.tuner import convert

MEMBER = "pbt/member"
SEGMENT = "pbt/segment"
ACTION = "pbt/action"
PARENT_TRIAL = "pbt/parent_trial"
INITIAL_EPOCH = "pbt/initial_epoch"
EPOCHS = "pbt/epochs"
INITIAL_STEP = "pbt/initial_step"
PBT_KEYS = (MEMBER, SEGMENT, ACTION, PARENT_TRIAL, INITIAL_EPOCH, EPOCHS, INITIAL_STEP)
# The metric a worker reports the member's optimizer step count in.
STEP_METRIC = "pbt/step"


def user_values(values):
    """The hyperparameter values without the `pbt/` bookkeeping entries."""
    return {k: v for k, v in values.items() if not str(k).startswith("pbt/")}


def initial_values(hyperparameters, rng):
    """A member's first values: each active hyperparameter sampled with `rng`.

    Args:
        hyperparameters: the oracle's `keras_tuner.HyperParameters`.
        rng: a `numpy.random.Generator`.
    """
    hps = hyperparameters.copy()
    hps.values = {}
    for hp in hps.space:  # parents come before their conditional children
        if hps.is_active(hp):
            spec = convert.spec_from_hyperparameter(hp)
            hps.values[hp.name] = hp.default if spec is None else spec.sample(rng)
    return dict(hps.values)


def active_values(hyperparameters, values):
    """`values` without the hyperparameters that are inactive under them
    (a conditional one whose parent has another value)."""
    hps = hyperparameters.copy()
    hps.values = dict(values)
    active = {hp.name for hp in hps.space if hps.is_active(hp)}
    names = {hp.name for hp in hps.space}
    return {k: v for k, v in values.items() if k in active or k not in names}
