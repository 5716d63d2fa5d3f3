"""The one best-member rule and the one ancestry walk (keras_pbt.core.ancestry), pure."""

import json
import math

import pytest

from keras_pbt.core import lineage as lineage_lib
from keras_pbt.core.lineage import LineageRecord
from keras_pbt.core.ancestry import (
    ancestry,
    ancestry_schedule,
    best_member,
    latest_metrics,
    member_order_key,
    order_members,
    schedule_by_hparam,
)

NAN, INF = math.nan, math.inf


def rec(member, step, action, lr, parent=None, parent_step=None, metric=None, mode="max"):
    return LineageRecord(member_id=member, step=step, action=action, hparams={"lr": lr},
                         parent=parent, parent_step=parent_step, metric=metric, mode=mode)


def inits(*members):
    return [rec(m, 0, "init", round(0.1 * (i + 1), 6)) for i, m in enumerate(members)]


# --- the best-member rule -----------------------------------------------------------------


def test_member_order_puts_integers_by_value_before_text():
    ids = ["b", 10, 2, "a", 0, "10"]
    assert sorted(ids, key=member_order_key) == [0, 2, 10, "10", "a", "b"]


def test_order_members_ties_nan_inf_and_none():
    metrics = {10: 0.9, 2: 0.9, "a": 0.9, 0: 0.5, 3: NAN, 4: INF, 5: -INF, 6: None}
    # Equal metrics in member order (2 before 10, not "10" < "2" as text);
    # every non-finite value ranks last in both modes; None is not ranked.
    assert order_members(metrics, "max") == [2, 10, "a", 0, 3, 4, 5]
    assert order_members(metrics, "min") == [0, 2, 10, "a", 3, 4, 5]
    assert order_members({}, "max") == []
    with pytest.raises(ValueError, match="Received: mode='auto'"):
        order_members(metrics, "auto")


def test_best_member_counts_the_latest_metric_even_when_it_is_nan():
    lineage = inits(0, 1) + [
        rec(0, 10, "keep", 0.1, metric=0.99), rec(1, 10, "keep", 0.2, metric=0.5),
        rec(0, 20, "keep", 0.1, metric=NAN), rec(1, 20, "keep", 0.2, metric=0.6),
    ]
    assert latest_metrics(lineage) == {0: pytest.approx(NAN, nan_ok=True), 1: 0.6}
    assert best_member(lineage) == 1  # member 0 diverged: its 0.99 is history
    assert best_member(lineage, mode="min") == 1  # NaN is last in both modes
    # Every member diverged: the first in member order.
    assert best_member(inits(3, 1) + [rec(3, 5, "keep", 0.1, metric=NAN),
                                      rec(1, 5, "keep", 0.2, metric=INF)]) == 1


def test_best_member_ties_do_not_depend_on_record_order():
    lineage = inits(2, 10, "x") + [rec(m, 10, "keep", 0.1, metric=0.75) for m in ("x", 10, 2)]
    assert best_member(lineage) == 2
    assert best_member(list(reversed(lineage))) == 2
    assert order_members(latest_metrics(lineage), "max") == [2, 10, "x"]


def test_best_member_after_a_restart_and_at_one_step():
    # A restart record has no metric: the member keeps the metric it last
    # reported. Of two records of one step, the one written last counts.
    lineage = inits(0, 1) + [
        rec(0, 8, "keep", 0.1, metric=0.4), rec(1, 8, "keep", 0.2, metric=0.3),
        rec(1, 8, "exploit", 0.25, parent=0, parent_step=8, metric=0.35),
        rec(0, 12, "restart", 0.05),
    ]
    assert latest_metrics(lineage) == {0: 0.4, 1: 0.35}
    assert best_member(lineage) == 0
    assert best_member(lineage, "min") == 1


def test_best_member_errors():
    with pytest.raises(ValueError, match="No lineage record has a metric"):
        best_member(inits(0, 1))
    mixed = [rec(0, 1, "keep", 0.1, metric=1.0, mode="min"), rec(1, 1, "keep", 0.1, metric=2.0)]
    with pytest.raises(ValueError, match=r"the records give modes \['max', 'min'\]"):
        best_member(mixed)
    assert best_member(mixed, "min") == 0
    with pytest.raises(ValueError, match="Received: mode='best'"):
        best_member(mixed, "best")


# --- the ancestry walk ----------------------------------------------------------------------


