"""Where a `PBTOracle` search stands and what it found: segments, lineage,
schedules and the best members.

`keras_pbt.core.ancestry` decides which member is best (`best_member`) and whose
changes its weights went through (`ancestry`), as for `Population` and the
lineage tab; this mixin maps members and segments to keras-tuner trials.
"""

import math

from keras_tuner.engine.trial import TrialStatus

from keras_pbt.core import lineage as lineage_lib
from keras_pbt.core import ancestry as schedule_lib
from keras_pbt.tuner.segments import MEMBER
from keras_pbt.tuner.segments import SEGMENT

FINAL = (TrialStatus.COMPLETED, TrialStatus.FAILED)


class SegmentResults:
    """State and results of `PBTOracle` (a mixin over its trials and segments)."""

    def _trial(self, trial_id):
        return self.trials[trial_id]

    def _status(self, member_id, segment):
        ids = self._segments[member_id]
        if segment >= len(ids):
            return None
        # `can_hand_out` reads without keras-tuner's lock: a trial that
        # `create_trial` is still adding to `trials` is running.
        trial = self.trials.get(ids[segment])
        return TrialStatus.RUNNING if trial is None else trial.status

    def _ready(self, member_id, generation_done):
        """Whether `member_id`'s next segment can be decided now."""
        k = len(self._segments[member_id])
        if k >= self.num_segments:
            return False
        if k == 0:
            return True
        if self._status(member_id, k - 1) not in FINAL:
            return False
        if self.synchronous:
            if k - 1 not in generation_done:
                generation_done[k - 1] = all(
                    self._status(m, k - 1) in FINAL for m in range(self.population_size))
            return generation_done[k - 1]
        return True

    def can_hand_out(self):
        """Whether `create_trial` would now hand out a segment or say STOPPED
        (not IDLE). Read without keras-tuner's oracle lock, so that an idle
        worker thread of this process can wait without asking."""
        with self._pbt_lock:
            if self._retry_queue:
                return True
            generation_done = {}
            if any(self._ready(m, generation_done) for m in range(self.population_size)):
                return True
            return self._done()

    def _done(self):
        """Whether every segment of every member is final."""
        return all(len(s) == self.num_segments and self._status(m, len(s) - 1) in FINAL
                   for m, s in enumerate(self._segments))

    def _latest_records(self, trial_ids):
        """One `LineageRecord` per completed trial of `trial_ids` (its end), for
        `keras_pbt.core.ancestry.best_member`."""
        out = []
        for t in trial_ids:
            trial = self._trial(t)
            if trial.status == TrialStatus.COMPLETED and trial.score is not None:
                out.append(lineage_lib.LineageRecord(
                    member_id=int(trial.hyperparameters.values[MEMBER]),
                    step=int(trial.best_step), action="keep", hparams={},
                    metric=float(trial.score), mode=self.mode,
                    interval=int(trial.hyperparameters.values[SEGMENT]) + 1))
        return out

    # ----------------------------------------------------------- lineage

    def lineage(self):
        """Every `LineageRecord` so far, in the order of the decisions."""
        with self._pbt_lock:
            return self._log.records()

    def member_trials(self, member_id):
        """The trial ids of `member_id`'s segments, in order."""
        with self._pbt_lock:
            return list(self._segments[member_id])

    def schedule(self, member_id=None):
        """The hyperparameters a member's final weights were trained with, oldest first.

        `keras_pbt.core.ancestry.ancestry` over this search's lineage: the
        member's changes back through the members it copied.

        Args:
            member_id: the member; by default the best one
                (`keras_pbt.core.ancestry.best_member`).

        Returns:
            A list of `keras_pbt.core.ancestry.AncestryEntry` (`step`, `hparams`,
            `member_id`, `action`, ...), the first at step 0.
        """
        return schedule_lib.ancestry(self.lineage(), member_id, self.mode)

    def trial_of(self, entry):
        """The trial that trained right after an `AncestryEntry`'s change."""
        return self._segments[entry.member_id][entry.record.interval]

    # ----------------------------------------------------------- results

    def get_best_trials(self, num_trials=1):
        """Each member's latest completed segment, best first; then the rest.

        Members are ordered by `keras_pbt.core.ancestry.best_member` (the rule of
        `Population` and of the lineage tab), so `get_best_models(1)` is the
        best member's model at the end of training, and `results_summary()`
        shows the population as it finished.
        """
        with self._pbt_lock:
            latest = {}
            for ids in self._segments:
                done = self._latest_records(ids)
                if done:
                    latest[done[-1].member_id] = done[-1]
            order = []
            while latest:
                best = schedule_lib.best_member(list(latest.values()), self.mode)
                record = latest.pop(best)
                order.append(self._segments[best][record.interval - 1])
        first = [self._trial(t) for t in order]
        sign = -1 if self.mode == "max" else 1

        def key(t):
            s = t.score
            bad = s is None or not math.isfinite(s)
            return (bad, 0.0 if bad else sign * s)

        trials = list(self.trials.values())
        rest = sorted(
            (t for t in trials if t.status == TrialStatus.COMPLETED and t.trial_id not in order),
            key=key,
        )
        others = [t for t in trials if t.status != TrialStatus.COMPLETED]
        return (first + rest + others)[:num_trials]

