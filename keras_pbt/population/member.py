"""One member of a `Population` and its training loop: fit, faults, restarts.

A member trains in its own thread (`train`). An exception in its training
is a fault: the member leaves the store, is restarted by the one restart
rule (`PBTPolicy.restart`: from the best published snapshot of another
member, or its initial state, with explored hyperparameters), and trains
on, until `max_failures` faults. What is not a member's fault (a
configuration error, a checkpoint that cannot be written, a synchronous
boundary that timed out) stops the whole population.

A member's thread sees its `Population.fit` only through a `FitRun` (the
store, the progress view, the stop flag, the checkpoint writer, the first
fatal error), never through the population's private fields.
"""

import math
import threading

import keras
import numpy as np

from keras_pbt.storage import checkpoint as checkpoint_lib
from keras_pbt.population import devices as devices_lib
from keras_pbt.storage.store import BarrierTimeoutError
from keras_pbt.storage.store import ConfigurationError
from keras_pbt.storage.store import PopulationStopped
from keras_pbt.runtime.trace_lock import TraceLock


class PopulationError(RuntimeError):
    """A member kept failing (or the population could not go on).

    Attributes:
        member_id: the member's id.
        cause: the last exception raised by that member.
    """

    def __init__(self, message, member_id=None, cause=None):
        super().__init__(message)
        self.member_id = member_id
        self.cause = cause


class RestoredFailure(RuntimeError):
    """A member's failure from before a resume (its text, from the checkpoint)."""


class NonFiniteStateError(FloatingPointError):
    """A member stopped with NaN or inf in its weights (e.g. by TerminateOnNaN)."""


class Member:
    """One member of a `Population`.

    Attributes:
        member_id: the member's id.
        devices: the device names of its slice.
        strategy: its `tf.distribute.MirroredStrategy` (TensorFlow), or the
            `DeviceScope` of its one device (JAX, PyTorch).
        model: its compiled `keras.Model`.
        callback: its `PBTCallback`.
        history: dict metric -> list of per-epoch values, over all its fits.
        failures: the errors it raised, in order.
        seed: its own seed (data shuffling).
    """

    def __init__(self, member_id, devices, strategy, model, callback, seed):
        self.member_id = member_id
        self.devices = devices
        self.strategy = strategy
        self.model = model
        self.callback = callback
        self.seed = seed
        self.history = {}
        self.failures = []
        self.initial_snapshot = None
        self.epochs_trained = 0  # by its device, a wide start's configurations included

    @property
    def hparams(self):
        """Its current hyperparameters."""
        return dict(self.callback.hparams)

    @property
    def last_metric(self):
        """Its metric at its latest boundary (None before the first)."""
        reports = self.callback.store.histories().get(self.member_id) or []
        return reports[-1].metric if reports else None

    def __repr__(self):
        return (f"Member(member_id={self.member_id!r}, devices={self.devices}, "
                f"hparams={self.hparams})")


class FitRun:
    """What one `Population.fit` shares with its members' threads.

    The population makes one per `fit`; a member's thread reads and acts
    on it only through these attributes and methods.

    Args:
        store: the population's store.
        progress: the `PopulationProgress` view.
        max_failures: failures of one member after which the population stops.
        checkpoint: `fn(member)` writing the member's checkpoint at a
            boundary epoch, or `None`.
        start: the `WideStartRun` every member runs before PBT begins
            (`keras_pbt.WideStart`), or `None`.

    Attributes:
        stopping: a `threading.Event`, set when members must stop at the
            end of their epoch.
        error: the first error that stopped the population, or `None`.
    """

    def __init__(self, store, progress, max_failures, checkpoint=None, start=None):
        self.store = store
        self.progress = progress
        self.max_failures = max_failures
        self.checkpoint = checkpoint
        self.start = start
        self.stopping = threading.Event()
        self.error = None
        self._lock = threading.Lock()

    def stop(self, reason="the population was stopped"):
        """Every member stops at the end of its epoch; every wait in the store ends."""
        self.stopping.set()
        self.store.close(reason)

    def fail(self, error):
        """Stops the population; `Population.fit` raises the first such error."""
        with self._lock:
            if self.error is None:
                self.error = error
        self.stop()


class _MemberControl(keras.callbacks.Callback):
    """Stops a member at the end of an epoch when the population stops,
    records its history, feeds the progress view and checkpoints."""

    def __init__(self, run, member):
        super().__init__()
        self.run = run
        self.member = member
        self._exploits_seen = member.callback.exploits

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        cb = self.member.callback
        # One entry per completed epoch (an epoch interrupted by a fault is
        # trained again and recorded once).
        for k, v in logs.items():
            self.member.history.setdefault(k, []).append(_to_float(v))
        self.member.epochs_trained += 1
        fields = dict(epoch=epoch + 1, step=cb.steps, metric=logs.get(cb.monitor),
                      hparams=cb.hparams, status="training")
        if cb.exploits != self._exploits_seen:
            self._exploits_seen = cb.exploits
            d = cb.last_decision
            ops = ", ".join(f"{k} {v}" for k, v in d.ops.items())
            fields["exploit"] = f"copied {d.parent} at step {cb.steps} ({ops})"
        self.run.progress.update(self.member.member_id, **fields)
        if self.run.checkpoint is not None and _checkpoint_epoch(cb):
            self.run.checkpoint(self.member)
        if self.run.stopping.is_set():
            self.model.stop_training = True


