"""Resuming a population checkpoint with something else is refused before any
training, naming the argument, and nothing already trained is lost (issue 21).

One checkpoint (two SGD members without momentum, two epochs) is trained
once; each case resumes a copy of it with one thing changed.
"""

import os
import shutil

import keras
import pytest

import keras_pbt
from keras_pbt.storage.checkpoint import CheckpointError
from tests.test_population import X, XV, Y, YV

LR = {"learning_rate": keras_pbt.LogUniform(1e-3, 0.5)}
DEVICES = ["/cpu:0", "/cpu:1"]
pytestmark = pytest.mark.tensorflow_only(reason="two logical CPU devices")


def build(hp, optimizer=keras.optimizers.SGD):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
    # SGD without momentum has no slots: its state is the one an unbuilt
    # optimizer has, which restore would accept into any optimizer.
    model.compile(optimizer(hp["learning_rate"]),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def population(build_fn=build, **kwargs):
    return keras_pbt.Population(build_fn, LR, population_size=2, seed=0, devices=DEVICES,
                                **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("ck") / "run")
    population().fit(X, Y, validation_data=(XV, YV), epochs=2, batch_size=32,
                     checkpoint_dir=directory)
    return directory


def _files(directory):
    return sorted((os.path.relpath(os.path.join(root, f), directory),
                   os.path.getsize(os.path.join(root, f)))
                  for root, _, files in os.walk(directory) for f in files)


@pytest.fixture
def copy(trained, tmp_path):
    directory = str(tmp_path / "ck")
    shutil.copytree(trained, directory)
    return directory


@pytest.mark.parametrize("make, epochs, text", [
    # Issue 21, 4: accepted silently, with Adam's moments zeroed.
    (lambda: population(lambda hp: build(hp, keras.optimizers.Adam)), 4,
     "optimizers [['optimizer', 'SGD']]; `build` now compiles [['optimizer', 'Adam']]"),
    # Issue 21, 5: silently returned the 2-epoch result for epochs=1.
    (population, 1, "holds a checkpoint of epoch 2, beyond `epochs`=1"),
    # Issue 21, 6: another interval was not in the manifest's header.
    (lambda: population(interval=2), 4, "Pass interval=1, or use another directory. Received: interval=2"),
], ids=["another optimizer", "fewer epochs than the checkpoint", "another interval"])
def test_resuming_with_something_else_is_refused_before_training(copy, make, epochs, text):
    before = _files(copy)
    pop = make()
    with pytest.raises(CheckpointError) as info:
        pop.fit(X, Y, validation_data=(XV, YV), epochs=epochs, batch_size=32, checkpoint_dir=copy)
    assert text in str(info.value) and "Received: " in str(info.value)
    assert info.value.path == os.path.join(copy, "manifest.json")
    assert all(m.callback.steps == 0 for m in pop.members), "nothing trained"
    assert _files(copy) == before, "nothing on disk changed"


def test_epoch_files_without_their_manifest_are_an_error_that_says_what_is_there(copy):
    # Issue 21: with manifest.json deleted, a rerun started from epoch 0 and
    # deleted the old epoch directories without a message.
    os.remove(os.path.join(copy, "manifest.json"))
    before = _files(copy)
    pop = population()
    with pytest.raises(CheckpointError, match=r"has no manifest.json but holds checkpoint files: "
                                              r"epoch_000002/ \(2 member files\)"):
        pop.fit(X, Y, validation_data=(XV, YV), epochs=4, batch_size=32, checkpoint_dir=copy)
    assert all(m.callback.steps == 0 for m in pop.members)
    assert _files(copy) == before  # nothing deleted


def test_the_same_population_still_resumes(copy):
    pop = population()
    pop.fit(X, Y, validation_data=(XV, YV), epochs=3, batch_size=32, checkpoint_dir=copy)
    assert pop.resumed_from == 2 and all(m.callback.epochs == 3 for m in pop.members)
