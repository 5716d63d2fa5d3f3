"""keras-pbt on JAX and PyTorch: what differs from TensorFlow, as a user meets it.

`make test` runs this module (and every module marked `all_backends`) under
`KERAS_BACKEND=jax` and `KERAS_BACKEND=torch`; on TensorFlow the README test
and the population tests already cover the same ground.
"""

import pathlib
import re

import keras
import numpy as np
import pytest

import keras_pbt
from keras_pbt import backend as backend_lib
from keras_pbt.runtime import snapshot as snapshot_lib
from tests.pbt_helpers import blobs

pytestmark = pytest.mark.all_backends

BACKEND = keras.backend.backend()
ROOT = pathlib.Path(__file__).resolve().parent.parent
other_backends = pytest.mark.skipif(BACKEND == "tensorflow", reason="covered by the TensorFlow suite")
SPACE = {"learning_rate": keras_pbt.LogUniform(1e-3, 0.5), "momentum": keras_pbt.Uniform(0.0, 0.95)}
X, Y = blobs(160, seed=0)
XV, YV = blobs(60, seed=1)


def build(hp):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(hp["learning_rate"], momentum=hp["momentum"]),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def test_backend_module_is_the_one_keras_runs_on():
    assert backend_lib.name() == BACKEND
    assert backend_lib.current().__name__ == f"keras_pbt.backend.{BACKEND}_backend"


@other_backends
def test_readme_callback_example_runs_unchanged(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)
                 if "PBTCallback(" in b and "threading" in b)
    exec(compile(block, "README.md callback example", "exec"), {"__name__": "readme"})  # noqa: S102
    assert "exploits;" in capsys.readouterr().out


@other_backends
def test_several_devices_per_member_is_a_clear_error_at_construction():
    with pytest.raises(ValueError, match=rf"{BACKEND} backend.*MirroredStrategy.*"
                                         r"Received: per_member=2"):
        keras_pbt.Population(build, SPACE, population_size=2, devices=keras_pbt.Devices(per_member=2))


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's host devices (conftest.py)")
def test_jax_members_train_on_their_own_devices_and_exploit_across_them():
    pop = keras_pbt.Population(build, SPACE, population_size=2,
                               seed=0, synchronous=True,
                               initial_hparams=[{"learning_rate": 0.3, "momentum": 0.9},
                                                {"learning_rate": 0.001, "momentum": 0.0}], policy=keras_pbt.Policy(quantile=0.5), devices=["cpu:1", "cpu:2"])
    pop.fit(X, Y, validation_data=(XV, YV), epochs=4, batch_size=32)
    exploits = [r for r in pop.lineage if r.action == "exploit"]
    assert exploits, "the slow member must copy the fast one"
    for member, device in zip(pop.members, ["cpu:1", "cpu:2"]):
        places = {f"{d.platform}:{d.id}" for v in member.model.weights for d in v.value.devices()}
        assert places == {device}
    # The optimizer floats PBT carried in the optimizer's state left with fit.
    for member in pop.members:
        assert all(not backend_lib.current().is_hparam_variable(v)
                   for v in member.model.optimizer.variables)
        assert isinstance(member.model.optimizer.momentum, float)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's state sync")
def test_jax_step_interval_exploit_lands_in_the_middle_of_an_epoch():
    # A step boundary inside an epoch: the JAX state is written back before
    # the copy, and the next step trains from the copied weights.
    store = keras_pbt.InMemoryStore(seed=0, synchronous=True)
    good, bad = build({"learning_rate": 0.3, "momentum": 0.9}), build({"learning_rate": 1e-3, "momentum": 0.0})
    good.fit(X, Y, epochs=3, batch_size=32, verbose=0)
    cbs = [keras_pbt.PBTCallback(store, i, SPACE, monitor="accuracy", policy=keras_pbt.Policy(quantile=0.5), interval=keras_pbt.Interval(steps=2)) for i in range(2)]
    from tests.pbt_helpers import fit_in_threads

    fit_in_threads([(m, dict(x=X, y=Y, epochs=1, batch_size=32, verbose=0, callbacks=[cb]))
                    for m, cb in zip((good, bad), cbs)])
    copied = [r for r in store.lineage() if r.action == "exploit" and r.member_id == 1]
    assert copied and all(r.step % 5 for r in copied)  # 5 steps per epoch: mid-epoch boundaries
    assert cbs[1].steps == 5
    snap = snapshot_lib.capture(bad, 1, cbs[1].steps)
    assert all(np.all(np.isfinite(a)) for a in snap.weights)


