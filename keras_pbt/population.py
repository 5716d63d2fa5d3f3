"""`Population`: N members over the machine's devices, trained at once with PBT."""

import copy
import dataclasses
import math
import os
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from keras_pbt import checkpoint as checkpoint_lib
from keras_pbt import devices as devices_lib
from keras_pbt import lineage as lineage_lib
from keras_pbt import selection as selection_lib
from keras_pbt import snapshot as snapshot_lib
from keras_pbt import space as space_lib
from keras_pbt.callback import PBTCallback
from keras_pbt.hyperparameters import HyperparameterApplier
from keras_pbt.progress import PopulationProgress
from keras_pbt.selection import Report
from keras_pbt.store import BarrierTimeoutError
from keras_pbt.store import ConfigurationError
from keras_pbt.store import InMemoryStore
from keras_pbt.store import PopulationStopped
from keras_pbt.store import Snapshot
from keras_pbt.validation import check_int


class PopulationError(RuntimeError):
    """A member kept failing (or the population could not go on).

    Attributes:
        member: the member id.
        cause: the last exception raised by that member.
    """

    def __init__(self, message, member=None, cause=None):
        super().__init__(message)
        self.member = member
        self.cause = cause


class RestoredFailure(RuntimeError):
    """A member's failure from before a resume (its text, from the checkpoint)."""


class NonFiniteStateError(FloatingPointError):
    """A member stopped with NaN or inf in its weights (e.g. by TerminateOnNaN)."""


# Members' input pipelines. Keras distributes a plain dataset with
# `experimental_distribute_dataset`, whose iterators are MultiDeviceIterators;
# several members creating and deleting those at once in threads (Keras makes
# new ones at every epoch and every validation) crash TensorFlow 2.21 with a
# segmentation fault (seen in ~3% of population fits here). Per-replica
# datasets that are not fetched to the device use plain tf.data iterators,
# which did not crash in the same stress runs. Datasets repeat and every fit
# gets explicit steps, so no epoch ends on an out-of-range error.
_INPUT_OPTIONS = tf.distribute.InputOptions(
    experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA,
    experimental_fetch_to_device=False,
)


# In-memory arrays need no tf.data autotuning, and its background thread can
# make an iterator's destructor wait (seen: a member's `fit` took ~9 s to
# return, blocked in ~RootDataset::Iterator, in about half of the population
# runs here).
_ARRAY_OPTIONS = tf.data.Options()
_ARRAY_OPTIONS.autotune.enabled = False


def _num_samples(x, y):
    first = y if y is not None else tf.nest.flatten(x)[0]
    return len(first)


def _dataset_steps(dataset, name):
    n = int(dataset.cardinality())
    if n < 0:
        raise ValueError(
            f"The dataset has an unknown or infinite number of batches: pass `{name}=` to fit."
        )
    return n


def _distribute_arrays(strategy, arrays, batch_size, seed):
    n = _num_samples(arrays[0] if isinstance(arrays, tuple) else arrays,
                     arrays[1] if isinstance(arrays, tuple) else None)

    def dataset_fn(ctx):
        ds = tf.data.Dataset.from_tensor_slices(arrays)
        if seed is not None:
            # The same seed in every replica's pipeline: one permutation, sharded.
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return ds.batch(ctx.get_per_replica_batch_size(batch_size)).repeat().with_options(
            _ARRAY_OPTIONS)

    return strategy.distribute_datasets_from_function(dataset_fn, _INPUT_OPTIONS)


def _distribute_batches(strategy, dataset):
    replicas = strategy.num_replicas_in_sync
    if replicas > 1:
        first = tf.nest.flatten(next(iter(dataset)))[0]
        per_replica = max(1, math.ceil(int(first.shape[0]) / replicas))

    def dataset_fn(ctx):
        ds = dataset
        if replicas > 1:
            ds = ds.rebatch(per_replica).shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return ds.repeat()

    return strategy.distribute_datasets_from_function(dataset_fn, _INPUT_OPTIONS)


class Member:
    """One member of a `Population`.

    Attributes:
        id: the member id.
        devices: the device names of its slice.
        strategy: its `tf.distribute.MirroredStrategy`.
        model: its compiled `keras.Model`.
        callback: its `PBTCallback`.
        history: dict metric -> list of per-epoch values, over all its fits.
        failures: the errors it raised, in order.
        seed: its own seed (data shuffling).
    """

    def __init__(self, member_id, devices, strategy, model, callback, seed):
        self.id = member_id
        self.devices = devices
        self.strategy = strategy
        self.model = model
        self.callback = callback
        self.seed = seed
        self.history = {}
        self.failures = []
        self.initial_snapshot = None

    @property
    def hparams(self):
        """Its current hyperparameters."""
        return dict(self.callback.hparams)

    @property
    def last_metric(self):
        """Its metric at its latest boundary (None before the first)."""
        reports = self.callback.store.histories().get(self.id) or []
        return reports[-1].metric if reports else None

    def __repr__(self):
        return f"Member(id={self.id!r}, devices={self.devices}, hparams={self.hparams})"


