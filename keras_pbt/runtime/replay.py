"""Replay: retrain one model from scratch on the schedule PBT found.

`ScheduleCallback` applies `[(step, hparams)]` inside one plain `model.fit`
(through `HyperparameterApplier`, so each value is used by the very next
step); `replay` reads the schedule of a member's ancestry from a finished
run and trains a fresh model with it.
"""

import numbers
import os

import keras
import numpy as np

from keras_pbt.core import ancestry as schedule_lib
from keras_pbt.runtime.hyperparameters import HyperparameterApplier
from keras_pbt.core.validation import check_int
from keras_pbt.population import data as data_lib
from keras_pbt.storage import events as events_lib


def _check_schedule(schedule):
    if isinstance(schedule, (str, bytes)) or not hasattr(schedule, "__iter__"):
        raise TypeError(f"`schedule` must be a list of (step, hparams). Received: schedule={schedule!r}")
    out = []
    for item in schedule:
        if isinstance(item, schedule_lib.AncestryEntry):
            step, hparams = item.step, item.hparams
        else:
            try:
                step, hparams = item
            except (TypeError, ValueError):
                raise TypeError(
                    f"Each schedule entry must be (step, hparams). Received: {item!r}"
                ) from None
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"Schedule steps must be non-negative ints. Received: step={step!r}")
        if not hasattr(hparams, "items"):
            raise TypeError(f"Schedule hyperparameters must be a dict. Received: {hparams!r}")
        out.append((int(step), dict(hparams)))
    if not out:
        raise ValueError("`schedule` is empty.")
    steps = [s for s, _ in out]
    if steps != sorted(set(steps)):
        raise ValueError(f"Schedule steps must increase strictly. Received steps: {steps}")
    return out


class ScheduleCallback(keras.callbacks.Callback):
    """Applies a hyperparameter schedule at the given optimizer steps.

    Entry `(step, hparams)` takes effect after `step` optimizer steps: the
    `step + 1`-th step already uses it (entries at step 0 before the first
    step). Values are applied like PBT applies them: the learning rate and
    user variables are assigned, traced optimizer fields (`momentum`,
    `beta_1`, ...) retrace the train step once, `"g_optimizer.learning_rate"`
    addresses another optimizer of the model. Steps are counted across
    `fit` calls.

    Batches are hooked only when needed: with `steps_per_epoch` given and
    every step a multiple of it, the values are applied at epoch ends (and
    `fit` must run that many steps per epoch).

    Args:
        schedule: `[(step, hparams)]` with increasing steps, e.g. from
            `keras_pbt.ancestry_schedule(lineage)`, or `AncestryEntry`s.
        setters: dict name -> `keras.Variable`, `fn(model, value)`, or the
            name of a `keras.Variable` attribute of the model, for
            hyperparameters that are not optimizer fields (as in `PBTCallback`).
        steps_per_epoch: optional; lets the callback apply at epoch ends.
        verbose: 1 prints each change. Defaults to `0`.

    Attributes:
        steps: optimizer steps seen so far.
        applied: `[(step, hparams)]` actually applied, in order.

    Example:

    ```python
    schedule = keras_pbt.ancestry_schedule(keras_pbt.read_lineage("runs/digits"))
    model = build(schedule[0][1])
    model.fit(x, y, epochs=20, callbacks=[keras_pbt.ScheduleCallback(schedule)])
    ```
    """

    def __init__(self, schedule, setters=None, steps_per_epoch=None, verbose=0):
        super().__init__()
        self.schedule = _check_schedule(schedule)
        if setters is not None and not hasattr(setters, "items"):
            raise TypeError(f"`setters` must be a dict. Received: setters={setters!r}")
        self.setters = dict(setters or {})
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, allow_none=True)
        self.verbose = verbose
        names = []
        for _, hp in self.schedule:
            names += [n for n in hp if n not in names]
        self.names = names
        self.by_epoch = steps_per_epoch is not None and all(
            s % steps_per_epoch == 0 for s, _ in self.schedule
        )
        if not self.by_epoch:
            # Overriding a batch hook turns off Keras' asynchronous batch
            # dispatch: only when a change falls inside an epoch.
            self.on_train_batch_end = self._on_train_batch_end
        self.steps = 0
        self.applied = []
        self._next = 0
        self._applier = None

    def on_train_begin(self, logs=None):
        if self.by_epoch and (self.params or {}).get("steps") not in (None, self.steps_per_epoch):
            raise ValueError(
                f"ScheduleCallback(steps_per_epoch={self.steps_per_epoch}) but fit runs "
                f"{self.params['steps']} steps per epoch: the schedule would be applied at "
                "the wrong steps."
            )
        setters = {}
        for name, setter in self.setters.items():
            if isinstance(setter, str):
                setter = getattr(self.model, setter, None)
                if not isinstance(setter, keras.Variable):
                    raise ValueError(
                        f"`setters[{name!r}]` names model attribute {self.setters[name]!r}, "
                        "which is not a keras.Variable of the model."
                    )
            setters[name] = setter
        self._applier = HyperparameterApplier(self.model, self.names, setters)
        self._apply_due(force=True)

    def _apply_due(self, force=False):
        due = None
        while self._next < len(self.schedule) and self.schedule[self._next][0] <= self.steps:
            due = self.schedule[self._next]
            self._next += 1
        if due is None:
            if force and self.applied:
                # A new fit: re-apply the current values (and retrace).
                self._applier.apply(self.applied[-1][1], force=True)
            return
        self._applier.apply(due[1], force=force or not self.applied)
        self.applied.append((self.steps, dict(due[1])))
        if self.verbose:
            values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}"
                               for k, v in due[1].items())
            print(f"ScheduleCallback: step {self.steps}: {values}", flush=True)

    def _on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self._next < len(self.schedule) and self.schedule[self._next][0] <= self.steps:
            self._apply_due()

    def on_train_end(self, logs=None):
        # Plain floats back in the optimizer fields the applier backed by
        # variables, so the model saves as usual.
        if self._applier is not None:
            self._applier.release()

    def on_epoch_end(self, epoch, logs=None):
        if self.by_epoch:
            self.steps += self.steps_per_epoch
            self._apply_due()


