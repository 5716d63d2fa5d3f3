"""FireSelection: a fitness group ranked by metric, an improvement group ranked by slope."""

import math
import re

import numpy as np
import pytest

from keras_pbt.core.fire import FireSelection
from keras_pbt.core.policy import PBTPolicy
from keras_pbt.core.selection import Report
from keras_pbt.core.selection import rank
from keras_pbt.core.space import LogUniform


def report(member, metric, recent, step=40):
    steps = tuple(range(step - 10 * (len(recent) - 1), step + 1, 10))
    return Report(member, step, metric, {"lr": 0.01}, 4, recent=tuple(recent), recent_steps=steps)


def ranked(reports):
    return rank(reports, "max", np.random.default_rng(0))


def test_groups_split_in_canonical_order():
    sel = FireSelection(fraction=0.5)
    assert sel.groups([3, 0, 2, 1]) == ([0, 1], [2, 3])
    assert FireSelection(fraction=0.25).groups(range(8)) == ([0, 1, 2, 3, 4, 5], [6, 7])
    # The project's one member order: integers by value (2 before 10), not as text.
    assert sel.groups(range(12)) == (list(range(6)), list(range(6, 12)))
    # At least one member in each group.
    assert FireSelection(fraction=0.9).groups([0, 1]) == ([0], [1])
    assert FireSelection(fraction=0.1).groups([0, 1]) == ([0], [1])


def population():
    # Fitness group 0..3, improvement group 4..7.
    return [
        report(0, 0.90, (0.89, 0.90, 0.90)),
        report(1, 0.85, (0.84, 0.85, 0.85)),
        report(2, 0.80, (0.80, 0.80, 0.80)),
        report(3, 0.70, (0.70, 0.70, 0.70)),   # fitness loser
        report(4, 0.95, (0.80, 0.90, 0.95)),   # best overall: promoted into fitness
        report(5, 0.60, (0.30, 0.45, 0.60)),   # slow starter, steepest slope
        report(6, 0.75, (0.74, 0.75, 0.75)),   # flat: improvement loser
        report(7, 0.65, (0.65,)),              # just exploited: no slope yet
    ]


def test_fitness_loser_copies_the_top_of_the_whole_population():
    sel = FireSelection(fraction=0.5, quantile=0.25)
    parents = set()
    for seed in range(20):
        p = sel.choose_parent(3, ranked(population()), "max", np.random.default_rng(seed))
        parents.add(p.member_id)
    assert parents == {4, 0}  # the top quantile of all 8 by metric, member 4 included
    for member in (0, 1, 2):
        assert sel.choose_parent(member, ranked(population()), "max", np.random.default_rng(0)) is None


def test_slow_starter_is_protected_and_flat_member_copies_the_steepest():
    sel = FireSelection(fraction=0.5, quantile=0.25)
    rng = np.random.default_rng(0)
    # Member 5 has the second-lowest metric of all, but the steepest slope.
    assert sel.choose_parent(5, ranked(population()), "max", rng) is None
    # Member 7 has no slope yet: neither a loser nor a parent.
    assert sel.choose_parent(7, ranked(population()), "max", rng) is None
    # Member 6 has the flattest slope among those with one: it copies the steepest.
    assert sel.choose_parent(6, ranked(population()), "max", rng).member_id == 5
    assert 5 in sel.parent_candidates(ranked(population()), "max")
    assert 7 not in sel.parent_candidates(ranked(population()), "max")


def test_diverged_member_copies_wherever_it_is():
    reports = population()
    reports[5] = report(5, math.nan, (0.3, math.nan))
    sel = FireSelection(fraction=0.5, quantile=0.25)
    p = sel.choose_parent(5, ranked(reports), "max", np.random.default_rng(1))
    assert p is not None and p.member_id in (0, 4)


def test_min_mode_slope_sign():
    # Losses: member 2 falls fastest and is protected; member 3 is flat.
    reports = [report(0, 0.1, (0.1, 0.1, 0.1)), report(1, 0.2, (0.2, 0.2, 0.2)),
               report(2, 0.9, (1.5, 1.2, 0.9)), report(3, 0.5, (0.5, 0.5, 0.5))]
    r = rank(reports, "min", np.random.default_rng(0))
    sel = FireSelection(fraction=0.5, quantile=0.5)
    assert sel.choose_parent(2, r, "min", np.random.default_rng(0)) is None
    assert sel.choose_parent(3, r, "min", np.random.default_rng(0)).member_id == 2


def test_policy_accepts_fire_by_name_and_the_callback_keeps_history():
    policy = PBTPolicy({"lr": LogUniform(1e-4, 1.0)}, selection="fire", seed=0)
    assert isinstance(policy.selection, FireSelection)
    assert policy.history_length == 3
    d = policy.decide(3, population(), 4, np.random.default_rng(0))
    assert d.action == "exploit" and d.parent in (0, 4)


@pytest.mark.parametrize("kwargs,name", [
    ({"fraction": 0}, "fraction"), ({"fraction": 1.0}, "fraction"), ({"fraction": "a"}, "fraction"),
    ({"quantile": 0.7}, "quantile"), ({"window": 1}, "window"),
])
def test_errors(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=re.escape(f"{name}=")):
        FireSelection(**kwargs)