def test_a_parent_that_had_copied_another_member():
    # 2 copies 1 at step 10; at step 20, 0 copies 2, whose weights by then
    # came from 1's initial run and 2's own training since its exploit.
    lineage = inits(0, 1, 2) + [
        rec(0, 10, "keep", 0.1, metric=0.2), rec(1, 10, "keep", 0.2, metric=0.9),
        rec(2, 10, "exploit", 0.25, parent=1, parent_step=10, metric=0.1),
        rec(0, 20, "exploit", 0.3, parent=2, parent_step=20, metric=0.4),
        rec(1, 20, "keep", 0.2, metric=0.6), rec(2, 20, "keep", 0.25, metric=0.8),
        rec(0, 30, "keep", 0.3, metric=0.95), rec(1, 30, "keep", 0.2, metric=0.7),
        rec(2, 30, "keep", 0.25, metric=0.9),
    ]
    entries = ancestry(lineage)  # member 0 is best
    assert [(e.member_id, e.member_step, e.member_end_step, e.step, e.end_step, e.action)
            for e in entries] == [
        (1, 0, 10, 0, 10, "init"),
        (2, 10, 20, 10, 20, "exploit"),
        (0, 20, 30, 20, 30, "exploit"),
    ]
    assert [e.record.parent for e in entries] == [None, 1, 2]
    assert ancestry_schedule(lineage, member_id=2) == [(0, {"lr": 0.2}), (10, {"lr": 0.25})]
    assert ancestry_schedule(lineage, member_id=1) == [(0, {"lr": 0.2})]
    # The order the records arrive in does not matter.
    assert ancestry(list(reversed(lineage))) == entries


def test_exploits_at_the_same_step_follow_the_snapshot_before_them():
    # At step 10 member 0 copies 1 and member 1 copies 2 (tournament):
    # 1's snapshot was published before its own exploit, so 0 inherits 1's
    # initial hyperparameters, not the ones 1 took from 2.
    lineage = inits(0, 1, 2) + [
        rec(0, 10, "exploit", 0.22, parent=1, parent_step=10, metric=0.1),
        rec(1, 10, "exploit", 0.33, parent=2, parent_step=10, metric=0.2),
        rec(2, 10, "keep", 0.3, metric=0.3),
        rec(0, 20, "keep", 0.22, metric=0.9), rec(1, 20, "keep", 0.33, metric=0.5),
        rec(2, 20, "keep", 0.3, metric=0.4),
    ]
    assert ancestry_schedule(lineage) == [(0, {"lr": 0.2}), (10, {"lr": 0.22})]
    assert [(e.member_id, e.member_end_step) for e in ancestry(lineage)] == [(1, 10), (0, 20)]
    assert ancestry_schedule(lineage, 1) == [(0, {"lr": 0.3}), (10, {"lr": 0.33})]


def test_restarts_from_a_parent_and_from_scratch():
    lineage = inits(0, 1) + [
        rec(1, 8, "keep", 0.2, metric=0.3),
        rec(1, 8, "restart", 0.25, parent=0, parent_step=8),  # written after the keep
        rec(0, 16, "restart", 0.05),  # from its own initial weights
        rec(0, 30, "keep", 0.05, metric=0.1), rec(1, 30, "keep", 0.25, metric=0.2),
    ]
    assert [(e.member_id, e.action, e.step, e.end_step) for e in ancestry(lineage, 1)] == [
        (0, "init", 0, 8), (1, "restart", 8, 30)]
    # From scratch: the weights start again at the restart, at step 0.
    assert [(e.member_id, e.action, e.step, e.end_step) for e in ancestry(lineage, 0)] == [
        (0, "restart", 0, 14)]


def test_asynchronous_weight_ages():
    # 1 (at its step 12) copies 0's snapshot of step 10; 2 (at 25) copies 1's
    # snapshot of step 20, 8 steps after 1's exploit.
    lineage = inits(0, 1, 2) + [
        rec(1, 12, "exploit", 0.15, parent=0, parent_step=10, metric=0.1),
        rec(2, 25, "exploit", 0.18, parent=1, parent_step=20, metric=0.2),
        rec(2, 40, "keep", 0.18, metric=0.9),
    ]
    entries = ancestry(lineage, 2)
    assert [(e.step, e.end_step) for e in entries] == [(0, 10), (10, 18), (18, 33)]
    assert [(e.member_step, e.member_end_step) for e in entries] == [(0, 10), (12, 20), (25, 40)]


