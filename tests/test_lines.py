"""Kept diversity (keras_pbt.core.lines): the last member of a line, and members' roots."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_pbt
from keras_pbt.core.lines import KeepLines
from keras_pbt.core.lines import lines_alive
from keras_pbt.core.noise import FixedMargin
from keras_pbt.core.noise import StandardError
from keras_pbt.core.policy import PBTPolicy
from keras_pbt.core.selection import Report
from keras_pbt.core.space import LogUniform
from tests.test_population import SPACE as POP_SPACE
from tests.test_population import XV
from tests.test_population import YV
from tests.test_population import X
from tests.test_population import Y
from tests.test_population import build

SPACE = {"lr": LogUniform(1e-4, 1e-1)}


def rep(member, metric, root):
    return Report(member, 10, metric, {"lr": 0.01}, root=root)


def test_protects_only_the_last_member_of_a_line_when_few_are_alive():
    two_lines = [rep(0, 0.95, 0), rep(1, 0.94, 0), rep(2, 0.90, 2)]
    lines = KeepLines(margin=0.1)
    assert lines.protects(two_lines[2], two_lines)
    assert not lines.protects(two_lines[1], two_lines)  # its line has two members
    three_lines = two_lines + [rep(3, 0.8, 3)]
    assert not lines.protects(three_lines[2], three_lines)  # 3 lines > min_lines
    assert KeepLines(min_lines=3).protects(three_lines[2], three_lines)
    unknown = [rep(0, 0.95, 0), rep(1, 0.9, None)]
    assert not lines.protects(unknown[1], unknown)


@pytest.mark.parametrize("margin,allowed", [(0.1, set()), (0.04, {0}), (0.01, {0, 1, 3})])
def test_a_protected_member_copies_only_a_parent_beyond_the_protection(margin, allowed):
    reports = [rep(0, 0.95, 0), rep(1, 0.94, 0), rep(2, 0.90, 2), rep(3, 0.92, 0)]
    assert KeepLines(margin=margin).parents(reports[2], reports, "max") == allowed


def test_keep_lines_defaults_and_errors():
    assert KeepLines().margin == StandardError(3.0)
    assert KeepLines(margin=0.02).margin == FixedMargin(0.02)
    assert KeepLines() == KeepLines(2, StandardError(3.0))
    with pytest.raises(ValueError, match="Received: min_lines=1"):
        KeepLines(min_lines=1)
    with pytest.raises(ValueError, match="Received: lines=2"):
        keras_pbt.Policy(lines=2)


def test_lines_alive():
    assert lines_alive([rep(0, 0.9, 0), rep(1, 0.9, 0), rep(2, 0.9, 2)]) == 2
    assert lines_alive([rep(0, 0.9, None), rep(1, 0.9, None)]) == 2


def test_the_policy_keeps_the_last_line_and_says_why():
    reports = [rep(0, 0.95, 0), rep(1, 0.94, 0), rep(2, 0.90, 2), rep(3, 0.93, 0)]
    plain = PBTPolicy(SPACE, "max", seed=0)
    assert plain.decide(2, reports, 1, np.random.default_rng(0)).parent == 0
    kept = PBTPolicy(SPACE, "max", seed=0, lines=KeepLines(margin=0.1))
    d = kept.decide(2, reports, 1, np.random.default_rng(0))
    assert d.action == "keep" and d.reason.startswith("the last of its line (KeepLines(")
    far = [rep(0, 0.95, 0), rep(1, 0.94, 0), rep(2, 0.5, 2), rep(3, 0.93, 0)]
    assert kept.decide(2, far, 1, np.random.default_rng(0)).parent == 0


@given(metrics=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=10),
       roots=st.lists(st.integers(0, 2), min_size=10, max_size=10), seed=st.integers(0, 500))
@settings(max_examples=200, deadline=None)
def test_with_keep_lines_the_lines_alive_never_fall_below_two_by_a_close_copy(metrics, roots,
                                                                             seed):
    reports = [rep(m, v, roots[m]) for m, v in enumerate(metrics)]
    lines = KeepLines(margin=0.2)
    policy = PBTPolicy(SPACE, "max", seed=seed, quantile=0.5, lines=lines)
    alive = lines_alive(reports)
    for r in reports:
        d = policy.decide(r.member_id, reports, 1, np.random.default_rng(seed))
        if d.is_exploit and lines.protects(r, reports):
            parent = next(p for p in reports if p.member_id == d.parent)
            assert parent.metric - r.metric > 0.2
        if d.is_exploit and alive <= 2:
            parent = next(p for p in reports if p.member_id == d.parent)
            # A copy that ends a line (the last of it copies another line) is far better.
            if sum(p.root == r.root for p in reports) == 1 and parent.root != r.root:
                assert parent.metric - r.metric > 0.2


def test_a_members_root_follows_its_copies_and_its_state():
    pop = keras_pbt.Population(build, POP_SPACE, population_size=4, seed=1,
                               interval=1, policy=keras_pbt.Policy(quantile=0.5))
    pop.fit(X, Y, validation_data=(XV, YV), epochs=4, batch_size=32, verbose=0)
    roots = {m: m for m in range(4)}
    by_interval = {}
    for r in pop.lineage:
        if r.interval:
            by_interval.setdefault(r.interval, []).append(r)
    for k in sorted(by_interval):
        old = dict(roots)
        for r in by_interval[k]:
            if r.action == "exploit":
                roots[r.member_id] = old[r.parent]
    assert any(r.action == "exploit" for r in pop.lineage)
    reports = {m: rs[-1] for m, rs in pop.store.histories().items()}
    # The last reports were made before the last boundary's decisions.
    last = {m: old[m] for m in range(4)}
    assert {m: r.root for m, r in reports.items()} == last
    assert {m.member_id: m.callback.state.root for m in pop.members} == roots
    state = pop.members[0].callback.get_state()
    assert state["root"] == roots[0]
    pop.members[0].callback.set_state(dict(state, root="x"))
    assert pop.members[0].callback.state.root == "x"