class _MemberControl(keras.callbacks.Callback):
    """Stops a member at the end of an epoch when the population stops, and
    feeds the progress view."""

    def __init__(self, population, member):
        super().__init__()
        self.population = population
        self.member = member
        self._exploits_seen = member.callback.exploits

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        cb = self.member.callback
        # One entry per completed epoch (an epoch interrupted by a fault is
        # trained again and recorded once).
        for k, v in logs.items():
            self.member.history.setdefault(k, []).append(_to_float(v))
        fields = dict(epoch=epoch + 1, step=cb.steps, metric=logs.get(cb.monitor),
                      hparams=cb.hparams, status="training")
        if cb.exploits != self._exploits_seen:
            self._exploits_seen = cb.exploits
            d = cb.last_decision
            ops = ", ".join(f"{k} {v}" for k, v in d.ops.items())
            fields["exploit"] = f"copied {d.parent} at step {cb.steps} ({ops})"
        self.population._progress.update(self.member.id, **fields)
        if self.population._checkpointer is not None and _checkpoint_epoch(cb):
            self.population._save_member(self.member)
        if self.population._stop.is_set():
            self.model.stop_training = True


def _checkpoint_epoch(cb):
    """Checkpoints follow interval boundaries: every boundary epoch with
    epoch intervals, every epoch end with step intervals."""
    return cb.interval_epochs is None or cb.epochs % cb.interval_epochs == 0


class _MonitorCheck(keras.callbacks.Callback):
    """Runs before the member's PBTCallback: a monitored metric missing from
    the logs is a configuration error that stops the population (not a
    member fault to restart)."""

    def __init__(self, pbt):
        super().__init__()
        self.pbt = pbt
        self.checked = False
        if pbt.interval_steps is not None:
            self.on_train_batch_end = self._on_train_batch_end

    def _check(self, logs):
        try:
            self.pbt._read_metric(logs or {})
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        self.checked = True

    def on_epoch_end(self, epoch, logs=None):
        pbt = self.pbt
        if not self.checked and pbt.interval_epochs is not None and (
                (pbt.epochs + 1) % pbt.interval_epochs == 0):
            self._check(logs)

    def _on_train_batch_end(self, batch, logs=None):
        if not self.checked:
            self._check(logs)


def _extra_variables(model):
    """Model variables that are neither weights nor optimizer variables:
    the state of Keras' seed generators (dropout and other random layers)."""
    known = {id(v) for v in model.weights}
    known |= {id(v) for v in snapshot_lib._optimizer_variables(model)}
    return [v for v in model.variables if id(v) not in known]


def _to_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float(np.asarray(value))


def _last_loss_non_finite(member):
    losses = member.history.get("loss")
    return bool(losses) and not math.isfinite(losses[-1])


def _non_finite(model):
    return any(not np.all(np.isfinite(v.numpy())) for v in model.weights
               if np.issubdtype(np.dtype(v.dtype), np.floating))


