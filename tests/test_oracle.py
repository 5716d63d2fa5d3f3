"""PBTOracle with no model at all: keras-tuner trials driven by hand, scored by formulas."""

import math

import keras_tuner as kt
import numpy as np
import pytest
from keras_tuner.engine.base_tuner import BaseTuner

import keras_pbt

from keras_pbt import PBTPolicy
from keras_pbt import Report
from keras_pbt.tuner import PBTOracle
from keras_pbt.tuner import space_from_hyperparameters
from keras_pbt.tuner.oracle import user_values


def user_space():
    hp = kt.HyperParameters()
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Float("dropout", 0.0, 0.5, step=0.1)
    hp.Int("units", 8, 64, step=8)
    hp.Choice("act", ["relu", "gelu", "tanh"])
    hp.Boolean("bn")
    hp.Fixed("batch", 32)
    return hp


def make_oracle(tmp_path, hps=None, project="p", **kwargs):
    kwargs.setdefault("seed", 3)
    oracle = PBTOracle(objective=kt.Objective("score", "max"),
                       hyperparameters=hps or user_space(), **kwargs)
    # The public way to give an oracle its project directory.
    BaseTuner(oracle=oracle, directory=str(tmp_path), project_name=project)
    oracle.verbose = 0
    return oracle


def complete(oracle, trial, score, step):
    oracle.update_trial(trial.trial_id, {"score": float(score)}, step=int(step))
    trial.status = "COMPLETED"
    oracle.end_trial(trial)


def score_of(values, segment):
    # Best near lr = 0.01; progress adds the same to everyone.
    return segment - abs(math.log10(values["lr"]) + 2.0)


def run_generation(oracle, n, score=score_of, steps=10):
    trials = [oracle.create_trial(f"w{i}") for i in range(n)]
    assert [t.status for t in trials] == ["RUNNING"] * n
    for t in trials:
        v = t.hyperparameters.values
        complete(oracle, t, score(v, v["pbt/segment"]), steps * (v["pbt/segment"] + 1))
    return trials


# --- the oracle -----------------------------------------------------------------


def test_trials_are_member_segments_and_the_barrier_answers_idle(tmp_path):
    oracle = make_oracle(tmp_path, population_size=4, max_epochs=5,
                         logdir=None, interval=2)
    assert oracle.total_trials == 4 * 3 and oracle.remaining_trials() == 12
    first = [oracle.create_trial(f"w{i}") for i in range(4)]
    values = [t.hyperparameters.values for t in first]
    assert [v["pbt/member"] for v in values] == [0, 1, 2, 3]
    assert all(v["pbt/segment"] == 0 and v["pbt/action"] == "init" and v["pbt/parent_trial"] == ""
               and (v["pbt/initial_epoch"], v["pbt/epochs"]) == (0, 2) for v in values)
    assert all(v["batch"] == 32 for v in values)
    # Segment 1 waits until every member finished segment 0: IDLE, not STOPPED.
    waiting = oracle.create_trial("w9")
    assert waiting.status == "IDLE"
    for t in first[:3]:
        complete(oracle, t, 0.5, 10)
    assert oracle.create_trial("w9").status == "IDLE"
    complete(oracle, first[3], 0.5, 10)
    nxt = oracle.create_trial("w9")
    assert nxt.status == "RUNNING"
    v = nxt.hyperparameters.values
    assert (v["pbt/segment"], v["pbt/initial_epoch"], v["pbt/epochs"]) == (1, 2, 4)
    # A tie never exploits: everyone keeps and continues its own checkpoint.
    assert v["pbt/action"] == "keep"
    assert v["pbt/parent_trial"] == first[v["pbt/member"]].trial_id
    assert v["pbt/initial_step"] == 10 and values[0]["pbt/initial_step"] == 0
    for i in range(3):
        complete(oracle, oracle.create_trial(f"w{i}"), 0.5, 20)
    complete(oracle, nxt, 0.5, 20)
    last = [oracle.create_trial(f"w{i}") for i in range(4)]
    assert {t.hyperparameters.values["pbt/epochs"] for t in last} == {5}  # the last is shorter
    # Every segment is handed out, but not STOPPED while they train (a retry may need a worker).
    assert oracle.create_trial("w9").status == "IDLE" and oracle.remaining_trials() == 0
    for t in last:
        complete(oracle, t, 0.5, 25)
    assert oracle.create_trial("w0").status == "STOPPED"


