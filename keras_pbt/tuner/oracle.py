"""`PBTOracle`: Population-Based Training as a keras-tuner `Oracle`.

One trial is one segment of one member (see `keras_pbt.tuner.segments`).
Only the standard oracle calls are used, so keras-tuner's distributed
chief/worker mode works unchanged: everything a worker needs is in the
trial's hyperparameter values.
"""

import math
import os
import threading
import time

import keras_tuner
import numpy as np
from keras_tuner.engine.trial import TrialStatus

from keras_pbt.core import lineage as lineage_lib
from keras_pbt.core import policy as policy_lib
from keras_pbt.core import config as policy_config
from keras_pbt.core import ancestry as schedule_lib
from keras_pbt.core import selection as selection_lib
from keras_pbt.tuner import convert
from keras_pbt.tuner import records as records_lib
from keras_pbt.tuner.oracle_state import OracleState
from keras_pbt.tuner.results import SegmentResults
from keras_pbt.tuner.segments import ACTION
from keras_pbt.tuner.segments import EPOCHS
from keras_pbt.tuner.segments import INITIAL_EPOCH
from keras_pbt.tuner.segments import INITIAL_STEP
from keras_pbt.tuner.segments import MEMBER
from keras_pbt.tuner.segments import PARENT_TRIAL
from keras_pbt.tuner.segments import PBT_KEYS  # noqa: F401
from keras_pbt.tuner.segments import SEGMENT
from keras_pbt.tuner.segments import active_values
from keras_pbt.tuner.segments import initial_values
from keras_pbt.tuner.segments import STEP_METRIC  # noqa: F401 - tuner.py reads it here
from keras_pbt.tuner.segments import user_values
from keras_pbt.core.validation import check_int
from keras_pbt.core.validation import check_seed

LINEAGE_FILE = records_lib.LINEAGE_FILE



