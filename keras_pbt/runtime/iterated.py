"""Iterated PBT in a member's callback: the glue that acts on the restarts
`keras_pbt.core.iterated` decides.

A `PBTCallback` given `interval=keras_pbt.Iterated(...)`
holds one `IteratedRestarts`: it says which epochs end an interval, and at
each judged boundary of a synchronous population it records the
population's best and, when the population stagnated, restarts the member
there: the best member keeps a copy of itself (`store.keep_champion`),
every member takes new hyperparameters and new weights (initial, or shrunk
and perturbed), and the interval grows.
"""

import keras

from keras_pbt import backend as backend_lib
from keras_pbt.core import iterated as iterated_lib
from keras_pbt.core import space as space_lib
from keras_pbt.core.policy import Decision
from keras_pbt.runtime import snapshot as snapshot_lib


def shrink_perturb(model, initial, shrink, perturb):
    """Sets each trainable weight `w` of `model` to `shrink * w + perturb * w0`,
    `w0` its value in `initial` (a `Snapshot` of the same model).

    The optimizer's state (and its step count) and the non-trainable weights
    (a BatchNormalization's statistics) are left as they are. A restart to
    the initial weights is `keras_pbt.runtime.snapshot.restore_weights`.

    Args:
        model: a built `keras.Model`.
        initial: a `Snapshot` of `model` (its initial weights).
        shrink: the factor on the current weights.
        perturb: the factor on the initial weights.

    Example:

    ```python
    shrink_perturb(model, initial_snapshot, 0.2, 0.1)
    ```
    """
    backend = backend_lib.current()
    trainable = {id(v) for v in model.trainable_variables}
    for variable, w0 in snapshot_lib.weight_pairs(model, initial):
        if id(variable) in trainable:
            w = keras.ops.convert_to_numpy(variable)
            w0 = keras.ops.convert_to_numpy(w0)
            backend.assign(variable, (shrink * w + perturb * w0).astype(w.dtype))


class IteratedRestarts:
    """The Iterated PBT part of one `PBTCallback`.

    Args:
        callback: the `PBTCallback` (its `interval` is a `keras_pbt.Iterated`).

    Attributes:
        tracker: the member's `keras_pbt.core.iterated.IterationTracker`.
        initial_snapshot: the member's initial `Snapshot` (set by
            `Population.fit`, or captured at the start of the first `fit`).
    """

    def __init__(self, callback):
        self.callback = callback
        self.settings = callback.interval
        self.tracker = iterated_lib.IterationTracker(self.settings.epochs, callback.mode)
        self.initial_snapshot = None

    def on_train_begin(self):
        cb = self.callback
        if self.initial_snapshot is None:
            self.initial_snapshot = snapshot_lib.capture(cb.model, cb.member_id, cb.state.steps,
                                                         cb.state.hparams, on_device=False)

    def is_boundary(self, epochs):
        """Whether `epochs` ends an interval (and, if so, the next one is set)."""
        if not self.tracker.is_boundary(epochs):
            return False
        self.tracker.passed(epochs)
        return True

    def boundary(self, plan, history):
        """At a judged boundary: records the population's best; restarts the
        member when the population stagnated.

        Args:
            plan: the member's `BoundaryPlan`, with the reports of every
                member at this boundary.
            history: every report so far, for PB2's explore (or None).

        Returns:
            The restart `Decision`, or None (decide as usual).
        """
        cb, settings, tracker = self.callback, self.settings, self.tracker
        tracker.observe(iterated_lib.population_best(plan.reports, cb.mode))
        epochs = cb.state.epochs
        if not (tracker.stagnated(settings.patience)
                and tracker.restart_allowed(epochs, (cb.params or {}).get("epochs"),
                                            settings.growth)):
            return None
        me = plan.report
        best = next(r for r in plan.reports if r.member_id == plan.ranked[0].member_id)
        if best.member_id == cb.member_id:
            cb.store.keep_champion(snapshot_lib.capture(
                cb.model, cb.member_id, me.step, cb.state.hparams, me.metric, on_device=False))
        fresh, random = iterated_lib.restart_draw(
            [r.member_id for r in plan.reports], cb.store.seed, plan.key,
            settings.fresh_fraction, settings.random_fraction)
        if cb.member_id in random:
            hparams = space_lib.sample_space(cb.space, cb.state.rng)
            ops = {k: "resample" for k in hparams}
        else:
            hparams, ops = cb.engine.explore(best.hparams, cb.state.rng, history)
        length = tracker.length
        fresh_weights = cb.member_id in fresh
        if fresh_weights:
            snapshot_lib.restore_weights(cb.model, self.initial_snapshot)
            weights = "its initial weights"
        else:
            shrink_perturb(cb.model, self.initial_snapshot, settings.shrink, settings.perturb)
            weights = (f"{settings.shrink:g} x its weights + {settings.perturb:g} x its initial "
                       "weights")
        source = ("from the space" if cb.member_id in random
                  else f"explored from member {best.member_id!r}")
        tracker.restarted(epochs, settings.growth)
        reason = (f"iterated PBT: the population's best did not improve for "
                  f"{settings.patience} boundaries; restart {tracker.restarts}, interval "
                  f"{length} -> {tracker.length} epochs; hyperparameters {source}; "
                  f"weights: {weights}")
        return Decision(cb.member_id, "restart", hparams, dict(me.hparams), me.metric,
                        parent=None if fresh_weights else cb.member_id,
                        parent_step=None if fresh_weights else me.step,
                        parent_metric=None if fresh_weights else me.metric,
                        ops=ops, reason=reason)

