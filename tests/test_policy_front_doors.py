"""`policy=keras_pbt.Policy(...)` through each front door, on real tiny models:
the callback, the population, the oracle and the tuner follow its settings."""

import keras
import keras_tuner as kt
import pytest
from keras_tuner.engine.base_tuner import BaseTuner

import keras_pbt
from tests.pbt_helpers import X1
from tests.pbt_helpers import Y1
from tests.pbt_helpers import fit_in_threads
from tests.pbt_helpers import one_weight_model

SPACE = {"learning_rate": keras_pbt.LogUniform(1e-3, 1.0)}
# The worse member copies the better one and doubles its learning rate.
DOUBLE = keras_pbt.Policy(quantile=0.5, factors=(2.0,), resample_probability=0.0)


def _exploits(lineage):
    return [r for r in lineage if r.action == "exploit"]


def _initial(lineage):
    return {r.member_id: r.hparams for r in lineage if r.action == "init"}


@pytest.mark.parametrize("copy", [True, False])
def test_callback_follows_the_policy_object(copy):
    store = keras_pbt.InMemoryStore(seed=0, synchronous=True)
    policy = keras_pbt.Policy(quantile=0.5, factors=(2.0,), resample_probability=0.0,
                              copy_optimizer_state=copy)
    models, jobs = [], []
    for i, lr in enumerate([0.1, 0.001]):  # member 1 learns slowly: it loses
        model = one_weight_model(keras.optimizers.SGD(lr))
        cb = keras_pbt.PBTCallback(store, i, SPACE, monitor="loss", mode="min", policy=policy,
                                   initial_hparams={"learning_rate": lr})
        # `cb.policy` is the settings given; `cb.engine` decides with them.
        assert cb.policy is policy and cb.engine.config is policy
        models.append(model)
        jobs.append((model, dict(x=X1, y=Y1, epochs=2, batch_size=2, verbose=0, callbacks=[cb])))
    assert fit_in_threads(jobs) == [None, None]
    (exploit,) = _exploits(store.lineage())
    assert (exploit.member_id, exploit.parent, exploit.ops) == (1, 0, {"learning_rate": "* 2"})
    assert exploit.hparams["learning_rate"] == pytest.approx(0.2)
    assert float(models[1].optimizer.learning_rate.numpy()) == pytest.approx(0.2)
    # Four steps per epoch: the copied optimizer counts both epochs; a reset one the last.
    assert int(models[1].optimizer.iterations.numpy()) == (8 if copy else 4)


OLD_KEYWORDS = ("quantile", "selection", "factors", "resample_probability", "explore_fn",
                "ranking", "explore", "copy_optimizer_state")


@pytest.mark.parametrize("keyword", OLD_KEYWORDS)
def test_policy_fields_are_not_keywords_of_any_front_door(keyword, tmp_path):
    # One way to give a policy setting: keras_pbt.Policy(...).
    with pytest.raises(TypeError, match=keyword):
        keras_pbt.PBTCallback(keras_pbt.InMemoryStore(seed=0), 0, SPACE, monitor="loss",
                              **{keyword: 0.25})
    built = []
    with pytest.raises(TypeError, match=keyword):
        keras_pbt.Population(lambda hp: built.append(hp), SPACE, population_size=2,
                             **{keyword: 0.25})
    assert built == []
    with pytest.raises(TypeError, match=keyword):
        keras_pbt.PBTOracle(objective="loss", **{keyword: 0.25})
    with pytest.raises(TypeError, match=keyword):
        keras_pbt.PBTTuner(_build, objective="loss", directory=str(tmp_path), **{keyword: 0.25})


def _build(hp):
    return one_weight_model(keras.optimizers.SGD(hp["learning_rate"]))


