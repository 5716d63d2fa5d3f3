"""Bad configurations fail before any training, naming the argument and the value."""

import math
import re

import keras
import numpy as np
import pytest

import keras_pbt
from keras_pbt.storage.store import ConfigurationError
from tests.test_population import SPACE, X, XV, Y, YV, build


def sgd_build(hp):
    return build(dict({"learning_rate": 0.01, "momentum": 0.5}, **hp))


def schedule_build(hp):
    model = build({"learning_rate": 0.01, "momentum": 0.0})
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.9)
    model.compile(keras.optimizers.SGD(schedule), "sparse_categorical_crossentropy")
    return model


def uncompiled_build(hp):
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])


LR = {"learning_rate": keras_pbt.LogUniform(1e-3, 0.5)}

# (id, thunk building the bad thing, exception type, text the message must hold)
CASES = [
    ("quantile above 0.5", lambda: dict(policy=keras_pbt.Policy(quantile=0.7)), ValueError,
     "quantile=0.7"),
    ("quantile zero", lambda: dict(policy=keras_pbt.Policy(quantile=0)), ValueError, "quantile=0"),
    ("negative factor", lambda: dict(policy=keras_pbt.Policy(factors=(0.8, -1.2))), ValueError,
     "factors=(0.8, -1.2)"),
    ("zero factor", lambda: dict(policy=keras_pbt.Policy(factors=(0.0, 1.2))), ValueError,
     "factors=(0.0, 1.2)"),
    ("infinite factor", lambda: dict(policy=keras_pbt.Policy(factors=(0.8, math.inf))), ValueError,
     "factors=(0.8, inf)"),
    ("policy not a Policy", lambda: dict(policy={"quantile": 0.25}), TypeError,
     "policy={'quantile': 0.25}"),
    ("empty space", lambda: dict(space={}), ValueError, "space={}"),
    ("space not a dict", lambda: dict(space=["learning_rate"]), TypeError, "space=['learning_rate']"),
    ("reversed bounds", lambda: dict(space={"momentum": keras_pbt.Uniform(0.9, 0.1)}), ValueError,
     "low=0.9, high=0.1"),
    ("equal bounds", lambda: dict(space={"momentum": keras_pbt.Uniform(0.5, 0.5)}), ValueError,
     "low=0.5, high=0.5"),
    ("non-finite bound", lambda: dict(space={"momentum": keras_pbt.Uniform(0.0, math.nan)}), ValueError,
     "high=nan"),
    ("log bound zero", lambda: dict(space={"learning_rate": keras_pbt.LogUniform(0.0, 0.1)}), ValueError,
     "low=0.0"),
    ("log bound negative", lambda: dict(space={"learning_rate": keras_pbt.LogUniform(-1.0, 0.1)}),
     ValueError, "low=-1.0"),
    ("empty choice", lambda: dict(space={"momentum": keras_pbt.Choice([])}), ValueError, "values=[]"),
    ("population of one", lambda: dict(population_size=1), ValueError, "size=1"),
    ("population size not an int", lambda: dict(population_size=2.5), ValueError, "size=2.5"),
    ("interval zero", lambda: dict(interval=0), ValueError, "interval=0"),
    ("interval a string", lambda: dict(interval="auto"), ValueError,
     "a positive int (decide every that many epochs), keras_pbt.Interval"),
    ("negative step interval", lambda: dict(interval=keras_pbt.Interval(steps=-5)), ValueError,
     "steps=-5"),
    ("both intervals", lambda: dict(interval=keras_pbt.Interval(epochs=1, steps=5)), ValueError,
     "epochs=1, steps=5"),
    ("negative burn-in", lambda: dict(interval=keras_pbt.Interval(burn_in=-1)), ValueError,
     "burn_in=-1"),
    ("duplicate member ids", lambda: dict(member_ids=["a", "a"]), ValueError, "member_ids=['a', 'a']"),
    ("member ids of the wrong count", lambda: dict(member_ids=[0, 1, 2]), ValueError,
     "member_ids=[0, 1, 2]"),
    ("hyperparameter the optimizer lacks", lambda: dict(space={"dropout": keras_pbt.Uniform(0.0, 0.5)},
                                                        build=sgd_build), ValueError, "'dropout'"),
    ("setter for a name not tuned", lambda: dict(setters={"dropout": lambda m, v: None}), ValueError,
     "setters"),
    ("setter that is not callable", lambda: dict(space={"dropout": keras_pbt.Uniform(0.0, 0.5)},
                                                 setters={"dropout": 5}, build=sgd_build), TypeError,
     "setters['dropout']"),
    ("learning-rate schedule where a float is needed", lambda: dict(space=LR, build=schedule_build),
     TypeError, "ExponentialDecay"),
    ("unknown mode", lambda: dict(mode="maximum"), ValueError, "mode='maximum'"),
    ("mode auto cannot tell", lambda: dict(monitor="val_foo"), ValueError, "val_foo"),
    ("empty monitor", lambda: dict(monitor=""), TypeError, "monitor=''"),
    ("unknown selection", lambda: dict(policy=keras_pbt.Policy(selection="best")), ValueError,
     "selection='best'"),
    ("resample probability above 1", lambda: dict(policy=keras_pbt.Policy(resample_probability=1.5)),
     ValueError, "resample_probability=1.5"),
    ("device that does not exist", lambda: dict(devices=["/gpu:7"]), ValueError, "'/gpu:7'"),
    ("devices not a list", lambda: dict(devices="/cpu:0"), TypeError, "devices='/cpu:0'"),
    ("no devices", lambda: dict(devices=[]), ValueError, "devices=[]"),
    ("zero devices per member", lambda: dict(devices=keras_pbt.Devices(per_member=0)), ValueError,
     "per_member=0"),
    ("negative max_failures", lambda: dict(max_failures=-1), ValueError, "max_failures=-1"),
    ("zero max_failures", lambda: dict(max_failures=0), ValueError, "max_failures=0"),
    ("negative seed", lambda: dict(seed=-1), ValueError, "seed=-1"),
    ("synchronous not a bool", lambda: dict(synchronous="yes"), TypeError, "synchronous='yes'"),
    ("build not callable", lambda: dict(build=None), TypeError, "build=None"),
    ("build returns an uncompiled model", lambda: dict(build=uncompiled_build), TypeError,
     "compiled keras.Model"),
    ("initial hparams with unknown names", lambda: dict(initial_hparams=[{"lr": 0.1}, {"lr": 0.1}]),
     ValueError, "initial_hparams[0]={'lr': 0.1}"),
    ("initial hparams of the wrong count", lambda: dict(initial_hparams=[{}]), ValueError,
     "initial_hparams=[{}]"),
    # Issue 13, bug 4: values outside the space were accepted silently.
    ("initial learning rate above the space", lambda: dict(
        space=LR, build=sgd_build, initial_hparams=[{"learning_rate": 0.01}, {"learning_rate": 5.0}]),
     ValueError, "initial_hparams[1]: learning_rate=5.0 is outside LogUniform(low=0.001, high=0.5)"),
    ("initial value not among the choices", lambda: dict(
        space={"momentum": keras_pbt.Choice([0.0, 0.9])}, build=sgd_build,
        initial_hparams=[{"momentum": 0.5}, {"momentum": 0.0}]),
     ValueError, "initial_hparams[0]: momentum=0.5 is outside Choice(values=[0.0, 0.9])"),
    ("initial value that is NaN", lambda: dict(
        space=LR, build=sgd_build, initial_hparams=[{"learning_rate": math.nan}, {"learning_rate": 0.1}]),
     ValueError, "initial_hparams[0]: learning_rate=nan"),
    # Issue 21, 7: TensorFlow's NotFoundError in a fresh process, ignored after it started.
    ("zero CPU devices", lambda: dict(devices=keras_pbt.Devices(num_cpu=0)), ValueError,
     "Received: num_cpu=0"),
    # Issue 21, 8: accepted, then explore failed in the middle of training.
    ("a choice of NaN", lambda: dict(space={"momentum": keras_pbt.Choice([0.5, math.nan])},
                                     build=sgd_build), ValueError, "Received: values=[0.5, nan]"),
]


