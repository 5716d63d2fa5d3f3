"""Population stores: where members report, publish snapshots and meet.

Pure Python + NumPy. `PopulationStore` is the interface; `InMemoryStore`
serves the members of one process (threads). Other stores (the keras-tuner
oracle, a checkpointed store) implement the same methods.
"""

import abc
import threading
import time

from keras_pbt.core.errors import BarrierTimeoutError
from keras_pbt.core.errors import ConfigurationError  # noqa: F401 - re-exported
from keras_pbt.core.errors import PopulationStopped
from keras_pbt.core.selection import Report
from keras_pbt.core.validation import check_bool
from keras_pbt.core.validation import check_choice
from keras_pbt.core.validation import check_timeout
from keras_pbt.core.validation import new_seed
from keras_pbt.storage.payload import Snapshot


class PopulationStore(abc.ABC):
    """What members of one population share.

    Every method is safe to call from several threads. A store also says
    how its members meet at a boundary, since it implements the barrier:
    `synchronous` (all live members decide together), `timeout` (seconds a
    synchronous boundary waits) and `on_timeout` (`"raise"` or
    `"continue"`); a member's `PBTCallback` reads them here.
    """

    seed = 0
    synchronous = False
    timeout = 600.0
    on_timeout = "raise"

    @abc.abstractmethod
    def register(self, member_id, hparams=None, exist_ok=False):
        """Adds `member_id`, or marks it live again after `leave`.

        Raises:
            ValueError: if `member_id` is already live and `exist_ok` is False
                (two members with one id).
        """

    @abc.abstractmethod
    def leave(self, member_id, reason=""):
        """Marks `member_id` as no longer training: barriers stop waiting for it."""

    @abc.abstractmethod
    def members(self):
        """All registered member ids, in registration order."""

    @abc.abstractmethod
    def live_members(self):
        """Members registered and not left."""

    @abc.abstractmethod
    def report(self, report):
        """Records a `Report` (appended to the member's history)."""

    @abc.abstractmethod
    def histories(self):
        """dict member -> list of its `Report`s, oldest first (a copy)."""

    @abc.abstractmethod
    def wait_for_interval(self, member_id, interval, timeout=None, on_timeout=None):
        """Synchronous barrier at boundary `interval`.

        Blocks until every live member has reported for `interval`.

        Args:
            member_id: the waiting member (must have reported already).
            interval: the boundary index.
            timeout: seconds to wait at most. Defaults to the store's `timeout`.
            on_timeout: `"raise"` raises `BarrierTimeoutError` naming the
                missing members; `"continue"` returns what arrived.
                Defaults to the store's `on_timeout`.

        Returns:
            The reports for `interval` of the members that arrived.
        """

    @abc.abstractmethod
    def publish(self, snapshot):
        """Makes `snapshot` the latest copyable state of its member."""

    @abc.abstractmethod
    def snapshot(self, member_id, min_step=None, timeout=0.0):
        """The latest `Snapshot` of `member_id` with `step >= min_step`.

        Waits up to `timeout` seconds for one; returns `None` if none came.
        """

    @abc.abstractmethod
    def snapshot_members(self):
        """Members that have published a snapshot."""

    def close(self, reason="closed"):
        """Stops the population: every wait raises `PopulationStopped`."""
        raise NotImplementedError

    @abc.abstractmethod
    def add_lineage(self, record):
        """Appends a `LineageRecord`."""

    @abc.abstractmethod
    def lineage(self):
        """All `LineageRecord`s so far, in the order they were added."""