def _steps_per_epoch(x, fit_kwargs):
    """`model.fit`'s steps per epoch (`keras_pbt.population.data.steps_per_epoch`),
    or None where `fit` decides them itself (a generator; a validation split)."""
    if fit_kwargs.get("steps_per_epoch"):
        return int(fit_kwargs["steps_per_epoch"])
    if isinstance(x, np.ndarray) and not fit_kwargs.get("validation_split"):
        return data_lib.steps_per_epoch(x, batch_size=fit_kwargs.get("batch_size"))
    return None


def replay(build, lineage, x=None, y=None, member_id=None, mode=None, setters=None, verbose=0,
           **fit_kwargs):
    """Trains a fresh model on the hyperparameter schedule of a member's ancestry.

    Args:
        build: `fn(hp) -> compiled keras.Model`, as for `Population`; it gets
            the schedule's initial hyperparameters.
        lineage: a log directory written with `logdir=` (read with
            `read_lineage`) or a list of `LineageRecord`s (e.g.
            `Population.lineage`).
        x: training data, as for `model.fit`.
        y: training targets, as for `model.fit`.
        member_id: whose schedule to follow; by default the best member.
        mode: `"min"` or `"max"` for choosing the best member; by default
            the mode written in the records.
        setters: as in `ScheduleCallback`.
        verbose: passed to `fit`; 1 or more also prints each change.
        **fit_kwargs: passed to `model.fit` (`epochs`, `batch_size`,
            `validation_data`, `callbacks`, ...).

    Returns:
        The trained model; its `ScheduleCallback` is `model.schedule_callback`
        and the history `model.history`.

    Example:

    ```python
    model = keras_pbt.replay(build, "runs/digits", x, y, epochs=20, batch_size=32,
                             validation_data=(xv, yv))
    ```
    """
    if isinstance(lineage, (str, os.PathLike)):
        lineage = events_lib.read_lineage(os.fspath(lineage))
    schedule = schedule_lib.ancestry_schedule(lineage, member_id, mode)
    model = build(dict(schedule[0][1]))
    callback = ScheduleCallback(schedule, setters=setters,
                                steps_per_epoch=_steps_per_epoch(x, fit_kwargs),
                                verbose=1 if verbose else 0)
    callbacks = [callback] + list(fit_kwargs.pop("callbacks", None) or [])
    model.fit(x, y, callbacks=callbacks, verbose=verbose, **fit_kwargs)
    model.schedule_callback = callback
    return model
