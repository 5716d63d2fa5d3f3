"""A `PBTTuner` worker: one device slice, the member model it keeps, its data.

A worker trains one segment after another, of whichever members the
oracle hands it. It keeps the models it built, one per `Roles.model_key`
(the values of the layout and rebuild hyperparameters), at most one per
member: when a segment's model would be built the same as a kept one, the
worker restores the parent's snapshot into that model (nothing at all
when the segment continues the one the model just trained) and assigns the
optimizer hyperparameters with `keras_pbt.HyperparameterApplier`, without
building or retracing. Only an initial segment (fresh weights) or new
architecture values build.

With a strategy (`PBTTuner(devices=...)`), the data reach `model.fit`
through the population's member pipeline
(`keras_pbt.population.data.member_pipeline`: per-replica tf.data on
TensorFlow, NumPy batches on JAX and PyTorch), with explicit steps
(`keras_pbt.population.data.steps_per_epoch`), so no callback hooks a batch.
"""

import collections
import contextlib
import threading

import keras

from keras_pbt import backend as backend_lib
from keras_pbt.population import data as data_lib
from keras_pbt.population import devices as devices_lib
from keras_pbt.runtime.trace_lock import TraceLock


class Kept:
    """A model a worker keeps.

    Attributes:
        model: the model.
        applier: its `HyperparameterApplier`.
        built_values: the optimizer values it was built with.
        trial_id: the trial whose final state it holds (None while training).
    """

    def __init__(self, model, applier):
        self.model = model
        self.applier = applier
        self.built_values = {k: v for k, v in applier.read().items() if v is not None}
        self.trial_id = None


class Worker:
    """One worker's state.

    Args:
        tuner_id: the id it asks the oracle for trials with.
        strategy: its `tf.distribute` strategy, or None.
        max_models: models it keeps at most (the least recently used goes).

    Attributes:
        models: `OrderedDict` model key -> `Kept`.
        builds: models it built; reuses: segments that used a kept model.
        idle_sleeps: the pauses, in seconds, after each IDLE answer.
    """

    def __init__(self, tuner_id, strategy, max_models=1):
        self.tuner_id = tuner_id
        self.strategy = strategy
        self.max_models = max(1, int(max_models))
        self.models = collections.OrderedDict()
        self.builds = 0
        self.reuses = 0
        self.idle_sleeps = []
        self.asked = False  # asked the oracle and got no trial yet
        self.next_sleep = None
        self.shuffle_seed = None  # the seed of the member it trains now
        self._validation = {}

    def idle_wait(self, condition, ready, longest):
        """Waits `next_sleep` s on `condition` (a trial ending in this process
        notifies it), then doubles `next_sleep` up to `longest`; returns at
        once if `ready()` (asked under the condition's lock, so that a trial
        ending just before is not missed). Returns whether it waited."""
        with condition:
            if ready is not None and ready():
                return False
            sleep = self.next_sleep
            self.idle_sleeps.append(sleep)
            condition.wait(sleep)
        self.next_sleep = min(sleep * 2, longest)
        return True

    def get(self, key):
        """The kept model of `key` (now the most recently used), or None."""
        kept = self.models.get(key)
        if kept is not None:
            self.models.move_to_end(key)
        return kept

    def keep(self, key, model, applier):
        """Keeps a new model under `key`, forgetting the oldest beyond `max_models`."""
        self.drop(key)
        kept = self.models[key] = Kept(model, applier)
        while len(self.models) > self.max_models:
            self.drop(next(iter(self.models)))
        return kept

    def drop(self, key=None):
        """Forgets the model of `key` (its state is unknown after a failure), or all."""
        for k in list(self.models) if key is None else [key]:
            kept = self.models.pop(k, None)
            if kept is not None:
                kept.applier.release()

    def install_pipeline(self, model):
        """Makes `model.fit` feed arrays or a dataset through the per-replica
        pipeline of this worker's strategy (a no-op without a strategy),
        shuffled with `shuffle_seed`: the member that trains the kept model
        now, not the one that built it."""
        if self.strategy is None:
            return
        fit = type(model).fit
        made = {}  # the model's training pipelines, made once (they reshuffle per iterator)

        def pipeline_fit(x=None, y=None, batch_size=None, validation_data=None, shuffle=True,
                         steps_per_epoch=None, validation_steps=None,
                         validation_batch_size=None, sample_weight=None, **kwargs):
            for key in ("validation_split", "class_weight"):
                if kwargs.get(key):
                    raise ValueError(
                        f"PBTTuner(devices=...) feeds each worker's device slice itself and "
                        f"does not support `{key}` in model.fit. Received: {key}={kwargs[key]!r}"
                    )
            seed = self.shuffle_seed if shuffle else None
            key = (id(x), id(y), id(sample_weight), batch_size, seed, steps_per_epoch)
            if key not in made:
                made.clear()  # one pipeline at a time: another member's goes
                made[key] = (x, y, sample_weight), self._data(
                    x, y, sample_weight, batch_size, seed, steps_per_epoch)
            data, steps = made[key][1]
            if validation_data is not None:
                validation_data, validation_steps = self._validation_data(
                    validation_data, validation_batch_size or batch_size, validation_steps)
                kwargs["validation_steps"] = validation_steps
            # Worker threads trace their steps one at a time (trace_lock).
            kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [TraceLock()]
            return fit(model, data, steps_per_epoch=steps, validation_data=validation_data,
                       shuffle=False, **kwargs)

        model.fit = pipeline_fit

    def _data(self, x, y, sample_weight, batch_size, seed, steps):
        return (data_lib.member_pipeline(self.strategy, x, y, sample_weight, batch_size, seed),
                data_lib.steps_per_epoch(x, y, batch_size, steps))

    def _validation_data(self, data, batch_size, steps):
        key = (id(data), batch_size, steps)
        if key not in self._validation:  # the same every segment: made once
            if data_lib.is_dataset(data):
                count = data_lib.steps_per_epoch(data, steps=steps, name="validation_steps")
            else:
                count = data_lib.steps_per_epoch(data[0], data[1] if len(data) > 1 else None,
                                                 batch_size, steps, "validation_steps")
            out = (data_lib.validation_pipeline(self.strategy, data, batch_size), count)
            self._validation[key] = (data, out)  # `data` kept alive: its id stays unique
        return self._validation[key][1]


