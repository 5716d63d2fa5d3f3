"""`PBTTuner`: runs a keras-tuner hypermodel with Population-Based Training."""

import math
import os
import threading

import keras
import keras_tuner

from keras_pbt.core import config as config_lib
from keras_pbt.population import devices as devices_lib
from keras_pbt.runtime import snapshot as snapshot_lib
from keras_pbt.population import threads as threads_lib
from keras_pbt.tuner import oracle as oracle_lib
from keras_pbt.tuner import roles as roles_lib
from keras_pbt.tuner import chief_client
from keras_pbt.tuner import snapshots as snapshots_lib
from keras_pbt.tuner import state_files
from keras_pbt.tuner.worker import FirstBuilds
from keras_pbt.tuner.worker import TunerHooks
from keras_pbt.tuner.worker import Worker
from keras_pbt.tuner.worker import input_shape
from keras_pbt.tuner.worker import make_workers
from keras_pbt.tuner.worker import last_logs

# Keras' name counters and layer creation are not meant for threads:
# building (and restoring, which is quick) happens one model at a time.
_BUILD_LOCK = threading.Lock()
_FIRST_IDLE_SLEEP = 0.05


class _Stop(Exception):
    """Ends a worker thread's search loop (Ctrl-C or another worker's error)."""


def _is_chief():
    return ("KERASTUNER_ORACLE_IP" in os.environ
            and "chief" in os.environ.get("KERASTUNER_TUNER_ID", ""))