class Population:
    """A population of Keras models trained concurrently with PBT.

    Each member is built by `build(hp)` inside its own
    `tf.distribute.MirroredStrategy` over a slice of the machine's devices
    (every GPU, or logical CPU devices where there is none), trained in its
    own thread, and wired through a `PBTCallback` to one `InMemoryStore`.

    Args:
        build: `fn(hp) -> compiled keras.Model`; `hp` is a dict of the
            member's initial hyperparameters.
        space: dict name -> `Uniform` / `LogUniform` / `IntUniform` / `Choice`.
        size: number of members, >= 2. Defaults to `8`.
        monitor: metric to rank by. Defaults to `"val_accuracy"`.
        mode: `"auto"`, `"min"` or `"max"`. Defaults to `"auto"`.
        interval_epochs: judge every this many epochs (default 1 when
            `interval_steps` is not given).
        interval_steps: judge every this many optimizer steps instead.
        burn_in: no decisions before this many epochs (or steps).
        synchronous: all members meet at each boundary (True) or decide on
            the latest comparable reports (False). Defaults to `True`.
        quantile, selection, ranking, factors, resample_probability,
            explore_fn, explore, copy_optimizer_state: as in `PBTCallback`.
        sync_timeout: seconds a synchronous boundary waits for late members.
            Defaults to `600`.
        on_timeout: what a synchronous boundary does when members are
            later than `sync_timeout`: `"raise"` stops the population with a
            `PopulationError` naming them; `"continue"` decides without them
            (they decide on their own when they arrive). Defaults to
            `"raise"`.
        setters: dict name -> `fn(model, value)` for hyperparameters that are
            not optimizer fields (called for each member's model), or the
            name of a `keras.Variable` attribute of the model.
        devices: `"auto"` or a list of device names. Defaults to `"auto"`.
        devices_per_member: devices in each member's slice. Defaults to `1`.
        num_cpu_devices: logical CPU devices to create when there is no GPU
            (only before TensorFlow initialises). Defaults to `min(size, 4)`.
        max_failures: restarts allowed per member before the population
            stops with a `PopulationError`. Defaults to `3`.
        logdir: TensorBoard log directory (one run per member).
        seed: the population's seed (initial hyperparameters, tie-breaks,
            explore, shuffling). When given, each member's model is built
            after `keras.utils.set_random_seed(<member seed>)`, so initial
            weights are reproducible (this resets Python's, NumPy's and
            TensorFlow's global seeds). Defaults to a random seed.
        member_ids: optional ids (unique); defaults to `0..size-1`.
        initial_hparams: optional list of `size` dicts replacing the sampled
            initial hyperparameters.
        verbose: 0 silent, 1 a table refreshed in place (plain lines when
            not a terminal), 2 one line per member per epoch. Defaults to 1.

    Example:

    ```python
    def build(hp):
        model = keras.Sequential([keras.Input((64,)),
                                  keras.layers.Dense(64, activation="relu"),
                                  keras.layers.Dense(10)])
        model.compile(keras.optimizers.SGD(hp["learning_rate"], momentum=hp["momentum"]),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model

    pop = keras_pbt.Population(build, space, size=8, monitor="val_accuracy",
                               interval_epochs=1, logdir="runs/digits")
    pop.fit(x, y, validation_data=(xv, yv), epochs=20, batch_size=32)
    best = pop.best_model()
    ```
    """

    def __init__(
        self,
        build,
        space,
        size=8,
        monitor="val_accuracy",
        mode="auto",
        interval_epochs=None,
        interval_steps=None,
        burn_in=0,
        synchronous=True,
        quantile=0.2,
        selection="truncation",
        factors=(0.8, 1.2),
        resample_probability=0.25,
        explore_fn=None,
        copy_optimizer_state=True,
        setters=None,
        ranking="last",
        explore="perturb",
        devices="auto",
        devices_per_member=1,
        num_cpu_devices=None,
        max_failures=3,
        sync_timeout=600.0,
        on_timeout="raise",
        logdir=None,
        seed=None,
        member_ids=None,
        initial_hparams=None,
        verbose=1,
    ):
        if not callable(build):
            raise TypeError(f"`build` must be a function hp -> compiled model. Received: build={build!r}")
        check_int("size", size, minimum=2, why=" (PBT needs a population)")
        check_int("max_failures", max_failures, minimum=0)
        if verbose not in (0, 1, 2, "auto"):
            raise ValueError(f"`verbose` must be 0, 1 or 2. Received: verbose={verbose!r}")
        space = space_lib.validate_space(space)
        if member_ids is None:
            member_ids = list(range(size))
        member_ids = list(member_ids)
        if len(member_ids) != size:
            raise ValueError(
                f"`member_ids` must have `size`={size} entries. Received: member_ids={member_ids!r}"
            )
        if len(set(map(repr, member_ids))) != size:
            raise ValueError(f"`member_ids` must be unique. Received: member_ids={member_ids!r}")
        self.store = InMemoryStore(seed=seed)
        self.seed = self.store.seed
        rng = np.random.default_rng([self.seed, 0])
        if initial_hparams is None:
            initial_hparams = [space_lib.sample_space(space, rng) for _ in range(size)]
        elif isinstance(initial_hparams, (str, bytes, dict)) or len(initial_hparams) != size:
            raise ValueError(
                f"`initial_hparams` must be a list of `size`={size} dicts. "
                f"Received: initial_hparams={initial_hparams!r}"
            )
        else:
            for i, hp in enumerate(initial_hparams):
                if not hasattr(hp, "keys") or set(hp) != set(space):
                    raise ValueError(
                        f"`initial_hparams[{i}]` must name exactly the hyperparameters of `space` "
                        f"({sorted(space)}). Received: initial_hparams[{i}]={hp!r}"
                    )
        self.space = space
        self.size = size
        self.monitor = monitor
        self.max_failures = int(max_failures)
        self.verbose = 1 if verbose == "auto" else verbose
        self.logdir = logdir
        if setters is not None and not hasattr(setters, "items"):
            raise TypeError(f"`setters` must be a dict. Received: setters={setters!r}")
        self._setters = dict(setters or {})
        unknown = sorted(set(self._setters) - set(space))
        if unknown:
            raise ValueError(
                f"`setters` names {unknown}, which are not in `space` ({sorted(space)}). "
                f"Received: setters={self._setters!r}"
            )
        callbacks = [
            PBTCallback(
                self.store, mid, space, monitor=monitor, interval_epochs=interval_epochs,
                interval_steps=interval_steps, burn_in=burn_in, mode=mode, quantile=quantile,
                selection=selection, factors=factors, resample_probability=resample_probability,
                explore_fn=explore_fn, ranking=ranking, explore=explore, hparams=hp,
                synchronous=synchronous,
                sync_timeout=sync_timeout, on_timeout=on_timeout,
                copy_optimizer_state=copy_optimizer_state, seed=self.seed, logdir=logdir,
            )
            for mid, hp in zip(member_ids, initial_hparams)
        ]
        self.mode = callbacks[0].mode
        if num_cpu_devices is None:
            num_cpu_devices = min(size, 4)
        slices = devices_lib.assign_devices(size, devices, devices_per_member, num_cpu_devices)
        self.members = []
        for i, (mid, hp, cb, devs) in enumerate(zip(member_ids, initial_hparams, callbacks, slices)):
            strategy = devices_lib.member_strategy(devs)
            member_seed = int(rng.integers(2**31))
            if seed is not None:
                # Keras initializers without a seed draw from the global
                # generators: seeding them per member makes a seeded
                # population's initial weights reproducible.
                keras.utils.set_random_seed(member_seed)
            with strategy.scope():
                model = build(dict(hp))
            if not isinstance(model, keras.Model) or getattr(model, "optimizer", None) is None:
                raise TypeError(
                    "`build` must return a compiled keras.Model (call model.compile). "
                    f"Received: {model!r} for member {mid!r}"
                )
            cb.setters = self._member_setters(model)
            self._check_hparams(model, cb, mid)
            self.members.append(Member(mid, devs, strategy, model, cb, seed=member_seed))
        self._stop = threading.Event()
        self._progress = PopulationProgress(member_ids, monitor, 0, verbose=0)
        self._fatal = None
        self._fatal_lock = threading.Lock()
        self._checkpointer = None
        self.resumed_from = None

    def _check_hparams(self, model, cb, mid):
        # Fails now, before any training, for a name that is neither an
        # optimizer field nor in `setters`, or a learning rate that is a
        # schedule. Also builds the optimizer (and SGD momentum slots), so
        # every snapshot and checkpoint has the same layout from the start.
        try:
            HyperparameterApplier(model, list(self.space), cb.setters)
        except (ValueError, TypeError) as error:
            raise type(error)(
                f"{error} (member {mid!r}). Received: space={self.space!r}, "
                f"setters={sorted(self._setters)!r}"
            ) from None

    def _member_setters(self, model):
        out = {}
        for name, setter in self._setters.items():
            if isinstance(setter, str):
                variable = getattr(model, setter, None)
                if not isinstance(variable, keras.Variable):
                    raise ValueError(
                        f"`setters[{name!r}]` names model attribute {setter!r}, which is not a "
                        "keras.Variable of the built model."
                    )
                out[name] = variable
            else:
                out[name] = setter
        return out

    # ----------------------------------------------------------------- data

    def _member_data(self, member, x, y, batch_size, shuffle, shuffle_buffer, steps=None):
        """The member's training data, distributed over its slice; returns (data, steps)."""
        seed = member.seed if shuffle else None
        if isinstance(x, tf.data.Dataset):
            if y is not None:
                raise ValueError("`y` must be None when `x` is a tf.data.Dataset. Received: y=...")
            steps = steps or _dataset_steps(x, "steps_per_epoch")
            if shuffle:
                x = x.shuffle(shuffle_buffer, seed=member.seed)
            return _distribute_batches(member.strategy, x), steps
        n, batch_size = _num_samples(x, y), batch_size or 32
        return _distribute_arrays(member.strategy, (x, y) if y is not None else x, batch_size,
                                  seed), steps or math.ceil(n / batch_size)

    def _member_validation(self, member, validation_data, batch_size, steps=None):
        """The validation data distributed over the member's slice; returns (data, steps)."""
        if validation_data is None:
            return None, None
        if isinstance(validation_data, tf.data.Dataset):
            steps = steps or _dataset_steps(validation_data, "validation_steps")
            return _distribute_batches(member.strategy, validation_data), steps
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (1, 2, 3):
            raise ValueError(
                "`validation_data` must be (x,), (x, y), (x, y, sample_weight) or a "
                f"tf.data.Dataset. Received: validation_data of type {type(validation_data).__name__}"
            )
        batch_size = batch_size or 32
        arrays = tuple(validation_data) if len(validation_data) > 1 else validation_data[0]
        n = _num_samples(validation_data[0], validation_data[1] if len(validation_data) > 1 else None)
        return (_distribute_arrays(member.strategy, arrays, batch_size, None),
                steps or math.ceil(n / batch_size))

    # ------------------------------------------------------------------ fit

    def fit(self, x=None, y=None, validation_data=None, epochs=1, batch_size=None, callbacks=None,
            shuffle=True, shuffle_buffer=1024, checkpoint_dir=None, **fit_kwargs):
        """Trains every member concurrently with PBT.

        Args:
            x, y: NumPy arrays (each member shuffles them with its own seed)
                or a `tf.data.Dataset` in `x` (batches are shuffled with the
                member's seed when `shuffle`).
            validation_data: as in `keras.Model.fit`, the same for every member.
            epochs: epochs per member.
            batch_size: for arrays. Defaults to 32.
            callbacks: extra Keras callbacks: a list (deep-copied for each
                member) or `fn(member_id) -> list`.
            shuffle: shuffle the training data per member. Defaults to True.
            shuffle_buffer: buffer of the batch shuffle for a Dataset.
            checkpoint_dir: a directory to checkpoint the population to at
                interval boundaries (every boundary epoch; every epoch with
                `interval_steps`). If it already holds a checkpoint of this
                population, training resumes from it: run the same command
                again after a crash. See `keras_pbt.checkpoint`.
            **fit_kwargs: passed to `model.fit` (e.g. `steps_per_epoch`).

        Returns:
            `self.history`: dict member id -> dict metric -> list.

        Raises:
            PopulationError: if a member failed more than `max_failures` times
                (or a synchronous boundary timed out with `on_timeout="raise"`).
            ConfigurationError: (a `ValueError`) if the monitored metric is
                not in the logs; it lists the keys that are.
            CheckpointError: (a `ValueError`) if `checkpoint_dir` holds a
                checkpoint that is corrupt, truncated, of another population,
                or not keras-pbt's; it names the file.
        """
        check_int("epochs", epochs)
        for key in ("verbose", "initial_epoch", "validation_split"):
            if key in fit_kwargs:
                raise ValueError(
                    f"Population.fit manages `{key}` itself. Received: {key}={fit_kwargs[key]!r}"
                )
        if callbacks is not None and not callable(callbacks) and not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"`callbacks` must be a list or fn(member_id) -> list. Received: {callbacks!r}")
        if isinstance(x, tf.data.Dataset) and y is not None:
            raise ValueError("`y` must be None when `x` is a tf.data.Dataset. Received: y=...")
        self._stop.clear()
        self.store.reopen()
        self._fatal = None
        self._progress = PopulationProgress([m.id for m in self.members], self.monitor, epochs,
                                            verbose=self.verbose)
        self._checkpointer = None
        if checkpoint_dir is not None:
            self._open_checkpoint(checkpoint_dir)
        for member in self.members:
            if member.initial_snapshot is None:
                member.callback.set_model(member.model)
                member.initial_snapshot = snapshot_lib.capture(
                    member.model, member.id, member.callback.steps, member.callback.hparams)
        threads = []
        start = time.monotonic()
        for member in self.members:
            extra = callbacks(member.id) if callable(callbacks) else copy.deepcopy(list(callbacks or []))
            data, steps = self._member_data(member, x, y, batch_size, shuffle, shuffle_buffer,
                                            fit_kwargs.pop("steps_per_epoch", None))
            vdata, vsteps = self._member_validation(member, validation_data, batch_size,
                                                    fit_kwargs.pop("validation_steps", None))
            # Each member's data is already shuffled with its own seed, repeated,
            # and distributed over its slice (see _distribute_arrays).
            kwargs = dict(fit_kwargs, validation_data=vdata, epochs=epochs, verbose=0,
                          shuffle=False, steps_per_epoch=steps)
            if vdata is not None:
                kwargs["validation_steps"] = vsteps
            t = threading.Thread(target=self._train_member, args=(member, data, kwargs, extra),
                                 name=f"pbt-member-{member.id}", daemon=True)
            threads.append(t)
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(0.1)
        except KeyboardInterrupt:
            self._interrupted(threads)
            raise
        self._progress.close()
        self.elapsed = time.monotonic() - start
        if self._fatal is not None:
            raise self._fatal
        if self.verbose:
            self._print_summary()
        return self.history

    def stop(self):
        """Asks every member to stop at the end of its current epoch."""
        self._stop.set()
        self.store.close("the population was stopped")

    def _interrupted(self, threads):
        """Ctrl-C. Without checkpoints: stop now. With checkpoints: let every
        member finish its epoch and its boundary (so the boundary's
        checkpoint is written), then stop; a second Ctrl-C stops at once."""
        ck = self._checkpointer
        if ck is None:
            self._progress.message("Interrupted: stopping every member at the end of its epoch...")
            self.stop()
            for t in threads:
                t.join(60)
            self._progress.close()
            return
        self._progress.message(
            "Interrupted: stopping every member at the end of its epoch and saving a checkpoint "
            "(Ctrl-C again to stop at once)...")
        self._stop.set()  # members stop after their epoch; the store stays open
        try:
            deadline = time.monotonic() + self.members[0].callback.sync_timeout + 60
            while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
                for t in threads:
                    t.join(0.1)
        except KeyboardInterrupt:
            pass
        self.stop()
        for t in threads:
            t.join(60)
        self._progress.message(
            f"Checkpoint of epoch {ck.committed} is in {ck.directory}; run the same command to "
            "resume." if ck.committed is not None else
            f"No complete checkpoint was written to {ck.directory} yet.")
        self._progress.close()

    # ---------------------------------------------------------- checkpoints

    def _checkpoint_header(self):
        return {
            "member_ids": [m.id for m in self.members],
            "space": {name: checkpoint_lib.to_json(spec.to_dict()) for name, spec in self.space.items()},
            "monitor": self.monitor,
            "mode": self.mode,
            "seed": self.seed,
        }

    def _open_checkpoint(self, directory):
        header = self._checkpoint_header()
        ck = checkpoint_lib.Checkpointer(directory, header)
        manifest = os.path.join(ck.directory, checkpoint_lib.MANIFEST)
        body = checkpoint_lib.read_manifest(ck.directory)
        if body is not None:
            for key in ("member_ids", "space", "monitor", "mode"):
                if body.get(key) != header[key]:
                    raise checkpoint_lib.CheckpointError(
                        f"`checkpoint_dir`={directory!r} holds a checkpoint of another population: "
                        f"its {key} is {body.get(key)!r}, this population's is {header[key]!r}. "
                        "Use another directory, or build the same population.", manifest)
        trained = max(m.callback.epochs for m in self.members)
        if body is not None and trained:
            # This population already trained in this process: go on from
            # its state in memory, never roll it back to an older checkpoint.
            if body["epoch"] > trained:
                raise checkpoint_lib.CheckpointError(
                    f"`checkpoint_dir`={directory!r} holds a checkpoint of epoch {body['epoch']}, "
                    f"later than this population's epoch {trained}. Resume it with a new "
                    "Population, or use another directory.", manifest)
        elif body is not None:
            body, members = ck.load()  # verifies every file before anything is restored
            self._restore(body, members)
            ck.header["seed"] = self.seed
            self.resumed_from = body["epoch"]
            self._progress.message(
                f"Resuming from the checkpoint of epoch {body['epoch']} in {directory}.")
        ck.clean()
        self._checkpointer = ck

    def _save_member(self, member):
        cb = member.callback
        # With step intervals, `steps` is only synced at boundaries and at
        # epoch starts; bring it up to the optimizer's count at this epoch end.
        cb._sync_steps()
        snap = snapshot_lib.capture(member.model, member.id, cb.steps, cb.hparams)
        reports, records = self.store.member_records(member.id)
        arrays = {f"w{i:05d}": a for i, a in enumerate(snap.weights)}
        arrays.update({f"o{i:05d}": a for i, a in enumerate(snap.optimizer)})
        extra = _extra_variables(member.model)
        arrays.update({f"r{i:05d}": np.array(v.numpy(), copy=True) for i, v in enumerate(extra)})
        meta = {
            "member": member.id,
            "steps": cb.steps,
            "epochs": cb.epochs,
            "interval": cb.interval,
            "exploits": cb.exploits,
            "hparams": checkpoint_lib.to_json(cb.hparams),
            "rng": checkpoint_lib.to_json(cb._rng.bit_generator.state),
            "recent": [float(v) for v in getattr(cb, "_recent", ())],
            "seed": member.seed,
            "history": checkpoint_lib.to_json(member.history),
            "failures": [str(e) if isinstance(e, RestoredFailure) else f"{type(e).__name__}: {e}"
                         for e in member.failures],
            "layout": checkpoint_lib.to_json(snap.layout),
            "n_weights": len(snap.weights),
            "extra_variables": [[v.name, list(v.shape), str(v.dtype)] for v in extra],
            "reports": [checkpoint_lib.to_json(dataclasses.asdict(r)) for r in reports],
            "lineage": [r.to_dict() for r in records],
        }
        index = next(i for i, m in enumerate(self.members) if m is member)
        try:
            self._checkpointer.save_member(index, cb.epochs, arrays, meta)
        except OSError as error:
            raise checkpoint_lib.CheckpointError(
                f"Could not write the checkpoint of member {member.id!r} to "
                f"{self._checkpointer.directory}: {error}", self._checkpointer.directory) from error

    def _restore(self, body, members):
        """Puts every member, the store and the seed back as checkpointed."""
        report_fields = {f.name for f in dataclasses.fields(Report)}
        histories, lineages = {}, []
        self.seed = self.store.seed = int(body["seed"])
        for member, (arrays, meta) in zip(self.members, members):
            cb = member.callback
            n = meta["n_weights"]
            names = sorted(arrays)
            weights = tuple(arrays[k] for k in names if k.startswith("w"))
            optimizer = tuple(arrays[k] for k in names if k.startswith("o"))
            if len(weights) != n:
                raise checkpoint_lib.CheckpointError(
                    f"The checkpoint of member {member.id!r} holds {len(weights)} weights; its "
                    f"metadata says {n}.")
            layout = tuple(tuple(tuple(x) if isinstance(x, list) else x for x in row)
                           for row in meta["layout"])
            snap = Snapshot(member.id, meta["steps"], weights, optimizer, hparams=meta["hparams"],
                            layout=layout)
            try:
                snapshot_lib.restore(member.model, snap, copy_optimizer_state=True)
            except ValueError as error:
                raise checkpoint_lib.CheckpointError(
                    f"The checkpoint does not fit member {member.id!r}'s model: {error}") from None
            extra = _extra_variables(member.model)
            saved = [arrays[k] for k in names if k.startswith("r")]
            rows = [[v.name, list(v.shape), str(v.dtype)] for v in extra]
            if rows != meta.get("extra_variables", []) or len(saved) != len(extra):
                raise checkpoint_lib.CheckpointError(
                    f"The checkpoint does not fit member {member.id!r}'s model: its other variables "
                    f"(RNG states) are {meta.get('extra_variables')}, the model's are {rows}.")
            for variable, value in zip(extra, saved):
                variable.assign(value)
            cb.hparams = dict(meta["hparams"])
            cb.steps, cb.epochs = int(meta["steps"]), int(meta["epochs"])
            cb.interval, cb.exploits = int(meta["interval"]), int(meta["exploits"])
            cb._initialised = True
            cb.policy.seed = self.seed
            cb._rng.bit_generator.state = meta["rng"]
            recent = getattr(cb, "_recent", None)
            if recent is not None:
                recent.clear()
                recent.extend(meta.get("recent", ()))
            member.seed = int(meta["seed"])
            member.history = {k: list(v) for k, v in meta["history"].items()}
            member.failures = [RestoredFailure(text) for text in meta["failures"]]
            member.initial_snapshot = None
            histories[member.id] = [
                Report(**{k: tuple(v) if k == "recent" else v
                          for k, v in r.items() if k in report_fields})
                for r in meta["reports"]
            ]
            lineages.append([lineage_lib.LineageRecord.from_dict(r) for r in meta["lineage"]])
        self.store.restore_records(
            histories, checkpoint_lib.merge_lineage(lineages),
            {m.id: m.callback.hparams for m in self.members})

    def _train_member(self, member, data, kwargs, extra):
        try:
            self._train_member_loop(member, data, kwargs, extra)
        finally:
            # The compiled functions were traced for the population's
            # per-replica input pipeline; the user's own fit/evaluate/predict
            # on a member's model must trace their own.
            model = member.model
            model.train_function = model.test_function = model.predict_function = None
            member.callback.release()  # after a fault, on_train_end did not run

    def _train_member_loop(self, member, data, kwargs, extra):
        cb = member.callback
        epochs = kwargs["epochs"]
        while not self._stop.is_set() and cb.epochs < epochs:
            control = _MemberControl(self, member)
            try:
                member.model.fit(
                    data, initial_epoch=cb.epochs,
                    callbacks=[_MonitorCheck(cb), cb, control] + list(extra), **kwargs
                )
                if cb.epochs < epochs and not self._stop.is_set() and (
                        _non_finite(member.model) or _last_loss_non_finite(member)):
                    # Stopped on NaN (TerminateOnNaN): a fault, even when the
                    # boundary of that epoch already copied finite weights.
                    raise NonFiniteStateError(
                        f"member {member.id!r} stopped at epoch {cb.epochs} on a NaN/inf loss or weights"
                    )
                break
            except PopulationStopped:
                return
            except (ConfigurationError, checkpoint_lib.CheckpointError) as error:
                # Not a member fault: restarting would fail the same way.
                self._fail(error)
                return
            except BarrierTimeoutError as error:
                self.store.leave(member.id, reason=repr(error))
                self._fail(PopulationError(
                    f"Synchronous boundary {error.interval} timed out: member(s) {error.missing!r} "
                    f"did not arrive within sync_timeout={error.timeout:g} s (member {member.id!r} "
                    "waited). Raise `sync_timeout`, or pass on_timeout='continue' to go on "
                    "without late members.",
                    member=error.missing[0] if error.missing else member.id, cause=error,
                ))
                return
            except Exception as error:  # noqa: BLE001 - a member's fault must not end the others
                self.store.leave(member.id, reason=repr(error))
                member.failures.append(error)
                if isinstance(error, TimeoutError) or len(member.failures) > self.max_failures:
                    reason = (f"failed {len(member.failures)} times" if not isinstance(error, TimeoutError)
                              else "timed out")
                    self._fail(PopulationError(
                        f"Member {member.id!r} {reason}; last error: {type(error).__name__}: {error}",
                        member=member.id, cause=error,
                    ))
                    return
                try:
                    self._restart(member, error)
                except Exception as restart_error:  # noqa: BLE001 - reported as fatal
                    self._fail(PopulationError(
                        f"Member {member.id!r} failed ({type(error).__name__}: {error}) and could not "
                        f"be restarted: {type(restart_error).__name__}: {restart_error}",
                        member=member.id, cause=restart_error,
                    ))
                    return
        self._progress.update(member.id, status="done")

    def _fail(self, error):
        """Stops the population; `fit` raises the first such error."""
        with self._fatal_lock:
            if self._fatal is None:
                self._fatal = error
        self.stop()

    def _restart(self, member, error):
        """Restarts a failed member from the best snapshot of another member."""
        cb = member.callback
        best = None
        for other in self.store.snapshot_members() - {member.id}:
            snap = self.store.snapshot(other)
            if snap is not None and (best is None or selection_lib.is_better(snap.metric, best.metric, cb.mode)):
                best = snap
        snap = best or member.initial_snapshot
        snapshot_lib.restore(member.model, snap, cb.copy_optimizer_state)
        history = [r for rs in self.store.histories().values() for r in rs]
        new, ops = cb.policy.explore(snap.hparams, cb._rng, history)
        record = lineage_lib.LineageRecord(
            member=member.id, step=cb.steps, action="restart", hparams=dict(new),
            hparams_before=dict(cb.hparams), parent=snap.member if best is not None else None,
            parent_step=snap.step if best is not None else None, parent_metric=snap.metric,
            ops=ops, interval=cb.interval, monitor=cb.monitor, mode=cb.mode,
            reason=f"{type(error).__name__}: {error}", time=time.time(),
        )
        cb.hparams = dict(new)
        cb._record(record, metric=None)
        self.store.register(member.id, exist_ok=True)
        self._progress.message(
            f"member {member.id!r} failed ({type(error).__name__}: {error}); restarted from "
            + (f"member {snap.member!r} at step {snap.step}" if best is not None else "its initial state")
        )

    # -------------------------------------------------------------- results

    @property
    def lineage(self):
        """Every `LineageRecord` of the run, in order."""
        return self.store.lineage()

    @property
    def history(self):
        """dict member id -> dict metric -> list of per-epoch values."""
        return {m.id: dict(m.history) for m in self.members}

    @property
    def best_member(self):
        """The `Member` with the best metric at its latest boundary."""
        last = []
        for m in self.members:
            reports = self.store.histories().get(m.id) or []
            if reports:
                last.append(reports[-1])
        best = selection_lib.best_report(last, self.mode)
        if best is None:
            raise ValueError("No member has reported a metric yet: call fit first.")
        return next(m for m in self.members if m.id == best.member)

    def evaluate(self, x, y=None, batch_size=None):
        """Evaluates every member's current model on `(x, y)`.

        Args:
            x, y: arrays (or a `tf.data.Dataset` in `x`), as for
                `keras.Model.evaluate`.
            batch_size: as for `keras.Model.evaluate`. Defaults to 32.

        Returns:
            dict member id -> dict metric name -> float (the names of
            `model.evaluate(..., return_dict=True)`, e.g. `"accuracy"`).
        """
        return {m.id: {k: _to_float(v) for k, v in m.model.evaluate(
                    x, y, batch_size=batch_size, verbose=0, return_dict=True).items()}
                for m in self.members}

    def best_model(self, validation_data=None, batch_size=None):
        """The trained `keras.Model` of the best member.

        Without `validation_data`, the best is `best_member`: the best metric
        at the latest boundary, on the split PBT ranked on. That score is
        optimistic, since every interval selected on it. With
        `validation_data` (a split used neither for training nor for
        ranking), every member is evaluated on it and the best there is
        returned: an unbiased final choice (ties: the first member id in
        canonical order).

        Args:
            validation_data: optional `(x, y)` or a `tf.data.Dataset` to
                choose on. Its metric is `monitor` without the `"val_"`
                prefix (`"val_accuracy"` -> `"accuracy"`).
            batch_size: for evaluating arrays. Defaults to 32.

        Returns:
            A `keras.Model`.

        Example:

        ```python
        pop.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=20)
        model = pop.best_model(validation_data=(x_select, y_select))
        ```
        """
        if validation_data is None:
            return self.best_member.model
        if isinstance(validation_data, tf.data.Dataset):
            scores = self.evaluate(validation_data, batch_size=batch_size)
        elif isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
            scores = self.evaluate(*validation_data, batch_size=batch_size)
        else:
            raise ValueError(
                "`validation_data` must be (x, y) or a tf.data.Dataset. Received: "
                f"validation_data of type {type(validation_data).__name__}"
            )
        name = self.monitor[4:] if self.monitor.startswith("val_") else self.monitor
        first = next(iter(scores.values()))
        if name not in first:
            raise ValueError(
                f"`monitor={self.monitor!r}` needs the metric {name!r} from evaluate, which "
                f"returned {sorted(first)}. Received: validation_data=..."
            )
        reports = [selection_lib.Report(mid, 0, s[name]) for mid, s in scores.items()]
        best = selection_lib.best_report(reports, self.mode)
        return next(m for m in self.members if m.id == best.member).model

    def _print_summary(self):
        best = self.best_member
        exploits = sum(1 for r in self.lineage if r.action == "exploit")
        restarts = sum(1 for r in self.lineage if r.action == "restart")
        hp = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}"
                       for k, v in best.hparams.items())
        self._progress.message(
            f"PBT done in {self.elapsed:.1f} s: best member {best.id!r} with {self.monitor}="
            f"{best.last_metric:.4g}; final hyperparameters {hp}; {exploits} exploits, "
            f"{restarts} restarts."
        )