def test_errors_name_the_problem():
    lineage = [rec(0, 0, "init", 0.1), rec(1, 5, "exploit", 0.2, parent=7, parent_step=5)]
    with pytest.raises(ValueError, match="no records of member 9"):
        ancestry(lineage, 9)
    with pytest.raises(ValueError, match="no records of parent of member 1 7"):
        ancestry(lineage, 1)
    with pytest.raises(ValueError, match="member 0 has no initial record before step 0"):
        ancestry([rec(0, 3, "init", 0.1), rec(1, 5, "exploit", 0.2, parent=0, parent_step=0)], 1)
    with pytest.raises(ValueError, match="No lineage record has a metric"):
        ancestry([rec(0, 0, "init", 0.1)])
    with pytest.raises(ValueError, match="mode='min' or mode='max'"):
        best_member([rec(0, 1, "keep", 0.1, metric=1.0, mode="")])
    with pytest.raises(TypeError, match="LineageRecords"):
        ancestry([{"member": 0}], 0)


# --- the schedule per hyperparameter and its JSON ------------------------------------------


def test_schedule_by_hparam_keeps_changes_only():
    schedule = [(0, {"lr": 0.1, "opt": "sgd", "m": 0.9}), (10, {"lr": 0.1, "opt": "adam", "m": 0.9}),
                (20, {"lr": 0.2, "opt": "adam", "m": 0.9, "wd": 1e-4})]
    assert schedule_by_hparam(schedule) == {
        "lr": [[0, 0.1], [20, 0.2]], "m": [[0, 0.9]], "opt": [[0, "sgd"], [10, "adam"]],
        "wd": [[20, 1e-4]]}
    assert list(schedule_by_hparam(schedule)) == ["lr", "m", "opt", "wd"]
    # An int 1 and a float 1.0 differ (a Choice of ints is not a float).
    assert schedule_by_hparam([(0, {"u": 1}), (5, {"u": 1.0})]) == {"u": [[0, 1], [5, 1.0]]}
    assert schedule_by_hparam([(0, {"x": NAN}), (5, {"x": NAN})])["x"][0][0] == 0
    lineage = inits(0) + [rec(0, 4, "keep", 0.1, metric=1.0)]
    assert schedule_by_hparam(ancestry(lineage)) == schedule_by_hparam(ancestry_schedule(lineage))


def test_entries_to_dict_is_standard_json_with_the_lineage_spelling_of_nan():
    lineage = inits(0, 1) + [
        rec(1, 5, "exploit", INF, parent=0, parent_step=5, metric=NAN),
        rec(1, 9, "keep", INF, metric=0.5),
    ]
    rows = [e.to_dict() for e in ancestry(lineage)]
    text = json.dumps(rows, allow_nan=False)
    assert json.loads(text) == [
        {"step": 0, "end_step": 5, "member": 0, "member_step": 0, "member_end_step": 5,
         "action": "init", "hparams": {"lr": 0.1}, "parent": None, "parent_step": None},
        {"step": 5, "end_step": 9, "member": 1, "member_step": 5, "member_end_step": 9,
         "action": "exploit", "hparams": {"lr": "Infinity"}, "parent": 0, "parent_step": 5},
    ]
    assert lineage_lib.decode_float(rows[1]["hparams"]["lr"]) == INF
    assert lineage_lib.encode({"a": (NAN, -INF)}) == {"a": ["NaN", "-Infinity"]}


def test_ancestry_of_the_weights_at_an_earlier_step():
    # The keras-tuner oracle follows one segment: member 0's weights at its
    # step 20 (before its decision there), not its final ones.
    lineage = inits(0, 1) + [
        rec(0, 10, "exploit", 0.15, parent=1, parent_step=10, metric=0.1),
        rec(1, 10, "keep", 0.2, metric=0.5),
        rec(0, 20, "exploit", 0.12, parent=1, parent_step=20, metric=0.2),
        rec(1, 20, "keep", 0.2, metric=0.6), rec(0, 30, "keep", 0.12, metric=0.9),
    ]
    assert [(e.member_id, e.member_step, e.member_end_step) for e in ancestry(lineage, 0, step=20)] == [
        (1, 0, 10), (0, 10, 20)]
    assert ancestry_schedule(lineage, 0, step=20) == [(0, {"lr": 0.2}), (10, {"lr": 0.15})]
    assert ancestry_schedule(lineage, 0) == [(0, {"lr": 0.2}), (20, {"lr": 0.12})]
    assert ancestry_schedule(lineage, 0, step=0) == [(0, {"lr": 0.1})]
    for bad in (-1, 2.5, True, "20"):
        with pytest.raises(ValueError, match=rf"Received: step={bad!r}"):
            ancestry(lineage, 0, step=bad)
