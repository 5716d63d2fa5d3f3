"""`PBTTuner`: runs a keras-tuner hypermodel with Population-Based Training."""

import copy
import os
import threading
import time
import traceback

import keras
import keras_tuner
import numpy as np
from keras_tuner.engine.trial import TrialStatus

from keras_pbt import devices as devices_lib
from keras_pbt import snapshot as snapshot_lib
from keras_pbt.hyperparameters import HyperparameterApplier
from keras_pbt.tuner import checkpoint as checkpoint_lib
from keras_pbt.tuner import oracle as oracle_lib

# Keras' name counters and layer creation are not meant for threads:
# building (and restoring, which is quick) happens one model at a time.
_BUILD_LOCK = threading.Lock()


class _DataPhaseLock(keras.callbacks.Callback):
    """Serializes the data-iterator phases of concurrent `fit` calls.

    Two worker threads whose `fit` (or its validation `evaluate`) create and
    drop their data iterators at the same moment were seen to segfault inside
    Keras' `EpochIterator.reset` (TF 2.21, Keras 3.15, NumPy inputs, one
    `MirroredStrategy` each). Those phases run before any callback, so the
    lock is taken before `fit` is called and released at `on_train_begin`;
    then taken after an epoch's last batch and released when validation's
    first batch starts (validation makes its iterator after `on_test_begin`)
    or the next epoch's first batch does.
    """

    lock = threading.Lock()

    def __init__(self):
        super().__init__()
        self.held = False

    def acquire(self):
        if not self.held:
            self.lock.acquire()
            self.held = True

    def release(self):
        if self.held:
            self.held = False
            self.lock.release()

    def on_train_begin(self, logs=None):
        self.release()

    def on_train_batch_begin(self, batch, logs=None):
        self.release()

    def on_train_batch_end(self, batch, logs=None):
        steps = (self.params or {}).get("steps")
        if steps and batch + 1 >= steps:
            self.acquire()

    def on_test_batch_begin(self, batch, logs=None):
        # After validation made its iterator (that happens after on_test_begin).
        self.release()

    def on_test_end(self, logs=None):
        self.release()

    def on_epoch_end(self, epoch, logs=None):
        self.acquire()

    def on_train_end(self, logs=None):
        self.release()


def _is_chief():
    return ("KERASTUNER_ORACLE_IP" in os.environ
            and "chief" in os.environ.get("KERASTUNER_TUNER_ID", ""))


def _last_logs(results):
    if isinstance(results, keras.callbacks.History):
        return {k: float(v[-1]) for k, v in results.history.items() if v}
    if isinstance(results, dict):
        return {k: float(v) for k, v in results.items()}
    raise TypeError(
        "PBTTuner needs HyperModel.fit() to return the History of model.fit or a dict of "
        f"metrics at the end of the segment. Received: {results!r}"
    )