class InMemoryStore(PopulationStore):
    """A store for members trained in threads of one process.

    Example:

    ```python
    store = InMemoryStore()
    store.register(0, {"lr": 0.1})
    store.report(Report(0, step=10, metric=0.5, interval=1))
    [r.metric for r in store.histories()[0]]  # [0.5]
    ```

    Reports are indexed by interval as they arrive, so checking a barrier
    costs O(1) however long the histories are, and a member waiting at a
    barrier is woken only when its interval may be complete (the last live
    member reported, a member left, or the store closed); a member waiting
    for a snapshot, only when that member publishes one.

    Args:
        seed: the population's seed (tie-breaking and explore): every
            member's callback uses it. Defaults to a fresh random seed.
        synchronous: if True, all live members meet at each boundary and
            decide together on the same reports; if False, each member
            decides against the latest comparable reports of the others.
            Defaults to `False`.
        timeout: seconds a synchronous boundary waits for late members
            (also settable later, e.g. `pop.store.timeout = 30`). Defaults
            to `600`.
        on_timeout: what a synchronous boundary does when members are
            later than `timeout`: `"raise"` (a `BarrierTimeoutError` naming
            them) or `"continue"` (decide without them). Defaults to
            `"raise"`.
    """

    def __init__(self, seed=None, synchronous=False, timeout=600.0, on_timeout="raise"):
        if seed is None:
            seed = new_seed()
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative int. Received: seed={seed!r}")
        self.seed = seed
        self.synchronous = check_bool("synchronous", synchronous)
        self.timeout = timeout
        self.on_timeout = on_timeout
        self._lock = threading.Lock()
        self._members = {}  # member -> live flag, in registration order
        self._n_live = 0
        self._hparams = {}
        self._history = {}  # member -> its reports, oldest first
        self._snapshots = {}
        self._lineage = []
        self._champions = []
        self._closed = None
        # The barrier's index. `_arrived[i]`: member -> the report the barrier
        # at interval `i` counts for it: its latest report for `i`, unless a
        # report for an earlier interval came after it (a member that went
        # back, e.g. retrained from an earlier state, has not reached `i`
        # again). `_live_arrived[i]`: how many of those members are live.
        # `_present[m]`: the intervals `m` is in `_arrived` for.
        self._arrived = {}
        self._live_arrived = {}
        self._present = {}
        # Conditions on `_lock`, one per interval (or member) that someone
        # waits for, with the number of waiters: `[condition, count]`. A
        # condition nobody waits on goes back to `_spare` (making one costs
        # more than a whole barrier check).
        self._interval_waiters = {}
        self._snapshot_waiters = {}
        self._spare = []

    def close(self, reason="closed"):
        with self._lock:
            self._closed = reason
            for waiters in (self._interval_waiters, self._snapshot_waiters):
                for cond, _ in waiters.values():
                    cond.notify_all()

    def reopen(self):
        """Undoes `close` (a population that is fitted again)."""
        with self._lock:
            self._closed = None

    def _check_open(self):
        if self._closed is not None:
            raise PopulationStopped(self._closed)

    def register(self, member_id, hparams=None, exist_ok=False):
        with self._lock:
            live = self._members.get(member_id)
            if live and not exist_ok:
                raise ValueError(
                    f"Duplicate member id: member {member_id!r} is already registered "
                    "and training in this store. Received: member_id="
                    f"{member_id!r}"
                )
            if not live:
                self._members[member_id] = True
                self._n_live += 1
                for i in self._present.setdefault(member_id, set()):
                    self._live_arrived[i] += 1
            self._history.setdefault(member_id, [])
            if hparams is not None:
                self._hparams[member_id] = dict(hparams)

    def leave(self, member_id, reason=""):
        with self._lock:
            if self._members.get(member_id):
                self._members[member_id] = False
                self._n_live -= 1
                for i in self._present[member_id]:
                    self._live_arrived[i] -= 1
                self._wake_complete()  # those waiting only for `member_id`

    def members(self):
        with self._lock:
            return list(self._members)

    def live_members(self):
        with self._lock:
            return [m for m, live in self._members.items() if live]

    def report(self, report):
        if not isinstance(report, Report):
            raise TypeError(f"`report` must be a Report. Received: {report!r}")
        with self._lock:
            member = report.member_id
            if member not in self._members:
                raise KeyError(f"Member {member!r} is not registered in this store.")
            history = self._history[member]
            self._index(member, report, history[-1].interval if history else None)
            history.append(report)
            self._hparams[member] = dict(report.hparams)
            interval = report.interval
            if (self._members[member] and interval in self._interval_waiters
                    and self._complete(interval)):
                self._interval_waiters[interval][0].notify_all()

    def _index(self, member_id, report, previous):
        """Adds `report` to the barrier index; `previous`: the interval of
        the member's report before it (None for its first)."""
        interval, live = report.interval, self._members[member_id]
        present = self._present[member_id]
        if previous is not None and interval < previous:
            # The member went back: it has not reached the later intervals.
            for i in [i for i in present if i > interval]:
                present.discard(i)
                del self._arrived[i][member_id]
                if live:
                    self._live_arrived[i] -= 1
        arrived = self._arrived.get(interval)
        if arrived is None:
            arrived = self._arrived[interval] = {}
        if member_id not in arrived:
            present.add(interval)
            count = self._live_arrived.get(interval, 0)  # 0 for a left member's report
            self._live_arrived[interval] = count + 1 if live else count
        arrived[member_id] = report

    def _complete(self, interval):
        return self._live_arrived.get(interval, 0) >= self._n_live

    def _wake_complete(self):
        for interval, (cond, _) in self._interval_waiters.items():
            if self._complete(interval):
                cond.notify_all()

    def _reports_at(self, interval):
        arrived = self._arrived.get(interval, {})
        return [arrived[m] for m in self._history if m in arrived]  # registration order

    def histories(self):
        with self._lock:
            return {m: list(h) for m, h in self._history.items()}

    @property
    def timeout(self):
        return self._timeout

    @timeout.setter
    def timeout(self, value):
        self._timeout = check_timeout("timeout", value)

    @property
    def on_timeout(self):
        return self._on_timeout

    @on_timeout.setter
    def on_timeout(self, value):
        self._on_timeout = check_choice("on_timeout", value, ("raise", "continue"))

    def wait_for_interval(self, member_id, interval, timeout=None, on_timeout=None):
        timeout = self.timeout if timeout is None else check_timeout("timeout", timeout,
                                                                     allow_zero=True)
        on_timeout = self.on_timeout if on_timeout is None else check_choice(
            "on_timeout", on_timeout, ("raise", "continue"))
        deadline = time.monotonic() + timeout
        with self._lock:
            self._check_open()
            if self._complete(interval):
                return self._reports_at(interval)
            entry = self._wait_on(self._interval_waiters, interval)
            try:
                cond = entry[0]
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        if on_timeout == "continue":
                            return self._reports_at(interval)
                        arrived = self._arrived.get(interval, {})
                        missing = [m for m, live in self._members.items()
                                   if live and m not in arrived]
                        raise BarrierTimeoutError(
                            f"Member {member_id!r} waited {timeout:g} s at interval {interval} "
                            f"for members {missing!r}, which did not report. Raise "
                            "the store's `timeout`, use on_timeout='continue', or check those members.",
                            member_id=member_id, interval=interval, missing=missing, timeout=timeout,
                        )
                    cond.wait(left)
                    self._check_open()
                    if self._complete(interval):
                        return self._reports_at(interval)
            finally:
                self._done_waiting(self._interval_waiters, interval, entry)

    def _wait_on(self, waiters, key):
        """Registers a waiter for `key`: its `[condition, count]` entry."""
        entry = waiters.get(key)
        if entry is None:
            cond = self._spare.pop() if self._spare else threading.Condition(self._lock)
            entry = waiters[key] = [cond, 0]
        entry[1] += 1
        return entry

    def _done_waiting(self, waiters, key, entry):
        entry[1] -= 1
        if entry[1] == 0:
            del waiters[key]
            self._spare.append(entry[0])

    def publish(self, snapshot):
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"`snapshot` must be a Snapshot. Received: {snapshot!r}")
        with self._lock:
            self._snapshots[snapshot.member_id] = snapshot
            waiters = self._snapshot_waiters.get(snapshot.member_id)
            if waiters is not None:
                waiters[0].notify_all()

    def snapshot(self, member_id, min_step=None, timeout=0.0):
        deadline = time.monotonic() + timeout

        def ready():
            snap = self._snapshots.get(member_id)
            if snap is not None and (min_step is None or snap.step >= min_step):
                return snap
            return None

        with self._lock:
            self._check_open()
            snap = ready()
            if snap is not None or timeout <= 0:
                return snap
            entry = self._wait_on(self._snapshot_waiters, member_id)
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    entry[0].wait(left)
                    self._check_open()
                    snap = ready()
                    if snap is not None:
                        return snap
            finally:
                self._done_waiting(self._snapshot_waiters, member_id, entry)

    def snapshot_members(self):
        with self._lock:
            return set(self._snapshots)

    def waiting(self):
        """Who waits in this store now.

        Returns:
            `(barriers, snapshots)`: dict interval -> how many members wait
            at that synchronous boundary, and dict member id -> how many
            members wait for that member's snapshot.
        """
        with self._lock:
            return ({k: e[1] for k, e in self._interval_waiters.items()},
                    {k: e[1] for k, e in self._snapshot_waiters.items()})

    def add_lineage(self, record):
        with self._lock:
            self._lineage.append(record)

    def keep_champion(self, snapshot):
        """Keeps `snapshot`, the best member at an Iterated PBT restart, for the
        final choice (`Population.choose` weighs it against the final members)."""
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"`snapshot` must be a Snapshot. Received: {snapshot!r}")
        with self._lock:
            self._champions.append(snapshot)

    def champions(self):
        """The `Snapshot`s kept by `keep_champion`, oldest first."""
        with self._lock:
            return list(self._champions)

    def lineage(self):
        with self._lock:
            return list(self._lineage)

    def member_records(self, member_id):
        """`(reports, lineage records)` of one member, oldest first (copies).

        Every report and lineage record of a member is added by that
        member's own thread, so what this returns is exactly the member's
        part of the store up to now (used to checkpoint it).
        """
        with self._lock:
            return (list(self._history.get(member_id, ())),
                    [r for r in self._lineage if r.member_id == member_id])

    def restore_records(self, histories, lineage, hparams=None, champions=()):
        """Replaces reports, lineage and champions with checkpointed ones.

        Args:
            histories: dict member -> list of `Report`, oldest first.
            lineage: list of `LineageRecord`s, in order.
            hparams: optional dict member -> hyperparameters.
            champions: the `Snapshot`s `keep_champion` kept, oldest first.

        Raises:
            KeyError: for a member that is not registered.
        """
        with self._lock:
            unknown = [m for m in histories if m not in self._members]
            if unknown:
                raise KeyError(f"Members {unknown!r} are not registered in this store.")
            for m, reports in histories.items():
                self._history[m] = list(reports)
            self._lineage = list(lineage)
            self._champions = list(champions)
            for m, hp in (hparams or {}).items():
                self._hparams[m] = dict(hp)
            # Rebuild the barrier index from the histories now held.
            self._arrived, self._live_arrived = {}, {}
            self._present = {m: set() for m in self._members}
            for m, history in self._history.items():
                previous = None
                for r in history:
                    self._index(m, r, previous)
                    previous = r.interval
            self._wake_complete()

