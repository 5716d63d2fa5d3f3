"""One name for one thing: `Population(population_size=)` as `PBTTuner` and
`PBTOracle` spell it (`size=` a deprecated alias), and `verbose` on `fit` as in Keras."""

import warnings

import keras
import pytest

import keras_pbt
from tests.pbt_helpers import X1
from tests.pbt_helpers import Y1
from tests.pbt_helpers import one_weight_model

SPACE = {"learning_rate": keras_pbt.LogUniform(1e-3, 1.0)}
KW = dict(monitor="loss", mode="min", seed=0, num_cpu_devices=2)


def _build(hp):
    return one_weight_model(keras.optimizers.SGD(hp["learning_rate"]))


def _size_warnings(record):
    return [w for w in record if issubclass(w.category, DeprecationWarning)
            and "size" in str(w.message)]


def test_population_size_is_the_documented_name_and_warns_nothing():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pop = keras_pbt.Population(_build, SPACE, population_size=3, verbose=0, **KW)
    assert _size_warnings(record) == []
    assert pop.population_size == 3 == len(pop.members) == pop.size
    positional = keras_pbt.Population(_build, SPACE, 2, verbose=0, **KW)
    assert positional.population_size == 2 == len(positional.members)


def test_size_still_works_and_warns_naming_the_new_spelling():
    with pytest.warns(DeprecationWarning, match=r"use `population_size=`") as record:
        pop = keras_pbt.Population(_build, SPACE, size=3, verbose=0, **KW)
    assert len(_size_warnings(record)) == 1
    assert record[0].filename == __file__  # points at the caller's line
    assert pop.population_size == 3 == len(pop.members)


def test_size_and_population_size_that_differ_are_refused():
    with pytest.warns(DeprecationWarning):
        with pytest.raises(ValueError, match=r"Received: population_size=4, size=3"):
            keras_pbt.Population(_build, SPACE, population_size=4, size=3, **KW)
    with pytest.raises(ValueError, match=r"Received: population_size=1"):
        keras_pbt.Population(_build, SPACE, population_size=1, **KW)


def test_member_ids_count_is_checked_against_population_size():
    with pytest.raises(ValueError, match=r"`population_size`=2 entries. Received: member_ids=\[7\]"):
        keras_pbt.Population(_build, SPACE, population_size=2, member_ids=[7], **KW)


def test_verbose_on_fit_overrides_the_population_for_that_call(capsys):
    pop = keras_pbt.Population(_build, SPACE, population_size=2, verbose=1, **KW)
    pop.fit(X1, Y1, epochs=1, batch_size=4, verbose=0)
    assert capsys.readouterr().out == ""
    pop.fit(X1, Y1, epochs=1, batch_size=4, verbose=2)
    out = capsys.readouterr().out
    assert out.count("member    ") == 2 and "PBT done in " in out
    pop.fit(X1, Y1, epochs=1, batch_size=4)  # the population's verbose=1 again
    assert "PBT done in " in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"Received: verbose=True"):
        pop.fit(X1, Y1, epochs=1, verbose=True)
