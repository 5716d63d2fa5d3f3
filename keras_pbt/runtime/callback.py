"""`PBTCallback`: Population-Based Training inside one `model.fit` call."""

import collections
import math
import numbers
import time
import zlib

import keras
import numpy as np

from keras_pbt import backend as backend_lib
from keras_pbt.core import lineage as lineage_lib
from keras_pbt.core import policy as policy_lib
from keras_pbt.core import config as policy_config
from keras_pbt.core import selection as selection_lib
from keras_pbt.runtime import snapshot as snapshot_lib
from keras_pbt.runtime.callback_state import MemberState
from keras_pbt.runtime.hyperparameters import HyperparameterApplier
from keras_pbt.storage.store import PopulationStore
from keras_pbt.core.validation import check_int


class PBTCallback(MemberState, keras.callbacks.Callback):
    """Population-Based Training for one member, inside `model.fit`.

    Every `interval_epochs` epochs (or `interval_steps` optimizer steps) the
    member reports its monitored metric to a shared `store`. When it ranks in
    the losing quantile it copies a better member's weights **and** optimizer
    state, then trains on with explored hyperparameters, in the same `fit`
    call. New hyperparameters are used by the very next step: the learning
    rate, user variables and the common optimizer floats (`momentum`,
    `beta_1`, `beta_2`, `epsilon`, `rho`, `weight_decay`, clip norms) are
    assigned to variables; only other optimizer fields, callable setters,
    and a float moving to or from zero trigger one retrace.

    Run one `fit` per member, in threads of one process, each with its own
    `PBTCallback` on the same store (or use `keras_pbt.Population`).

    Args:
        store: the `PopulationStore` shared by the population
            (e.g. `keras_pbt.InMemoryStore()`).
        member_id: this member's id (int or str), unique in the store.
        space: dict name -> `Uniform` / `LogUniform` / `IntUniform` /
            `Choice`: the hyperparameters PBT tunes.
        monitor: metric to rank by. Defaults to `"val_accuracy"`.
        interval_epochs: judge every this many epochs.
        interval_steps: judge every this many optimizer steps instead (hooks
            batches, which turns off Keras' asynchronous batch dispatch;
            the monitored metric must be in the batch logs). Give exactly one
            of the two; defaults to `interval_epochs=1`.
        burn_in: no decisions until this many epochs (or steps) are done.
            Defaults to `0`.
        mode: `"auto"`, `"min"` or `"max"`, as in Keras. Defaults to `"auto"`.
        quantile, selection, ranking, factors, resample_probability,
            explore_fn, explore: shortcuts for the same fields of
            `keras_pbt.Policy` (see there; defaults `0.2`, `"truncation"`,
            `"last"`, `(0.8, 1.2)`, `0.25`, `None`, `"perturb"`). Give a
            field here or in `policy`, not both with different values.
        hparams: initial hyperparameters to apply at the start of training;
            by default they are read from the model (optimizer fields and
            `keras.Variable` setters).
        setters: dict name -> `keras.Variable` or `fn(model, value)` for
            hyperparameters that are not optimizer fields (a loss weight, a
            dropout rate, a regularisation strength).
        synchronous: if True, all live members meet at each boundary and
            decide together; if False, decide against the latest comparable
            reports of the others. Defaults to `False`.
        sync_timeout: seconds a synchronous boundary waits. Defaults to `600`.
        on_timeout: `"raise"` (a clear error naming the missing members) or
            `"continue"` (go on without them). Defaults to `"raise"`.
        copy_optimizer_state: shortcut for `Policy.copy_optimizer_state`:
            copy the parent's optimizer state on exploit (True) or reset it
            (False). Defaults to `True`.
        seed: tie-breaking and explore seed. Defaults to the store's seed.
        logdir: if given, write TensorBoard summaries to
            `logdir/member_<id>`.
        verbose: 0 silent, 1 prints a line per exploit. Defaults to `0`.
        policy: a `keras_pbt.Policy` with all the policy's settings at
            once. Defaults to `Policy()` with the shortcuts above.

    Example:

    ```python
    store = keras_pbt.InMemoryStore()
    space = {"learning_rate": keras_pbt.LogUniform(1e-4, 1e-1),
             "momentum": keras_pbt.Uniform(0.5, 0.99)}
    cb = keras_pbt.PBTCallback(store, member_id=3, space=space,
                               monitor="val_accuracy", interval_epochs=1)
    model.fit(x, y, validation_data=(xv, yv), epochs=30, callbacks=[cb])
    ```
    """

    def __init__(
        self,
        store,
        member_id,
        space,
        monitor="val_accuracy",
        interval_epochs=None,
        interval_steps=None,
        burn_in=0,
        mode="auto",
        quantile=None,
        selection=None,
        factors=None,
        resample_probability=None,
        explore_fn=None,
        ranking=None,
        explore=None,
        hparams=None,
        setters=None,
        synchronous=False,
        sync_timeout=600.0,
        on_timeout="raise",
        copy_optimizer_state=None,
        seed=None,
        logdir=None,
        verbose=0,
        policy=None,
    ):
        super().__init__()
        if not isinstance(store, PopulationStore):
            raise TypeError(
                f"`store` must be a keras_pbt PopulationStore (e.g. InMemoryStore()). "
                f"Received: store={store!r}"
            )
        if member_id is None or not isinstance(member_id, (int, str)) or isinstance(
            member_id, bool
        ):
            raise TypeError(f"`member_id` must be an int or a str. Received: member_id={member_id!r}")
        if interval_epochs is not None and interval_steps is not None:
            raise ValueError(
                "Give one of `interval_epochs` and `interval_steps`. Received: "
                f"interval_epochs={interval_epochs!r}, interval_steps={interval_steps!r}"
            )
        self.interval_epochs = check_int("interval_epochs", interval_epochs, allow_none=True)
        self.interval_steps = check_int("interval_steps", interval_steps, allow_none=True)
        if self.interval_epochs is None and self.interval_steps is None:
            self.interval_epochs = 1
        self.burn_in = check_int("burn_in", burn_in, minimum=0)
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"`monitor` must be a metric name. Received: monitor={monitor!r}")
        self.monitor = monitor
        self.mode = selection_lib.resolve_mode(mode, monitor)
        if not isinstance(sync_timeout, numbers.Real) or not sync_timeout > 0 or not math.isfinite(
            sync_timeout
        ):
            raise ValueError(
                f"`sync_timeout` must be a positive number of seconds. Received: sync_timeout={sync_timeout!r}"
            )
        if on_timeout not in ("raise", "continue"):
            raise ValueError(
                f"`on_timeout` must be 'raise' or 'continue'. Received: on_timeout={on_timeout!r}"
            )
        self.store = store
        self.member_id = member_id
        config = policy_config.resolve_policy(
            policy, quantile=quantile, selection=selection, ranking=ranking, factors=factors,
            resample_probability=resample_probability, explore_fn=explore_fn, explore=explore,
            copy_optimizer_state=copy_optimizer_state)
        self.policy_config = config  # the `Policy`; `self.policy` decides (a `PBTPolicy`)
        self.policy = config.make(space, self.mode, store.seed if seed is None else seed)
        self.space = self.policy.space
        if hparams is not None:
            hparams = dict(hparams)
            unknown = sorted(set(hparams) - set(self.space))
            missing = sorted(set(self.space) - set(hparams))
            if unknown or missing:
                raise ValueError(
                    f"`hparams` must name exactly the hyperparameters of `space`; "
                    f"unknown: {unknown}, missing: {missing}. Received: hparams={hparams!r}"
                )
            hparams = {k: self.space[k].clip(v) for k, v in hparams.items()}
        self.initial_hparams = hparams
        if setters is not None and not hasattr(setters, "items"):
            raise TypeError(f"`setters` must be a dict. Received: setters={setters!r}")
        self.setters = dict(setters or {})
        self.synchronous = bool(synchronous)
        self.sync_timeout = float(sync_timeout)
        self.on_timeout = on_timeout
        self.copy_optimizer_state = config.copy_optimizer_state
        self.logdir = logdir
        self.verbose = verbose
        self._rng = np.random.default_rng(
            [self.policy.seed, zlib.crc32(repr(member_id).encode())]
        )
        store.register(member_id, hparams)

        # State kept across fit calls: a member's progress continues.
        self.hparams = hparams
        self.steps = 0  # this member's own optimizer steps
        self.epochs = 0  # epochs trained by this member
        self.interval = 0  # boundaries passed
        self.exploits = 0
        self.last_decision = None
        # Latest metrics since the last exploit, for strategies that judge
        # several evaluations (Report.recent).
        self._recent = collections.deque(maxlen=self.policy.history_length)
        self._recent_steps = collections.deque(maxlen=self.policy.history_length)
        # The metric of the weights the current interval started from.
        self._start_metric = None
        self._applier = None
        self._writer = None
        self._initialised = False
        self._function_before_fit = None
        if self.interval_steps is not None:
            # Hook batches only when asked to: overriding a batch hook turns
            # off Keras' asynchronous dispatch for the whole fit.
            self.on_train_batch_end = self._on_train_batch_end

    # ------------------------------------------------------------------ fit

    def on_train_begin(self, logs=None):
        self.store.register(self.member_id, self.hparams, exist_ok=True)
        self._applier = HyperparameterApplier(self.model, list(self.space), self.setters)
        if self.hparams is None:
            read = self._applier.read()
            unreadable = [n for n, v in read.items() if v is None]
            if unreadable:
                raise ValueError(
                    f"Cannot read the initial value of {unreadable} from the model; "
                    "pass `hparams=` with the member's initial hyperparameters."
                )
            self.hparams = {n: self.space[n].clip(v) for n, v in read.items()}
        # Keras made the train function just before this hook. One that
        # existed before this fit may have been traced with plain floats:
        # rebuild it so the step reads the variable-backed fields. A fresh one
        # is traced at the first step, after the fields were installed.
        self._applier.apply(self.hparams, force=self._function_before_fit is not None)
        self._iterations_mark = self._read_iterations()
        self._steps_at_mark = self.steps
        self._epochs_done = 0
        self._first_epoch = None
        self._next_step_boundary = self._step_boundary_after(self.steps)
        if self.logdir is not None and self._writer is None:
            from keras_pbt.storage.summary import MemberSummaryWriter

            self._writer = MemberSummaryWriter(self.logdir, self.member_id)
        if not self._initialised:
            self._initialised = True
            record = lineage_lib.LineageRecord(
                member_id=self.member_id, step=self.steps, action="init",
                hparams=dict(self.hparams), hparams_before=None, monitor=self.monitor,
                mode=self.mode, reason="initial hyperparameters", time=time.time(),
            )
            self._record(record, metric=None)

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_done += 1
        self.epochs += 1
        if self.interval_epochs is None or self.epochs % self.interval_epochs:
            return
        self._boundary(logs or {}, last=self._is_last_epoch(epoch))

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
        if self.interval_steps is not None:
            self._sync_steps()  # one read per epoch; batches are counted in Python
            self._epoch_base = self.steps

    def _on_train_batch_end(self, batch, logs=None):
        # Only installed for step intervals: an int compare per step.
        steps = self._epoch_base + batch + 1
        if steps < self._next_step_boundary:
            return
        total = self._total_steps()
        self._boundary(logs or {}, last=total is not None and steps >= total)

    def on_train_end(self, logs=None):
        self._sync_steps()
        self.release()
        self.flush()
        self.store.leave(self.member_id, reason="finished")

    def release(self):
        """Puts plain floats back in the optimizer fields PBT backed by
        variables during `fit` (called at the end of `fit`)."""
        if self._applier is not None:
            self._applier.release()

    def flush(self):
        """Writes out pending TensorBoard summaries (`on_train_end` does it
        too; call it when `fit` was left through an exception)."""
        if self._writer is not None:
            self._writer.flush()

    # ------------------------------------------------------------- helpers

    def _read_iterations(self):
        # All the model's optimizers (a GAN's d_optimizer/g_optimizer too).
        return snapshot_lib.iterations(self.model)

    def _step_boundary_after(self, steps):
        if self.interval_steps is None:
            return None
        return (steps // self.interval_steps + 1) * self.interval_steps

    def _is_last_epoch(self, epoch):
        epochs = (self.params or {}).get("epochs")
        return epochs is not None and epoch + 1 >= epochs

    def _total_steps(self):
        params = self.params or {}
        if params.get("steps") and params.get("epochs"):
            epochs = params["epochs"] - (self._first_epoch or 0)
            return self._fit_start_steps + params["steps"] * epochs
        return None

    def set_params(self, params):
        super().set_params(params)
        self._fit_start_steps = self.steps
        # Keras sets the params before it makes the train function of a fit.
        self._function_before_fit = getattr(self.model, "train_function", None)

    def _sync_steps(self):
        now = self._read_iterations()
        self.steps = self._steps_at_mark + (now - self._iterations_mark)
        self._iterations_mark, self._steps_at_mark = now, self.steps

    def _read_metric(self, logs):
        if self.monitor in logs:
            value = logs[self.monitor]
            return float(keras.ops.convert_to_numpy(value))
        keys = sorted(logs)
        hint = ""
        if self.monitor.startswith("val_") and self.interval_steps is not None:
            hint = (" Validation metrics exist only at the end of an epoch: use "
                    "`interval_epochs`, or monitor a training metric.")
        elif self.monitor.startswith("val_"):
            hint = " Did you pass `validation_data` to fit?"
        raise ValueError(
            f"PBTCallback(member_id={self.member_id!r}) monitors `{self.monitor}`, "
            f"which is not in the logs. Available keys: {keys}.{hint}"
        )

    def _record(self, record, metric):
        if record.action in ("exploit", "restart"):
            self._recent.clear()  # earlier metrics belong to other weights
            self._recent_steps.clear()
            self._start_metric = record.parent_metric
        elif record.action == "keep":
            self._start_metric = record.metric
        self.store.add_lineage(record)
        if self._writer is not None:
            self._writer.write(
                record.step,
                metric=None if metric is None else (self.monitor, metric),
                hparams=record.hparams,
                records=[record],
            )

    def _boundary(self, logs, last):
        # JAX writes its training state back to the variables only at the
        # end of an epoch: at a step boundary, before any read or assign.
        backend_lib.current().sync_state(self.model)
        self._sync_steps()
        self._applier.ensure_slots()  # optimizers a train_step built lazily
        self._next_step_boundary = self._step_boundary_after(self.steps)
        metric = self._read_metric(logs)
        self.interval += 1
        step, interval = self.steps, self.interval
        self._recent.append(metric)
        self._recent_steps.append(step)
        many = self._recent.maxlen > 1
        report = selection_lib.Report(
            self.member_id, step, metric, dict(self.hparams), interval, time.time(),
            recent=tuple(self._recent) if many else (),
            recent_steps=tuple(self._recent_steps) if many else (),
            start_metric=self._start_metric,
        )
        self.store.report(report)
        # The pure policy decides; this glue only gathers, publishes and acts.
        plan = self.policy.boundary(report, key=interval, progress=self._progress(),
                                    burn_in=self.burn_in, last=last)
        available = history = None
        if plan.judged:
            if self.synchronous:
                reports = self.store.wait_for_interval(
                    self.member_id, interval, self.sync_timeout, self.on_timeout
                )
            else:
                reports = policy_lib.comparable_reports(
                    self.member_id, step, self.store.histories(), self._interval_length()
                )
            plan = plan.with_reports(reports)
            if plan.publish:
                self.store.publish(
                    snapshot_lib.capture(self.model, self.member_id, step, self.hparams, metric)
                )
            # Synchronous parents publish right after the barrier and the loser
            # waits for that snapshot; asynchronous losers copy only what exists.
            available = None if self.synchronous else self.store.snapshot_members()
            history = self._run_history()
        decision = plan.decide(self._rng, available, history)
        copied_step = None
        if decision.is_exploit:
            snap = self.store.snapshot(
                decision.parent,
                min_step=decision.parent_step if self.synchronous else None,
                timeout=self.sync_timeout if self.synchronous else 0.0,
            )
            if snap is None:
                decision = policy_lib.unavailable_parent(decision)
            else:
                snapshot_lib.restore(self.model, snap, self.copy_optimizer_state)
                self._applier.apply(decision.hparams)
                self._iterations_mark = self._read_iterations()
                copied_step = snap.step
                self.exploits += 1
                if self.verbose:
                    changes = ", ".join(
                        f"{k} {_fmt(decision.hparams_before.get(k))} -> {_fmt(v)} ({decision.ops.get(k, '')})"
                        for k, v in decision.hparams.items()
                    )
                    print(
                        f"PBT member {self.member_id!r} step {step}: {self.monitor}="
                        f"{metric:.4g}, copies member {decision.parent!r} "
                        f"({decision.parent_metric:.4g} at step {snap.step}); {changes}",
                        flush=True,
                    )
        self._finish(decision, step, interval, copied_step)

    def _progress(self):
        # Burn-in counts the member's whole training, across fit calls.
        if self.interval_epochs is not None:
            return self.epochs
        return self.steps

    def _interval_length(self):
        if self.interval_steps is not None:
            return self.interval_steps
        steps = (self.params or {}).get("steps")
        return (steps or 1) * self.interval_epochs

    def _finish(self, decision, step, interval, copied_step):
        self.hparams = dict(decision.hparams)
        self.last_decision = decision
        record = decision.to_record(
            step, interval, self.monitor, self.mode, time.time(), parent_step=copied_step
        )
        self._record(record, metric=decision.metric)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return repr(v)
