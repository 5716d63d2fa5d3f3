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
from keras_pbt.core import config as config_lib
from keras_pbt.core import selection as selection_lib
from keras_pbt.tuner import convert
from keras_pbt.tuner import records as records_lib
from keras_pbt.tuner.oracle_state import OracleState
from keras_pbt.tuner.results import SegmentResults
from keras_pbt.tuner.segments import (  # noqa: F401 - names the tuner reads here
    ACTION, EPOCHS, INITIAL_EPOCH, INITIAL_STEP, MEMBER, PARENT_TRIAL, PBT_KEYS, SEGMENT,
    STEP_METRIC, active_values, initial_values, user_values)
from keras_pbt.core.validation import check_bool
from keras_pbt.core.validation import check_int
from keras_pbt.core.validation import check_seed

LINEAGE_FILE = records_lib.LINEAGE_FILE

# keras-tuner's own `Oracle` arguments, passed through `**kwargs`.
ORACLE_KWARGS = ("seed", "hyperparameters", "allow_new_entries", "tune_new_entries",
                 "max_retries_per_trial", "max_consecutive_failed_trials")


class PBTOracle(SegmentResults, OracleState, keras_tuner.Oracle):
    """Population-Based Training oracle for keras-tuner.

    Decides with the engine of `keras_pbt.PBTCallback` (`PBTPolicy`)
    over keras-pbt specs of the hyperparameters (`keras_pbt.tuner.convert`),
    so explore keeps each value inside its own bounds and step.

    Args:
        objective: a metric name or a single `keras_tuner.Objective`; the
            direction is inferred from a name as keras-tuner does.
        population_size: number of members, >= 2. Defaults to `8`.
        max_epochs: epochs each member trains in all; `None` until
            `set_max_epochs` (`PBTTuner.search(epochs=...)` calls it).
            Defaults to `None`.
        interval: epochs per segment (between decisions): an int, or a
            `keras_pbt.Interval(epochs=..., burn_in=...)` (segments are whole
            epochs: no `steps`). Defaults to `1`.
        policy: a `keras_pbt.Policy`; the oracle supports its default
            `ranking="last"`, `explore="perturb"` and
            `copy_optimizer_state=True` only. Defaults to `keras_pbt.Policy()`.
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
        **kwargs: keras-tuner's own `Oracle` arguments: `seed` (the
            initial values, explore and tie-breaking), `hyperparameters`,
            `allow_new_entries`, `tune_new_entries`, `max_retries_per_trial`,
            `max_consecutive_failed_trials`.

    Attributes:
        policy: the `keras_pbt.Policy`.
        engine: the `keras_pbt.PBTPolicy` that decides with it over the
            explored hyperparameters (rebuilt when the space grows).

    Example:

    ```python
    oracle = keras_pbt.PBTOracle(objective="val_accuracy", population_size=8,
                                 max_epochs=20, interval=2)
    ```
    """

    def __init__(
        self,
        objective=None,
        population_size=8,
        max_epochs=None,
        interval=1,
        policy=None,
        frozen=(),
        inherited=(),
        synchronous=True,
        logdir=None,
        **kwargs,
    ):
        config_lib.refuse_policy_keywords("PBTOracle", kwargs)
        unknown = sorted(set(kwargs) - set(ORACLE_KWARGS))
        if unknown:
            raise TypeError(
                f"PBTOracle got unexpected arguments {unknown}; besides its own it takes "
                f"keras-tuner's {list(ORACLE_KWARGS)} (no `max_trials`: the budget is "
                f"population_size * max_epochs). Received: {', '.join(unknown)}")
        policy = config_lib.get_policy(policy)
        unsupported = config_lib.unsupported_by_tuner(policy)
        if unsupported:
            raise ValueError(
                "PBTOracle ranks by the last value, explores by perturbing and copies the "
                f"optimizer state: it does not support {sorted(unsupported)}. Received: "
                + ", ".join(f"{k}={v!r}" for k, v in sorted(unsupported.items())))
        population_size = check_int("population_size", population_size, minimum=2,
                                    why=" (PBT needs a population)")
        max_epochs = check_int("max_epochs", max_epochs, allow_none=True)
        interval = config_lib.get_interval(interval)
        if isinstance(interval, config_lib.Iterated):
            raise ValueError(
                "PBTOracle runs fixed segments; Iterated PBT (keras_pbt.Iterated) restarts a "
                "synchronous keras_pbt.Population. Give an int or keras_pbt.Interval. "
                f"Received: interval={interval!r}")
        if interval.steps is not None:
            raise ValueError(
                "PBTOracle decides between segments of whole epochs: give an int or "
                f"Interval(epochs=..., burn_in=...). Received: interval={interval!r}")
        if max_epochs is not None:
            _check_budget(interval, max_epochs, "max_epochs")
        seed = kwargs.pop("seed", None)
        if seed is not None:
            check_seed(seed)
        # No `max_trials` for keras-tuner: its create_trial would answer
        # STOPPED once every segment is handed out, while the last ones still
        # train (a retry would then find no worker, and the distributed chief
        # would wait 20 s more). populate_space says STOPPED when all are final.
        super().__init__(objective=objective, max_trials=None, seed=seed, **kwargs)
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
        self.interval = interval
        self.frozen = tuple(frozen)
        self.inherited = tuple(inherited)
        self.synchronous = check_bool("synchronous", synchronous)
        self.logdir = logdir
        self.policy = policy  # checked: the space is not known yet
        self._engine = None
        self._engine_key = None
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
        """Segments per member: `ceil(max_epochs / interval.epochs)`."""
        if self.max_epochs is None:
            raise ValueError(
                "PBTOracle does not know the training budget yet: pass epochs= to "
                "PBTTuner.search() (or max_epochs= to PBTOracle)."
            )
        return math.ceil(self.max_epochs / self.interval.epochs)

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
        _check_budget(self.interval, epochs, name)
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

    @property
    def engine(self):
        """The `PBTPolicy` that decides with `policy` over the explored hyperparameters.

        Rebuilt when the space grows (a hyperparameter first declared in
        `HyperModel.fit` joins it after the first trials).
        """
        key = (len(self.hyperparameters.space), self.inherited)
        if self._engine is None or key != self._engine_key:
            space = convert.space_from_hyperparameters(
                self.hyperparameters, exclude=self._not_explored())
            if not space:
                raise ValueError(
                    "PBTOracle has no hyperparameter to explore: every one is Fixed, frozen "
                    f"({list(self.frozen)}) or inherited ({list(self.inherited)}). Declare "
                    "at least one hp.Float, hp.Int, hp.Choice or hp.Boolean that does not "
                    "change the model's weights."
                )
            self._engine = self.policy.make(space, self.mode, int(self.seed))
            self._engine_key = key
        return self._engine

    def _rng(self, member_id, segment, salt=0):
        return np.random.default_rng([int(self.seed), int(member_id), int(segment), salt])

    def _initial_values(self, member_id):
        return initial_values(self.hyperparameters, self._rng(member_id, 0))

    # ------------------------------------------------------------- state

    def _report(self, trial_id):
        """The `Report` of a completed segment trial, else None."""
        trial = self._trial(trial_id)
        if trial.status != TrialStatus.COMPLETED or trial.score is None:
            return None
        values = trial.hyperparameters.values
        space = self.engine.space
        return selection_lib.Report(
            member_id=int(values[MEMBER]), step=int(trial.best_step), metric=float(trial.score),
            # A hyperparameter the trial never saw (declared later) has its default.
            hparams={k: values[k] if k in values else spec.clip(self._default(k))
                     for k, spec in space.items()},
            interval=int(values[SEGMENT]) + 1,
        )

    def _default(self, name):
        return next(hp.default for hp in self.hyperparameters.space if hp.name == name)

    def _trial_of(self, report):
        return self._segments[report.member_id][report.interval - 1]

    def _species(self, values):
        return tuple(repr(values.get(name)) for name in self.frozen)

    def populate_space(self, trial_id):
        with self._pbt_lock:
            self.engine  # noqa: B018 - fails early on an empty space
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
                INITIAL_EPOCH: segment * self.interval.epochs,
                EPOCHS: min((segment + 1) * self.interval.epochs, self.max_epochs),
            })
            record.hparams = user_values(values)
            record.ops = {k: v for k, v in record.ops.items() if k in values}  # active ones
            self._segments[member].append(trial_id)
            self._log.add(record)
            return {"status": TrialStatus.RUNNING, "values": values}

    def _init(self, member_id):
        values = self._initial_values(member_id)
        values.update({ACTION: "init", PARENT_TRIAL: ""})
        record = lineage_lib.LineageRecord(
            member_id=member_id, step=0, action="init", hparams=user_values(values),
            monitor=self.objective.name, mode=self.mode, reason="initial hyperparameters",
            time=time.time(),
        )
        return values, record

    def _reports(self, member_id, segment):
        """Reports to rank `member_id` against before its `segment`."""
        if self.synchronous:
            ids = [s[segment - 1] for s in self._segments if len(s) >= segment]
            return [r for r in map(self._report, ids) if r is not None]
        mine = self._report(self._segments[member_id][segment - 1])
        previous = (self._report(self._segments[member_id][segment - 2])
                    if segment >= 2 else None)
        window = mine.step - (previous.step if previous is not None else 0)
        histories = {
            m: [r for r in map(self._report, ids) if r is not None]
            for m, ids in enumerate(self._segments)
        }
        return policy_lib.comparable_reports(member_id, mine.step, histories, max(window, 0))

    def _decide(self, member_id, segment):
        engine = self.engine
        prev_id = self._segments[member_id][segment - 1]
        prev = self._trial(prev_id)
        prev_values = dict(prev.hyperparameters.values)
        rng = self._rng(member_id, segment)
        if prev.status != TrialStatus.COMPLETED:
            return self._restart(member_id, segment, prev_id, prev_values, rng)
        # The boundary rule is the engine's, as for the callback (burn-in).
        plan = engine.boundary(self._report(prev_id), key=segment,
                               progress=segment * self.interval.epochs,
                               burn_in=self.interval.burn_in)
        if plan.judged:
            # Members with other frozen values cannot give their weights: each
            # group of equal frozen values is ranked as its own sub-population.
            species = self._species(prev_values)
            reports = [
                r for r in self._reports(member_id, segment)
                if self._species(self._trial(self._trial_of(r)).hyperparameters.values) == species
            ]
            plan = plan.with_reports(reports)
        decision = plan.decide(rng)
        if decision.is_exploit:
            # The parent's values, inherited ones included, then the explored ones.
            parent_id = self._trial_of(next(r for r in plan.reports
                                            if r.member_id == decision.parent))
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

    def _restart(self, member_id, segment, prev_id, prev_values, rng):
        """A member whose last segment failed restarts by the one restart rule
        (`PBTPolicy.restart`): from the latest completed segment of the best
        other member of its sub-population, else from its own initial state
        (a new build with its initial values), with explored values."""
        species = self._species(prev_values)
        latest = {}
        for m, ids in enumerate(self._segments):
            for t in ids[:segment] if m != member_id else ():
                report = self._report(t)
                if report is not None and self._species(
                        self._trial(t).hyperparameters.values) == species:
                    latest[m] = (t, report)
        initial = self._initial_values(member_id)
        prev = self._trial(prev_id)
        decision = self.engine.restart(
            member_id, {k: prev_values[k] for k in self.engine.space if k in prev_values},
            [report for _, report in latest.values()],
            {k: initial[k] for k in self.engine.space if k in initial}, rng,
            reason=f"trial {prev_id} {prev.status}" + (
                f": {prev.message.strip().splitlines()[-1]}" if prev.message else ""))
        if decision.parent is None:
            values, parent_trial = initial, ""
        else:
            parent_trial = latest[decision.parent][0]
            values = dict(self._trial(parent_trial).hyperparameters.values)
        values.update(decision.hparams)
        values.update({ACTION: "restart", PARENT_TRIAL: parent_trial})
        record = decision.to_record(int(prev_values.get(INITIAL_STEP, 0)), segment,
                                    self.objective.name, self.mode, time.time())
        record.hparams_before = user_values(prev_values)
        return values, record

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        self._asking = tuner_id
        return super().create_trial(tuner_id)


def _check_budget(interval, epochs, name):
    """At least one decision: a first boundary past the budget never decides."""
    first = (interval.burn_in // interval.epochs + 1) * interval.epochs
    if first > epochs:
        given = interval.epochs if not interval.burn_in else interval
        raise ValueError(
            f"`interval`={given!r} decides first at epoch {first}, after the {epochs} epochs of "
            f"`{name}`: every member would train to the end without a single PBT decision. Train at least {first} epochs, or decide more often. "
            f"Received: interval={given!r}, {name}={epochs}")
