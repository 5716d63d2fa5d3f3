"""One name for one thing: `Population(population_size=)` as `PBTTuner` and
`PBTOracle` spell it, `member_id` on every door, and `verbose` on `fit` as in Keras."""

import inspect

import keras
import pytest

import keras_pbt
from tests.pbt_helpers import X1
from tests.pbt_helpers import Y1
from tests.pbt_helpers import one_weight_model

SPACE = {"learning_rate": keras_pbt.LogUniform(1e-3, 1.0)}
KW = dict(monitor="loss", mode="min", seed=0, devices=keras_pbt.Devices(num_cpu=2))


def _build(hp):
    return one_weight_model(keras.optimizers.SGD(hp["learning_rate"]))


def test_population_size_is_the_only_spelling():
    pop = keras_pbt.Population(_build, SPACE, population_size=3, **KW)
    assert pop.population_size == 3 == len(pop.members)
    assert not hasattr(pop, "size")
    positional = keras_pbt.Population(_build, SPACE, 2, **KW)
    assert positional.population_size == 2 == len(positional.members)
    with pytest.raises(TypeError, match="size"):
        keras_pbt.Population(_build, SPACE, size=3, **KW)
    with pytest.raises(ValueError, match=r"Received: population_size=1"):
        keras_pbt.Population(_build, SPACE, population_size=1, **KW)
    assert list(inspect.signature(keras_pbt.population.devices.assign_devices).parameters)[0] == (
        "population_size")


def test_the_front_doors_share_their_names():
    doors = [keras_pbt.PBTCallback, keras_pbt.Population, keras_pbt.PBTOracle, keras_pbt.PBTTuner]
    params = [set(inspect.signature(d.__init__).parameters) for d in doors]
    for name in ("interval", "policy"):
        assert all(name in p for p in params), name
    assert "initial_hparams" in params[0] & params[1] and "member_id" in params[0]
    for old in ("hparams", "interval_epochs", "interval_steps", "burn_in", "sync_timeout",
                "on_timeout", "devices_per_member", "num_cpu_devices", "size", "quantile"):
        assert all(old not in p for p in params), old
    pop = keras_pbt.Population(_build, SPACE, population_size=2, member_ids=["a", "b"], **KW)
    member = pop.members[0]
    assert member.member_id == member.callback.member_id == "a" and not hasattr(member, "id")


def test_member_ids_count_is_checked_against_population_size():
    with pytest.raises(ValueError, match=r"`population_size`=2 entries. Received: member_ids=\[7\]"):
        keras_pbt.Population(_build, SPACE, population_size=2, member_ids=[7], **KW)


def test_verbose_is_fits_as_in_keras(capsys):
    assert "verbose" not in inspect.signature(keras_pbt.Population.__init__).parameters
    pop = keras_pbt.Population(_build, SPACE, population_size=2, **KW)
    pop.fit(X1, Y1, epochs=1, batch_size=4, verbose=0)
    assert capsys.readouterr().out == ""
    pop.fit(X1, Y1, epochs=1, batch_size=4, verbose=2)
    out = capsys.readouterr().out
    assert out.count("member    ") == 2 and "PBT done in " in out
    pop.fit(X1, Y1, epochs=1, batch_size=4)  # verbose="auto" (1), as Keras' fit
    assert "PBT done in " in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"Received: verbose=True"):
        pop.fit(X1, Y1, epochs=1, verbose=True)
