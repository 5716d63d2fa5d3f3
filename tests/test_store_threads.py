"""InMemoryStore under threads: many synchronous boundaries, the barrier
index against a rescan of every history (hypothesis), and sixteen members'
random interleavings of reports, snapshots and lineage."""

import threading
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_pbt.core.lineage import LineageRecord
from keras_pbt.core.selection import Report
from keras_pbt.storage.store import BarrierTimeoutError
from keras_pbt.storage.store import InMemoryStore
from tests.test_store import make_snapshot
from tests.test_store import run_threads
from tests.test_store import verify_snapshot


def test_many_synchronous_boundaries_under_threads():
    store = InMemoryStore(seed=0)
    n, intervals = 8, 40
    for m in range(n):
        store.register(m)
    seen = {m: [] for m in range(n)}

    def member(m):
        def run():
            rng = np.random.default_rng(m)
            for i in range(1, intervals + 1):
                if rng.random() < 0.3:
                    time.sleep(0.0005)
                store.report(Report(m, 10 * i, float(rng.random()), interval=i))
                arrived = store.wait_for_interval(m, i, timeout=10)
                seen[m].append(sorted((r.member_id, r.interval) for r in arrived))
        return run

    run_threads([member(m) for m in range(n)])
    for m in range(n):
        assert seen[m] == [[(k, i) for k in range(n)] for i in range(1, intervals + 1)]


def reference_at_interval(histories, interval):
    """The barrier's rule, by rescanning every history (the store indexes it):
    a member's latest report for `interval`, unless a report for an earlier
    interval came after it."""
    out = {}
    for m, history in histories.items():
        for r in reversed(history):
            if r.interval == interval:
                out[m] = r
                break
            if r.interval < interval:
                break
    return out


BARRIER_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("report"), st.integers(0, 4), st.integers(0, 5)),
        st.tuples(st.just("leave"), st.integers(0, 4), st.just(0)),
        st.tuples(st.just("register"), st.integers(0, 4), st.just(0)),
        st.tuples(st.just("restore"), st.integers(0, 4), st.integers(0, 5)),
    ),
    max_size=40,
)


@given(ops=BARRIER_OPS)
@settings(max_examples=200, deadline=None)
def test_barrier_index_matches_rescanning_every_history(ops):
    # Members that go back to an earlier interval, leave, rejoin, and
    # checkpoint restores (histories replaced): the barrier answers as if it
    # rescanned every history, for every interval.
    store = InMemoryStore(seed=0)
    for m in range(3):
        store.register(m)
    for op, m, interval in ops:
        if op == "report" and m in store.members():
            store.report(Report(m, len(store.histories()[m]), 0.0, interval=interval))
        elif op == "leave":
            store.leave(m)
        elif op == "register":
            store.register(m, exist_ok=True)
        elif op == "restore":
            histories = store.histories()
            if m in histories:
                # Cut the member's history back (a resume from an earlier epoch)
                # and add a report for `interval`.
                cut = histories[m][: len(histories[m]) // 2]
                histories[m] = cut + [Report(m, 99, 0.0, interval=interval)]
                store.restore_records(histories, store.lineage())
        histories, live = store.histories(), store.live_members()
        for i in range(7):
            expected = reference_at_interval(histories, i)
            got = store.wait_for_interval(0, i, timeout=0, on_timeout="continue")
            assert got == [expected[k] for k in histories if k in expected]
            missing = [k for k in live if k not in expected]
            if missing:
                with pytest.raises(BarrierTimeoutError) as info:
                    store.wait_for_interval(0, i, timeout=0)
                assert info.value.missing == missing
    assert store.waiting()[0] == {}  # no condition kept for past waits


# --- concurrency ------------------------------------------------------------


def check_final_state(store, expected_steps, expected_lineage):
    histories = store.histories()
    for m, steps in expected_steps.items():
        assert [r.step for r in histories[m]] == steps
        assert all(r.member_id == m for r in histories[m])
    lineage = store.lineage()
    assert len(lineage) == sum(expected_lineage.values())
    for m, count in expected_lineage.items():
        mine = [r.step for r in lineage if r.member_id == m]
        assert mine == list(range(count))  # each member's records in its own order
    for m in store.snapshot_members():
        verify_snapshot(store.snapshot(m))


def run_member(store, m, ops, n_members, barrier):
    """Runs `ops` for member `m`; returns (report steps, lineage count)."""
    steps, lineage_count, published = [], 0, 0
    barrier.wait()
    for i, op in enumerate(ops):
        if op == "report":
            step = len(steps) + 1
            store.report(Report(m, step, float(i), {"i": i}, interval=step))
            steps.append(step)
        elif op == "publish":
            published += 1
            store.publish(make_snapshot(m, published, sizes=(16, 3)))
        elif op == "snapshot":
            other = (m + i) % n_members
            snap = store.snapshot(other)
            if snap is not None:
                assert snap.member_id == other
                verify_snapshot(snap)
        elif op == "lineage":
            store.add_lineage(
                LineageRecord(member_id=m, step=lineage_count, action="keep", hparams={"i": i})
            )
            lineage_count += 1
        elif op == "histories":
            for member, history in store.histories().items():
                got = [r.step for r in history]
                assert got == list(range(1, len(got) + 1)), (member, got)
    return steps, lineage_count


OPS = ["report", "publish", "snapshot", "lineage", "histories"]


def run_members(plans, timeout):
    """A store with `len(plans)` members; member `m` runs `plans[m]` in its own
    thread (`run_member`), all starting together. Returns `(store, results)`."""
    n = len(plans)
    store = InMemoryStore(seed=0)
    for m in range(n):
        store.register(m)
    barrier = threading.Barrier(n)
    results = {}

    def member(m):
        def run():
            results[m] = run_member(store, m, plans[m], n, barrier)
        return run

    run_threads([member(m) for m in range(n)], timeout=timeout)
    return store, results


def test_sixteen_threads_thousand_ops():
    n, per_thread = 16, 1000
    # histories copies every list: O(total reports) per call.
    plans = [list(np.random.default_rng(m).choice(OPS, size=per_thread,
                                                  p=[0.25, 0.2, 0.25, 0.15, 0.15]))
             for m in range(n)]
    start = time.monotonic()
    store, results = run_members(plans, timeout=60)
    assert time.monotonic() - start < 30
    expected_steps = {m: results[m][0] for m in range(n)}
    assert all(len(s) > 200 for s in expected_steps.values())  # exact counts checked below
    check_final_state(store, expected_steps, {m: results[m][1] for m in range(n)})
    assert store.snapshot_members() == set(range(n))


@given(
    plans=st.lists(
        st.lists(st.sampled_from(OPS), min_size=0, max_size=40), min_size=2, max_size=6
    ),
    switch=st.sampled_from([1e-6, 1e-5, 5e-3]),
)
@settings(max_examples=60, deadline=None)
def test_random_interleavings(plans, switch):
    import sys

    old = sys.getswitchinterval()
    sys.setswitchinterval(switch)  # vary how often threads are preempted
    try:
        store, results = run_members(plans, timeout=30)
    finally:
        sys.setswitchinterval(old)
    n = len(plans)
    expected_steps = {m: list(range(1, plans[m].count("report") + 1)) for m in range(n)}
    assert {m: results[m][0] for m in range(n)} == expected_steps
    check_final_state(store, expected_steps, {m: plans[m].count("lineage") for m in range(n)})
    assert store.snapshot_members() == {m for m in range(n) if "publish" in plans[m]}
    for m in store.snapshot_members():
        assert store.snapshot(m).step == plans[m].count("publish")  # the latest one
