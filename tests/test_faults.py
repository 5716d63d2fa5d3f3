"""Injected faults: a member raising, a NaN/inf loss, a straggler in synchronous
mode (stop with a clear error, or go on without it), a checkpoint write failing."""

import math
import time

import keras
import numpy as np
import pytest

import keras_pbt
from keras_pbt.storage import checkpoint as ck
from tests.pbt_helpers import FailAt
from tests.test_population import SPACE, X, XV, Y, YV, build

DEVICES = "auto"  # 4 logical CPU devices: one per member (see conftest.py)


def test_member_raising_while_others_wait_at_the_barrier_is_restarted_and_checkpointed(tmp_path):
    failing = FailAt(epoch=2, times=1, error=RuntimeError("injected fault"))
    pop = keras_pbt.Population(build, SPACE, population_size=3, seed=2, devices=DEVICES)
    pop.store.timeout = 60
    pop.fit(X, Y, validation_data=(XV, YV), epochs=4, batch_size=32, checkpoint_dir=str(tmp_path),
            callbacks=lambda mid: [failing] if mid == 1 else [])
    restarts = [r for r in pop.lineage if r.action == "restart"]
    assert [(r.member_id, r.reason) for r in restarts] == [(1, "RuntimeError: injected fault")]
    assert all(m.callback.epochs == 4 for m in pop.members)
    # One history entry per epoch, even for the epoch that was interrupted.
    assert all(len(m.history["val_accuracy"]) == 4 for m in pop.members)
    # The checkpoint carries the restart and the failure count.
    body = ck.read_manifest(str(tmp_path))
    _, meta = ck.read_file(str(tmp_path), body["files"][1])
    assert body["epoch"] == 4 and meta["failures"] == ["RuntimeError: injected fault"]
    assert [r["action"] for r in meta["lineage"]].count("restart") == 1
    # A resumed population keeps counting the failures towards max_failures.
    resumed = keras_pbt.Population(build, SPACE, population_size=3, seed=2, devices=DEVICES)
    resumed.fit(X, Y, validation_data=(XV, YV), epochs=5, batch_size=32, checkpoint_dir=str(tmp_path))
    assert [str(e) for e in resumed.members[1].failures] == ["RuntimeError: injected fault"]
    _, meta = ck.read_file(str(tmp_path), ck.read_manifest(str(tmp_path))["files"][1])
    assert meta["failures"] == ["RuntimeError: injected fault"]


class _Poison(keras.callbacks.Callback):
    """Fills the weights with `value` once: the loss becomes NaN/inf."""

    def __init__(self, epoch, value):
        super().__init__()
        self.epoch, self.value, self.done = epoch, value, False

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch and not self.done:
            self.done = True
            for v in self.model.trainable_weights:
                v.assign(np.full(v.shape, self.value, "float32"))


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_loss_ranks_last_and_the_member_copies_a_finite_one(value):
    poison = _Poison(epoch=1, value=value)
    pop = keras_pbt.Population(build, SPACE, population_size=4, seed=4, monitor="val_loss", policy=keras_pbt.Policy(quantile=0.25), devices=DEVICES)
    pop.fit(X, Y, validation_data=(XV, YV), epochs=3, batch_size=32,
            callbacks=lambda mid: [poison] if mid == 2 else [])
    at_2 = [r for r in pop.lineage if r.member_id == 2 and r.interval == 2]
    assert len(at_2) == 1
    record = at_2[0]
    assert not math.isfinite(record.metric)
    assert record.action == "exploit" and math.isfinite(record.parent_metric)
    assert not [r for r in pop.lineage if r.action == "restart"]
    model = pop.members[2].model
    assert all(np.all(np.isfinite(v.numpy())) for v in model.weights + model.optimizer.variables)
    assert math.isfinite(pop.members[2].last_metric)


class _Straggle(keras.callbacks.Callback):
    """Makes one member late for the next boundary."""

    def __init__(self, epoch, seconds):
        super().__init__()
        self.epoch, self.seconds = epoch, seconds

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            time.sleep(self.seconds)


def test_straggler_with_on_timeout_raise_stops_with_a_clear_error():
    straggle = _Straggle(epoch=0, seconds=6.0)
    pop = keras_pbt.Population(build, SPACE, population_size=3, seed=0,
                               member_ids=["a", "b", "slow"], devices=DEVICES)
    pop.store.timeout, pop.store.on_timeout = 1.5, "raise"  # the store implements the barrier
    start = time.monotonic()
    with pytest.raises(keras_pbt.PopulationError,
                       match=r"boundary 2 timed out: member\(s\) \[.*'slow'\] did not arrive within "
                             r"the store's timeout=1.5 s") as info:
        pop.fit(X, Y, validation_data=(XV, YV), epochs=4, batch_size=32,
                callbacks=lambda mid: [straggle] if mid == "slow" else [])
    assert time.monotonic() - start < 60
    assert isinstance(info.value.cause, keras_pbt.BarrierTimeoutError)
    assert "slow" in info.value.cause.missing and info.value.member_id in info.value.cause.missing
    assert max(m.callback.epochs for m in pop.members) <= 2


def test_straggler_with_on_timeout_continue_is_left_behind_and_catches_up():
    straggle = _Straggle(epoch=0, seconds=4.0)
    pop = keras_pbt.Population(build, SPACE, population_size=3, seed=0,
                               member_ids=["a", "b", "slow"], devices=DEVICES)
    pop.store.timeout, pop.store.on_timeout = 1.0, "continue"
    pop.fit(X, Y, validation_data=(XV, YV), epochs=4, batch_size=32,
            callbacks=lambda mid: [straggle] if mid == "slow" else [])
    assert all(m.callback.epochs == 4 for m in pop.members)
    late = next(r for r in pop.store.histories()["slow"] if r.interval == 2)
    decided = [r for r in pop.lineage if r.interval == 2 and r.member_id in ("a", "b")]
    # The others decided at boundary 2 without waiting for the straggler's report.
    assert len(decided) == 2 and all(r.time < late.time for r in decided)
    assert [r.interval for r in pop.lineage if r.member_id == "slow"] == [0, 1, 2, 3, 4]


def test_a_checkpoint_that_cannot_be_written_stops_the_population(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck, "atomic_write", full_disk)
    pop = keras_pbt.Population(build, SPACE, population_size=2, seed=0, devices=DEVICES)
    with pytest.raises(ck.CheckpointError, match="No space left on device"):
        pop.fit(X, Y, validation_data=(XV, YV), epochs=3, batch_size=32, checkpoint_dir=str(tmp_path))
    assert all(not m.failures for m in pop.members), "not a member fault: no restart"
