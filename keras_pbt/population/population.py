"""`Population`: N members over the machine's devices, trained at once with PBT.

This module is the orchestration: it builds the members (`keras_pbt.population.member`),
checks the arguments, feeds each member its pipeline (`keras_pbt.population.data`),
runs them in threads (`keras_pbt.population.threads`), handles Ctrl-C and the
checkpoint directory (`keras_pbt.population.member_checkpoint`). What it hands back
(best member, best model, evaluation) is `keras_pbt.population.results`.
"""

import copy
import dataclasses
import time

import keras
import numpy as np

from keras_pbt import backend as backend_lib
from keras_pbt.population import data as data_lib
from keras_pbt.population import devices as devices_lib
from keras_pbt.population import member as member_lib
from keras_pbt.population import member_checkpoint
from keras_pbt.core import config as config_lib
from keras_pbt.core import selection as selection_lib
from keras_pbt.population import checks as population_checks
from keras_pbt.runtime import snapshot as snapshot_lib
from keras_pbt.runtime import spread as spread_lib
from keras_pbt.core import space as space_lib
from keras_pbt.population import threads as threads_lib
from keras_pbt.population import wide_start as wide_lib_run
from keras_pbt.core import wide_start as wide_lib
from keras_pbt.runtime.callback import PBTCallback
from keras_pbt.runtime.hyperparameters import HyperparameterApplier
from keras_pbt.population.member import Member
from keras_pbt.population.member import NonFiniteStateError
from keras_pbt.population.member import PopulationError
from keras_pbt.population.member import RestoredFailure
from keras_pbt.population.results import PopulationResults
from keras_pbt.population.progress import PopulationProgress
from keras_pbt.storage.store import InMemoryStore
from keras_pbt.core.validation import check_int
from keras_pbt.core.validation import check_monitor

__all__ = ["Member", "NonFiniteStateError", "Population", "PopulationError", "RestoredFailure"]


