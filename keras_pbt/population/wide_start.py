"""A `Population`'s wide start: more starting configurations than members.

`keras_pbt.core.wide_start` decides (the plan, the cuts, who trains what);
this module acts. Each extra configuration is built once with its own seed
when the population is made, and only its state is kept (weights and
optimizer variables in host memory), so the devices hold no more models
than members. In `fit`, each member's thread trains the configurations
assigned to its device in turn (restore the state, apply the
hyperparameters, `model.fit` for the rung's epochs, capture the state),
then waits for the other members at the cut; after the last cut every
member takes a survivor and PBT begins, in the same member thread.

Every configuration writes lineage records: its `init`, a `keep` at each
rung it trained (reason `"wide start: kept ..."` or `"wide start:
stopped ..."`), and a member that takes another configuration's weights
an `exploit` (reason `"wide start"`, hyperparameters unchanged), so the
ancestry of a final member runs back to the configuration it started as.
"""

import math
import threading
import time

import keras

from keras_pbt.core import lineage as lineage_lib
from keras_pbt.core import wide_start as wide_lib
from keras_pbt.core.selection import Report
from keras_pbt.population import devices as devices_lib
from keras_pbt.population.member import PopulationError
from keras_pbt.runtime import snapshot as snapshot_lib
from keras_pbt.runtime.hyperparameters import HyperparameterApplier
from keras_pbt.storage.store import BarrierTimeoutError
from keras_pbt.storage.store import ConfigurationError


class Candidate:
    """One starting configuration: its id, hyperparameters and latest state."""

    def __init__(self, cid, hparams, state):
        self.id = cid
        self.hparams = dict(hparams)
        self.state = state  # a host `Snapshot`
        self.metric = None
        self.steps = 0
        self.failure = None  # why its training failed, if it did


def initial_state(model, cid, hparams):
    """A configuration's state before training, in host memory."""
    return snapshot_lib.capture(model, cid, 0, hparams, on_device=False)


def rung_kwargs(kwargs, epochs):
    """A rung's `model.fit` arguments: `epochs` from 0, validating at its last
    epoch whatever `validation_freq` PBT's own fit has (the cut ranks there)."""
    out = dict(kwargs, epochs=epochs, initial_epoch=0)
    if "validation_freq" in out:
        out["validation_freq"] = epochs
    return out