def test_the_oracle_decides_exactly_as_the_callbacks_policy(tmp_path):
    oracle = make_oracle(tmp_path, population_size=4, max_epochs=2,
                         frozen=["units"], hps=_lr_only_space(), logdir=None, policy=keras_pbt.Policy(quantile=0.25))
    gen0 = run_generation(oracle, 4)
    reports = [Report(t.hyperparameters.values["pbt/member"], 10,
                      score_of(t.hyperparameters.values, 0),
                      {k: t.hyperparameters.values[k] for k in ("lr", "m", "act", "bn")},
                      interval=1) for t in gen0]
    gen1 = [oracle.create_trial(f"w{i}") for i in range(4)]
    policy = PBTPolicy(space_from_hyperparameters(_lr_only_space(), exclude=["units"]),
                       mode="max", quantile=0.25, seed=oracle.seed)
    exploits = 0
    for t in gen1:
        v = t.hyperparameters.values
        m = v["pbt/member"]
        expected = policy.decide(m, reports, key=1, rng=np.random.default_rng([oracle.seed, m, 1, 0]))
        assert v["pbt/action"] == expected.action
        assert {k: v[k] for k in expected.hparams} == expected.hparams
        if expected.is_exploit:
            exploits += 1
            parent = gen0[expected.parent]
            assert v["pbt/parent_trial"] == parent.trial_id
            # The child's steps go on from its own, not from its parent's.
            assert v["pbt/initial_step"] == gen0[m].best_step
            assert v["units"] == parent.hyperparameters.values["units"]  # frozen: the parent's
    assert exploits == 1  # ceil(4 * 0.25): the worst copies the best


def _lr_only_space():
    hp = kt.HyperParameters()
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Float("m", 0.0, 0.9, step=0.1)
    hp.Fixed("units", 16)
    hp.Choice("act", ["relu", "gelu", "tanh"])
    hp.Boolean("bn")
    return hp


def test_explored_values_stay_on_each_hyperparameters_bounds_and_grid(tmp_path):
    hps = user_space()
    oracle = make_oracle(tmp_path, hps=hps, population_size=6, max_epochs=12, logdir=None, policy=keras_pbt.Policy(quantile=0.5, factors=(0.2, 5.0), resample_probability=0.2))
    rng = np.random.default_rng(0)
    grids = {"dropout": set(hps._hps["dropout"][0].values), "units": set(range(8, 65, 8))}
    seen = []
    for segment in range(12):
        trials = [oracle.create_trial(f"w{i}") for i in range(6)]
        for t in trials:
            v = t.hyperparameters.values
            seen.append(v)
            complete(oracle, t, rng.normal(), 10 * (segment + 1))
    exploits = [v for v in seen if v["pbt/action"] == "exploit"]
    assert len(exploits) >= 20
    for v in seen:
        assert 1e-4 <= v["lr"] <= 1e-1 and isinstance(v["lr"], float)
        assert v["dropout"] in grids["dropout"]
        assert v["units"] in grids["units"] and isinstance(v["units"], int)
        assert v["act"] in ("relu", "gelu", "tanh") and isinstance(v["bn"], bool)
    # Choices and booleans move to a neighbour (or are resampled), never jump relu <-> tanh by a perturbation.
    for rec in oracle.lineage():
        if rec.action == "exploit" and rec.ops.get("act", "").startswith("shift"):
            parent_act = next(v["act"] for v in seen if v["pbt/member"] == rec.parent
                              and v["pbt/segment"] == rec.interval - 1)
            order = ["relu", "gelu", "tanh"]
            assert abs(order.index(rec.hparams["act"]) - order.index(parent_act)) == 1
    assert oracle.create_trial("w0").status == "STOPPED"


