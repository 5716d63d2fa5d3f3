"""`PBTOracle`: Population-Based Training as a keras-tuner `Oracle`.

How trials map to PBT: **one trial is one segment of one member**, the
`interval_epochs` epochs between two PBT decisions. A population of `N`
members trained for `max_epochs` epochs in segments of `interval_epochs`
is `N * ceil(max_epochs / interval_epochs)` trials. Besides the member's
hyperparameters, a trial's values carry (as Hyperband's `tuner/trial_id`
does):

* `pbt/member`: the member (0..N-1);
* `pbt/segment`: the segment index (0 for the first);
* `pbt/action`: `"init"`, `"keep"`, `"exploit"` or `"restart"`;
* `pbt/parent_trial`: the trial whose checkpoint (weights and optimizer
  state) this segment starts from: the member's own previous segment
  (`keep`), the copied member's segment (`exploit`), or `""` (`init`);
* `pbt/initial_epoch`, `pbt/epochs`: the epochs this segment trains;
* `pbt/initial_step`: the member's own optimizer-step count at the start
  (an exploit copies the parent's optimizer, iteration count included, but
  the member's steps go on from its own, as in `PBTCallback`).

A trial's score is the objective at the end of its segment, and its
`best_step` the member's optimizer step count there. Every decision is a
`keras_pbt.LineageRecord`, appended to `<project>/pbt_lineage.jsonl` and
written to TensorBoard (one run per member) as the `PBTCallback` writes it.

Only the standard oracle calls are used, so keras-tuner's distributed
chief/worker mode works unchanged: everything a worker needs is in the
trial's hyperparameter values.
"""

import json
import math
import os
import threading
import time

import keras_tuner
import numpy as np
from keras_tuner.engine.trial import TrialStatus

from keras_pbt import lineage as lineage_lib
from keras_pbt import policy as policy_lib
from keras_pbt import selection as selection_lib
from keras_pbt.tuner import convert
from keras_pbt.validation import check_int
from keras_pbt.validation import check_seed

MEMBER = "pbt/member"
SEGMENT = "pbt/segment"
ACTION = "pbt/action"
PARENT_TRIAL = "pbt/parent_trial"
INITIAL_EPOCH = "pbt/initial_epoch"
EPOCHS = "pbt/epochs"
INITIAL_STEP = "pbt/initial_step"
PBT_KEYS = (MEMBER, SEGMENT, ACTION, PARENT_TRIAL, INITIAL_EPOCH, EPOCHS, INITIAL_STEP)
# Lineage records, one JSON object a line, in the project directory.
LINEAGE_FILE = "pbt_lineage.jsonl"

_FINAL = (TrialStatus.COMPLETED, TrialStatus.FAILED)


def user_values(values):
    """The hyperparameter values without the `pbt/` bookkeeping entries."""
    return {k: v for k, v in values.items() if not str(k).startswith("pbt/")}