class PBTTuner(state_files.TunerStateFiles, keras_tuner.Tuner):
    """Population-Based Training of a keras-tuner hypermodel.

    The same `build_model(hp)` that works with `keras_tuner.RandomSearch`
    works here, unchanged. `population_size` members are trained for
    `search(epochs=...)` epochs; at every interval boundary the worst
    members copy a better member's weights **and optimizer state** and go
    on with explored hyperparameters (decided by `PBTOracle`). Each segment
    between two decisions is one keras-tuner trial, so `search()`,
    `results_summary()`, `get_best_models()`, `get_best_hyperparameters()`,
    resuming with `overwrite=False` and the distributed chief/worker mode
    work as for any keras-tuner tuner.

    At the start of `search`, the tuner builds the hypermodel once per
    hyperparameter with a neighbouring value (`keras_pbt.tuner.roles`).
    A hyperparameter that changes the weights' layout (a layer width) is
    never explored: an exploit copies it with the parent's weights, so
    architectures spread by selection. One that changes the model but not
    its weights (an activation, a `Dropout` layer) is explored, and a
    change builds the member's model again. An optimizer value (the
    learning rate) is explored and assigned. A worker keeps its model
    between segments whenever nothing forces a rebuild: it restores the
    parent's checkpoint into it and assigns the new values with
    `keras_pbt.HyperparameterApplier`, without retracing.

    Args:
        hypermodel: a `keras_tuner.HyperModel` or a function `hp -> model`
            that returns a **compiled and built** model (start it with
            `keras.Input`).
        objective: the metric to rank members by, e.g. `"val_accuracy"`.
        population_size: number of members. Defaults to `8`.
        interval: epochs between decisions: an int, or a
            `keras_pbt.Interval(epochs=..., burn_in=...)`. Defaults to `1`.
        policy: a `keras_pbt.Policy` (see `PBTOracle` for what it
            supports). Defaults to `keras_pbt.Policy()`.
        frozen: names of hyperparameters each member keeps as sampled
            (members with equal values form a sub-population). Defaults to
            `()`.
        synchronous: see `PBTOracle`. Defaults to `True`.
        seed: the search's seed (initial values, explore, tie-breaking,
            each member's data order). Defaults to a random seed.
        logdir: TensorBoard directory (one run `member_<id>` per member,
            read by the PBT lineage tab). Defaults to
            `<directory>/<project_name>/pbt_logs`.
        devices: `None` (one worker, with `distribution_strategy` if
            given), `"auto"`, a list of device names or a
            `keras_pbt.Devices`: one worker thread per device slice, each
            with its own `MirroredStrategy`
            (`keras_pbt.population.devices.member_strategy`), all sharing
            this oracle. Defaults to `None`.
        **kwargs: keras-tuner's own arguments: the oracle's
            `hyperparameters`, `tune_new_entries`, `allow_new_entries`,
            `max_retries_per_trial`, `max_consecutive_failed_trials`, and the
            tuner's `directory`, `project_name`, `overwrite`, `tuner_id`,
            `distribution_strategy`, `max_model_size`.

    Attributes:
        policy: the `keras_pbt.Policy` of the search (the oracle's).
        max_idle_sleep: longest pause, in seconds, of a worker waiting for
            the others (it backs off from 0.05 s, doubling). `0.25`.

    Example:

    ```python
    tuner = keras_pbt.PBTTuner(build_model, objective="val_accuracy",
                               population_size=8, interval=2,
                               directory="kt", project_name="digits")
    tuner.search(x, y, validation_data=(xv, yv), epochs=12)
    tuner.results_summary()
    best_model = tuner.get_best_models(1)[0]
    ```
    """

    max_idle_sleep = 0.25

    def __init__(
        self,
        hypermodel=None,
        objective=None,
        population_size=8,
        interval=1,
        policy=None,
        frozen=(),
        synchronous=True,
        seed=None,
        logdir=None,
        devices=None,
        **kwargs,
    ):
        config_lib.refuse_policy_keywords("PBTTuner", kwargs)
        for key in ("optimizer", "loss", "metrics", "executions_per_trial"):
            if kwargs.get(key) not in (None, 1 if key == "executions_per_trial" else None):
                raise ValueError(
                    f"PBTTuner does not support `{key}`: compile the model in build_model(hp). "
                    f"Received: {key}={kwargs[key]!r}"
                )
        oracle_kwargs = {k: kwargs.pop(k) for k in oracle_lib.ORACLE_KWARGS if k in kwargs}
        oracle = oracle_lib.PBTOracle(
            objective=objective, population_size=population_size, interval=interval,
            policy=policy, frozen=frozen, synchronous=synchronous, seed=seed, **oracle_kwargs)
        if devices is not None:
            if kwargs.get("distribution_strategy") is not None:
                raise ValueError(
                    "Give `devices` (one strategy per device slice) or `distribution_strategy`, "
                    f"not both. Received: devices={devices!r}"
                )
            devices = devices_lib.get_devices(devices)
        self._local = threading.local()
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
        self.pbt_oracle = oracle  # the local oracle, also on a worker
        if self._is_worker():  # keras-tuner's client waits an hour for a chief that is gone
            chief_client.bound(self.oracle)
        self.logdir = logdir or os.path.join(self.project_dir, "pbt_logs")
        oracle.logdir = self.logdir
        self.devices = devices
        self.roles = None  # found at the start of search
        self.workers = []
        self._stop = threading.Event()
        self._save_lock = threading.Lock()
        self._first_builds = FirstBuilds(())  # search() makes the one of its workers
        self._trial_ended = threading.Condition()

    # ------------------------------------------- per-thread worker state

    @property
    def _worker(self):
        return getattr(self._local, "worker", None)

    @property
    def tuner_id(self):
        worker = self._worker
        return worker.tuner_id if worker is not None else self.__dict__.get("_tuner_id")

    @tuner_id.setter
    def tuner_id(self, value):
        self.__dict__["_tuner_id"] = value

    @property
    def distribution_strategy(self):
        worker = self._worker
        return worker.strategy if worker is not None else self.__dict__.get("_strategy")

    @distribution_strategy.setter
    def distribution_strategy(self, value):
        self.__dict__["_strategy"] = value

    @property
    def policy(self):
        """The `keras_pbt.Policy` of the search (the oracle's)."""
        return self.pbt_oracle.policy

    @property
    def training_calls(self):
        """Segments trained by this process."""
        return sum(w.builds + w.reuses for w in self.workers)

    @property
    def idle_sleeps(self):
        """The pauses after IDLE answers, per worker (a list of lists)."""
        return [list(w.idle_sleeps) for w in self.workers]

    # ------------------------------------------------------------ search

    def _make_workers(self):
        # On a distributed worker `self.oracle` is keras-tuner's client, hence
        # the local oracle's size.
        return make_workers(self.tuner_id, self.distribution_strategy,
                            self.pbt_oracle.population_size, self.devices)

    def search(self, *fit_args, epochs=None, **fit_kwargs):
        """Trains the population; arguments are those of `model.fit`.

        Args:
            *fit_args: passed to `HyperModel.fit` (so to `model.fit`).
            epochs: the epochs each member trains in all. Required; a
                resumed search must be given the same budget.
            **fit_kwargs: passed to `HyperModel.fit`; `initial_epoch` is set
                per segment.
        """
        if "initial_epoch" in fit_kwargs:
            raise ValueError(
                "PBTTuner sets `initial_epoch` for each segment. "
                f"Received: initial_epoch={fit_kwargs['initial_epoch']!r}"
            )
        if epochs is not None:
            self.pbt_oracle.set_max_epochs(epochs)
        elif self.pbt_oracle.max_epochs is None and not self._is_worker():
            raise ValueError(
                "PBTTuner needs the training budget: pass epochs= to search() (each member "
                "trains that many epochs in all). Received: epochs=None"
            )
        self._input_shape = input_shape(fit_args, fit_kwargs)
        self._stop.clear()
        self.workers = [Worker(self.tuner_id, None)] if _is_chief() else self._make_workers()
        self._first_builds = FirstBuilds(self.workers)
        self.roles = self._find_roles(self.workers[0].strategy)
        self.pbt_oracle.set_inherited(self.roles.layout)
        if len(self.workers) == 1:  # also the chief, which serves the oracle
            self._local.worker = self.workers[0]
            try:
                super().search(*fit_args, **fit_kwargs)
            finally:
                self._local.worker = None
                self.workers[0].drop()
            return
        self.save()
        self._run_threads(fit_args, fit_kwargs)
        self.save()

    def _find_roles(self, strategy):
        if self.hypermodel is None:
            return roles_lib.Roles()

        def build(hp):
            with keras_tuner.engine.tuner.maybe_distribute(strategy):
                return self._built(self.hypermodel.build(hp))

        with _BUILD_LOCK:
            return roles_lib.find_roles(build, self.pbt_oracle.get_space())

    def _run_threads(self, fit_args, fit_kwargs):
        errors = []

        def run(worker):
            self._local.worker = worker
            try:
                super(PBTTuner, self).search(*fit_args, **fit_kwargs)
            except _Stop:
                pass
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(e)
                self._stop.set()
            finally:
                self._first_builds.done(worker)
                worker.drop()

        # The population's run / join / Ctrl-C helper (keras_pbt.population.threads).
        with threads_lib.quiet_first_traces():
            threads = threads_lib.start(
                [(f"pbt-tuner-{w.tuner_id}", run, (w,)) for w in self.workers])
            try:
                threads_lib.join(threads)
            except KeyboardInterrupt:
                # Every worker finishes its current segment, then stops.
                self._stop.set()
                threads_lib.join(threads)
                raise
        if errors:
            raise errors[0]

    def pre_create_trial(self):
        """Stops a worker thread, and backs off while there is no segment to train.

        keras-tuner's search loop asks again at once after an IDLE answer.
        Here a worker whose last answer was IDLE, or whose oracle (in this
        process) has nothing to hand out, waits 0.05 s, then twice as long
        each time, up to `max_idle_sleep`, before it asks; a trial that
        ends in another worker thread of this process wakes it early.
        """
        if self._stop.is_set():
            raise _Stop()
        worker = self._worker
        if worker is None:
            return
        if not worker.asked:  # it trained since it last asked: no backoff yet
            worker.next_sleep = _FIRST_IDLE_SLEEP
        # In this process the oracle says whether it has a segment: asked under
        # the wake-up's lock, so that a trial ending just before is not missed.
        ready = self.oracle.can_hand_out if isinstance(self.oracle, oracle_lib.PBTOracle) else None
        waiting = worker.asked  # the last answer was IDLE (no on_trial_begin since)
        if waiting:
            self._first_builds.done(worker)  # nothing to build now: others may train
        while (waiting or ready is not None) and self._idle_wait(worker, ready):
            waiting = False
            if self._stop.is_set():
                raise _Stop()
        worker.asked = True

    def _idle_wait(self, worker, ready=None):
        return worker.idle_wait(self._trial_ended, ready, self.max_idle_sleep)

    def on_trial_begin(self, trial):
        if self._worker is not None:
            self._worker.asked = False
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        with self._trial_ended:
            self._trial_ended.notify_all()

    # ----------------------------------------------------------- segment

    def _try_build(self, hp):
        """Builds the hypermodel, one build at a time. Keras' session is not
        cleared, as keras-tuner does: workers keep their models."""
        with _BUILD_LOCK:
            model = self._build_hypermodel(hp)
            with keras_tuner.engine.tuner.maybe_distribute(self.distribution_strategy):
                model = self._built(model)
            if not isinstance(model, keras.Model) or getattr(model, "optimizer", None) is None:
                raise keras_tuner.errors.FatalTypeError(
                    "PBTTuner needs build_model(hp) to return a compiled keras.Model. "
                    f"Received: {model!r}"
                )
            if not model.built:
                raise keras_tuner.errors.FatalValueError(
                    "PBTTuner needs the model's weights before training, to restore a "
                    "parent's: start build_model(hp)'s model with keras.Input(shape), or pass "
                    f"NumPy arrays or a tf.data.Dataset to search(). Received: {model!r}"
                )
            size = sum(math.prod(w.shape) for w in model.trainable_weights)
            if self.max_model_size and size > self.max_model_size:
                raise keras_tuner.errors.FailedTrialError(
                    f"Oversized model: {size} parameters (max_model_size={self.max_model_size}).")
            return model, roles_lib.prepare(model, self._optimizer_roles().values())

    def _built(self, model):
        """Builds an unbuilt model (a `Sequential` without `Input`, as in
        keras-tuner's getting-started guide) for the inputs given to search."""
        shape = getattr(self, "_input_shape", None)
        if isinstance(model, keras.Model) and not model.built and shape is not None:
            model.build(shape)
        return model

    def _optimizer_roles(self):
        return (self.roles or roles_lib.Roles()).optimizer

    def _restore(self, model, trial_id):
        snap = snapshots_lib.load(self.get_trial_dir(trial_id))
        with _BUILD_LOCK:
            try:
                snapshot_lib.restore(model, snap)
            except ValueError as e:
                raise keras_tuner.errors.FatalValueError(
                    f"{e} A hyperparameter changes the model's weights in a way the tuner "
                    "could not see when it built the model with neighbouring values: pass "
                    "its name in PBTTuner(frozen=[...])."
                ) from e

    def _member_model(self, worker, trial):
        """The `Kept` model for `trial`: a kept one built with the same values,
        else a new build; it holds the parent's state and the trial's
        optimizer values."""
        values = trial.hyperparameters.values
        parent = values.get(oracle_lib.PARENT_TRIAL) or None
        key = (self.roles or roles_lib.Roles()).model_key(values)
        kept = worker.get(key)
        worker.shuffle_seed = self._seed(values)  # this member's data order
        if kept is not None and parent is not None:
            worker.reuses += 1
            if parent != kept.trial_id:
                self._restore(kept.model, parent)
        else:
            with self._first_builds.building(worker):
                model, applier = self._try_build(trial.hyperparameters)
            kept = worker.keep(key, model, applier)
            worker.builds += 1
            worker.install_pipeline(model)
            if parent is not None:
                self._restore(model, parent)
        # After a restore the optimizer holds the parent's values: assign the
        # trial's (those of the build, and the explored optimizer values).
        new = dict(kept.built_values)
        new.update({field: values[name] for name, field in self._optimizer_roles().items()
                    if name in values})
        kept.applier.apply(new)
        kept.trial_id = None
        return kept

    def _seed(self, values):
        return int(self.pbt_oracle.seed) * 1000 + int(values[oracle_lib.MEMBER])

    def run_trial(self, trial, *fit_args, **fit_kwargs):
        """Trains one segment of one member; returns its final metrics.

        As Hyperband's `run_trial` sets `epochs` and `initial_epoch` from
        the trial's values, so does this; the model comes from
        `_member_model` (kept or built, with the parent's state), and the
        segment's final state is saved in the trial's directory
        (`keras_pbt.tuner.snapshots`). A segment whose state is already there
        (trained before the chief stopped, or by another worker) is not
        trained again: its saved metric is returned.
        """
        directory = self.get_trial_dir(trial.trial_id)
        done = snapshots_lib.finished_logs(directory, self.oracle.objective.name)
        if done is not None:
            return done
        worker = self._worker or Worker(self.tuner_id, self.distribution_strategy)
        hp = trial.hyperparameters
        values = hp.values
        kwargs = dict(fit_kwargs)
        callbacks = self._deepcopy_callbacks(kwargs.pop("callbacks", None) or [])
        for callback in callbacks:
            if isinstance(callback, keras.callbacks.TensorBoard):
                # One run per member; its epochs continue across segments.
                callback.log_dir = os.path.join(
                    str(callback.log_dir), f"member_{values[oracle_lib.MEMBER]}")
        batches = (type(self).on_batch_end is not keras_tuner.Tuner.on_batch_end
                   or type(self).on_batch_begin is not keras_tuner.Tuner.on_batch_begin)
        callbacks.append(TunerHooks(self, trial, batches=batches))
        kwargs["callbacks"] = callbacks
        kwargs["epochs"] = int(values[oracle_lib.EPOCHS])
        kwargs["initial_epoch"] = int(values[oracle_lib.INITIAL_EPOCH])
        try:
            kept = self._member_model(worker, trial)
            self._first_builds.wait(self._stop)  # see FirstBuilds
            model = kept.model
            start = snapshot_lib.iterations(model)
            logs = last_logs(self.hypermodel.fit(hp, model, *fit_args, **kwargs))
        except BaseException:
            worker.drop((self.roles or roles_lib.Roles()).model_key(values))  # state unknown
            raise
        name = self.oracle.objective.name
        if name not in logs:
            raise keras_tuner.errors.FatalValueError(
                f"PBTTuner's objective `{name}` is not in the training logs. Available "
                f"keys: {sorted(logs)}. Did you pass validation_data to search()?"
            )
        # The member's own steps (an exploit copied the parent's iteration count).
        step = int(values.get(oracle_lib.INITIAL_STEP, 0)) + snapshot_lib.iterations(model) - start
        snap = snapshot_lib.capture(
            model, int(values[oracle_lib.MEMBER]), step,
            oracle_lib.user_values(values), logs[name],
        )
        done = snapshots_lib.finished_logs(directory, name)
        if done is not None:  # another worker finished it first: its state counts
            return done
        snapshots_lib.save(directory, snap)
        kept.trial_id = trial.trial_id
        logs[oracle_lib.STEP_METRIC] = step
        return logs

    # ----------------------------------------------------------- results

    def load_model(self, trial):
        """The model of a trial with its weights and optimizer state at the segment's end."""
        model, applier = self._try_build(trial.hyperparameters)
        built = applier.read()
        self._restore(model, trial.trial_id)
        applier.apply({k: v for k, v in built.items() if v is not None})
        applier.release()
        return model

    def get_best_models(self, num_models=1):
        """The trained models of the best members at the end of the search.

        Each is built by `build_model(hp)` and restored from the checkpoint
        of its member's last segment (weights and optimizer state).
        """
        return super().get_best_models(num_models)