def test_pbt_moves_the_population_towards_the_best_learning_rate(tmp_path):
    hp = kt.HyperParameters()
    hp.Float("lr", 1e-5, 1.0, sampling="log")
    oracle = make_oracle(tmp_path, hps=hp, population_size=8, max_epochs=15, seed=7, logdir=None, policy=keras_pbt.Policy(quantile=0.25, resample_probability=0.1))
    first = last = None
    for segment in range(15):
        trials = run_generation(oracle, 8)
        distance = np.median([abs(math.log10(t.hyperparameters.values["lr"]) + 2) for t in trials])
        first = distance if first is None else first
        last = distance
    assert last < first / 3
    best = oracle.get_best_trials(1)[0].hyperparameters.values
    assert best["pbt/segment"] == 14 and abs(math.log10(best["lr"]) + 2) < 0.3


def test_a_member_only_copies_members_with_its_frozen_values(tmp_path):
    hp = kt.HyperParameters()
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Choice("units", [8, 16])
    oracle = make_oracle(tmp_path, hps=hp, frozen=["units"], population_size=6, max_epochs=8, logdir=None, seed=11, policy=keras_pbt.Policy(quantile=0.5))
    runs = [run_generation(oracle, 6) for _ in range(8)]
    units = {t.hyperparameters.values["pbt/member"]: t.hyperparameters.values["units"]
             for t in runs[0]}
    assert len(set(units.values())) == 2  # both species exist with this seed
    exploits = [r for r in oracle.lineage() if r.action == "exploit"]
    # Each group of equal units is ranked on its own: both groups exploit.
    assert {units[r.member_id] for r in exploits} == {8, 16}
    for r in exploits:
        assert units[r.parent] == units[r.member_id] == r.hparams["units"]


def test_asynchronous_oracle_does_not_wait_for_slow_members(tmp_path):
    oracle = make_oracle(tmp_path, population_size=3, max_epochs=3, synchronous=False,
                         logdir=None)
    a, b, c = (oracle.create_trial(f"w{i}") for i in range(3))
    complete(oracle, a, 1.0, 10)
    nxt = oracle.create_trial("w0")   # member 0 goes on while 1 and 2 still train
    assert nxt.status == "RUNNING"
    assert nxt.hyperparameters.values["pbt/member"] == 0
    assert nxt.hyperparameters.values["pbt/segment"] == 1


def test_a_failed_segment_restarts_the_member_from_the_best_other_member(tmp_path):
    oracle = make_oracle(tmp_path, population_size=3, max_epochs=2, logdir=None)
    a, b, c = (oracle.create_trial(f"w{i}") for i in range(3))
    complete(oracle, a, 0.9, 10)
    complete(oracle, b, 0.4, 10)
    c.status = "FAILED"
    c.message = "Traceback...\nRuntimeError: out of memory"
    oracle.end_trial(c)
    nxt = [oracle.create_trial(f"w{i}") for i in range(3)]
    restarted = next(t for t in nxt if t.hyperparameters.values["pbt/member"] == 2)
    v = restarted.hyperparameters.values
    assert v["pbt/action"] == "restart" and v["pbt/parent_trial"] == a.trial_id
    rec = [r for r in oracle.lineage() if r.action == "restart"]
    assert len(rec) == 1 and rec[0].parent == 0 and "out of memory" in rec[0].reason
    # The one restart rule (PBTPolicy.restart, as the population's): the best
    # other member's state, with its hyperparameters explored.
    assert (rec[0].parent_step, rec[0].parent_metric) == (10, 0.9)
    assert set(rec[0].ops) == set(oracle.engine.space)
    assert rec[0].hparams_before == user_values(c.hyperparameters.values)
    assert v["batch"] == a.hyperparameters.values["batch"]   # not explored: the parent's


