"""InMemoryStore: membership, reports, barriers, snapshots, lineage (threaded
runs: `test_store_threads.py`)."""

import threading
import time

import numpy as np
import pytest

from keras_pbt.core.lineage import LineageRecord
from keras_pbt.core.selection import Report
from keras_pbt.storage.store import BarrierTimeoutError
from keras_pbt.storage import store as store_lib
from keras_pbt.storage.store import InMemoryStore
from keras_pbt.storage.store import PopulationStopped
from keras_pbt.storage.store import PopulationStore
from keras_pbt.storage.payload import Snapshot


def _in_thread(fn):
    """Starts `fn()` in a daemon thread; returns (thread, dict holding its result as "value")."""
    got = {}

    def run():
        got["value"] = fn()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, got

def _until(condition, timeout=10):
    """Waits until `condition()` holds (polling); fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.001)


def make_snapshot(member, step, sizes=(3, 5), metric=None):
    """A snapshot whose every element equals `step`; its creation-time CRC in hparams."""
    weights = tuple(np.full(n, step, dtype=np.float32) for n in sizes)
    optimizer = (np.array(step, dtype=np.int64), np.full((2, 2), step, dtype=np.float64))
    snap = Snapshot(member, step, weights, optimizer, hparams={}, metric=metric)
    snap.hparams["crc"] = snap.checksum()
    return snap


def verify_snapshot(snap):
    assert snap.checksum() == snap.hparams["crc"], "checksum changed"
    for a in snap.weights + snap.optimizer:
        assert not a.flags.writeable
        assert np.all(a == snap.step), "torn snapshot: arrays from another step"


def run_threads(targets, timeout=30):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                errors.append(e)
        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "thread hung"
    if errors:
        raise errors[0]


# --- construction / membership ----------------------------------------------


def test_is_a_population_store_and_seed():
    store = InMemoryStore(seed=5)
    assert isinstance(store, PopulationStore) and store.seed == 5
    assert isinstance(InMemoryStore().seed, int)
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match=rf"`seed`.*seed={bad!r}"):
            InMemoryStore(seed=bad)


def test_abstract_interface_cannot_be_instantiated():
    with pytest.raises(TypeError):
        PopulationStore()


def test_register_duplicate_leave_and_rejoin():
    store = InMemoryStore(seed=0)
    store.register(0, {"lr": 0.1})
    store.register("b")
    assert store.members() == [0, "b"] and store.live_members() == [0, "b"]
    with pytest.raises(ValueError, match=r"Duplicate member id.*member_id=0"):
        store.register(0)
    store.register(0, exist_ok=True)
    assert store.members() == [0, "b"]
    store.leave(0, reason="done")
    assert store.members() == [0, "b"] and store.live_members() == ["b"]
    store.register(0)  # may come back after leaving
    assert store.live_members() == [0, "b"]
    store.leave("never-registered")  # a no-op
    assert store.members() == [0, "b"]


def test_report_errors_and_history():
    store = InMemoryStore(seed=0)
    with pytest.raises(KeyError, match="not registered"):
        store.report(Report(7, 10, 0.5))
    store.register(7)
    with pytest.raises(TypeError, match="must be a Report"):
        store.report({"member": 7, "step": 10, "metric": 0.5})
    assert store.histories() == {7: []}
    store.report(Report(7, 10, 0.5, {"lr": 0.1}, interval=1))
    store.report(Report(7, 20, 0.6, {"lr": 0.2}, interval=2))
    assert [r.step for r in store.histories()[7]] == [10, 20]


def test_histories_is_a_copy():
    store = InMemoryStore(seed=0)
    store.register(0)
    store.report(Report(0, 10, 0.5, interval=1))
    h = store.histories()
    h[0].append(Report(0, 99, 0.0))
    h[1] = []
    del h[0][0]
    assert [r.step for r in store.histories()[0]] == [10]
    assert list(store.histories()) == [0]


# --- barrier ----------------------------------------------------------------


def test_wait_for_interval_returns_when_all_live_members_arrived():
    store = InMemoryStore(seed=0)
    n = 4
    for m in range(n):
        store.register(m)
    results = {}

    def member(m):
        def run():
            time.sleep(0.02 * m)
            store.report(Report(m, 10, 0.1 * m, interval=1))
            results[m] = store.wait_for_interval(m, 1, timeout=10)
        return run

    start = time.monotonic()
    run_threads([member(m) for m in range(n)])
    assert time.monotonic() - start < 5
    for m in range(n):
        assert sorted(r.member_id for r in results[m]) == list(range(n))
        assert all(r.interval == 1 for r in results[m])


def test_wait_for_interval_timeout_names_missing_members():
    store = InMemoryStore(seed=0)
    for m in ("a", "b", "c"):
        store.register(m)
    store.report(Report("a", 10, 0.5, interval=1))
    start = time.monotonic()
    with pytest.raises(BarrierTimeoutError, match=r"\['b', 'c'\]") as info:
        store.wait_for_interval("a", 1, timeout=0.2)
    assert 0.15 < time.monotonic() - start < 5
    assert isinstance(info.value, TimeoutError)
    assert "'a'" in str(info.value) and "interval 1" in str(info.value)


def test_wait_for_interval_continue_returns_partial():
    store = InMemoryStore(seed=0)
    for m in range(3):
        store.register(m)
    store.report(Report(0, 10, 0.5, interval=1))
    store.report(Report(2, 10, 0.7, interval=1))
    got = store.wait_for_interval(0, 1, timeout=0.05, on_timeout="continue")
    assert sorted(r.member_id for r in got) == [0, 2]
    with pytest.raises(ValueError, match=r"`on_timeout`.*on_timeout='ignore'"):
        store.wait_for_interval(0, 1, timeout=0.05, on_timeout="ignore")


def test_leaving_member_releases_the_barrier():
    store = InMemoryStore(seed=0)
    for m in range(3):
        store.register(m)
    store.report(Report(0, 10, 0.5, interval=1))
    store.report(Report(1, 10, 0.5, interval=1))
    start = time.monotonic()
    t, got = _in_thread(lambda: store.wait_for_interval(0, 1, timeout=10))
    _until(lambda: store.waiting()[0] == {1: 1})   # blocked at the barrier
    assert t.is_alive()
    store.leave(2, reason="crashed")
    t.join(5)
    assert not t.is_alive() and time.monotonic() - start < 5
    assert sorted(r.member_id for r in got["value"]) == [0, 1]


def test_barrier_picks_each_members_report_for_that_interval():
    store = InMemoryStore(seed=0)
    for m in range(2):
        store.register(m)
    for i in (1, 2, 3):  # member 0 is ahead
        store.report(Report(0, 10 * i, float(i), interval=i))
    store.report(Report(1, 10, 0.1, interval=1))
    got = {r.member_id: r for r in store.wait_for_interval(1, 1, timeout=1)}
    assert got[0].interval == 1 and got[0].step == 10 and got[1].interval == 1
    partial = store.wait_for_interval(0, 2, timeout=0.01, on_timeout="continue")
    assert [(r.member_id, r.interval) for r in partial] == [(0, 2)]


def test_left_members_reports_still_count():
    store = InMemoryStore(seed=0)
    for m in range(2):
        store.register(m)
    store.report(Report(1, 10, 0.9, interval=1))
    store.leave(1)
    store.report(Report(0, 10, 0.1, interval=1))
    assert sorted(r.member_id for r in store.wait_for_interval(0, 1, timeout=1)) == [0, 1]


def test_barrier_result_is_in_registration_order():
    store = InMemoryStore(seed=0)
    for m in ("c", "a", "b"):
        store.register(m)
    for m in ("b", "a", "c"):
        store.report(Report(m, 10, 0.5, interval=1))
    assert [r.member_id for r in store.wait_for_interval("a", 1, timeout=0)] == ["c", "a", "b"]


class _CountingCondition(threading.Condition):
    wakeups = 0

    def wait(self, timeout=None):
        try:
            return super().wait(timeout)
        finally:
            type(self).wakeups += 1


def test_barrier_waiter_is_woken_only_when_its_interval_completes(monkeypatch):
    # Reports for other intervals, reports that leave the interval
    # incomplete and snapshots do not wake a member waiting at a barrier.
    class Threading:
        Condition = _CountingCondition
        Lock = threading.Lock

    monkeypatch.setattr(store_lib, "threading", Threading)
    monkeypatch.setattr(_CountingCondition, "wakeups", 0)
    store = InMemoryStore(seed=0)
    n = 8
    for m in range(n):
        store.register(m)
    store.report(Report(0, 10, 0.5, interval=1))
    t, got = _in_thread(lambda: store.wait_for_interval(0, 1, timeout=30))
    _until(lambda: store.waiting()[0] == {1: 1})
    for m in range(1, n):
        store.report(Report(m, 10, 0.5, interval=1))
        store.report(Report(m, 20, 0.5, interval=2))
        store.publish(make_snapshot(m, 10))
    t.join(10)
    assert not t.is_alive() and len(got["value"]) == n
    # A wrong notification would have woken the waiter once more: it was
    # blocked before the first report, so each one would count here.
    assert _CountingCondition.wakeups == 1
    assert store.waiting() == ({}, {})


def test_restore_records_releases_a_waiting_barrier():
    store = InMemoryStore(seed=0)
    for m in range(2):
        store.register(m)
    store.report(Report(0, 10, 0.5, interval=1))
    t, got = _in_thread(lambda: store.wait_for_interval(0, 1, timeout=10))
    _until(lambda: store.waiting()[0] == {1: 1})
    assert t.is_alive()
    store.restore_records(
        {0: [Report(0, 10, 0.5, interval=1)], 1: [Report(1, 10, 0.7, interval=1)]}, []
    )
    t.join(5)
    assert not t.is_alive() and [r.metric for r in got["value"]] == [0.5, 0.7]
    # The restored histories replace what was there, index included.
    store.restore_records({0: [], 1: [Report(1, 10, 0.7, interval=1)]}, [])
    with pytest.raises(BarrierTimeoutError, match=r"\[0\]"):
        store.wait_for_interval(1, 1, timeout=0)


def test_close_stops_waiting_members_and_reopen_undoes_it():
    store = InMemoryStore(seed=0)
    for m in range(2):
        store.register(m)
    store.report(Report(0, 10, 0.5, interval=1))
    errors = []

    def barrier():
        try:
            store.wait_for_interval(0, 1, timeout=30)
        except PopulationStopped as e:
            errors.append(("barrier", str(e)))

    def snapshot():
        try:
            store.snapshot(1, min_step=5, timeout=30)
        except PopulationStopped as e:
            errors.append(("snapshot", str(e)))

    threads = [threading.Thread(target=f, daemon=True) for f in (barrier, snapshot)]
    start = time.monotonic()
    for t in threads:
        t.start()
    _until(lambda: store.waiting() == ({1: 1}, {1: 1}))
    store.close("stopped by the test")
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    assert time.monotonic() - start < 5
    assert sorted(errors) == [("barrier", "stopped by the test"), ("snapshot", "stopped by the test")]
    with pytest.raises(PopulationStopped):
        store.wait_for_interval(0, 1, timeout=0)
    with pytest.raises(PopulationStopped):
        store.snapshot(0)
    store.report(Report(1, 10, 0.7, interval=1))  # reports are still recorded
    store.reopen()
    assert len(store.wait_for_interval(0, 1, timeout=0)) == 2
    assert store.waiting() == ({}, {})


def test_snapshot_waiter_ignores_other_members_publishing():
    store = InMemoryStore(seed=0)
    for m in range(3):
        store.register(m)
    t, got = _in_thread(lambda: store.snapshot(2, min_step=3, timeout=10))
    _until(lambda: store.waiting()[1] == {2: 1})
    store.publish(make_snapshot(1, 5))
    store.publish(make_snapshot(2, 2))  # too early: it waits on
    assert store.waiting()[1] == {2: 1}
    store.publish(make_snapshot(2, 3))
    t.join(5)
    assert not t.is_alive() and got["value"].step == 3
    assert store.waiting() == ({}, {})


# --- snapshots --------------------------------------------------------------


def test_snapshot_arrays_are_read_only():
    snap = make_snapshot(0, 5)
    for a in snap.weights + snap.optimizer:
        with pytest.raises(ValueError):
            a[...] = 0
    with pytest.raises(Exception):
        snap.step = 6
    verify_snapshot(snap)


def test_snapshot_checksum_and_nbytes():
    a = make_snapshot(0, 5)
    b = make_snapshot(1, 5)
    assert a.checksum() == b.checksum()  # same data, same CRC
    assert make_snapshot(0, 6).checksum() != a.checksum()
    w = [np.full(3, 5, np.float32), np.full(5, 5, np.float32)]
    w[1][2] = 5.0000005  # one element differs
    c = Snapshot(0, 5, tuple(w), a.optimizer)
    assert c.checksum() != a.checksum()
    swapped = Snapshot(0, 5, a.optimizer, a.weights)  # order matters
    assert swapped.checksum() != a.checksum()
    assert a.nbytes == (3 + 5) * 4 + 8 + 4 * 8
    empty = Snapshot(0, 0, (), ())
    assert empty.checksum() == 0 and empty.nbytes == 0
    scalar = Snapshot(0, 0, (np.array(3.0, np.float32),), ())
    assert scalar.checksum() != Snapshot(0, 0, (np.array(4.0, np.float32),), ()).checksum()


def test_publish_and_snapshot():
    store = InMemoryStore(seed=0)
    store.register(0)
    assert store.snapshot(0) is None and store.snapshot_members() == set()
    with pytest.raises(TypeError, match="must be a Snapshot"):
        store.publish({"member": 0})
    s5 = make_snapshot(0, 5)
    store.publish(s5)
    assert store.snapshot(0) is s5 and store.snapshot(0, min_step=5) is s5
    assert store.snapshot(0, min_step=6) is None
    s9 = make_snapshot(0, 9)
    store.publish(s9)
    assert store.snapshot(0) is s9 and store.snapshot_members() == {0}
    assert store.snapshot("nobody", timeout=0.01) is None


def test_snapshot_waits_for_min_step():
    store = InMemoryStore(seed=0)
    store.register(0)
    store.publish(make_snapshot(0, 5))

    def publisher():
        _until(lambda: store.waiting()[1] == {0: 1})   # the reader waits for step 10
        store.publish(make_snapshot(0, 8))
        store.publish(make_snapshot(0, 10))

    t = threading.Thread(target=publisher, daemon=True)
    start = time.monotonic()
    t.start()
    snap = store.snapshot(0, min_step=10, timeout=5)
    t.join(5)
    assert snap is not None and snap.step == 10 and time.monotonic() - start < 4
    verify_snapshot(snap)


def test_snapshot_timeout_returns_none():
    store = InMemoryStore(seed=0)
    store.register(0)
    store.publish(make_snapshot(0, 5))
    start = time.monotonic()
    assert store.snapshot(0, min_step=6, timeout=0.15) is None
    assert 0.1 < time.monotonic() - start < 5


# --- lineage ----------------------------------------------------------------


def test_lineage_order_and_copy():
    store = InMemoryStore(seed=0)
    recs = [LineageRecord(member_id=m, step=0, action="init", hparams={}) for m in range(3)]
    for r in recs:
        store.add_lineage(r)
    got = store.lineage()
    assert got == recs
    got.clear()
    assert store.lineage() == recs