class PBTOracle(keras_tuner.Oracle):
    """Population-Based Training oracle for keras-tuner.

    Decides with the same pure policy as `keras_pbt.PBTCallback`
    (`keras_pbt.PBTPolicy`: truncation selection, explore, ties broken with
    the seed). keras-tuner hyperparameters become keras-pbt specs
    (`keras_pbt.tuner.convert`), so explore keeps every value inside its
    hyperparameter's own bounds and step; `Choice` and `Boolean` move to a
    neighbour. See the module docstring for how trials map to segments.

    Args:
        objective: a metric name or a single `keras_tuner.Objective`; the
            direction is inferred from a name as keras-tuner does.
        population_size: number of members, >= 2. Defaults to `8`.
        max_epochs: epochs each member trains in all. Defaults to `10`.
        interval_epochs: epochs per segment (between decisions). Defaults
            to `1`.
        quantile, selection, factors, resample_probability, explore_fn: as
            in `keras_pbt.PBTCallback`.
        frozen: names of hyperparameters PBT never perturbs, such as layer
            sizes, whose change would change the weights' shapes. Each member
            keeps its sampled value; members with equal frozen values form a
            sub-population, ranked on its own and copying only within itself
            (so a search over frozen values is a random search of PBT
            sub-populations). Conditional hyperparameters must be frozen too.
            Defaults to `()`.
        synchronous: if True, segment `k + 1` of any member starts only once
            every member finished segment `k`, and all decide on the same
            reports. If False, a member decides as soon as its segment ends,
            against the latest comparable segments of the others. Defaults
            to `True`.
        logdir: TensorBoard log directory (one run `member_<id>` per
            member), or `None` for none. `PBTTuner` sets it. Defaults to
            `None`.
        seed: int seed of the initial values, explore and tie-breaking.
        hyperparameters, allow_new_entries, tune_new_entries,
            max_retries_per_trial, max_consecutive_failed_trials: as in
            `keras_tuner.Oracle`.

    Example:

    ```python
    oracle = keras_pbt.PBTOracle(objective="val_accuracy", population_size=8,
                                 max_epochs=20, interval_epochs=2)
    ```
    """

    def __init__(
        self,
        objective=None,
        population_size=8,
        max_epochs=10,
        interval_epochs=1,
        quantile=0.2,
        selection="truncation",
        factors=(0.8, 1.2),
        resample_probability=0.25,
        explore_fn=None,
        frozen=(),
        synchronous=True,
        logdir=None,
        seed=None,
        hyperparameters=None,
        allow_new_entries=True,
        tune_new_entries=True,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
    ):
        population_size = check_int("population_size", population_size, minimum=2,
                                    why=" (PBT needs a population)")
        max_epochs = check_int("max_epochs", max_epochs)
        interval_epochs = check_int("interval_epochs", interval_epochs)
        segments = math.ceil(max_epochs / interval_epochs)
        if seed is not None:
            check_seed(seed)
        # No `max_trials` for keras-tuner: its create_trial would answer
        # STOPPED once every segment is handed out, while the last ones still
        # train (a retry would then find no worker, and the distributed chief
        # would wait 20 s more). populate_space says STOPPED when all are final.
        super().__init__(
            objective=objective,
            max_trials=None,
            hyperparameters=hyperparameters,
            allow_new_entries=allow_new_entries,
            tune_new_entries=tune_new_entries,
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        if seed is not None:
            # keras-tuner's `seed or random.randint(...)` would drop seed=0.
            self.seed = self._seed_state = int(seed)
        direction = getattr(self.objective, "direction", None)
        if direction not in ("min", "max") or hasattr(self.objective, "objectives"):
            raise ValueError(
                "PBTOracle ranks members by one metric: pass objective='val_accuracy' or "
                f"keras_tuner.Objective(name, direction). Received: objective={objective!r}"
            )
        if isinstance(frozen, str) or not hasattr(frozen, "__iter__"):
            raise TypeError(f"`frozen` must be a list of names. Received: frozen={frozen!r}")
        self.population_size = population_size
        self.max_epochs = max_epochs
        self.interval_epochs = interval_epochs
        self.num_segments = segments
        self.frozen = tuple(frozen)
        self.synchronous = bool(synchronous)
        self.logdir = logdir
        self._policy_args = dict(
            selection=selection, quantile=quantile, factors=factors,
            resample_probability=resample_probability, explore_fn=explore_fn,
        )
        # Fail early on bad policy arguments (the space is not known yet).
        selection_lib.get_selection(selection, selection_lib.check_quantile(quantile))
        policy_lib.explore_lib.Explorer(factors, resample_probability, explore_fn)
        self._policy = None
        self._policy_space_size = -1
        # member -> trial ids of its segments, in order.
        self._segments = [[] for _ in range(population_size)]
        self._lineage = []  # LineageRecord dicts
        self._writers = {}
        # Guards the PBT state (not keras-tuner's); always taken inside
        # keras-tuner's oracle lock, never around it.
        self._pbt_lock = threading.RLock()

    @property
    def mode(self):
        return self.objective.direction

    @property
    def total_trials(self):
        """The number of segment trials of the whole search."""
        return self.population_size * self.num_segments

    def remaining_trials(self):
        return self.total_trials - len(self.trials)

    # ------------------------------------------------------------ policy

    def _explored_space(self):
        return convert.space_from_hyperparameters(self.hyperparameters, exclude=self.frozen)

    def policy(self):
        """The `PBTPolicy` over the current search space (without `frozen`).

        Rebuilt when the space grows (a hyperparameter first declared in
        `HyperModel.fit` joins it after the first trials).
        """
        size = len(self.hyperparameters.space)
        if self._policy is None or size != self._policy_space_size:
            space = self._explored_space()
            if not space:
                raise ValueError(
                    "PBTOracle has no hyperparameter to explore: every one is Fixed or in "
                    f"`frozen` ({list(self.frozen)}). Declare at least one hp.Float, hp.Int, "
                    "hp.Choice or hp.Boolean."
                )
            self._policy = policy_lib.PBTPolicy(
                space, mode=self.mode, seed=int(self.seed), **self._policy_args
            )
            self._policy_space_size = size
        return self._policy

    def _rng(self, member, segment, salt=0):
        return np.random.default_rng([int(self.seed), int(member), int(segment), salt])

    def _initial_values(self, member):
        rng = self._rng(member, 0)
        hps = keras_tuner.HyperParameters()
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if not hps.is_active(hp):
                continue
            spec = convert.spec_from_hyperparameter(hp)
            hps.values[hp.name] = hp.default if spec is None else spec.sample(rng)
        return dict(hps.values)

    # ------------------------------------------------------------- state

    def _trial(self, trial_id):
        return self.trials[trial_id]

    def _report(self, trial_id):
        """The `Report` of a completed segment trial, else None."""
        trial = self._trial(trial_id)
        if trial.status != TrialStatus.COMPLETED or trial.score is None:
            return None
        values = trial.hyperparameters.values
        space = self.policy().space
        return selection_lib.Report(
            member=int(values[MEMBER]), step=int(trial.best_step), metric=float(trial.score),
            # A hyperparameter the trial never saw (declared later) has its default.
            hparams={k: values[k] if k in values else spec.clip(self._default(k))
                     for k, spec in space.items()},
            interval=int(values[SEGMENT]) + 1,
        )

    def _default(self, name):
        return next(hp.default for hp in self.hyperparameters.space if hp.name == name)

    def _trial_of(self, report):
        return self._segments[report.member][report.interval - 1]

    def _species(self, values):
        return tuple(repr(values.get(name)) for name in self.frozen)

    def _status(self, member, segment):
        ids = self._segments[member]
        if segment >= len(ids):
            return None
        return self._trial(ids[segment]).status

    def _ready(self, member, generation_done):
        """Whether `member`'s next segment can be decided now."""
        k = len(self._segments[member])
        if k >= self.num_segments:
            return False
        if k == 0:
            return True
        if self._status(member, k - 1) not in _FINAL:
            return False
        if self.synchronous:
            if k - 1 not in generation_done:
                generation_done[k - 1] = all(
                    self._status(m, k - 1) in _FINAL for m in range(self.population_size))
            return generation_done[k - 1]
        return True

    def populate_space(self, trial_id):
        with self._pbt_lock:
            self.policy()  # fails early on an empty space
            generation_done = {}
            ready = [m for m in range(self.population_size) if self._ready(m, generation_done)]
            if not ready:
                done = all(
                    len(s) == self.num_segments and self._status(m, len(s) - 1) in _FINAL
                    for m, s in enumerate(self._segments)
                )
                return {"status": TrialStatus.STOPPED if done else TrialStatus.IDLE}
            member = min(ready, key=lambda m: (len(self._segments[m]), m))
            segment = len(self._segments[member])
            if segment == 0:
                values, record = self._init(member)
            else:
                values, record = self._decide(member, segment)
            if segment == 0:
                initial_step = 0
            else:
                prev = self._trial(self._segments[member][segment - 1])
                initial_step = (int(prev.best_step) if prev.status == TrialStatus.COMPLETED
                                else int(prev.hyperparameters.values.get(INITIAL_STEP, 0)))
            values.update({
                MEMBER: member,
                SEGMENT: segment,
                INITIAL_STEP: initial_step,
                INITIAL_EPOCH: segment * self.interval_epochs,
                EPOCHS: min((segment + 1) * self.interval_epochs, self.max_epochs),
            })
            self._segments[member].append(trial_id)
            self._add_record(record)
            return {"status": TrialStatus.RUNNING, "values": values}

    def _init(self, member):
        values = self._initial_values(member)
        values.update({ACTION: "init", PARENT_TRIAL: ""})
        record = lineage_lib.LineageRecord(
            member=member, step=0, action="init", hparams=user_values(values),
            monitor=self.objective.name, mode=self.mode, reason="initial hyperparameters",
            time=time.time(),
        )
        return values, record

    def _reports(self, member, segment):
        """Reports to rank `member` against before its `segment`."""
        if self.synchronous:
            ids = [s[segment - 1] for s in self._segments if len(s) >= segment]
            return [r for r in map(self._report, ids) if r is not None]
        mine = self._report(self._segments[member][segment - 1])
        previous = (self._report(self._segments[member][segment - 2])
                    if segment >= 2 else None)
        window = mine.step - (previous.step if previous is not None else 0)
        histories = {
            m: [r for r in map(self._report, ids) if r is not None]
            for m, ids in enumerate(self._segments)
        }
        return policy_lib.comparable_reports(member, mine.step, histories, max(window, 0))

    def _decide(self, member, segment):
        policy = self.policy()
        prev_id = self._segments[member][segment - 1]
        prev = self._trial(prev_id)
        prev_values = dict(prev.hyperparameters.values)
        species = self._species(prev_values)
        rng = self._rng(member, segment)
        if prev.status != TrialStatus.COMPLETED:
            return self._restart(member, segment, prev_id, prev_values, rng)
        # Members with other frozen values cannot give their weights: each
        # group of equal frozen values is ranked as its own sub-population.
        reports = [
            r for r in self._reports(member, segment)
            if self._species(self._trial(self._trial_of(r)).hyperparameters.values) == species
        ]
        decision = policy.decide(member, reports, key=segment, rng=rng)
        if decision.is_exploit:
            parent_id = self._trial_of(next(r for r in reports if r.member == decision.parent))
            values = dict(self._trial(parent_id).hyperparameters.values)
            values.update(decision.hparams)
        else:
            parent_id, values = prev_id, prev_values
            values.update(decision.hparams)
        values.update({ACTION: decision.action, PARENT_TRIAL: parent_id})
        record = decision.to_record(
            int(prev.best_step), segment, self.objective.name, self.mode, time.time()
        )
        record.hparams = user_values(values)
        record.hparams_before = user_values(prev_values)
        return values, record

    def _restart(self, member, segment, prev_id, prev_values, rng):
        """A member whose last segment failed restarts from the best other member."""
        policy = self.policy()
        species = self._species(prev_values)
        best_id, best = None, None
        for m, ids in enumerate(self._segments):
            if m == member:
                continue
            for t in ids:
                r = self._report(t)
                if r is None or self._species(self._trial(t).hyperparameters.values) != species:
                    continue
                if r.interval <= segment and (best is None or r.interval > best.interval or (
                        r.interval == best.interval
                        and selection_lib.is_better(r.metric, best.metric, self.mode))):
                    best_id, best = t, r
        if best is None:
            values = dict(prev_values)
            new, ops, parent = {}, {}, None
            values[PARENT_TRIAL] = ""
        else:
            values = dict(self._trial(best_id).hyperparameters.values)
            new, ops = policy.explorer(dict(best.hparams), policy.space, rng)
            values.update(new)
            values[PARENT_TRIAL] = best_id
            parent = best.member
        values[ACTION] = "restart"
        prev = self._trial(prev_id)
        record = lineage_lib.LineageRecord(
            member=member, step=int(prev_values.get(INITIAL_STEP, 0)), action="restart",
            hparams=user_values(values), hparams_before=user_values(prev_values),
            parent=parent, parent_step=None if best is None else best.step,
            parent_metric=None if best is None else best.metric, ops=ops, interval=segment,
            monitor=self.objective.name, mode=self.mode,
            reason=f"trial {prev_id} {prev.status}" + (
                f": {prev.message.strip().splitlines()[-1]}" if prev.message else ""),
            time=time.time(),
        )
        return values, record

    @keras_tuner.synchronized
    def end_trial(self, trial):
        super().end_trial(trial)
        with self._pbt_lock:
            trial = self._trial(trial.trial_id)
            values = trial.hyperparameters.values
            if (trial.status == TrialStatus.COMPLETED
                    and values.get(SEGMENT) == self.num_segments - 1):
                self._add_record(lineage_lib.LineageRecord(
                    member=int(values[MEMBER]), step=int(trial.best_step), action="keep",
                    hparams=user_values(values), hparams_before=user_values(values),
                    metric=float(trial.score), interval=self.num_segments,
                    monitor=self.objective.name, mode=self.mode, reason="end of training",
                    time=time.time(),
                ))
                self.save()

    # ----------------------------------------------------------- lineage

    def _lineage_path(self):
        return os.path.join(self._project_dir, LINEAGE_FILE)

    def _add_record(self, record):
        row = record.to_dict()
        self._lineage.append(row)
        # Append-only: oracle.json, rewritten by keras-tuner at every call,
        # holds only the count (the whole list would make each save grow).
        with open(self._lineage_path(), "a", encoding="utf-8") as f:
            f.write(json.dumps(row, allow_nan=False) + "\n")
        if self.logdir is None:
            return
        writer = self._writers.get(record.member)
        if writer is None:
            from keras_pbt.summary import MemberSummaryWriter

            writer = self._writers[record.member] = MemberSummaryWriter(self.logdir, record.member)
        writer.write(
            record.step,
            metric=None if record.metric is None else (self.objective.name, record.metric),
            hparams=record.hparams,
            records=[record],
        )
        writer.flush()

    def lineage(self):
        """Every `LineageRecord` so far, in the order of the decisions."""
        with self._pbt_lock:
            return [lineage_lib.LineageRecord.from_dict(dict(r)) for r in self._lineage]

    def member_trials(self, member):
        """The trial ids of `member`'s segments, in order."""
        with self._pbt_lock:
            return list(self._segments[member])

    def schedule(self, trial_id):
        """The hyperparameters a trial's weights were trained with, oldest first.

        Follows `pbt/parent_trial` back to the first segment.

        Returns:
            A list of `(trial_id, member, initial_epoch, values)`, one per
            segment of the trial's ancestry, ending with `trial_id`.
        """
        chain = []
        while trial_id:
            values = self._trial(trial_id).hyperparameters.values
            chain.append((trial_id, values.get(MEMBER), values.get(INITIAL_EPOCH),
                          user_values(values)))
            trial_id = values.get(PARENT_TRIAL) or None
            if any(trial_id == c[0] for c in chain):
                break
        return chain[::-1]

    # ----------------------------------------------------------- results

    def get_best_trials(self, num_trials=1):
        """Each member's latest completed segment, best first; then the rest.

        So `get_best_models(1)` is the best member's model at the end of
        training (not an earlier segment that happened to score higher), and
        `results_summary()` shows the population as it finished.
        """
        with self._pbt_lock:
            latest = []
            for ids in self._segments:
                done = [t for t in ids if self._trial(t).status == TrialStatus.COMPLETED]
                if done:
                    latest.append(done[-1])
        trials = list(self.trials.values())
        sign = -1 if self.mode == "max" else 1

        def key(t):
            s = t.score
            bad = s is None or not math.isfinite(s)
            return (bad, 0.0 if bad else sign * s)

        first = sorted((self._trial(t) for t in latest), key=key)
        rest = sorted(
            (t for t in trials if t.status == TrialStatus.COMPLETED and t.trial_id not in latest),
            key=key,
        )
        others = [t for t in trials if t.status != TrialStatus.COMPLETED]
        return (first + rest + others)[:num_trials]

    # -------------------------------------------------------- state file

    def get_state(self):
        state = super().get_state()
        with self._pbt_lock:
            state["pbt"] = {
                "population_size": self.population_size,
                "max_epochs": self.max_epochs,
                "interval_epochs": self.interval_epochs,
                "frozen": list(self.frozen),
                "synchronous": self.synchronous,
                "segments": [list(s) for s in self._segments],
                "lineage_records": len(self._lineage),
            }
        return state

    def set_state(self, state):
        super().set_state(state)
        pbt = state.get("pbt")
        if pbt is None:
            return
        for key in ("population_size", "max_epochs", "interval_epochs"):
            if pbt[key] != getattr(self, key):
                raise ValueError(
                    f"The project in this directory was run with {key}={pbt[key]!r}, not "
                    f"{getattr(self, key)!r}. Pass overwrite=True or a new project_name "
                    "to start a new search."
                )
        with self._pbt_lock:
            self._segments = [list(s) for s in pbt["segments"]]
            count = pbt["lineage_records"]
            rows = []
            if os.path.exists(self._lineage_path()):
                with open(self._lineage_path(), encoding="utf-8") as f:
                    rows = [json.loads(line) for line in f if line.strip()]
            if len(rows) < count:
                raise ValueError(
                    f"{self._lineage_path()} holds {len(rows)} lineage records; "
                    f"oracle.json expects {count}."
                )
            # Records appended after the last save belong to trials that were
            # never saved: they are decided again.
            self._lineage = rows[:count]
            tmp = self._lineage_path() + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, allow_nan=False) + "\n" for r in self._lineage)
            os.replace(tmp, self._lineage_path())