def test_a_failed_segment_with_nobody_to_copy_restarts_from_the_initial_state(tmp_path):
    oracle = make_oracle(tmp_path, hps=_lr_only_space(), population_size=2, max_epochs=2,
                         logdir=None, policy=keras_pbt.Policy(resample_probability=0.0))
    first = [oracle.create_trial(f"w{i}") for i in range(2)]
    for t in first:
        t.status = "FAILED"
        oracle.end_trial(t)
    for t, before in zip([oracle.create_trial(f"w{i}") for i in range(2)], first):
        v, initial = t.hyperparameters.values, before.hyperparameters.values
        assert v["pbt/action"] == "restart" and v["pbt/parent_trial"] == ""  # a new build
        factor = float(next(r for r in oracle.lineage() if r.action == "restart"
                            and r.member_id == v["pbt/member"]).ops["lr"][1:])
        assert v["lr"] == pytest.approx(min(max(initial["lr"] * factor, 1e-4), 1e-1))
    assert [r.parent for r in oracle.lineage() if r.action == "restart"] == [None, None]


def test_lineage_and_scalars_are_written_per_member_for_tensorboard(tmp_path):
    import glob

    import tensorflow as tf

    from keras_pbt.core.lineage import PLUGIN_NAME
    from keras_pbt.core.lineage import loads

    logdir = tmp_path / "logs"
    oracle = make_oracle(tmp_path, population_size=3, max_epochs=3, logdir=str(logdir))
    for _ in range(3):
        run_generation(oracle, 3)
    assert sorted(p.name for p in logdir.iterdir()) == ["member_0", "member_1", "member_2"]
    written = []
    for m in range(3):
        scalars, records = {}, []
        for path in glob.glob(str(logdir / f"member_{m}" / "events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    if value.metadata.plugin_data.plugin_name == PLUGIN_NAME:
                        records += loads(tf.make_ndarray(value.tensor).item())
                    else:
                        scalars.setdefault(value.tag, []).append(event.step)
        assert scalars["pbt/score"] == [10, 20, 30]
        assert scalars["pbt/hparams/lr"] == [0, 10, 20, 30]
        assert [r.action for r in records][0] == "init"
        assert [r.interval for r in records] == [0, 1, 2, 3]
        assert records[-1].reason == "end of training"
        written += records
    assert sorted(r.to_dict()["time"] for r in written) == sorted(
        r.to_dict()["time"] for r in oracle.lineage())


def test_state_survives_a_reload_and_the_search_continues(tmp_path):
    oracle = PBTOracle(objective=kt.Objective("score", "max"), hyperparameters=user_space(),
                       population_size=2, max_epochs=3, seed=3)
    tuner = BaseTuner(oracle=oracle, directory=str(tmp_path), project_name="p")
    oracle.verbose = 0
    run_generation(oracle, 2)
    running = oracle.create_trial("w0")   # interrupted while running
    before = [r.to_dict() for r in oracle.lineage()]
    tuner.save()
    # A decision recorded after the last save (the process died in between)
    # belongs to no saved trial: the reload drops it.
    lineage_file = tmp_path / "p" / "pbt_lineage.jsonl"
    with open(lineage_file, "a") as f:
        f.write('{"version": 1, "member": 1, "step": 10, "action": "keep", "hparams": {}}\n')

    again = PBTOracle(objective=kt.Objective("score", "max"), hyperparameters=user_space(),
                      population_size=2, max_epochs=3, seed=3)
    BaseTuner(oracle=again, directory=str(tmp_path), project_name="p")  # reloads
    assert [r.to_dict() for r in again.lineage()] == before
    assert len(lineage_file.read_text().splitlines()) == len(before)
    retried = again.create_trial("w0")
    assert retried.trial_id == running.trial_id          # the unfinished segment, same values
    assert retried.hyperparameters.values == running.hyperparameters.values
    other = again.create_trial("w1")
    assert other.hyperparameters.values["pbt/segment"] == 1
    assert other.trial_id not in (running.trial_id,)
    with pytest.raises(ValueError, match="population_size=2, not 3"):
        BaseTuner(oracle=PBTOracle(objective="val_loss", hyperparameters=user_space(),
                                   population_size=3, max_epochs=3),
                  directory=str(tmp_path), project_name="p")


@pytest.mark.parametrize("make, message", [
    (lambda: dict(population_size=1), "population_size"),
    (lambda: dict(max_epochs=0), "max_epochs"),
    (lambda: dict(interval=1.5), "interval=1.5"),
    (lambda: dict(interval=keras_pbt.Interval(steps=10)), "segments of whole epochs"),
    (lambda: dict(policy=keras_pbt.Policy(quantile=0.7)), "quantile"),
    (lambda: dict(policy=keras_pbt.Policy(factors=())), "factors"),
    (lambda: dict(quantile=0.5), r"policy=keras_pbt.Policy\(quantile=0.5\)"),
    (lambda: dict(max_trials=10), "max_trials"),
    (lambda: dict(objective=["val_loss", "val_accuracy"]), "one metric"),
])
def test_bad_arguments_are_rejected_naming_them(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        PBTOracle(**dict(dict(objective="val_loss"), **make()))


def test_user_values_drop_the_bookkeeping():
    assert user_values({"lr": 0.1, "pbt/member": 3, "pbt/parent_trial": "04"}) == {"lr": 0.1}


# --- inherited, conditional and budget -----------------------------------------


def test_inherited_hyperparameters_come_from_the_parent_and_are_never_explored(tmp_path):
    hp = kt.HyperParameters()
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Int("units", 8, 64, step=8)
    oracle = make_oracle(tmp_path, hps=hp, inherited=["units"], population_size=6, max_epochs=8,
                         logdir=None, seed=5, policy=keras_pbt.Policy(quantile=0.5, factors=(0.5, 2.0), resample_probability=0.5))
    assert list(oracle.engine.space) == ["lr"]
    initial = {}
    runs = [run_generation(oracle, 6) for _ in range(8)]
    for t in runs[0]:
        initial[t.hyperparameters.values["pbt/member"]] = t.hyperparameters.values["units"]
    assert len(set(initial.values())) > 2
    exploits = [r for r in oracle.lineage() if r.action == "exploit"]
    assert len(exploits) >= 8
    units = dict(initial)  # member -> units now
    spread = 0
    for r in oracle.lineage():   # decisions in order
        if r.action == "exploit":
            assert r.hparams["units"] == units[r.parent]     # the parent's, not explored
            assert "units" not in r.ops
            spread += r.hparams["units"] != units[r.member_id]
            units[r.member_id] = r.hparams["units"]
        elif r.action == "keep" and r.interval:
            assert r.hparams["units"] == units[r.member_id]
    assert spread > 0   # an architecture spread by selection
    assert set(units.values()) <= set(initial.values())


def test_conditional_hyperparameters_are_explored_where_active_and_their_parents_inherited(
        tmp_path):
    hp = kt.HyperParameters()
    hp.Choice("optimizer", ["sgd", "adam"])
    with hp.conditional_scope("optimizer", ["sgd"]):
        hp.Float("momentum", 0.1, 0.9)
    hp.Float("lr", 1e-4, 1e-1, sampling="log", parent_name="optimizer", parent_values=["adam"])
    hp.Float("decay", 1e-5, 1e-2, sampling="log")
    oracle = make_oracle(tmp_path, hps=hp, population_size=6, max_epochs=6, logdir=None, seed=2, policy=keras_pbt.Policy(quantile=0.5, resample_probability=0.0))
    assert sorted(oracle.engine.space) == ["decay", "lr", "momentum"]   # not the parent
    kinds = {}
    seen = []
    for _ in range(6):
        for t in run_generation(oracle, 6, score=lambda v, s: -math.log10(v["decay"])):
            seen.append(t.hyperparameters.values)
    for v in seen:
        kinds.setdefault(v["pbt/member"], set()).add(v["optimizer"])
        assert ("momentum" in v) == (v["optimizer"] == "sgd")
        assert ("lr" in v) == (v["optimizer"] == "adam")
    assert {v["optimizer"] for v in seen} == {"sgd", "adam"}
    for r in oracle.lineage():
        if r.action == "exploit":
            parent = [v for v in seen if v["pbt/member"] == r.parent
                      and v["pbt/segment"] == r.interval - 1][0]
            assert r.hparams["optimizer"] == parent["optimizer"]
            assert "optimizer" not in r.ops
            assert set(r.ops) == {"decay", "momentum" if parent["optimizer"] == "sgd" else "lr"}


def test_the_budget_can_come_later_and_must_then_agree(tmp_path):
    oracle = make_oracle(tmp_path, population_size=2, logdir=None)
    with pytest.raises(ValueError, match="epochs="):
        oracle.create_trial("w0")
    oracle.set_max_epochs(4)
    assert oracle.total_trials == 8
    oracle.set_max_epochs(4)
    with pytest.raises(ValueError, match=r"max_epochs=4 .*Received: epochs=5"):
        oracle.set_max_epochs(5)
    with pytest.raises(ValueError, match="Received: epochs=0"):
        PBTOracle(objective="val_loss").set_max_epochs(0)


def test_best_member_and_schedule_are_keras_pbt_schedules(tmp_path):
    from keras_pbt.core import ancestry as schedule

    oracle = make_oracle(tmp_path, population_size=5, max_epochs=6,
                         hps=_lr_only_space(), logdir=None, seed=9, policy=keras_pbt.Policy(quantile=0.4))
    for _ in range(6):
        run_generation(oracle, 5)
    lineage = oracle.lineage()
    # The best member: the best score of the last segment (the trials' own scores).
    final = {t.hyperparameters.values["pbt/member"]: t.score for t in oracle.trials.values()
             if t.hyperparameters.values["pbt/segment"] == 5}
    best = max(final, key=final.get)
    assert schedule.best_member(lineage) == best
    ranked = oracle.get_best_trials(5)
    assert [t.hyperparameters.values["pbt/member"] for t in ranked] == sorted(
        final, key=final.get, reverse=True)
    assert [t.hyperparameters.values["pbt/segment"] for t in ranked] == [5] * 5
    # Its schedule: the best member's own last change last, each earlier entry the
    # change of a member it copied; each one is what the next segment trained with.
    entries = oracle.schedule()
    assert entries[0].step == 0 and entries[0].action == "init" and entries[-1].member_id == best
    assert [e.step for e in entries] == sorted(e.step for e in entries)
    for e in entries:
        values = oracle.trials[oracle.trial_of(e)].hyperparameters.values
        assert values["pbt/member"] == e.member_id and user_values(values) == e.hparams
    assert oracle.trial_of(entries[0]) == oracle.member_trials(entries[0].member_id)[0]
    assert any(e.action == "exploit" for e in entries)   # the winner's weights came through a copy


def test_a_worker_goes_on_with_the_member_it_trained_last(tmp_path):
    oracle = make_oracle(tmp_path, population_size=3, max_epochs=3, logdir=None)
    first = {w: oracle.create_trial(w) for w in ("a", "b", "c")}
    for w in ("c", "a", "b"):
        complete(oracle, first[w], 0.5, 10)
    for w in ("b", "c", "a"):   # asking in another order than before
        t = oracle.create_trial(w)
        assert t.hyperparameters.values["pbt/member"] == \
            first[w].hyperparameters.values["pbt/member"]
        assert t.hyperparameters.values["pbt/parent_trial"] == first[w].trial_id


def test_burn_in_keeps_every_member_through_its_first_segments(tmp_path):
    oracle = make_oracle(tmp_path, hps=_lr_only_space(), population_size=4, max_epochs=4,
                         interval=keras_pbt.Interval(epochs=1, burn_in=2), logdir=None,
                         policy=keras_pbt.Policy(quantile=0.5))
    for _ in range(4):
        run_generation(oracle, 4)
    decisions = [r for r in oracle.lineage() if r.action != "init" and r.interval < 4]
    by_boundary = {k: [r for r in decisions if r.interval == k] for k in (1, 2, 3)}
    for k in (1, 2):  # the engine's burn-in rule, as for the callback
        assert [(r.action, r.reason) for r in by_boundary[k]] == [("keep", "burn-in")] * 4
    assert sum(r.action == "exploit" for r in by_boundary[3]) == 2  # quantile 0.5 of 4
