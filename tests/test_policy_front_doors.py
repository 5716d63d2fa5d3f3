"""`policy=keras_pbt.Policy(...)` through each front door, on real tiny models:
the callback, the population, the oracle and the tuner follow its settings."""

import keras
import keras_tuner as kt
import pytest

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
    store = keras_pbt.InMemoryStore(seed=0)
    policy = keras_pbt.Policy(quantile=0.5, factors=(2.0,), resample_probability=0.0,
                              copy_optimizer_state=copy)
    models, jobs = [], []
    for i, lr in enumerate([0.1, 0.001]):  # member 1 learns slowly: it loses
        model = one_weight_model(keras.optimizers.SGD(lr))
        cb = keras_pbt.PBTCallback(store, i, SPACE, monitor="loss", mode="min", policy=policy,
                                   synchronous=True, hparams={"learning_rate": lr})
        assert cb.policy_config is policy and cb.copy_optimizer_state is copy
        models.append(model)
        jobs.append((model, dict(x=X1, y=Y1, epochs=2, batch_size=2, verbose=0, callbacks=[cb])))
    assert fit_in_threads(jobs) == [None, None]
    (exploit,) = _exploits(store.lineage())
    assert (exploit.member_id, exploit.parent, exploit.ops) == (1, 0, {"learning_rate": "* 2"})
    assert exploit.hparams["learning_rate"] == pytest.approx(0.2)
    assert float(models[1].optimizer.learning_rate.numpy()) == pytest.approx(0.2)
    # Four steps per epoch: the copied optimizer counts both epochs; a reset one the last.
    assert int(models[1].optimizer.iterations.numpy()) == (8 if copy else 4)


def test_callback_refuses_a_keyword_that_contradicts_the_policy():
    with pytest.raises(ValueError, match=r"`quantile` is given both.*quantile=0.3"):
        keras_pbt.PBTCallback(keras_pbt.InMemoryStore(seed=0), 0, SPACE, monitor="loss",
                              quantile=0.3, policy=DOUBLE)


def _build(hp):
    return one_weight_model(keras.optimizers.SGD(hp["learning_rate"]))


def test_population_follows_the_policy_object():
    pop = keras_pbt.Population(_build, SPACE, population_size=2, monitor="loss", mode="min", seed=0,
                               policy=DOUBLE, initial_hparams=[{"learning_rate": 0.1},
                                                               {"learning_rate": 0.001}],
                               num_cpu_devices=2, verbose=0)
    assert pop.policy_config is DOUBLE
    assert all(m.callback.policy_config is DOUBLE for m in pop.members)
    pop.fit(X1, Y1, epochs=2, batch_size=2)
    (exploit,) = _exploits(pop.lineage)
    assert (exploit.member_id, exploit.parent) == (1, 0)
    assert exploit.hparams["learning_rate"] == pytest.approx(0.2)


def test_population_refuses_a_contradicting_keyword_before_building():
    built = []
    with pytest.raises(ValueError, match=r"`factors` is given both.*factors=\(3.0,\)"):
        keras_pbt.Population(lambda hp: built.append(hp), SPACE, population_size=2, factors=(3.0,),
                             policy=DOUBLE)
    assert built == []


def _oracle_hps():
    hps = kt.HyperParameters()
    hps.Float("learning_rate", 1e-3, 1.0, sampling="log")
    return hps


def test_oracle_decides_with_the_policy_object():
    oracle = keras_pbt.PBTOracle(objective=kt.Objective("loss", "min"), population_size=4,
                                 max_epochs=2, policy=DOUBLE, hyperparameters=_oracle_hps(),
                                 seed=1)
    assert oracle.policy_config is DOUBLE
    engine = oracle.policy()
    assert engine.config is DOUBLE and engine.selection.quantile == 0.5
    assert engine.explorer.factors == (2.0,) and engine.explorer.resample_probability == 0.0


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
                               max_epochs=2, policy=DOUBLE, seed=0, directory=str(tmp_path),
                               project_name="policy")
    assert tuner.policy_config is DOUBLE
    with pytest.raises(ValueError, match=r"`quantile` is given both"):
        keras_pbt.PBTTuner(build, objective="loss", quantile=0.2, policy=DOUBLE,
                           directory=str(tmp_path), project_name="other")
    tuner.search(X1, Y1, batch_size=2, verbose=0)
    lineage = tuner.oracle.lineage()
    initial = _initial(lineage)
    exploits = _exploits(lineage)
    assert len(exploits) == 1  # 2 members, 1 decision each: the worse one copies
    (e,) = exploits
    assert e.ops == {"learning_rate": "* 2"}
    assert e.hparams["learning_rate"] == pytest.approx(
        min(2 * initial[e.parent]["learning_rate"], 1.0))