class PBTTuner(keras_tuner.Tuner):
    """Population-Based Training of a keras-tuner hypermodel.

    The same `build_model(hp)` that works with `keras_tuner.RandomSearch`
    works here. `population_size` members are trained for `max_epochs`
    epochs; every `interval_epochs` epochs the worst members copy a better
    member's weights **and optimizer state** and go on with explored
    hyperparameters (decided by `PBTOracle`). Each segment between two
    decisions is one keras-tuner trial (see `keras_pbt.tuner.oracle`), so
    `search()`, `results_summary()`, `get_best_models()`,
    `get_best_hyperparameters()`, resuming with `overwrite=False` and the
    distributed chief/worker mode work as for any keras-tuner tuner.

    A child segment is built by `build_model(hp)` with the child's values
    (so values used at build time, such as a dropout rate, take effect),
    then its parent's checkpoint (weights and optimizer variables) is
    restored, then the optimizer's learning rate (and SGD momentum) built
    from the child's values is applied again with
    `keras_pbt.HyperparameterApplier`, so the next step uses them.

    Args:
        hypermodel: a `keras_tuner.HyperModel` or a function `hp -> model`
            that returns a **compiled and built** model (start it with
            `keras.Input`).
        objective: the metric to rank members by, e.g. `"val_accuracy"`.
        population_size: number of members. Defaults to `8`.
        max_epochs: epochs per member. Defaults to `10`.
        interval_epochs: epochs between decisions. Defaults to `1`.
        quantile, selection, factors, resample_probability, explore_fn,
            frozen, synchronous, seed: see `PBTOracle`.
        logdir: TensorBoard directory (one run `member_<id>` per member,
            read by the PBT lineage tab). Defaults to
            `<directory>/<project_name>/pbt_logs`.
        devices: `None` (one worker, with `distribution_strategy` if
            given), `"auto"` or a list of device names: one worker thread per
            device slice, each with its own `MirroredStrategy`
            (`keras_pbt.devices.member_strategy`), all sharing this oracle.
            Defaults to `None`.
        devices_per_member: devices per slice. Defaults to `1`.
        max_idle_sleep: longest pause, in seconds, of a worker waiting for
            the others (it backs off from 0.05 s). Defaults to `0.25`.
        hyperparameters, tune_new_entries, allow_new_entries,
            max_retries_per_trial, max_consecutive_failed_trials: as in
            `keras_tuner.Oracle`.
        **kwargs: `directory`, `project_name`, `overwrite`, `tuner_id`,
            `distribution_strategy`, `max_model_size`, as in
            `keras_tuner.Tuner`.

    Example:

    ```python
    tuner = keras_pbt.PBTTuner(build_model, objective="val_accuracy",
                               population_size=8, interval_epochs=1, max_epochs=20,
                               directory="kt", project_name="digits")
    tuner.search(x, y, validation_data=(xv, yv))
    tuner.results_summary()
    best_model = tuner.get_best_models(1)[0]
    ```
    """

    def __init__(
        self,
        hypermodel=None,
        objective=None,
        population_size=8,
        max_epochs=10,
        interval_epochs=1,
        quantile=0.2,
        selection="truncation",
        factors=(0.8, 1.2),
        resample_probability=0.25,
        explore_fn=None,
        frozen=(),
        synchronous=True,
        seed=None,
        logdir=None,
        devices=None,
        devices_per_member=1,
        max_idle_sleep=0.25,
        hyperparameters=None,
        tune_new_entries=True,
        allow_new_entries=True,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
        **kwargs,
    ):
        for key in ("optimizer", "loss", "metrics", "executions_per_trial"):
            if kwargs.get(key) not in (None, 1 if key == "executions_per_trial" else None):
                raise ValueError(
                    f"PBTTuner does not support `{key}`: compile the model in build_model(hp). "
                    f"Received: {key}={kwargs[key]!r}"
                )
        oracle = oracle_lib.PBTOracle(
            objective=objective, population_size=population_size, max_epochs=max_epochs,
            interval_epochs=interval_epochs, quantile=quantile, selection=selection,
            factors=factors, resample_probability=resample_probability,
            explore_fn=explore_fn, frozen=frozen, synchronous=synchronous, seed=seed,
            hyperparameters=hyperparameters, tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries, max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        if devices is not None and kwargs.get("distribution_strategy") is not None:
            raise ValueError(
                "Give `devices` (one strategy per device slice) or `distribution_strategy`, "
                f"not both. Received: devices={devices!r}"
            )
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
        self.pbt_oracle = oracle  # the local oracle, also on a worker
        self.logdir = logdir or os.path.join(self.project_dir, "pbt_logs")
        oracle.logdir = self.logdir
        self.devices = devices
        self.devices_per_member = devices_per_member
        self.max_idle_sleep = float(max_idle_sleep)
        self.training_calls = 0  # segments trained by this process
        self.idle_waits = 0  # IDLE answers received (waiting for other members)
        self.idle_seconds = 0.0  # time slept on them
        self._stop = threading.Event()

    # ------------------------------------------------------------ search

    def _workers(self):
        if self.devices is None:
            return [(self.tuner_id, self.distribution_strategy)]
        # At most one worker per member; on a distributed worker `self.oracle`
        # is keras-tuner's client, hence the local oracle's size.
        slices = devices_lib.assign_devices(
            self.pbt_oracle.population_size, self.devices, self.devices_per_member)
        unique = []
        for s in slices:
            if s not in unique:
                unique.append(s)
        return [(f"{self.tuner_id}-{i}", devices_lib.member_strategy(s))
                for i, s in enumerate(unique)]

    def search(self, *fit_args, **fit_kwargs):
        """Trains the population; arguments are those of `model.fit`.

        `epochs` and `initial_epoch` are set per segment from `max_epochs`
        and `interval_epochs`; do not pass them.
        """
        for key in ("epochs", "initial_epoch"):
            if key in fit_kwargs:
                raise ValueError(
                    f"PBTTuner sets `{key}` for each segment from max_epochs and "
                    f"interval_epochs. Received: {key}={fit_kwargs[key]!r}"
                )
        if _is_chief():
            return super().search(*fit_args, **fit_kwargs)
        if "verbose" in fit_kwargs and not self._is_worker():
            self.oracle.verbose = fit_kwargs["verbose"]
        self._stop.clear()
        self.on_search_begin()
        self.save()
        workers = self._workers()
        if len(workers) == 1:
            self._worker_loop(workers[0][0], workers[0][1], fit_args, fit_kwargs, alone=True)
        else:
            self._run_threads(workers, fit_args, fit_kwargs)
        self.on_search_end()
        self.save()

    def _run_threads(self, workers, fit_args, fit_kwargs):
        errors = []

        def run(tuner_id, strategy):
            try:
                self._worker_loop(tuner_id, strategy, fit_args, fit_kwargs, alone=False)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(e)
                self._stop.set()

        threads = [threading.Thread(target=run, args=w, name=f"pbt-tuner-{w[0]}", daemon=True)
                   for w in workers]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(0.1)
        except KeyboardInterrupt:
            # Every worker finishes its current segment, then stops.
            self._stop.set()
            for t in threads:
                t.join()
            raise
        if errors:
            raise errors[0]

    def _worker_loop(self, tuner_id, strategy, fit_args, fit_kwargs, alone):
        sleep = 0.05
        while not self._stop.is_set():
            self.pre_create_trial()
            trial = self.oracle.create_trial(tuner_id)
            if trial.status == TrialStatus.STOPPED:
                break
            if trial.status == TrialStatus.IDLE:
                # Waiting for other members: back off instead of spinning
                # (keras-tuner's own loop asks again at once).
                self.idle_waits += 1
                self.idle_seconds += sleep
                time.sleep(sleep)
                sleep = min(sleep * 2, self.max_idle_sleep)
                continue
            sleep = 0.05
            self.on_trial_begin(trial)
            try:
                logs, step = self._run_segment(trial, strategy, fit_args, fit_kwargs, alone)
                self.oracle.update_trial(trial.trial_id, logs, step=step)
                trial.status = TrialStatus.COMPLETED
            except keras_tuner.errors.FatalError:
                raise
            except Exception as e:  # noqa: BLE001 - recorded in the trial, as keras-tuner does
                trial.status = (TrialStatus.FAILED
                                if isinstance(e, keras_tuner.errors.FailedTrialError)
                                else TrialStatus.INVALID)
                trial.message = traceback.format_exc()
            self.oracle.end_trial(trial)

    def on_trial_end(self, trial):
        # `_worker_loop` ends trials itself; the oracle saves its state then.
        self.oracle.end_trial(trial)

    # ----------------------------------------------------------- segment

    def _build(self, hp, strategy):
        with _BUILD_LOCK:
            if strategy is None:
                model = self.hypermodel.build(hp)
            else:
                with strategy.scope():
                    model = self.hypermodel.build(hp)
        if not isinstance(model, keras.Model) or getattr(model, "optimizer", None) is None:
            raise keras_tuner.errors.FatalTypeError(
                "PBTTuner needs build_model(hp) to return a compiled keras.Model. "
                f"Received: {model!r}"
            )
        if self.max_model_size:
            size = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
            if size > self.max_model_size:
                raise keras_tuner.errors.FailedTrialError(
                    f"Oversized model: {size} parameters (max_model_size={self.max_model_size})."
                )
        if not model.built:
            raise keras_tuner.errors.FatalValueError(
                "PBTTuner needs build_model(hp) to return a built model (start it with "
                "keras.Input(shape)) so that its weights and optimizer state can be "
                "restored before training."
            )
        return model

    @staticmethod
    def _applier(model):
        """Applies the values build_model gave the optimizer again after a restore."""
        optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
        names = ["learning_rate"]
        if isinstance(optimizer, keras.optimizers.SGD):
            names.append("momentum")  # also creates SGD's momentum slots
        try:
            return HyperparameterApplier(model, names)
        except TypeError:  # a learning-rate schedule: nothing to re-apply
            return HyperparameterApplier(model, names[1:])

    def _restore(self, model, trial_id, strategy):
        snap = checkpoint_lib.load(self.get_trial_dir(trial_id))
        with _BUILD_LOCK:
            applier = self._applier(model)
            fresh = applier.read()
            try:
                snapshot_lib.restore(model, snap)
            except ValueError as e:
                raise keras_tuner.errors.FatalValueError(
                    f"{e} If a hyperparameter changes the model's weights (a layer size, a "
                    "layer that exists or not), pass its name in PBTTuner(frozen=[...])."
                ) from e
            applier.apply({k: v for k, v in fresh.items() if v is not None}, force=True)
        return snap

    def _run_segment(self, trial, strategy, fit_args, fit_kwargs, alone):
        hp = trial.hyperparameters
        values = hp.values
        if alone:
            keras.backend.clear_session()  # as keras-tuner does between trials
        model = self._build(hp, strategy)
        parent = values.get(oracle_lib.PARENT_TRIAL) or None
        if parent:
            self._restore(model, parent, strategy)
        else:
            with _BUILD_LOCK:
                self._applier(model)  # builds the optimizer (and SGD slots) as a child's is
        kwargs = dict(fit_kwargs)
        kwargs["callbacks"] = copy.deepcopy(list(kwargs.get("callbacks") or []))
        for callback in kwargs["callbacks"]:
            if isinstance(callback, keras.callbacks.TensorBoard):
                # One run per member; its epochs continue across segments.
                callback.log_dir = os.path.join(
                    str(callback.log_dir), f"member_{values[oracle_lib.MEMBER]}")
        kwargs["epochs"] = int(values[oracle_lib.EPOCHS])
        kwargs["initial_epoch"] = int(values[oracle_lib.INITIAL_EPOCH])
        self.training_calls += 1
        start = snapshot_lib.iterations(model)
        guard = None
        if not alone:
            guard = _DataPhaseLock()
            kwargs["callbacks"].insert(0, guard)
            guard.acquire()
        try:
            logs = _last_logs(self.hypermodel.fit(hp, model, *fit_args, **kwargs))
        finally:
            if guard is not None:
                guard.release()
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
        checkpoint_lib.save(self.get_trial_dir(trial.trial_id), snap)
        return logs, step

    def run_trial(self, trial, *fit_args, **fit_kwargs):
        """Trains one segment (see `search`); returns its final metrics."""
        logs, _ = self._run_segment(trial, self.distribution_strategy, fit_args, fit_kwargs,
                                    alone=True)
        return logs

    # ----------------------------------------------------------- results

    def load_model(self, trial):
        """The model of a trial with its weights and optimizer state at the segment's end."""
        strategy = self.distribution_strategy
        model = self._build(trial.hyperparameters, strategy)
        self._restore(model, trial.trial_id, strategy)
        return model

    def get_best_models(self, num_models=1):
        """The trained models of the best members at the end of the search.

        Each is built by `build_model(hp)` and restored from the checkpoint
        of its member's last segment (weights and optimizer state).
        """
        return super().get_best_models(num_models)