class FirstBuilds:
    """Holds training back until every worker of this process has its first model.

    Workers build one model at a time (Keras' layer creation is not meant
    for threads). A build made while the other workers already train is
    starved of the GIL and the cores: measured with 8 workers on 2 cores,
    each build took seconds instead of a tenth of one, the last worker
    started its first segment 40 s after the first, and a synchronous
    search cannot decide a second segment before every first one ended.
    So a worker that has built waits here until every worker has built,
    failed to build, or been told there is nothing to train now; as
    `Population` builds all its members before any trains.

    Args:
        workers: the workers of this process.
    """

    def __init__(self, workers):
        self._pending = {id(w) for w in workers}
        self._cond = threading.Condition()

    def done(self, worker):
        """`worker` built its first model (or will not build one now)."""
        with self._cond:
            self._pending.discard(id(worker))
            if not self._pending:
                self._cond.notify_all()

    @contextlib.contextmanager
    def building(self, worker):
        """Marks `worker` done when its build ends, built or failed."""
        try:
            yield
        finally:
            self.done(worker)

    def wait(self, stop, poll=0.5):
        """Returns once every worker is done, or `stop` (an Event) is set."""
        with self._cond:
            while self._pending and not stop.is_set():
                self._cond.wait(poll)


def make_workers(tuner_id, strategy, population_size, devices):
    """A search's workers in this process: one (with `strategy`) when `devices`
    is None, else one per distinct device slice, each with its own
    `MirroredStrategy`, and at most one per member.

    Args:
        tuner_id: the tuner's id; a slice's worker is `<tuner_id>-<i>`.
        strategy: the `distribution_strategy` of a lone worker, or None.
        population_size: the number of members.
        devices: None, `"auto"`, a list of device names or a
            `keras_pbt.Devices`.

    Returns:
        A list of `Worker`.
    """
    # JAX: members of one architecture compile their steps once per device.
    backend_lib.current().share_compilations()
    if devices is None:
        return [Worker(tuner_id, strategy, population_size)]
    slices = devices_lib.assign_devices(population_size, devices)
    unique = []
    for s in slices:
        if s not in unique:
            unique.append(s)
    return [Worker(f"{tuner_id}-{i}", devices_lib.member_strategy(s), population_size)
            for i, s in enumerate(unique)]


def last_logs(results):
    """The metrics at the end of a segment, from what `HyperModel.fit` returned."""
    if isinstance(results, keras.callbacks.History):
        return {k: float(v[-1]) for k, v in results.history.items() if v}
    if isinstance(results, dict):
        return {k: float(v) for k, v in results.items()}
    raise TypeError(
        "PBTTuner needs HyperModel.fit() to return the History of model.fit or a dict of "
        f"metrics at the end of the segment. Received: {results!r}"
    )


def input_shape(fit_args, fit_kwargs):
    """The batch shape of `x` given to search (None when it has several inputs)."""
    x = fit_args[0] if fit_args else fit_kwargs.get("x")
    if data_lib.is_dataset(x):
        spec = x.element_spec
        spec = spec[0] if isinstance(spec, tuple) else spec
        shape = getattr(spec, "shape", None)  # a TensorSpec's; None for nested inputs
        return None if shape is None else tuple(shape)
    shape = getattr(x, "shape", None)
    return None if shape is None else (None,) + tuple(shape[1:])


class TunerHooks(keras.callbacks.Callback):
    """Calls the tuner's `on_epoch_begin` / `on_epoch_end` (and, only when the
    tuner overrides them, `on_batch_begin` / `on_batch_end`), as keras-tuner's
    `TunerCallback` does. Batches are hooked only then: a batch hook turns
    off Keras' asynchronous batch dispatch."""

    def __init__(self, tuner, trial, batches=False):
        super().__init__()
        self.tuner = tuner
        self.trial = trial
        if batches:
            self.on_train_batch_begin = self._batch_begin
            self.on_train_batch_end = self._batch_end

    def on_epoch_begin(self, epoch, logs=None):
        self.tuner.on_epoch_begin(self.trial, self.model, epoch, logs=logs)

    def on_epoch_end(self, epoch, logs=None):
        self.tuner.on_epoch_end(self.trial, self.model, epoch, logs=logs)

    def _batch_begin(self, batch, logs=None):
        self.tuner.on_batch_begin(self.trial, self.model, batch, logs)

    def _batch_end(self, batch, logs=None):
        self.tuner.on_batch_end(self.trial, self.model, batch, logs)