def _checkpoint_epoch(cb):
    """Checkpoints follow interval boundaries: every boundary epoch with
    epoch intervals, every epoch end with step intervals."""
    return cb.interval.epochs is None or cb.epochs % cb.interval.epochs == 0


class _MonitorCheck(keras.callbacks.Callback):
    """Runs before the member's PBTCallback: a monitored metric missing from
    the logs is a configuration error that stops the population (not a
    member fault to restart)."""

    def __init__(self, pbt):
        super().__init__()
        self.pbt = pbt
        self.checked = False
        if pbt.interval.steps is not None:
            self.on_train_batch_end = self._on_train_batch_end

    def _check(self, logs):
        try:
            self.pbt.read_metric(logs or {})
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        self.checked = True

    def on_epoch_end(self, epoch, logs=None):
        pbt = self.pbt
        if not self.checked and pbt.interval.epochs is not None and (
                (pbt.epochs + 1) % pbt.interval.epochs == 0):
            self._check(logs)

    def _on_train_batch_end(self, batch, logs=None):
        if not self.checked:
            self._check(logs)


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


def train(run, member, data, kwargs, extra):
    """A member's thread: trains it to `kwargs["epochs"]`, restarting it
    after faults, until the population stops.

    Args:
        run: the `FitRun` of this `Population.fit`.
        member: the `Member`.
        data: its input pipeline.
        kwargs: its `model.fit` arguments.
        extra: the user's callbacks for it.
    """
    try:
        if run.start is None or run.start.run_member(member, data, kwargs, extra):
            _train_loop(run, member, data, kwargs, extra)
    finally:
        # The compiled functions were traced for the population's
        # per-replica input pipeline; the user's own fit/evaluate/predict
        # on a member's model must trace their own.
        model = member.model
        model.train_function = model.test_function = model.predict_function = None
        # After a fault or a stop, on_train_end did not run.
        member.callback.release()
        member.callback.flush()


def _train_loop(run, member, data, kwargs, extra):
    cb = member.callback
    epochs = kwargs["epochs"]
    store = run.store
    while not run.stopping.is_set() and cb.epochs < epochs:
        control = _MemberControl(run, member)
        try:
            with devices_lib.fit_scope(member.strategy):
                member.model.fit(
                    data, initial_epoch=cb.epochs,
                    callbacks=[_MonitorCheck(cb), cb, control, TraceLock()] + list(extra),
                    **kwargs
                )
            if cb.epochs < epochs and not run.stopping.is_set() and (
                    _non_finite(member.model) or _last_loss_non_finite(member)):
                # Stopped on NaN (TerminateOnNaN): a fault, even when the
                # boundary of that epoch already copied finite weights.
                raise NonFiniteStateError(
                    f"member {member.member_id!r} stopped at epoch {cb.epochs} on a NaN/inf loss or weights"
                )
            break
        except PopulationStopped:
            return
        except (ConfigurationError, checkpoint_lib.CheckpointError) as error:
            # Not a member fault: restarting would fail the same way.
            run.fail(error)
            return
        except BarrierTimeoutError as error:
            store.leave(member.member_id, reason=repr(error))
            run.fail(PopulationError(
                f"Synchronous boundary {error.interval} timed out: member(s) {error.missing!r} "
                f"did not arrive within the store's timeout={error.timeout:g} s (member "
                f"{member.member_id!r} waited). Raise `population.store.timeout`, or set "
                "`population.store.on_timeout = 'continue'` to go on without late members.",
                member_id=error.missing[0] if error.missing else member.member_id, cause=error,
            ))
            return
        except Exception as error:  # noqa: BLE001 - a member's fault must not end the others
            store.leave(member.member_id, reason=repr(error))
            member.failures.append(error)
            # After `max_failures` failures of a member, the population stops.
            if isinstance(error, TimeoutError) or len(member.failures) >= run.max_failures:
                reason = (f"failed {len(member.failures)} times" if not isinstance(error, TimeoutError)
                          else "timed out")
                run.fail(PopulationError(
                    f"Member {member.member_id!r} {reason}; last error: {type(error).__name__}: {error}",
                    member_id=member.member_id, cause=error,
                ))
                return
            try:
                restart(run, member, error)
            except Exception as restart_error:  # noqa: BLE001 - reported as fatal
                run.fail(PopulationError(
                    f"Member {member.member_id!r} failed ({type(error).__name__}: {error}) and could not "
                    f"be restarted: {type(restart_error).__name__}: {restart_error}",
                    member_id=member.member_id, cause=restart_error,
                ))
                return
    run.progress.update(member.member_id, status="done")


def restart(run, member, error):
    """Restarts a failed member by the one restart rule (`PBTPolicy.restart`):
    from the best snapshot another member published, else its initial state."""
    store = run.store
    snaps = [store.snapshot(o) for o in store.snapshot_members() - {member.member_id}]
    record = member.callback.restart([s for s in snaps if s is not None],
                                     member.initial_snapshot,
                                     reason=f"{type(error).__name__}: {error}")
    store.register(member.member_id, exist_ok=True)
    run.progress.message(
        f"member {member.member_id!r} failed ({type(error).__name__}: {error}); restarted from "
        + (f"member {record.parent!r} at step {record.parent_step}" if record.parent is not None
           else "its initial state")
    )