class WideStartRun:
    """The wide start of one `Population.fit`, shared by the member threads.

    Args:
        population: the `Population`.
        run: the `FitRun` of this `Population.fit` (stop, fail, progress).
        plan: its `keras_pbt.core.wide_start.StartPlan`.
        candidates: every `Candidate`, the members' own first (their ids).
    """

    def __init__(self, population, run, plan, candidates):
        self.population = population
        self.run = run
        self.plan = plan
        self.candidates = {c.id: c for c in candidates}
        self.slots = [m.member_id for m in population.members]
        self.rung = 0
        self.alive = [c.id for c in candidates]
        self.assignment = wide_lib.assign(self.alive, self.slots, plan.rungs[0].per_member)
        self.placement = None
        self._cond = threading.Condition()
        self._arrived = set()
        self._writers = {}
        monitor = population.monitor
        for c in candidates:
            self._record(c.id, lineage_lib.LineageRecord(
                member_id=c.id, step=0, action="init", hparams=dict(c.hparams), monitor=monitor,
                mode=population.mode, reason=f"wide start: {plan.configurations} configurations",
                time=time.time()))

    # ---------------------------------------------------------------- records

    def _record(self, cid, record, metric=None):
        self.population.store.add_lineage(record)
        logdir = self.population.logdir
        if logdir is None:
            return
        with self._cond:
            writer = self._writers.get(cid)
            if writer is None:
                from keras_pbt.storage.summary import MemberSummaryWriter

                writer = self._writers[cid] = MemberSummaryWriter(logdir, cid)
        writer.write(record.step, metric=None if metric is None else
                     (self.population.monitor, metric), hparams=record.hparams, records=[record])

    def close(self):
        for writer in self._writers.values():
            writer.flush()

    # ---------------------------------------------------------------- a member

    def run_member(self, member, data, kwargs, callbacks=()):
        """Trains `member`'s share of every rung, then gives it its survivor.

        Args:
            member: the `Member` whose thread this runs in.
            data: its training data.
            kwargs: its `model.fit` arguments (`epochs` is replaced by the
                rung's).
            callbacks: the user's callbacks for this member: they see every
                epoch its device trains (each configuration's `fit`).

        Returns:
            True when PBT should begin for this member, False when the
            population stopped (the error, if any, is the population's).
        """
        population = self.population
        model, cb = member.model, member.callback
        applier = HyperparameterApplier(model, list(population.space), cb.setters)
        first = True
        try:
            for k, rung in enumerate(self.plan.rungs):
                for cid in self.assignment[member.member_id]:
                    if self.run.stopping.is_set():
                        return False
                    self._train(member, applier, self.candidates[cid], rung, data,
                                dict(kwargs, callbacks=list(callbacks)),
                                force=first and model.train_function is not None)
                    first = False
                if not self._wait_for_cut(member, k):
                    return False
            self._take_survivor(member)
            return True
        except ConfigurationError as error:
            self.run.fail(error)
            return False
        except BarrierTimeoutError as error:
            self.run.fail(PopulationError(
                f"{error} Raise `population.store.timeout`.", member_id=error.missing[0],
                cause=error))
            return False
        finally:
            applier.release()

    def _train(self, member, applier, candidate, rung, data, kwargs, force):
        model = member.model
        snapshot_lib.restore(model, candidate.state, True)
        applier.apply(candidate.hparams, force=force)
        monitor = self.population.monitor
        try:
            with devices_lib.fit_scope(member.strategy):
                history = model.fit(data, **rung_kwargs(kwargs, rung.epochs))
            logs = history.history
        except Exception as error:  # noqa: BLE001 - a configuration that fails ranks last
            logs, failure = {}, f"{type(error).__name__}: {error}"
        else:
            failure = None
            if monitor not in logs:
                raise ConfigurationError(
                    f"The population monitors `{monitor}`, which is not in the logs of the wide "
                    f"start's fit. Available keys: {sorted(logs)}.")
        member.epochs_trained += rung.epochs
        metric = float(keras.ops.convert_to_numpy(logs[monitor][-1])) if failure is None \
            else math.nan
        if failure is None and not math.isfinite(metric):
            failure = "non-finite metric"
        candidate.steps = snapshot_lib.iterations(model)
        candidate.metric = metric
        candidate.failure = failure
        candidate.state = snapshot_lib.capture(model, candidate.id, candidate.steps,
                                               candidate.hparams, metric, on_device=False)

    def _wait_for_cut(self, member, k):
        """Waits until every member trained rung `k`; the last one decides the cut."""
        timeout = self.population.store.timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            self._arrived.add(member.member_id)
            if len(self._arrived) == len(self.slots):
                self._cut(k)
                self._arrived = set()
                self._cond.notify_all()
                return True
            while self.rung == k:
                if self.run.stopping.is_set():
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [s for s in self.slots if s not in self._arrived]
                    raise BarrierTimeoutError(
                        f"Cut {k + 1} of the wide start: member(s) {missing!r} did not finish "
                        f"their configurations within the store's timeout={timeout:g} s (member "
                        f"{member.member_id!r} waited).", member_id=member.member_id, interval=k,
                        missing=missing, timeout=timeout)
                self._cond.wait(min(left, 0.5))
            return True

    def _cut(self, k):
        """Ranks rung `k`'s configurations, records the cut, assigns the next rung."""
        plan, population = self.plan, self.population
        rung = plan.rungs[k]
        reports = [Report(cid, self.candidates[cid].steps, self.candidates[cid].metric)
                   for cid in self.alive]
        kept = wide_lib.cut(reports, rung.keep, population.mode,
                            wide_lib.cut_rng(population.seed, k))
        for cid in self.alive:
            c = self.candidates[cid]
            verdict = "kept" if cid in kept else "stopped"
            reason = (f"wide start: {verdict} at cut {k + 1} of {len(plan.rungs)} "
                      f"({rung.configurations} -> {rung.keep})")
            if c.failure:
                reason += f"; {c.failure}"
            self._record(cid, lineage_lib.LineageRecord(
                member_id=cid, step=c.steps, action="keep", hparams=dict(c.hparams),
                hparams_before=dict(c.hparams), metric=c.metric, monitor=population.monitor,
                mode=population.mode, reason=reason, time=time.time()), metric=c.metric)
        for cid in self.alive:
            if cid not in kept:
                self.candidates[cid].state = None  # frees its weights
        self.alive = sorted(kept, key=wide_lib.member_order_key)
        if k + 1 < len(plan.rungs):
            self.assignment = wide_lib.assign(self.alive, self.slots,
                                              plan.rungs[k + 1].per_member)
        else:
            self.placement = {s: c[0] for s, c in
                              wide_lib.assign(self.alive, self.slots, 1).items()}
        self.run.progress.message(
            f"wide start: cut {k + 1} of {len(plan.rungs)} kept {len(kept)} of "
            f"{rung.configurations} configurations: {', '.join(map(str, self.alive))}")
        self.rung = k + 1

    def _take_survivor(self, member):
        """`member` takes its survivor's weights and hyperparameters; PBT begins."""
        cb = member.callback
        survivor = self.candidates[self.placement[member.member_id]]
        own = self.candidates[member.member_id]
        snapshot_lib.restore(member.model, survivor.state, True)
        state = cb.get_state()
        state.update(hparams=dict(survivor.hparams), epochs=self.plan.start_epochs,
                     initialised=True, boundaries=0, recent=[], recent_steps=[],
                     start_metric=survivor.metric, root=survivor.id)
        if survivor.id == member.member_id:
            state.update(steps=survivor.steps)
        else:
            # The member's own weights stopped at its own step; it copies the
            # survivor there, as an exploit does (hyperparameters unchanged).
            state.update(steps=own.steps, exploits=state["exploits"] + 1)
            self._record(member.member_id, lineage_lib.LineageRecord(
                member_id=member.member_id, step=own.steps, action="exploit",
                hparams=dict(survivor.hparams), hparams_before=dict(own.hparams),
                metric=own.metric, parent=survivor.id, parent_step=survivor.steps,
                parent_metric=survivor.metric, monitor=self.population.monitor,
                mode=self.population.mode, reason="wide start", time=time.time()))
        cb.set_state(state)