class PBTOracle(SegmentResults, OracleState, keras_tuner.Oracle):
    """Population-Based Training oracle for keras-tuner.

    Decides with the pure policy of `keras_pbt.PBTCallback` (`PBTPolicy`)
    over keras-pbt specs of the hyperparameters (`keras_pbt.tuner.convert`),
    so explore keeps each value inside its own bounds and step.

    Args:
        objective: a metric name or a single `keras_tuner.Objective`; the
            direction is inferred from a name as keras-tuner does.
        population_size: number of members, >= 2. Defaults to `8`.
        max_epochs: epochs each member trains in all; `None` until
            `set_max_epochs` (`PBTTuner.search(epochs=...)` calls it).
            Defaults to `None`.
        interval_epochs: epochs per segment (between decisions). Defaults
            to `1`.
        quantile, selection, factors, resample_probability, explore_fn:
            shortcuts for the fields of `policy`, as in `keras_pbt.PBTCallback`.
        frozen: names of hyperparameters each member keeps as sampled;
            members with equal values form a sub-population, ranked on its
            own. Defaults to `()`.
        inherited: names of hyperparameters never explored, that an
            exploit copies from the parent (`PBTTuner` adds those that
            change the weights' layout). Defaults to `()`.
        synchronous: if True, segment `k + 1` of any member starts once
            every member finished segment `k`; if False, a member decides
            against the latest comparable segments. Defaults to `True`.
        logdir: TensorBoard log directory (one run `member_<id>` per
            member), or `None`. `PBTTuner` sets it. Defaults to `None`.
        seed: int seed of the initial values, explore and tie-breaking.
        hyperparameters, allow_new_entries, tune_new_entries,
            max_retries_per_trial, max_consecutive_failed_trials: as in
            `keras_tuner.Oracle`.
        policy: a `keras_pbt.Policy`; the oracle supports its default
            `ranking="last"`, `explore="perturb"` and
            `copy_optimizer_state=True` only. Defaults to `Policy()` with
            the shortcuts above.

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
        max_epochs=None,
        interval_epochs=1,
        quantile=None,
        selection=None,
        factors=None,
        resample_probability=None,
        explore_fn=None,
        frozen=(),
        inherited=(),
        synchronous=True,
        logdir=None,
        seed=None,
        hyperparameters=None,
        allow_new_entries=True,
        tune_new_entries=True,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
        policy=None,
    ):
        config = policy_config.resolve_policy(
            policy, quantile=quantile, selection=selection, factors=factors,
            resample_probability=resample_probability, explore_fn=explore_fn)
        unsupported = policy_config.unsupported_by_tuner(config)
        if unsupported:
            raise ValueError(
                "PBTOracle ranks by the last value, explores by perturbing and copies the "
                f"optimizer state: it does not support {sorted(unsupported)}. Received: "
                + ", ".join(f"{k}={v!r}" for k, v in sorted(unsupported.items())))
        population_size = check_int("population_size", population_size, minimum=2,
                                    why=" (PBT needs a population)")
        max_epochs = check_int("max_epochs", max_epochs, allow_none=True)
        interval_epochs = check_int("interval_epochs", interval_epochs)
        if max_epochs is not None:
            _check_budget(interval_epochs, max_epochs, "max_epochs")
        if seed is not None:
            check_seed(seed)
        # No `max_trials` for keras-tuner: its create_trial would answer
        # STOPPED once every segment is handed out, while the last ones still
        # train (a retry would then find no worker, and the distributed chief
        # would wait 20 s more). populate_space says STOPPED when all are final.
        super().__init__(
            objective=objective, max_trials=None, hyperparameters=hyperparameters,
            allow_new_entries=allow_new_entries, tune_new_entries=tune_new_entries, seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials)
        if seed is not None:
            # keras-tuner's `seed or random.randint(...)` would drop seed=0.
            self.seed = self._seed_state = int(seed)
        direction = getattr(self.objective, "direction", None)
        if direction not in ("min", "max") or hasattr(self.objective, "objectives"):
            raise ValueError(
                "PBTOracle ranks members by one metric: pass objective='val_accuracy' or "
                f"keras_tuner.Objective(name, direction). Received: objective={objective!r}"
            )
        for name, names in (("frozen", frozen), ("inherited", inherited)):
            if isinstance(names, str) or not hasattr(names, "__iter__"):
                raise TypeError(f"`{name}` must be a list of names. Received: {name}={names!r}")
        self.population_size = population_size
        self.max_epochs = max_epochs
        self.interval_epochs = interval_epochs
        self.frozen = tuple(frozen)
        self.inherited = tuple(inherited)
        self.synchronous = bool(synchronous)
        self.logdir = logdir
        self.policy_config = config  # checked: the space is not known yet
        self._policy = None
        self._policy_key = None
        # member -> trial ids of its segments, in order.
        self._segments = [[] for _ in range(population_size)]
        self._log = None
        self._runners, self._asking = {}, None  # member -> tuner id of its last segment
        # Guards the PBT state (not keras-tuner's); always taken inside
        # keras-tuner's oracle lock, never around it.
        self._pbt_lock = threading.RLock()
        self._defer_save = False  # inside end_trial: one save, after this oracle's bookkeeping
        self._defer_trial_save = False  # inside update_trial: trial.json is written at its end

    @property
    def mode(self):
        return self.objective.direction

    @property
    def logdir(self):
        return self._logdir

    @logdir.setter
    def logdir(self, value):
        self._logdir = value
        if getattr(self, "_log", None) is not None:
            self._log.logdir = value

    @property
    def num_segments(self):
        """Segments per member: `ceil(max_epochs / interval_epochs)`."""
        if self.max_epochs is None:
            raise ValueError(
                "PBTOracle does not know the training budget yet: pass epochs= to "
                "PBTTuner.search() (or max_epochs= to PBTTuner / PBTOracle)."
            )
        return math.ceil(self.max_epochs / self.interval_epochs)

    @property
    def total_trials(self):
        """The number of segment trials of the whole search."""
        return self.population_size * self.num_segments

    def remaining_trials(self):
        return self.total_trials - len(self.trials)

    def set_max_epochs(self, epochs, name="epochs"):
        """Sets the budget, or checks it against the one already set.

        Raises:
            ValueError: naming `name` when `epochs` differs from the budget
                already set (by `max_epochs=` or by the search being resumed).
        """
        epochs = check_int(name, epochs)
        _check_budget(self.interval_epochs, epochs, name)
        if self.max_epochs is not None and epochs != self.max_epochs:
            raise ValueError(
                f"`{name}` must equal the search's budget, max_epochs={self.max_epochs} "
                f"(every member trains that many epochs in all). Received: {name}={epochs!r}"
            )
        self.max_epochs = epochs

    def set_inherited(self, names):
        """Adds `names` to the inherited hyperparameters (see the module docstring)."""
        with self._pbt_lock:
            self.inherited = tuple(dict.fromkeys(tuple(self.inherited) + tuple(names)))

    def _set_project_dir(self, directory, project_name):
        super()._set_project_dir(directory, project_name)
        self._log = records_lib.LineageLog(
            os.path.join(self._project_dir, LINEAGE_FILE), self.objective.name)
        self._log.logdir = self.logdir

    # ------------------------------------------------------------ policy

    def _not_explored(self):
        parents = {c.name for hp in self.hyperparameters.space for c in hp.conditions}
        return set(self.frozen) | set(self.inherited) | parents

    def policy(self):
        """The `PBTPolicy` over the explored hyperparameters.

        Rebuilt when the space grows (a hyperparameter first declared in
        `HyperModel.fit` joins it after the first trials).
        """
        key = (len(self.hyperparameters.space), self.inherited)
        if self._policy is None or key != self._policy_key:
            space = convert.space_from_hyperparameters(
                self.hyperparameters, exclude=self._not_explored())
            if not space:
                raise ValueError(
                    "PBTOracle has no hyperparameter to explore: every one is Fixed, frozen "
                    f"({list(self.frozen)}) or inherited ({list(self.inherited)}). Declare "
                    "at least one hp.Float, hp.Int, hp.Choice or hp.Boolean that does not "
                    "change the model's weights."
                )
            self._policy = self.policy_config.make(space, self.mode, int(self.seed))
            self._policy_key = key
        return self._policy

    def _rng(self, member, segment, salt=0):
        return np.random.default_rng([int(self.seed), int(member), int(segment), salt])

    def _initial_values(self, member):
        return initial_values(self.hyperparameters, self._rng(member, 0))

    # ------------------------------------------------------------- state

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

    def populate_space(self, trial_id):
        with self._pbt_lock:
            self.policy()  # fails early on an empty space
            generation_done = {}
            ready = [m for m in range(self.population_size) if self._ready(m, generation_done)]
            if not ready:
                return {"status": TrialStatus.STOPPED if self._done() else TrialStatus.IDLE}
            # A worker gets, among the members to go on, preferably one whose last
            # segment it trained: it holds that state, so nothing is restored.
            member = min(ready, key=lambda m: (
                len(self._segments[m]), self._runners.get(m) != self._asking, m))
            self._runners[member] = self._asking
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
            values = active_values(self.hyperparameters, values)
            values.update({
                MEMBER: member,
                SEGMENT: segment,
                INITIAL_STEP: initial_step,
                INITIAL_EPOCH: segment * self.interval_epochs,
                EPOCHS: min((segment + 1) * self.interval_epochs, self.max_epochs),
            })
            record.hparams = user_values(values)
            record.ops = {k: v for k, v in record.ops.items() if k in values}  # active ones
            self._segments[member].append(trial_id)
            self._log.add(record)
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
            # The parent's values, inherited ones included, then the explored ones.
            parent_id = self._trial_of(next(r for r in reports if r.member == decision.parent))
            values = dict(self._trial(parent_id).hyperparameters.values)
        else:
            parent_id, values = prev_id, prev_values
        values.update(decision.hparams)
        values.update({ACTION: decision.action, PARENT_TRIAL: parent_id})
        record = decision.to_record(
            int(prev.best_step), segment, self.objective.name, self.mode, time.time()
        )
        record.hparams_before = user_values(prev_values)
        return values, record

    def _restart(self, member, segment, prev_id, prev_values, rng):
        """A member whose last segment failed restarts from the best other member
        (`keras_pbt.core.ancestry.best_member` over their latest segments)."""
        policy = self.policy()
        species = self._species(prev_values)
        candidates = [
            t for m, ids in enumerate(self._segments) if m != member for t in ids[:segment]
            if self._species(self._trial(t).hyperparameters.values) == species
        ]
        latest = self._latest_records(candidates)
        if not latest:
            values = dict(prev_values)
            new, ops, best = {}, {}, None
            values[PARENT_TRIAL] = ""
        else:
            parent = schedule_lib.best_member(latest, self.mode)
            best = [r for r in latest if r.member == parent][-1]
            best_id = self._segments[parent][best.interval - 1]
            values = dict(self._trial(best_id).hyperparameters.values)
            report = self._report(best_id)
            new, ops = policy.explorer(dict(report.hparams), policy.space, rng)
            values.update(new)
            values[PARENT_TRIAL] = best_id
        values[ACTION] = "restart"
        prev = self._trial(prev_id)
        record = lineage_lib.LineageRecord(
            member=member, step=int(prev_values.get(INITIAL_STEP, 0)), action="restart",
            hparams_before=user_values(prev_values), hparams={},
            parent=None if best is None else best.member,
            parent_step=None if best is None else best.step,
            parent_metric=None if best is None else best.metric, ops=ops, interval=segment,
            monitor=self.objective.name, mode=self.mode,
            reason=f"trial {prev_id} {prev.status}" + (
                f": {prev.message.strip().splitlines()[-1]}" if prev.message else ""),
            time=time.time(),
        )
        return values, record

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        self._asking = tuner_id
        return super().create_trial(tuner_id)


def _check_budget(interval_epochs, epochs, name):
    """At least one decision: a segment longer than the budget never decides."""
    if interval_epochs > epochs:
        raise ValueError(
            f"`interval_epochs`={interval_epochs} is more than `{name}`={epochs}: every member "
            f"would train its {epochs} epochs in one segment, without a single PBT decision. "
            f"Train at least {interval_epochs} epochs, or decide more often. "
            f"Received: {name}={epochs}")