@pytest.mark.parametrize("make, error, text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_configuration_fails_at_construction(make, error, text):
    kwargs = dict(population_size=2, seed=0, devices=["/cpu:0", "/cpu:1"])
    with pytest.raises(error) as info:
        kwargs.update(make())  # a bad space spec already fails here
        space = kwargs.pop("space", SPACE)
        fn = kwargs.pop("build", build)
        keras_pbt.Population(fn, space, **kwargs)
    assert text in str(info.value), str(info.value)


@pytest.mark.parametrize("kwargs, error, text", [
    (dict(timeout=0), ValueError, "Received: timeout=0"),
    (dict(timeout=math.inf), ValueError, "Received: timeout=inf"),
    (dict(on_timeout="ignore"), ValueError, "Received: on_timeout='ignore'"),
    (dict(synchronous=1), TypeError, "Received: synchronous=1"),
])
def test_bad_barrier_settings_fail_where_the_barrier_is(kwargs, error, text):
    # The store implements the synchronous barrier, so it holds its settings.
    with pytest.raises(error, match=re.escape(text)):
        keras_pbt.InMemoryStore(**kwargs)
    store = keras_pbt.InMemoryStore()
    if "timeout" in kwargs or "on_timeout" in kwargs:
        with pytest.raises(error, match=re.escape(text)):
            setattr(store, *next(iter(kwargs.items())))


FIT_CASES = [
    ("zero epochs", dict(epochs=0), ValueError, "epochs=0"),
    ("epochs not an int", dict(epochs=2.0), ValueError, "epochs=2.0"),
    ("validation split", dict(validation_split=0.2), ValueError, "validation_split=0.2"),
    ("verbose outside Keras' values", dict(verbose=3), ValueError, "Received: verbose=3"),
    ("callbacks not a list", dict(callbacks=5), TypeError, "5"),
    ("y with a dataset", dict(y=Y), ValueError, "`y` must be None"),
    # Issue 13, bug 2: a batch size of 0 trained anyway.
    ("zero batch size", dict(batch_size=0), ValueError, "Received: batch_size=0"),
    ("negative batch size", dict(batch_size=-32), ValueError, "Received: batch_size=-32"),
    ("batch size not an int", dict(batch_size=3.5), ValueError, "Received: batch_size=3.5"),
    ("zero steps per epoch", dict(steps_per_epoch=0), ValueError, "Received: steps_per_epoch=0"),
    ("zero validation steps", dict(validation_data=(XV, YV), validation_steps=0), ValueError,
     "Received: validation_steps=0"),
    ("zero shuffle buffer", dict(shuffle_buffer=0), ValueError, "Received: shuffle_buffer=0"),
    ("no x", dict(x=None), ValueError, "Received: x=None"),
    ("bad validation data", dict(validation_data=XV), ValueError, "validation_data"),
    ("unknown fit argument", dict(validation_frequency=2), TypeError,
     "Received: validation_frequency=2"),
    ("sample weights with arrays", dict(sample_weight=np.ones(len(Y))), ValueError, "sample_weight"),
    # Issue 21, 1: 24 batches trained, then three restarts and "None values not supported".
    ("validation data without targets", dict(validation_data=(XV,)), ValueError,
     "Received: validation_data=(array of shape (90, 8))"),
    # Issue 21, 2: refused only after the first epoch (the monitor is val_accuracy).
    ("a validation monitor without validation data", dict(), ValueError,
     "Received: validation_data=None"),
    # Issue 21, 3: TensorFlow's "Dimensions 240 and 200 are not compatible", naming neither.
    ("x and y of different lengths", dict(y=Y[:200], validation_data=(XV, YV)), ValueError,
     "`x` has 240, `y` has 200. Received: x.shape=(240, 8), y.shape=(200,)"),
    ("validation x and y of different lengths", dict(validation_data=(XV, YV[:50])), ValueError,
     "`validation x` has 90, `validation y` has 50"),
    ("targets missing", dict(y=None, validation_data=(XV, YV)), ValueError, "Received: y=None"),
]


@pytest.fixture(scope="module")
def population():
    return keras_pbt.Population(build, SPACE, population_size=2, seed=0, devices=["/cpu:0", "/cpu:1"])


@pytest.mark.parametrize("kwargs, error, text", [c[1:] for c in FIT_CASES], ids=[c[0] for c in FIT_CASES])
def test_bad_fit_arguments_fail_before_training(population, kwargs, error, text):
    import tensorflow as tf

    args = dict(x=X, y=Y, epochs=1)
    if kwargs.get("y") is Y:  # the case of `y` beside a dataset
        args["x"] = tf.data.Dataset.from_tensor_slices((X, Y)).batch(32)
    args.update(kwargs)
    with pytest.raises(error) as info:
        population.fit(**args)
    assert text in str(info.value)
    assert all(m.callback.steps == 0 for m in population.members), "nothing trained"


def test_missing_monitor_stops_the_population_listing_the_keys():
    # (A val_ metric without validation_data is refused before training: FIT_CASES.)
    pop = keras_pbt.Population(build, SPACE, population_size=3, seed=0, monitor="val_f1",
                               mode="max", devices=["/cpu:0", "/cpu:1"])
    with pytest.raises(ConfigurationError, match=r"`val_f1`.*Available keys: \['accuracy', 'loss', "
                                                 r"'val_accuracy', 'val_loss'\]"):
        pop.fit(X, Y, validation_data=(XV, YV), epochs=5, batch_size=32)
    # A configuration error is not a member fault: nobody was restarted.
    assert all(not m.failures for m in pop.members)
    assert not [r for r in pop.lineage if r.action == "restart"]
    assert all(m.callback.epochs <= 1 for m in pop.members)


def test_missing_monitor_with_step_intervals_fails_at_the_first_step():
    pop = keras_pbt.Population(build, SPACE, population_size=2, seed=0, monitor="val_loss",
                               interval=keras_pbt.Interval(steps=4), devices=["/cpu:0", "/cpu:1"])
    with pytest.raises(ConfigurationError, match=r"`val_loss`.*Available keys.*epoch interval"):
        pop.fit(X, Y, validation_data=(XV, YV), epochs=2, batch_size=32)
    assert all(m.callback.steps <= 1 for m in pop.members)
    assert all(not m.failures for m in pop.members)


def test_a_good_configuration_still_trains():
    # The checks above must not reject the ordinary case.
    pop = keras_pbt.Population(sgd_build, LR, population_size=2, seed=0, devices=["/cpu:0", "/cpu:1"])
    pop.fit(X, Y, validation_data=(XV, YV), epochs=1, batch_size=32)
    assert all(np.isfinite(m.last_metric) for m in pop.members)


# ------------------------------------------------ issue 21: the rest of the list


def test_an_interval_longer_than_the_training_is_refused_before_training():
    # Issue 21, 9: every member trained to the end with no PBT decision, no word said.
    pop = keras_pbt.Population(build, SPACE, population_size=2, seed=0, interval=3,
                               devices=["/cpu:0", "/cpu:1"])
    with pytest.raises(ValueError, match=r"`interval`=3 decides first at epoch 3, after the 2 "
                                         r"epochs.*Received: interval=3, epochs=2"):
        pop.fit(X, Y, validation_data=(XV, YV), epochs=2, batch_size=32)
    burn_in = keras_pbt.Population(build, SPACE, population_size=2, seed=0,
                                   interval=keras_pbt.Interval(epochs=1, burn_in=2),
                                   devices=["/cpu:0", "/cpu:1"])
    with pytest.raises(ValueError, match=r"decides first at epoch 3.*Received: interval="
                                         r"Interval\(epochs=1, steps=None, burn_in=2\), epochs=2"):
        burn_in.fit(X, Y, validation_data=(XV, YV), epochs=2, batch_size=32)
    steps = keras_pbt.Population(build, SPACE, population_size=2, seed=0,
                                 interval=keras_pbt.Interval(steps=20), devices=["/cpu:0", "/cpu:1"])
    with pytest.raises(ValueError, match=r"decides first at step 20, after the 16 steps.*"
                                         r"Received: interval=Interval\(epochs=None, steps=20"):
        steps.fit(X, Y, validation_data=(XV, YV), epochs=2, batch_size=32)  # 8 steps an epoch
    members = pop.members + burn_in.members + steps.members
    assert all(m.callback.steps == 0 for m in members), "nothing trained"


def test_a_tuner_budget_shorter_than_its_interval_is_refused():
    import keras_tuner as kt

    with pytest.raises(ValueError, match="Received: interval=3, max_epochs=2"):
        keras_pbt.PBTOracle(objective="val_loss", max_epochs=2, interval=3)
    oracle = keras_pbt.PBTOracle(objective=kt.Objective("val_loss", "min"), interval=3)
    with pytest.raises(ValueError, match="Received: interval=3, epochs=2"):
        oracle.set_max_epochs(2)  # what PBTTuner.search(epochs=2) calls
    assert oracle.max_epochs is None


@pytest.mark.parametrize("factors, text", [
    ((1.2,), "can only raise numeric hyperparameters"),
    ((0.5, 0.9), "can only lower numeric hyperparameters"),
    ((1.0, 1.0), "leaves numeric hyperparameters unchanged"),
])
def test_one_sided_factors_warn_what_explore_will_do(factors, text):
    # Issue 21, 10: accepted without a word.
    with pytest.warns(UserWarning, match=text) as caught:
        keras_pbt.Policy(factors=factors)
    assert f"Received: factors={factors!r}" in str(caught[0].message)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keras_pbt.Policy(factors=(0.8, 1.2))   # both ways: no warning
        keras_pbt.Policy(factors=(1.2,), explore="pb2")  # factors unused: no warning
