"""A PBT member's state: the public `get_state()` / `set_state()` pair (as
keras-tuner's `Stateful`) and the restart after a fault.

`PBTCallback` inherits these; the population checkpoints and restarts its
members through them, never through the callback's private fields.
"""

import time

from keras_pbt.core import lineage as lineage_lib
from keras_pbt.runtime import snapshot as snapshot_lib


class MemberState:
    """What a `PBTCallback` saves, restores and restarts from (a mixin)."""

    def get_state(self):
        """This member's PBT state as JSON-friendly values, for `set_state`
        (as keras-tuner's `Stateful`). Inside `fit` the step count is first
        brought up to the optimizer's.

        Returns:
            dict: `member_id`, `hparams`, `steps`, `epochs`, `interval`
            (boundaries passed), `exploits`, `initialised` (its `init`
            record is written), `rng` (its generator's state), `recent`
            (metrics since the last exploit), `recent_steps` (their steps),
            `start_metric` (the metric the current interval started from)
            and `seed`.
        """
        if getattr(self, "_iterations_mark", None) is not None and self.model is not None:
            self._sync_steps()
        return {
            "member_id": self.member_id, "hparams": None if self.hparams is None else dict(self.hparams),
            "steps": int(self.steps), "epochs": int(self.epochs), "interval": int(self.interval),
            "exploits": int(self.exploits), "initialised": bool(self._initialised),
            "rng": self._rng.bit_generator.state, "recent": [float(v) for v in self._recent],
            "recent_steps": [int(v) for v in self._recent_steps],
            "start_metric": None if self._start_metric is None else float(self._start_metric),
            "seed": int(self.policy.seed),
        }

    def set_state(self, state):
        """Puts back a `get_state()` dict of the same member (before `fit`).

        Raises:
            ValueError: a key is missing, the state is another member's, or
                its hyperparameters are not exactly those of `space`.
        """
        # Checkpoints written before these keys existed resume without them.
        optional = {"recent_steps", "start_metric"}
        missing = sorted(set(self.get_state()) - set(state) - optional)
        if missing:
            raise ValueError(f"`state` lacks {missing}. Received: state={state!r}")
        if state["member_id"] != self.member_id or (
                state["hparams"] is not None and set(state["hparams"]) != set(self.space)):
            raise ValueError(
                f"`state` must be member {self.member_id!r}'s, with the hyperparameters "
                f"{sorted(self.space)}. Received: state={state!r}")
        self.hparams = None if state["hparams"] is None else dict(state["hparams"])
        self.steps, self.epochs = int(state["steps"]), int(state["epochs"])
        self.interval, self.exploits = int(state["interval"]), int(state["exploits"])
        self._initialised = bool(state["initialised"])
        self.policy.seed = int(state["seed"])
        self._rng.bit_generator.state = state["rng"]
        self._recent.clear()
        self._recent.extend(float(v) for v in state["recent"])
        self._recent_steps.clear()
        self._recent_steps.extend(int(v) for v in state.get("recent_steps", ()))
        start = state.get("start_metric")
        self._start_metric = None if start is None else float(start)

    def restart(self, snapshot, reason, from_member=True):
        """After a fault: restores `snapshot` (another member's, or with
        `from_member=False` this member's initial one), explores its
        hyperparameters, records `action="restart"` with `reason`; returns
        the `LineageRecord`."""
        snapshot_lib.restore(self.model, snapshot, self.copy_optimizer_state)
        new, ops = self.policy.explore(snapshot.hparams, self._rng, self._run_history())
        record = lineage_lib.LineageRecord(
            member_id=self.member_id, step=self.steps, action="restart", hparams=dict(new),
            hparams_before=dict(self.hparams), parent=snapshot.member_id if from_member else None,
            parent_step=snapshot.step if from_member else None, parent_metric=snapshot.metric,
            ops=ops, interval=self.interval, monitor=self.monitor, mode=self.mode,
            reason=reason, time=time.time(),
        )
        self.hparams = dict(new)
        self._record(record, metric=None)
        return record

    def _run_history(self):
        """Every member's reports so far, when the policy's explorer models the
        run (PB2); None otherwise, so other explorers cost nothing here."""
        if not self.policy.uses_history:
            return None
        return [r for reports in self.store.histories().values() for r in reports]
