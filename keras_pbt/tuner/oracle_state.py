"""`PBTOracle`'s state on disk, and what survives a chief that was killed.

keras-tuner writes `oracle.json` and each `trial_*/trial.json` in place, and
its `Oracle.end_trial` saves `oracle.json` *before* it removes the ended
trial from the ongoing ones. A chief killed at the wrong moment therefore
left a 0-byte `oracle.json` (a bare `JSONDecodeError` on restart), or a
finished segment listed as ongoing, which keras-tuner's `reload` queues for
a retry: it was trained again. `OracleState` (a mixin of `PBTOracle`):

* writes every state file atomically (`keras_pbt.tuner.state_files`), and
  refuses an unreadable one on reload with a `CheckpointError` naming it;
* saves `oracle.json` once per ended segment, after its own bookkeeping
  (keras-tuner's save inside `end_trial` is deferred to it);
* on reload, treats a segment whose `trial.json` says it ended as ended,
  whatever `oracle.json` says, and forgets trials `oracle.json` never knew
  (written by a `create_trial` that did not finish: never handed out);
* ignores a second report of a segment that already ended (a worker that
  trained it again while the chief restarted).
"""

import glob
import os
import time

import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from keras_pbt.tuner import state_files
from keras_pbt.tuner.results import FINAL
from keras_pbt.tuner.segments import MEMBER
from keras_pbt.tuner.segments import SEGMENT
from keras_pbt.tuner.segments import STEP_METRIC
from keras_pbt.tuner.segments import user_values


class OracleState:
    """Saving, reloading and ending segments for `PBTOracle` (a mixin placed
    before `keras_tuner.Oracle` in its bases)."""

    @keras_tuner.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        """As keras-tuner's; the member's optimizer step comes in `pbt/step`.
        A segment that already ended keeps its metrics (a second report
        comes from a worker that trained it again after the chief restarted)."""
        if trial_id in self.end_order:
            return self.trials[trial_id]
        metrics = dict(metrics)
        if STEP_METRIC in metrics:
            step = int(metrics.pop(STEP_METRIC))
        # The worker ends the trial right after: its trial.json is written
        # then, once (a chief stopped in between retries the segment, whose
        # checkpoint gives the metric back without training).
        self._defer_trial_save = True
        try:
            return super().update_trial(trial_id, metrics, step=step)
        finally:
            self._defer_trial_save = False

    @keras_tuner.synchronized
    def end_trial(self, trial):
        """As keras-tuner's, then this oracle's bookkeeping, then one save.

        keras-tuner's `Oracle.end_trial` saves `oracle.json` before it
        removes the trial from the ongoing ones: a chief stopped after that
        save would retry a finished segment. Here that save waits until the
        trial is no longer ongoing and the member's last record is written.
        A segment that already ended is not ended twice.
        """
        if trial.trial_id in self.end_order:  # ended before (in-process, `trial` is the oracle's own)
            self._forget_ongoing(trial.trial_id)
            return
        self._defer_save = True
        try:
            super().end_trial(trial)
        finally:
            self._defer_save = False
        with self._pbt_lock:
            self._ended(self._trial(trial.trial_id))
        self.save()

    def _forget_ongoing(self, trial_id):
        for tuner_id, ongoing in list(self.ongoing_trials.items()):
            if ongoing.trial_id == trial_id:
                del self.ongoing_trials[tuner_id]
        while trial_id in self._retry_queue:
            self._retry_queue.remove(trial_id)

    def _ended(self, trial):
        """Bookkeeping of a segment that ended: never retried again, and the
        member's last record once its last segment completed. Idempotent:
        `reload` runs it again for segments a stopped chief left half done."""
        if trial.status in FINAL:
            self._forget_ongoing(trial.trial_id)
            if trial.trial_id not in self.end_order:
                self.end_order.append(trial.trial_id)
        values = trial.hyperparameters.values
        if trial.status != TrialStatus.COMPLETED or values.get(SEGMENT) != self.num_segments - 1:
            return
        member = int(values[MEMBER])
        if any(r["member"] == member and r["interval"] == self.num_segments
               for r in self._log.rows):
            return
        # The end rule is the pure core's, as for the callback.
        report = self._report(trial.trial_id)
        decision = self.engine.boundary(
            report, key=self.num_segments, progress=self.max_epochs, last=True).decide()
        record = decision.to_record(int(trial.best_step), self.num_segments,
                                    self.objective.name, self.mode, time.time())
        record.hparams, record.hparams_before = user_values(values), user_values(values)
        self._log.add(record)

    # -------------------------------------------------------- state file

    @keras_tuner.synchronized
    def save(self):
        """Writes `oracle.json` atomically (`keras_pbt.tuner.state_files`):
        a chief killed at any moment leaves the previous state or this one."""
        if self._defer_save:
            return
        state_files.write_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        if self._defer_trial_save:
            return
        path = os.path.join(self._get_trial_dir(trial.trial_id), "trial.json")
        state_files.write_json(path, trial.get_state())

    def reload(self):
        """keras-tuner's reload, refusing unreadable files, then repairs what
        a chief stopped between two writes left.

        Raises:
            CheckpointError: naming `oracle.json` or a `trial.json` that is
                empty, cut short or not JSON.
        """
        paths = [self._get_oracle_fname()] + sorted(
            glob.glob(os.path.join(self._project_dir, "trial_*", "trial.json")))
        for path in paths:
            if os.path.exists(path):
                state_files.read_json(path)
        super().reload()
        with self._pbt_lock:
            known = {t for ids in self._segments for t in ids}
            for trial_id in [t for t in self.trials if t not in known]:
                # Written by a create_trial whose oracle.json was never saved:
                # never handed out, so its id is handed out again.
                del self.trials[trial_id]
            for trial in list(self.trials.values()):
                # A segment whose trial.json says it ended while oracle.json
                # still lists it as ongoing (keras-tuner's reload queues it for
                # a retry): it is not trained again.
                self._ended(trial)

    def get_state(self):
        state = super().get_state()
        with self._pbt_lock:
            state["pbt"] = {
                "population_size": self.population_size,
                "max_epochs": self.max_epochs,
                "interval_epochs": self.interval.epochs,
                "burn_in": self.interval.burn_in,
                "frozen": list(self.frozen),
                "inherited": list(self.inherited),
                "synchronous": self.synchronous,
                "segments": [list(s) for s in self._segments],
                "lineage_records": len(self._log.rows),
            }
        return state

    def set_state(self, state):
        super().set_state(state)
        pbt = state.get("pbt")
        if pbt is None:
            return
        if self.max_epochs is None:
            self.max_epochs = pbt["max_epochs"]
        mine = {"population_size": self.population_size, "max_epochs": self.max_epochs,
                "interval_epochs": self.interval.epochs, "burn_in": self.interval.burn_in}
        for key, value in mine.items():
            if pbt.get(key) is not None and pbt[key] != value:
                raise ValueError(
                    f"The project in this directory was run with {key}={pbt[key]!r}, not "
                    f"{value!r}. Pass overwrite=True or a new project_name to start a new "
                    "search."
                )
        with self._pbt_lock:
            self.set_inherited(pbt.get("inherited", ()))
            self._segments = [list(s) for s in pbt["segments"]]
            self._log.restore(pbt["lineage_records"])