class Population(PopulationResults):
    """A population of Keras models trained concurrently with PBT.

    Each member is built by `build(hp)` inside its own
    `tf.distribute.MirroredStrategy` over a slice of the machine's devices
    (every GPU, or logical CPU devices where there is none; on JAX and
    PyTorch, under its one device), trained in its own thread, and wired
    through a `PBTCallback` to one `InMemoryStore` (`self.store`).

    Args:
        build: `fn(hp) -> compiled keras.Model`; `hp` is a dict of the
            member's initial hyperparameters.
        space: dict name -> `Uniform` / `LogUniform` / `IntUniform` / `Choice`.
        population_size: number of members, >= 2 (as in `PBTTuner`).
            Defaults to `8`.
        monitor: metric to rank by. Defaults to `"val_accuracy"`.
        mode: `"auto"`, `"min"` or `"max"`. Defaults to `"auto"`.
        interval: when members decide: an int (every that many epochs), a
            `keras_pbt.Interval(epochs=..., steps=..., burn_in=...)`, or
            `keras_pbt.Iterated(...)` (Iterated PBT: restarts with a longer
            interval when the population stagnates).
            Defaults to `1`.
        synchronous: all members meet at each boundary and decide on the
            same reports (True), or each decides on the latest comparable
            reports (False). Defaults to `True`: the members run in one
            process at the same pace, so a barrier costs little and every
            member of a boundary is ranked against the same population. The
            store implements the barrier: a boundary waits
            `self.store.timeout` seconds (600) for late members, then does
            what `self.store.on_timeout` says (`"raise"`, or `"continue"`
            without them); set them on the store.
        policy: a `keras_pbt.Policy` (every member's): how members are
            ranked, selected and explored. Defaults to `keras_pbt.Policy()`.
        setters: dict name -> `fn(model, value)` for hyperparameters that are
            not optimizer fields (called for each member's model), or the
            name of a `keras.Variable` attribute of the model.
            Defaults to `None`.
        devices: `"auto"`, a list of device names, or a
            `keras_pbt.Devices(names=..., per_member=..., num_cpu=...)`
            (devices per member; logical CPU devices to create when there
            is no GPU, `min(population_size, 4)` by default). Defaults to
            `"auto"`.
        max_failures: after this many failures of one member, `fit` stops
            the population and raises a `PopulationError` naming it (so a
            member is restarted at most `max_failures - 1` times; `1`
            restarts nobody). Defaults to `3`.
        logdir: TensorBoard log directory (one run per member).
            Defaults to `None`.
        seed: the population's seed (initial hyperparameters, tie-breaks,
            explore, shuffling). When given, each member's model is built
            after `keras.utils.set_random_seed(<member seed>)`, so initial
            weights are reproducible (this resets Python's, NumPy's and
            TensorFlow's global seeds). Defaults to a random seed.
        member_ids: optional ids (unique); defaults to
            `0..population_size-1`.
        initial_hparams: optional list of `population_size` dicts replacing
            the sampled initial hyperparameters; every value must lie in
            `space`. Defaults to `None`.

    Attributes:
        policy: the `keras_pbt.Policy`.
        store: the `InMemoryStore` the members share.
        members: the `Member`s, in `member_ids` order.

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

    pop = keras_pbt.Population(build, space, population_size=8, monitor="val_accuracy",
                               interval=1, logdir="runs/digits")
    pop.fit(x, y, validation_data=(xv, yv), epochs=20, batch_size=32)
    best = pop.best_model()
    ```
    """

    def __init__(
        self,
        build,
        space,
        population_size=8,
        monitor="val_accuracy",
        mode="auto",
        interval=1,
        synchronous=True,
        policy=None,
        setters=None,
        devices="auto",
        max_failures=3,
        logdir=None,
        seed=None,
        member_ids=None,
        initial_hparams=None,
    ):
        size = check_int("population_size", population_size, minimum=2,
                         why=" (PBT needs a population)")
        if not callable(build):
            raise TypeError(f"`build` must be a function hp -> compiled model. Received: build={build!r}")
        check_int("max_failures", max_failures)
        space = space_lib.validate_space(space)
        if member_ids is None:
            member_ids = list(range(size))
        member_ids = list(member_ids)
        if len(member_ids) != size:
            raise ValueError(f"`member_ids` must have `population_size`={size} entries. "
                             f"Received: member_ids={member_ids!r}")
        if len(set(map(repr, member_ids))) != size:
            raise ValueError(f"`member_ids` must be unique. Received: member_ids={member_ids!r}")
        self.policy = config_lib.get_policy(policy)
        self.interval = config_lib.get_interval(interval)
        self.mode = selection_lib.resolve_mode(mode, check_monitor(monitor))
        devices = devices_lib.get_devices(devices)
        if devices.num_cpu is None:
            devices = dataclasses.replace(devices, num_cpu=min(size, 4))
        self.store = InMemoryStore(seed=seed, synchronous=synchronous)
        self.seed = self.store.seed
        rng = np.random.default_rng([self.seed, 0])
        start = self.policy.start
        configurations = size * (start.factor if start is not None else 1)
        if initial_hparams is None:
            initial_hparams = [space_lib.sample_space(space, rng) for _ in range(size)]
        elif isinstance(initial_hparams, (str, bytes, dict)) or len(initial_hparams) not in (
                size, configurations):
            raise ValueError(
                f"`initial_hparams` must be a list of `population_size`={size} dicts"
                + (f" (or {configurations}, every configuration of the wide start)"
                   if start is not None else "") + f". Received: initial_hparams={initial_hparams!r}"
            )
        else:
            for i, hp in enumerate(initial_hparams):
                population_checks.check_initial(i, hp, space)
        # A wide start's further configurations: given, or drawn after the members'.
        initial_hparams = list(initial_hparams)
        extra_hparams, initial_hparams = initial_hparams[size:], initial_hparams[:size]
        self.space = space
        self._build = build
        self.population_size = size
        self.monitor = monitor
        self.max_failures = int(max_failures)
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
        slices = devices_lib.assign_devices(size, devices)
        # JAX: members of one architecture compile their steps once per device.
        backend_lib.current().share_compilations()
        # The wide start is the population's; each member's callback runs the rest.
        member_policy = self.policy if start is None else dataclasses.replace(self.policy,
                                                                             start=None)
        self.members = []
        strategies = [devices_lib.member_strategy(devs) for devs in slices]
        candidate_ids = wide_lib.candidate_ids(member_ids, configurations)
        extra_hparams += [space_lib.sample_space(space, rng)
                          for _ in range(configurations - size - len(extra_hparams))]
        self._start_candidates = []
        for i, (member_id, hp) in enumerate(zip(candidate_ids, initial_hparams + extra_hparams)):
            # The members first; then a wide start's further configurations,
            # of which only the initial state is kept (in host memory).
            strategy = strategies[i % size]
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
                    f"Received: {model!r} for member {member_id!r}"
                )
            setters_of_model = self._member_setters(model)
            self._check_hparams(model, setters_of_model, member_id)
            if i >= size:
                self._start_candidates.append(wide_lib_run.Candidate(
                    member_id, hp, wide_lib_run.initial_state(model, member_id, hp)))
                continue
            cb = PBTCallback(self.store, member_id, space, monitor=monitor, mode=self.mode,
                             interval=self.interval, policy=member_policy, initial_hparams=hp,
                             setters=setters_of_model, logdir=logdir)
            member = Member(member_id, slices[i], strategy, model, cb, seed=member_seed)
            if self.members:
                population_checks.check_same_layout(self.members[0], member)
            self.members.append(member)
        self._run = member_lib.FitRun(self.store, PopulationProgress(member_ids, monitor, 0, verbose=0),
                                      self.max_failures)
        self.resumed_from = None

    def _check_hparams(self, model, setters, member_id):
        # Fails now, before any training, for a name that is neither an
        # optimizer field nor in `setters`, or a learning rate that is a
        # schedule. Also builds the optimizer (and SGD momentum slots), so
        # every snapshot and checkpoint has the same layout from the start.
        try:
            HyperparameterApplier(model, list(self.space), setters)
        except (ValueError, TypeError) as error:
            raise type(error)(
                f"{error} (member {member_id!r}). Received: space={self.space!r}, "
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

    # ------------------------------------------------------------------ fit

    def fit(self, x=None, y=None, validation_data=None, epochs=1, batch_size=None, callbacks=None,
            shuffle=True, shuffle_buffer=data_lib.DEFAULT_SHUFFLE_BUFFER, checkpoint_dir=None,
            verbose="auto", **fit_kwargs):
        """Trains every member concurrently with PBT.

        Args:
            x: NumPy arrays (each member shuffles them with its own seed)
                or a `tf.data.Dataset` (batches are shuffled with the
                member's seed when `shuffle`).
            y: the targets of NumPy `x`; `None` with a dataset.
            validation_data: as in `keras.Model.fit`, the same for every member.
            epochs: epochs per member.
            batch_size: for arrays. Defaults to 32.
            callbacks: extra Keras callbacks: a list (deep-copied for each
                member) or `fn(member_id) -> list`.
            shuffle: shuffle the training data per member. Defaults to True.
            shuffle_buffer: buffer of the batch shuffle for a Dataset.
            checkpoint_dir: a directory to checkpoint the population to at
                interval boundaries (every boundary epoch; every epoch with
                a step interval). If it already holds a checkpoint of this
                population, training resumes from it: run the same command
                again after a crash. See `keras_pbt.storage.checkpoint`.
            verbose: `"auto"` or 1 (a table refreshed in place; plain lines
                when not a terminal), 2 (one line per member per epoch) or 0
                (silent), as in `keras.Model.fit`. Defaults to `"auto"`.
            **fit_kwargs: passed to every member's `model.fit` (e.g.
                `steps_per_epoch`, `validation_steps`, `class_weight`).

        Returns:
            `self.history`: dict member id -> dict metric -> list.

        Raises:
            ValueError: a bad argument (`Received: batch_size=0`), arrays
                of different lengths, targets the loss needs missing, a
                `val_` monitor without `validation_data`, an interval longer
                than `epochs`: before any member trains.
            PopulationError: if a member failed `max_failures` times (or a
                synchronous boundary timed out with
                `store.on_timeout="raise"`).
            ConfigurationError: (a `ValueError`) if the monitored metric is
                not in the logs; it lists the keys that are.
            CheckpointError: (a `ValueError`) if `checkpoint_dir` holds a
                checkpoint that is corrupt, truncated, of another population
                (other members, space, optimizers or interval), beyond
                `epochs`, or not keras-pbt's, or checkpoint files without
                their manifest; it names the file.
        """
        check_int("epochs", epochs)
        verbose = _check_verbose(verbose)
        if callbacks is not None and not callable(callbacks) and not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"`callbacks` must be a list or fn(member_id) -> list. Received: {callbacks!r}")
        given_vsteps = fit_kwargs.get("validation_steps")
        steps, vsteps, fit_kwargs = data_lib.check_fit_arguments(
            x, y, validation_data, batch_size, shuffle, shuffle_buffer, fit_kwargs)
        population_checks.check_fit_data(self.members[0].model, x, y, validation_data)
        population_checks.check_monitor_source(self.monitor, validation_data)
        population_checks.check_interval_reached(self.interval, epochs, steps)
        for member in self.members:
            # The split size a noise-aware margin measures differences against,
            # and a loss's per-example spread on it.
            member.callback.validation_size = data_lib.validation_size(validation_data,
                                                                       given_vsteps)
            member.callback.validation_spread = spread_lib.for_validation_data(
                validation_data, self.monitor) if given_vsteps is None else None
        self.store.reopen()
        progress = PopulationProgress([m.member_id for m in self.members], self.monitor, epochs,
                                      verbose=verbose)
        checkpointer = None
        if checkpoint_dir is not None:
            checkpointer, resumed = member_checkpoint.open_checkpoint(self, checkpoint_dir, epochs)
            if resumed is not None:
                self.resumed_from = resumed
                progress.message(
                    f"Resuming from the checkpoint of epoch {resumed} in {checkpoint_dir}.")
        self._checkpointer = checkpointer
        self._run = run = member_lib.FitRun(
            self.store, progress, self.max_failures,
            checkpoint=None if checkpointer is None else self._save_member)
        for member in self.members:
            if member.initial_snapshot is None:
                member.callback.set_model(member.model)
                # On the host: it holds no device memory for the whole fit.
                member.initial_snapshot = snapshot_lib.capture(
                    member.model, member.member_id, member.callback.steps, member.callback.hparams,
                    on_device=False)
            if member.callback.iterated is not None and member.callback.epochs == 0:
                member.callback.iterated.initial_snapshot = member.initial_snapshot
        if self._start_candidates and all(m.callback.epochs == 0 for m in self.members):
            plan = self.policy.start.plan(self.population_size, epochs)
            own = [wide_lib_run.Candidate(m.member_id, m.callback.hparams, m.initial_snapshot)
                   for m in self.members]
            run.start = wide_lib_run.WideStartRun(self, run, plan,
                                                  own + self._start_candidates)
        # Every member trains the same number of steps per epoch; each one's
        # data is shuffled with its own seed, repeated, and distributed over
        # its slice (see keras_pbt.population.data).
        kwargs = dict(fit_kwargs, epochs=epochs, verbose=0, shuffle=False, steps_per_epoch=steps)
        if vsteps is not None:
            kwargs["validation_steps"] = vsteps
        targets = []
        for member in self.members:
            extra = callbacks(member.member_id) if callable(callbacks) else copy.deepcopy(list(callbacks or []))
            data = data_lib.member_pipeline(member.strategy, x, y, batch_size=batch_size,
                                            seed=member.seed if shuffle else None,
                                            shuffle_buffer=shuffle_buffer)
            vdata = data_lib.validation_pipeline(member.strategy, validation_data, batch_size)
            targets.append((f"pbt-member-{member.member_id}", member_lib.train,
                            (run, member, data, dict(kwargs, validation_data=vdata), extra)))
        start = time.monotonic()
        with threads_lib.quiet_first_traces():
            threads = threads_lib.start(targets)
            try:
                threads_lib.join(threads)
            except KeyboardInterrupt:
                self._interrupted(threads)
                raise
        progress.close()
        if run.start is not None:
            run.start.close()
        self.elapsed = time.monotonic() - start
        if run.error is not None:
            raise run.error
        if verbose:
            self._print_summary(progress)
        return self.history

    def stop(self):
        """Asks every member to stop at the end of its current epoch."""
        self._run.stop()

    def _interrupted(self, threads):
        """Ctrl-C. Without checkpoints: stop now. With checkpoints: let every
        member finish its epoch and its boundary (so the boundary's
        checkpoint is written), then stop; a second Ctrl-C stops at once."""
        ck, run = self._checkpointer, self._run
        if ck is None:
            run.progress.message("Interrupted: stopping every member at the end of its epoch...")
            run.stop()
            self._wait_for_members(threads)
            run.progress.close()
            return
        run.progress.message(
            "Interrupted: stopping every member at the end of its epoch and saving a checkpoint "
            "(Ctrl-C again to stop at once)...")
        run.stopping.set()  # members stop after their epoch; the store stays open
        try:
            threads_lib.join(threads, timeout=self.store.timeout + 60)
        except KeyboardInterrupt:
            pass
        run.stop()
        self._wait_for_members(threads)
        run.progress.message(
            f"Checkpoint of epoch {ck.committed} is in {ck.directory}; run the same command to "
            "resume." if ck.committed is not None else
            f"No complete checkpoint was written to {ck.directory} yet.")
        run.progress.close()

    def _wait_for_members(self, threads, timeout=60):
        hung = threads_lib.join(threads, timeout)
        if hung:
            self._run.progress.message(
                f"{threads_lib.names(hung)} still running {timeout} s after the stop (inside a "
                "train step or a user callback); they end with the process.")

    def _save_member(self, member):
        index = next(i for i, m in enumerate(self.members) if m is member)
        member_checkpoint.save_member(self._checkpointer, index, member, self.store)


def _check_verbose(verbose):
    """0, 1 or 2 from Keras' `verbose` (`"auto"` is 1)."""
    if isinstance(verbose, bool) or verbose not in (0, 1, 2, "auto"):
        raise ValueError(f"`verbose` must be 'auto', 0, 1 or 2. Received: verbose={verbose!r}")
    return 1 if verbose == "auto" else int(verbose)
