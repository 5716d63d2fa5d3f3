"""The final model and what it is: `choose_member`, `Population.choose` and `PBTTuner.choose`."""

import math

import numpy as np
import pytest

import keras_pbt
from keras_pbt.core.final import FinalChoice
from keras_pbt.core.final import choose_member
from tests.pbt_helpers import blobs
from tests.test_population import SPACE
from tests.test_population import XV
from tests.test_population import YV
from tests.test_population import X
from tests.test_population import Y
from tests.test_population import build

NAN = math.nan

# --- choose_member -----------------------------------------------------------------


@pytest.mark.parametrize("scores,mode,losses,expected", [
    ({0: 0.9, 1: 0.95, 2: 0.8}, "max", None, 1),
    ({0: 0.9, 1: 0.9, 2: 0.8}, "max", None, 0),  # equal, no loss: member order
    ({0: 0.9, 1: 0.9, 2: 0.8}, "max", {0: 0.4, 1: 0.3, 2: 0.1}, 1),  # equal: lower loss
    ({0: 0.9, 1: 0.9}, "max", {0: NAN, 1: 0.5}, 1),  # a known loss before an unknown one
    ({0: 0.9, 1: 0.9}, "max", {1: 0.5}, 1),
    ({0: 0.2, 1: 0.1, 2: 0.1}, "min", {1: 0.7, 2: 0.6}, 2),
    ({0: NAN, 1: 0.1}, "max", None, 1),  # non-finite scores last, whatever the mode
    ({0: math.inf, 1: 0.1}, "max", None, 1),
    ({0: -math.inf, 1: 5.0}, "min", None, 1),
    ({0: None, 1: 0.1}, "max", None, 1),  # None: not ranked
    ({10: 0.5, 2: 0.5, "a": 0.5}, "max", None, 2),  # member order: integers by value
    ({0: NAN, 1: NAN}, "max", {1: 0.1}, 1),
])
def test_choose_member(scores, mode, losses, expected):
    assert choose_member(scores, mode, losses) == expected


def test_choose_member_errors():
    with pytest.raises(ValueError, match="No member has a score"):
        choose_member({0: None}, "max")
    with pytest.raises(ValueError, match="Received: mode='auto'"):
        choose_member({0: 0.1}, "auto")


def test_a_better_score_beats_any_loss():
    assert choose_member({0: 0.91, 1: 0.9}, "max", {0: 9.0, 1: 0.0}) == 0


# --- Population.choose ----------------------------------------------------------------

XS, YS = blobs(120, seed=2)


@pytest.fixture(scope="module")
def population():
    pop = keras_pbt.Population(build, SPACE, population_size=4, seed=3,
                               interval=1, policy=keras_pbt.Policy(quantile=0.25))
    pop.fit(X, Y, validation_data=(XV, YV), epochs=4, batch_size=32, verbose=0)
    return pop


def test_choose_on_a_selection_split_names_the_member_it_chose(population):
    pop = population
    final = pop.choose(validation_data=(XS, YS))
    assert isinstance(final, FinalChoice) and final.split == "validation_data"
    evaluated = pop.evaluate(XS, YS)
    scores = {m: s["accuracy"] for m, s in evaluated.items()}
    losses = {m: s["loss"] for m, s in evaluated.items()}
    top = max(scores.values())
    expected = min((m for m in scores if scores[m] == top), key=lambda m: (losses[m], m))
    assert final.member_id == expected
    member = next(m for m in pop.members if m.member_id == expected)
    assert final.model is member.model and final.hparams == member.hparams
    assert final.metric == "accuracy" and final.score == pytest.approx(top)
    assert final.loss == pytest.approx(losses[expected])
    assert final.scores == pytest.approx(scores)
    assert list(final.schedule) == keras_pbt.ancestry_schedule(pop.lineage, expected)
    assert final.schedule[0][0] == 0
    assert pop.best_model(validation_data=(XS, YS)) is final.model
    assert "on validation_data" in repr(final)


def test_equal_scores_on_the_selection_split_go_to_the_lower_loss(population):
    pop = population
    # One example: every member is right or wrong on it, so scores tie.
    right_on = {m.member_id: np.argmax(np.asarray(m.model(XS, training=False)), -1) == YS
                for m in pop.members}
    i = next((i for i in range(len(XS)) if sum(r[i] for r in right_on.values()) >= 2), None)
    assert i is not None, "no example that two members both classify right"
    x1, y1 = XS[i:i + 1], YS[i:i + 1]
    evaluated = pop.evaluate(x1, y1)
    right = [m for m, s in evaluated.items() if s["accuracy"] == 1.0]
    assert len(right) >= 2
    final = pop.choose(validation_data=(x1, y1))
    assert final.member_id in right
    assert final.member_id == min(right, key=lambda m: evaluated[m]["loss"])
    # A member-id tie-break would pick the first of them, whatever its loss.
    assert final.loss == pytest.approx(min(evaluated[m]["loss"] for m in right))


def test_choose_without_a_split_is_the_best_member_at_the_last_boundary(population):
    pop = population
    final = pop.choose()
    assert final.member_id == pop.best_member.member_id and final.model is pop.best_member.model
    assert final.split == "last boundary" and final.metric == "val_accuracy"
    assert final.score == pop.best_member.last_metric
    assert pop.best_model() is final.model


# --- PBTTuner.choose -----------------------------------------------------------------


def test_the_tuner_offers_the_same_choice(tmp_path):
    import keras

    def build_hp(hp):
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(3)])
        model.compile(keras.optimizers.SGD(hp.Float("learning_rate", 1e-3, 0.5, sampling="log"),
                                           momentum=0.5),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model

    tuner = keras_pbt.PBTTuner(build_hp, objective="val_accuracy", population_size=3,
                               interval=1, seed=0,
                               directory=str(tmp_path), project_name="choose")
    tuner.search(X, Y, validation_data=(XV, YV), epochs=2, verbose=0)
    final = tuner.choose(validation_data=(XS, YS))
    assert final.split == "validation_data" and final.metric == "accuracy"
    assert set(final.scores) == {0, 1, 2}
    for member, score in final.scores.items():
        trial = next(t for t in tuner.oracle.get_best_trials(len(tuner.oracle.trials))
                     if t.hyperparameters.values["pbt/member"] == member)
        _, acc = tuner.load_model(trial).evaluate(XS, YS, verbose=0)
        assert score == pytest.approx(acc, abs=1e-6)
    assert final.score == max(final.scores.values())
    _, acc = final.model.evaluate(XS, YS, verbose=0)
    assert acc == pytest.approx(final.score, abs=1e-6)
    assert final.schedule and final.schedule[0][0] == 0
    assert set(final.hparams) == {"learning_rate"}
    at_end = tuner.choose()
    assert at_end.split == "last boundary"
    assert at_end.member_id == tuner.oracle.get_best_trials(1)[0].hyperparameters.values[
        "pbt/member"]
    assert np.isfinite(at_end.score)