BACKEND_API = {
    "tunable_dtype", "carries_floats", "supports_device_slices", "sync_state", "step_captures_floats",
    "host_copy", "device_copy", "has_gpu", "on_gpu", "assign", "is_hparam_variable",
    "tunable_variable", "read_tunable", "release_tunable", "carry_variable", "drop_variable",
    "register_tunable_type", "configure_cpu_devices", "available_devices", "known_devices",
    "canonical_device", "member_strategy", "fit_scope", "share_compilations",
}


@pytest.mark.parametrize("name", ["tensorflow", "jax", "torch"])
def test_every_backend_module_answers_the_same_questions(name):
    import importlib
    import importlib.util

    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed")
    module = importlib.import_module(f"keras_pbt.backend.{name}_backend")
    missing = sorted(a for a in BACKEND_API if not hasattr(module, a))
    assert missing == []


@pytest.mark.parametrize("name, known, want", [
    ("/gpu:1", ["cpu:0", "gpu:0", "gpu:1"], "gpu:1"),
    ("cuda:1", ["cpu:0", "gpu:0", "gpu:1"], "gpu:1"),
    ("/device:GPU:0", ["cpu", "cuda:0"], "cuda:0"),
    ("/cpu:0", ["cpu"], "cpu"),
    ("/cpu:1", ["cpu"], None),
    ("CPU:3", ["cpu:0", "cpu:1", "cpu:2", "cpu:3"], "cpu:3"),
    ("/gpu:7", ["cpu:0"], None),
])
def test_device_names_are_understood_as_a_tensorflow_user_writes_them(name, known, want):
    from keras_pbt.backend.device_scope import canonical_device

    assert canonical_device(name, known) == want


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's CPU devices")
def test_jax_population_asks_for_its_cpu_devices_before_jax_starts():
    # A fresh process without XLA_FLAGS: Devices(num_cpu=...)
    # must reach JAX before its first device query starts it.
    import os
    import subprocess
    import sys

    env = dict(os.environ, KERAS_BACKEND="jax", XLA_FLAGS="")
    code = "import keras_pbt; print(keras_pbt.population.devices.assign_devices(3, keras_pbt.Devices(num_cpu=3)))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[['cpu:0'], ['cpu:1'], ['cpu:2']]"


@pytest.mark.skipif(BACKEND != "jax", reason="Keras jits each JAX model's steps itself")
def test_jax_steps_of_one_architecture_are_compiled_once_per_device():
    import jax

    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **_: hits.append(event) if event.endswith("/cache_hits") else None)
    pop = keras_pbt.Population(build, SPACE, population_size=2, devices=["cpu:0"], seed=0)
    assert jax.config.jax_compilation_cache_dir is not None
    pop.fit(X, Y, validation_data=(XV, YV), epochs=1, batch_size=32, verbose=0)
    # One more model of the architecture on that device (a restarted or a
    # rebuilt member) takes its train step and both test steps (full and
    # short last batch) from what the members compiled: nothing is compiled.
    before = len(hits)
    with keras.device("cpu:0"):
        model = build({"learning_rate": 0.1, "momentum": 0.5})
        model.fit(X, Y, validation_data=(XV, YV), epochs=1, batch_size=32, verbose=0)
    assert len(hits) - before >= 3
