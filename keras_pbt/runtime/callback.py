"""`PBTCallback`: Population-Based Training inside one `model.fit` call."""

import time

import keras

from keras_pbt import backend as backend_lib
from keras_pbt.core import config as config_lib
from keras_pbt.core import lineage as lineage_lib
from keras_pbt.core import noise as noise_lib
from keras_pbt.core import policy as policy_lib
from keras_pbt.core import selection as selection_lib
from keras_pbt.runtime import iterated as iterated_lib
from keras_pbt.runtime import snapshot as snapshot_lib
from keras_pbt.runtime.callback_state import MemberState
from keras_pbt.runtime.hyperparameters import HyperparameterApplier
from keras_pbt.storage.store import PopulationStore
from keras_pbt.core.validation import check_monitor


class PBTCallback(keras.callbacks.Callback):
    """Population-Based Training for one member, inside `model.fit`.

    At every interval boundary (every epoch by default) the member reports
    its monitored metric to a shared `store`. When it ranks in the losing
    quantile it copies a better member's weights **and** optimizer state,
    then trains on with explored hyperparameters, in the same `fit` call.
    New hyperparameters are used by the very next step: the learning rate,
    user variables and the common optimizer floats (`momentum`, `beta_1`,
    `beta_2`, `epsilon`, `rho`, `weight_decay`, clip norms) are assigned to
    variables; only other optimizer fields, callable setters, and a float
    moving to or from zero trigger one retrace.

    Run one `fit` per member, in threads of one process, each with its own
    `PBTCallback` on the same store (or use `keras_pbt.Population`). The
    store says whether members meet at each boundary (`synchronous`) and
    how long they wait (`InMemoryStore(synchronous=True, timeout=600)`).

    The default policy copies a member only when it is better by more than
    the validation split can measure (`keras_pbt.StandardError`); that
    needs the split's size, which Keras does not tell a callback: set
    `cb.validation_size = len(y_val)` before `fit` (`Population` does it).
    Without it, any strictly better member is copied.

    Args:
        store: the `PopulationStore` shared by the population
            (e.g. `keras_pbt.InMemoryStore(synchronous=True)`); its `seed` is
            the population's (tie-breaking and explore).
        member_id: this member's id (int or str), unique in the store.
        space: dict name -> `Uniform` / `LogUniform` / `IntUniform` /
            `Choice`: the hyperparameters PBT tunes.
        monitor: metric to rank by. Defaults to `"val_accuracy"`.
        mode: `"auto"`, `"min"` or `"max"`, as in Keras. Defaults to `"auto"`.
        interval: when to decide: an int (every that many epochs), a
            `keras_pbt.Interval(epochs=..., steps=..., burn_in=...)` or
            `keras_pbt.Iterated` (synchronous stores only). With
            `steps` the callback hooks batches (which turns off Keras'
            asynchronous batch dispatch) and the monitored metric must be
            in the batch logs. Defaults to `1`.
        policy: a `keras_pbt.Policy`: how members are ranked, selected and
            explored. Defaults to `keras_pbt.Policy()`.
        initial_hparams: dict of the hyperparameters to start with; by
            default they are read from the model (optimizer fields,
            `keras.Variable` and layer setters). Needed only for a callable
            setter. Defaults to `None`.
        setters: dict name -> how to set a hyperparameter that is not an
            optimizer field: a `keras.Variable` (assigned), a Keras layer
            with a `rate` (a `Dropout`: its rate is set and the step
            retraced), or a callable `fn(model, value)`. Defaults to `None`.
        logdir: if given, write TensorBoard summaries to
            `logdir/member_<id>`. Defaults to `None`.
        verbose: 0 silent, 1 prints a line per exploit. Defaults to `0`.

    Attributes:
        policy: the `keras_pbt.Policy` given.
        engine: the `keras_pbt.PBTPolicy` that decides with it.
        interval: the `keras_pbt.Interval`.
        state: the member's `MemberState` (hyperparameters, counters,
            generator); `hparams`, `steps`, `epochs`, `boundaries` and
            `exploits` read it.

    Example:

    ```python
    store = keras_pbt.InMemoryStore()
    space = {"learning_rate": keras_pbt.LogUniform(1e-4, 1e-1),
             "momentum": keras_pbt.Uniform(0.5, 0.99)}
    cb = keras_pbt.PBTCallback(store, member_id=3, space=space,
                               monitor="val_accuracy", interval=1)
    model.fit(x, y, validation_data=(xv, yv), epochs=30, callbacks=[cb])
    ```
    """

    def __init__(
        self,
        store,
        member_id,
        space,
        monitor="val_accuracy",
        mode="auto",
        interval=1,
        policy=None,
        initial_hparams=None,
        setters=None,
        logdir=None,
        verbose=0,
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
        self.interval = config_lib.get_interval(interval)
        self.monitor = check_monitor(monitor)
        self.mode = selection_lib.resolve_mode(mode, monitor)
        self.store = store
        self.member_id = member_id
        self.policy = config_lib.get_policy(policy)
        if self.policy.start is not None:
            raise ValueError("A wide start (`Policy.start`) is run by keras_pbt.Population, which "
                             "trains the configurations in turn; a PBTCallback alone cannot. "
                             f"Received: policy={self.policy!r}")
        self.engine = self.policy.make(space, self.mode, store.seed)
        self.iterated = None
        if isinstance(self.interval, config_lib.Iterated):
            if not store.synchronous or not hasattr(store, "keep_champion"):
                raise ValueError(
                    "Iterated PBT (keras_pbt.Iterated) restarts every "
                    "member at the same boundary: it needs a synchronous InMemoryStore "
                    "(keras_pbt.Population(synchronous=True), the default). Received: "
                    f"interval={self.interval!r}, store={store!r} (synchronous="
                    f"{getattr(store, 'synchronous', None)!r})")
            self.iterated = iterated_lib.IteratedRestarts(self)
        self.space = self.engine.space
        if initial_hparams is not None:
            initial_hparams = dict(initial_hparams)
            unknown = sorted(set(initial_hparams) - set(self.space))
            missing = sorted(set(self.space) - set(initial_hparams))
            if unknown or missing:
                raise ValueError(
                    f"`initial_hparams` must name exactly the hyperparameters of `space`; "
                    f"unknown: {unknown}, missing: {missing}. Received: "
                    f"initial_hparams={initial_hparams!r}"
                )
            initial_hparams = {k: self.space[k].clip(v) for k, v in initial_hparams.items()}
        self.initial_hparams = initial_hparams
        if setters is not None and not hasattr(setters, "items"):
            raise TypeError(f"`setters` must be a dict. Received: setters={setters!r}")
        self.setters = dict(setters or {})
        self.logdir = logdir
        self.verbose = verbose
        store.register(member_id, initial_hparams)
        # State kept across fit calls: a member's progress continues.
        self.state = MemberState(member_id, initial_hparams, store.seed,
                                 self.engine.history_length)
        self.last_decision = None
        # How many validation examples the monitored metric is measured on
        # (`Population.fit` sets it from `validation_data`): a noise-aware
        # margin (`keras_pbt.StandardError`) needs it.
        self.validation_size = None
        # `fn(model) -> per-example spread` of a monitored loss on the
        # validation data (`Population.fit` sets it), read at a boundary
        # only when the policy's margin needs it.
        self.validation_spread = None
        self._applier = None
        self._writer = None
        self._function_before_fit = None
        self._iterations_mark = None
        if self.interval.steps is not None:
            # Hook batches only when asked to: overriding a batch hook turns
            # off Keras' asynchronous dispatch for the whole fit.
            self.on_train_batch_end = self._on_train_batch_end

    # A member's state, read through the callback.
    hparams = property(lambda self: self.state.hparams, doc="The hyperparameters in use.")
    steps = property(lambda self: self.state.steps, doc="The member's own optimizer steps.")
    epochs = property(lambda self: self.state.epochs, doc="The epochs the member trained.")
    boundaries = property(lambda self: self.state.boundaries, doc="Interval boundaries passed.")
    exploits = property(lambda self: self.state.exploits, doc="Exploits so far.")

    def get_state(self):
        """The member's PBT state as JSON-friendly values (`MemberState.get_state`),
        for `set_state`; inside `fit` the step count is first brought up to the
        optimizer's."""
        if self._iterations_mark is not None and self.model is not None:
            self._sync_steps()
        state = self.state.get_state()
        if self.iterated is not None:
            state["iteration"] = self.iterated.tracker.get_state()
        return state

    def set_state(self, state):
        """Puts back a `get_state()` dict of the same member (before `fit`).

        Raises:
            ValueError: a key is missing, the state is another member's, or
                its hyperparameters are not exactly those of `space`.
        """
        if state.get("hparams") is not None and set(state["hparams"]) != set(self.space):
            raise ValueError(f"`state` must hold the hyperparameters {sorted(self.space)}. "
                             f"Received: state={state!r}")
        self.state.set_state(state)
        self.engine.seed = self.state.seed
        if self.iterated is not None and state.get("iteration") is not None:
            self.iterated.tracker.set_state(state["iteration"])

    def restart(self, candidates, initial, reason):
        """After a fault: restarts from the best of `candidates` (`Snapshot`s
        other members published), or from `initial` (this member's initial
        `Snapshot`) when there is none, with explored hyperparameters
        (`PBTPolicy.restart`, the one restart rule); records
        `action="restart"` with `reason`.

        Returns:
            The `LineageRecord`.
        """
        decision = self.engine.restart(self.member_id, self.hparams, candidates,
                                       initial.hparams, self.state.rng, self._run_history(),
                                       reason=reason)
        snapshot = next((c for c in candidates if c.member_id == decision.parent), initial)
        snapshot_lib.restore(self.model, snapshot, self.policy.copy_optimizer_state)
        record = decision.to_record(self.steps, self.boundaries, self.monitor, self.mode,
                                    time.time())
        self.state.hparams = dict(decision.hparams)
        self.state.root = self.member_id if decision.parent is None else decision.parent
        self._record(record, metric=None)
        return record

    # ------------------------------------------------------------------ fit

    def on_train_begin(self, logs=None):
        state = self.state
        self.store.register(self.member_id, state.hparams, exist_ok=True)
        self._applier = HyperparameterApplier(self.model, list(self.space), self.setters)
        if state.hparams is None:
            read = self._applier.read()
            unreadable = [n for n, v in read.items() if v is None]
            if unreadable:
                raise ValueError(
                    f"Cannot read the initial value of {unreadable} from the model (a callable "
                    "setter); pass `initial_hparams=` with the member's initial hyperparameters."
                )
            state.hparams = {n: self.space[n].clip(v) for n, v in read.items()}
        # Keras made the train function just before this hook. One that
        # existed before this fit may have been traced with plain floats:
        # rebuild it so the step reads the variable-backed fields. A fresh one
        # is traced at the first step, after the fields were installed.
        self._applier.apply(state.hparams, force=self._function_before_fit is not None)
        self._iterations_mark = self._read_iterations()
        self._steps_at_mark = state.steps
        self._first_epoch = None
        self._next_step_boundary = self._step_boundary_after(state.steps)
        if self.iterated is not None:
            self.iterated.on_train_begin()
        if self.logdir is not None and self._writer is None:
            from keras_pbt.storage.summary import MemberSummaryWriter

            self._writer = MemberSummaryWriter(self.logdir, self.member_id)
        if not state.initialised:
            state.initialised = True
            record = lineage_lib.LineageRecord(
                member_id=self.member_id, step=state.steps, action="init",
                hparams=dict(state.hparams), hparams_before=None, monitor=self.monitor,
                mode=self.mode, reason="initial hyperparameters", time=time.time(),
            )
            self._record(record, metric=None)

    def on_epoch_end(self, epoch, logs=None):
        self.state.epochs += 1
        if self.iterated is not None:
            if not self.iterated.is_boundary(self.state.epochs):
                return
        elif self.interval.epochs is None or self.state.epochs % self.interval.epochs:
            return
        self._boundary(logs or {}, last=self._is_last_epoch(epoch))

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
        if self.interval.steps is not None:
            self._sync_steps()  # one read per epoch; batches are counted in Python
            self._epoch_base = self.state.steps

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

    def close(self):
        """Writes out and closes this member's TensorBoard summary files."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def read_metric(self, logs):
        """The monitored metric in `logs`, as a float.

        Raises:
            ValueError: the metric is not in `logs`; lists the keys that are.
        """
        if self.monitor in logs:
            return float(keras.ops.convert_to_numpy(logs[self.monitor]))
        hint = ""
        if self.monitor.startswith("val_") and self.interval.steps is not None:
            hint = (" Validation metrics exist only at the end of an epoch: use an epoch "
                    "interval, or monitor a training metric.")
        elif self.monitor.startswith("val_"):
            hint = " Did you pass `validation_data` to fit?"
        raise ValueError(
            f"PBTCallback(member_id={self.member_id!r}) monitors `{self.monitor}`, "
            f"which is not in the logs. Available keys: {sorted(logs)}.{hint}"
        )

    # ------------------------------------------------------------- helpers

    def _read_iterations(self):
        # All the model's optimizers (a GAN's d_optimizer/g_optimizer too).
        return snapshot_lib.iterations(self.model)

    def _step_boundary_after(self, steps):
        if self.interval.steps is None:
            return None
        return (steps // self.interval.steps + 1) * self.interval.steps

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
        self._fit_start_steps = self.state.steps
        # Keras sets the params before it makes the train function of a fit.
        self._function_before_fit = getattr(self.model, "train_function", None)

    def _sync_steps(self):
        now = self._read_iterations()
        self.state.steps = self._steps_at_mark + (now - self._iterations_mark)
        self._iterations_mark, self._steps_at_mark = now, self.state.steps

    def _run_history(self):
        """Every member's reports so far, when the policy's explorer models the
        run (PB2); None otherwise, so other explorers cost nothing here."""
        if not self.engine.uses_history:
            return None
        return [r for reports in self.store.histories().values() for r in reports]

    def _record(self, record, metric):
        self.state.on_record(record)
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
        state, store = self.state, self.store
        self._next_step_boundary = self._step_boundary_after(state.steps)
        metric = self.read_metric(logs)
        state.boundaries += 1
        step, boundary = state.steps, state.boundaries
        recent, recent_steps = state.observe(metric, step)
        report = selection_lib.Report(
            self.member_id, step, metric, dict(state.hparams), boundary, time.time(),
            recent=recent, recent_steps=recent_steps, start_metric=state.start_metric,
            count=self.validation_size, spread=self._spread(metric), root=state.root,
        )
        store.report(report)
        # The pure policy decides; this glue only gathers, publishes and acts.
        # Burn-in counts the member's whole training, across fit calls.
        progress = state.steps if self.interval.steps is not None else state.epochs
        plan = self.engine.boundary(report, key=boundary, progress=progress,
                                    burn_in=self.interval.burn_in, last=last)
        synchronous = store.synchronous
        available = history = decision = None
        if plan.judged:
            if synchronous:
                reports = store.wait_for_interval(self.member_id, boundary)
            else:
                reports = policy_lib.comparable_reports(
                    self.member_id, step, store.histories(), self._interval_length())
            plan = plan.with_reports(reports)
            if plan.publish:
                store.publish(
                    snapshot_lib.capture(self.model, self.member_id, step, state.hparams, metric))
            # Synchronous parents publish right after the barrier and the loser
            # waits for that snapshot; asynchronous losers copy only what exists.
            available = None if synchronous else store.snapshot_members()
            history = self._run_history()
            if self.iterated is not None:  # a restart of a stagnating population, or None
                decision = self.iterated.boundary(plan, history)
        if decision is None:
            decision = plan.decide(state.rng, available, history)
        copied_step = None
        if decision.action == "restart":
            self._applier.apply(decision.hparams)
            if decision.parent is None:  # back to its initial weights: a line of its own
                state.root = self.member_id
        elif decision.is_exploit:
            snap = store.snapshot(
                decision.parent,
                min_step=decision.parent_step if synchronous else None,
                timeout=store.timeout if synchronous else 0.0,
            )
            if snap is None:
                decision = policy_lib.unavailable_parent(decision)
            else:
                snapshot_lib.restore(self.model, snap, self.policy.copy_optimizer_state)
                self._applier.apply(decision.hparams)
                state.root = next((r.root for r in plan.reports
                                   if r.member_id == decision.parent), None) or decision.parent
                self._iterations_mark = self._read_iterations()
                copied_step = snap.step
                state.exploits += 1
                if self.verbose:
                    print(_exploit_line(self, decision, metric, snap.step), flush=True)
        state.hparams = dict(decision.hparams)
        self.last_decision = decision
        record = decision.to_record(
            step, boundary, self.monitor, self.mode, time.time(), parent_step=copied_step)
        self._record(record, metric=decision.metric)

    def _spread(self, metric):
        spread = noise_lib.proportion_spread(self.monitor, metric)
        if spread is None and self.validation_spread is not None and self.engine.needs_spread:
            spread = self.validation_spread(self.model)
        return spread

    def _interval_length(self):
        if self.interval.steps is not None:
            return self.interval.steps
        steps = (self.params or {}).get("steps")
        return (steps or 1) * self.interval.epochs


def _exploit_line(cb, decision, metric, parent_step):
    changes = ", ".join(
        f"{k} {_fmt(decision.hparams_before.get(k))} -> {_fmt(v)} ({decision.ops.get(k, '')})"
        for k, v in decision.hparams.items())
    return (f"PBT member {cb.member_id!r} step {cb.steps}: {cb.monitor}={metric:.4g}, copies "
            f"member {decision.parent!r} ({decision.parent_metric:.4g} at step {parent_step}); "
            f"{changes}")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return repr(v)