def test_population_follows_the_policy_object():
    pop = keras_pbt.Population(_build, SPACE, population_size=2, monitor="loss", mode="min", seed=0,
                               policy=DOUBLE, initial_hparams=[{"learning_rate": 0.1},
                                                               {"learning_rate": 0.001}],
                               devices=keras_pbt.Devices(num_cpu=2))
    assert pop.policy is DOUBLE
    assert all(m.callback.policy is DOUBLE for m in pop.members)
    pop.fit(X1, Y1, epochs=2, batch_size=2, verbose=0)
    (exploit,) = _exploits(pop.lineage)
    assert (exploit.member_id, exploit.parent) == (1, 0)
    assert exploit.hparams["learning_rate"] == pytest.approx(0.2)


def _oracle_hps():
    hps = kt.HyperParameters()
    hps.Float("learning_rate", 1e-3, 1.0, sampling="log")
    return hps


def test_oracle_decides_with_the_policy_object(tmp_path):
    oracle = keras_pbt.PBTOracle(objective=kt.Objective("loss", "min"), population_size=4,
                                 max_epochs=2, policy=DOUBLE, hyperparameters=_oracle_hps(),
                                 seed=1)
    BaseTuner(oracle=oracle, directory=str(tmp_path), project_name="p")
    oracle.verbose = 0
    assert oracle.policy is DOUBLE and oracle.engine.config is DOUBLE
    first = [oracle.create_trial(f"w{i}") for i in range(4)]
    initial = {t.hyperparameters.values["pbt/member"]: t.hyperparameters.values["learning_rate"]
               for t in first}
    for t in first:  # the loss is the member id: members 2 and 3 are the losing half
        m = t.hyperparameters.values["pbt/member"]
        oracle.update_trial(t.trial_id, {"loss": float(m)}, step=10)
        t.status = "COMPLETED"
        oracle.end_trial(t)
    second = {t.hyperparameters.values["pbt/member"]: t.hyperparameters.values
              for t in (oracle.create_trial(f"w{i}") for i in range(4))}
    # quantile=0.5: the two worst copy one of the two best and double its
    # learning rate (factors=(2.0,), never resampled); the best two keep theirs.
    for m in (0, 1):
        assert second[m]["pbt/action"] == "keep"
        assert second[m]["learning_rate"] == initial[m]
    for m in (2, 3):
        values = second[m]
        parent = oracle.trials[values["pbt/parent_trial"]].hyperparameters.values["pbt/member"]
        assert values["pbt/action"] == "exploit" and parent in (0, 1)
        assert values["learning_rate"] == pytest.approx(min(2 * initial[parent], 1.0))


@pytest.mark.parametrize("policy,received", [
    (keras_pbt.Policy(ranking="mean"), "ranking='mean'"),
    (keras_pbt.Policy(explore="pb2"), "explore='pb2'"),
    (keras_pbt.Policy(copy_optimizer_state=False), "copy_optimizer_state=False"),
])
def test_oracle_refuses_what_it_cannot_follow(policy, received):
    with pytest.raises(ValueError, match=f"does not support.*Received: {received}"):
        keras_pbt.PBTOracle(objective="val_accuracy", policy=policy)


def test_tuner_searches_with_the_policy_object(tmp_path):
    def build(hp):
        return one_weight_model(keras.optimizers.SGD(
            hp.Float("learning_rate", 1e-3, 1.0, sampling="log")))

    tuner = keras_pbt.PBTTuner(build, objective=kt.Objective("loss", "min"), population_size=2,
                               policy=DOUBLE, seed=0, directory=str(tmp_path),
                               project_name="policy")
    assert tuner.policy is DOUBLE
    tuner.search(X1, Y1, batch_size=2, epochs=2, verbose=0)
    lineage = tuner.oracle.lineage()
    initial = _initial(lineage)
    exploits = _exploits(lineage)
    assert len(exploits) == 1  # 2 members, 1 decision each: the worse one copies
    (e,) = exploits
    assert e.ops == {"learning_rate": "* 2"}
    assert e.hparams["learning_rate"] == pytest.approx(
        min(2 * initial[e.parent]["learning_rate"], 1.0))
