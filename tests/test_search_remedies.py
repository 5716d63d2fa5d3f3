"""The search-quality options in a real population: an unbiased final choice,
a smoothed ranking, FIRE-style selection and PB2 explore (tiny models, four
logical CPU devices)."""

import re

import numpy as np
import pytest

import keras_pbt
from tests.pbt_helpers import blobs
from tests.test_population import SPACE
from tests.test_population import XV
from tests.test_population import YV
from tests.test_population import X
from tests.test_population import Y
from tests.test_population import build

XS, YS = blobs(120, seed=2)


def test_best_model_on_a_selection_split_is_the_best_member_there():
    pop = keras_pbt.Population(build, SPACE, population_size=4, seed=3)
    pop.fit(X, Y, validation_data=(XV, YV), epochs=3, batch_size=32)
    scores = pop.evaluate(XS, YS)
    assert set(scores) == {0, 1, 2, 3}
    for mid, s in scores.items():
        model = pop.members[mid].model
        logits = np.asarray(model(XS, training=False))
        assert s["accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == YS), abs=1e-6)
    acc = {mid: s["accuracy"] for mid, s in scores.items()}
    best = max(acc, key=lambda k: (acc[k], -k))  # ties: the first id
    assert pop.best_model(validation_data=(XS, YS)) is pop.members[best].model
    # Without it, the choice is still the last ranked report.
    assert pop.best_model() is pop.best_member.model


def test_best_model_validation_data_errors():
    pop = keras_pbt.Population(build, SPACE, population_size=2, seed=0)
    pop.fit(X, Y, validation_data=(XV, YV), epochs=1, batch_size=32)
    with pytest.raises(ValueError, match=re.escape("Received: validation_data of type ndarray")):
        pop.best_model(validation_data=XS)
    loss_pop = keras_pbt.Population(build, SPACE, population_size=2, seed=0, monitor="val_auc",
                                    mode="max")
    with pytest.raises(ValueError, match=r"needs the metric 'auc' from evaluate, which returned "
                                         r"\['accuracy', 'loss'\]"):
        loss_pop.best_model(validation_data=(XS, YS))


def test_reports_carry_start_metric_and_recent_steps():
    pop = keras_pbt.Population(build, SPACE, population_size=4, seed=0, policy=keras_pbt.Policy(ranking="mean", quantile=0.25))
    pop.fit(X, Y, validation_data=(XV, YV), epochs=5, batch_size=32)
    lineage = pop.lineage
    for mid, reports in pop.store.histories().items():
        assert reports[0].start_metric is None
        records = [r for r in lineage if r.member_id == mid and r.action != "init"]
        for prev_record, report in zip(records, reports[1:]):
            # The interval started from this member's own weights (keep) or
            # its parent's (exploit).
            expected = prev_record.parent_metric if prev_record.action == "exploit" else (
                prev_record.metric)
            assert report.start_metric == pytest.approx(expected)
        for report in reports:
            assert len(report.recent) == len(report.recent_steps) <= 3
            assert report.recent[-1] == report.metric and report.recent_steps[-1] == report.step
    assert any(r.action == "exploit" for r in lineage)


@pytest.mark.parametrize("policy,ops", [
    (keras_pbt.Policy(explore="pb2"), {"pb2", "resample (pb2: too little data)"}),
    (keras_pbt.Policy(selection="fire"), None),
])
def test_fire_and_pb2_populations_train_and_exploit(policy, ops):
    pop = keras_pbt.Population(build, SPACE, population_size=4, seed=2, policy=policy)
    pop.fit(X, Y, validation_data=(XV, YV), epochs=6, batch_size=32)
    exploits = [r for r in pop.lineage if r.action == "exploit"]
    assert exploits
    for r in exploits:
        for name, value in r.hparams.items():
            assert SPACE[name].clip(value) == value
    if ops is not None:
        seen = {op for r in exploits for op in r.ops.values()}
        assert seen <= ops and "pb2" in seen
    assert {m.callback.epochs for m in pop.members} == {6}
