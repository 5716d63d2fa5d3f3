"""`keras_pbt.Population` on four logical CPU devices (see conftest.py)."""

import importlib.util
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import keras_pbt
from keras_pbt.runtime import snapshot as snapshot_lib
from tests.pbt_helpers import FailAt, blobs, interruptible

pytestmark = pytest.mark.all_backends

SPACE = {"learning_rate": keras_pbt.LogUniform(1e-3, 0.5), "momentum": keras_pbt.Uniform(0.0, 0.95)}
X, Y = blobs(240, seed=0)
XV, YV = blobs(90, seed=1)


def build(hp):
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(3),
    ])
    model.compile(
        keras.optimizers.SGD(hp["learning_rate"], momentum=hp["momentum"]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


BACKEND = keras.backend.backend()
# Four CPU devices (conftest.py) on TensorFlow and JAX; PyTorch has one.
CPU_DEVICES = {"tensorflow": [f"/device:CPU:{i}" for i in range(4)],
               "jax": [f"cpu:{i}" for i in range(4)], "torch": ["cpu"]}[BACKEND]
TWO_DEVICES = {"tensorflow": ["/cpu:0", "/cpu:1"], "jax": ["cpu:0", "cpu:1"], "torch": None}[BACKEND]
tensorflow_only = pytest.mark.tensorflow_only(reason="MirroredStrategy slices")
# A tf.data.Dataset as input: on every backend where TensorFlow is installed.
needs_tf_data = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                   reason="a tf.data.Dataset input needs TensorFlow installed")
# JAX compiles each member's train and test steps (seconds each on 2 CPU
# cores): under JAX this subset runs, so that `make test` stays within 15
# minutes; the whole module runs on TensorFlow and PyTorch.
JAX_SUBSET = {
    "test_each_member_lives_on_its_own_device", "test_more_members_than_devices_share_round_robin",
    "test_bad_configuration_is_rejected_before_building",
    "test_asynchronous_population_and_dataset_input",
    "test_member_that_raises_is_restarted_from_a_top_member",
    "test_members_with_other_architectures_are_rejected_at_construction",
}


@pytest.fixture(autouse=True)
def _jax_subset(request):
    if BACKEND == "jax" and request.node.originalname not in JAX_SUBSET:
        pytest.skip("outside this module's JAX subset (see JAX_SUBSET)")


def _device_of(variable):
    if BACKEND == "jax":
        return {f"{d.platform}:{d.id}" for d in variable.value.devices()}.pop()
    if BACKEND == "torch":
        return str(variable.value.device)
    import tensorflow as tf

    return "/device:CPU:%d" % tf.DeviceSpec.from_string(variable.value.device).device_index


def test_each_member_lives_on_its_own_device():
    pop = keras_pbt.Population(build, SPACE, population_size=4, seed=0)
    assert [m.devices for m in pop.members] == [[CPU_DEVICES[i % len(CPU_DEVICES)]] for i in range(4)]
    for i, member in enumerate(pop.members):
        assert member.strategy.num_replicas_in_sync == 1
        devices = {_device_of(v) for v in member.model.weights}
        assert devices == {CPU_DEVICES[i % len(CPU_DEVICES)]}


@tensorflow_only
def test_slices_of_two_devices_mirror_variables_on_both():
    pop = keras_pbt.Population(build, SPACE, population_size=2, seed=0, devices=keras_pbt.Devices(per_member=2))
    assert [m.devices for m in pop.members] == [["/device:CPU:0", "/device:CPU:1"],
                                                ["/device:CPU:2", "/device:CPU:3"]]
    for member, expected in zip(pop.members, [{"CPU:0", "CPU:1"}, {"CPU:2", "CPU:3"}]):
        assert member.strategy.num_replicas_in_sync == 2
        for v in member.model.weights:
            replicas = {d.device.split("device:")[-1] for d in v.value.values}
            assert replicas == expected


@pytest.mark.skipif(TWO_DEVICES is None, reason="PyTorch has one CPU device")
def test_more_members_than_devices_share_round_robin():
    pop = keras_pbt.Population(build, SPACE, population_size=6, seed=0, devices=TWO_DEVICES)
    assert [m.devices[0][-1] for m in pop.members] == ["0", "1", "0", "1", "0", "1"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(population_size=1), "size=1"),
    (dict(devices=["/gpu:7"]), "'/gpu:7' does not exist"),
    (dict(devices=["/cpu:0", "/cpu:0"]), "names a device twice"),
    (dict(devices=keras_pbt.Devices(per_member=8)), "per_member=8"),
    (dict(max_failures=-1), "max_failures=-1"),
    (dict(max_failures=0), "max_failures=0"),
    (dict(member_ids=[0, 0, 1, 2]), "must be unique"),
    (dict(space={}), "space"),
])
def test_bad_configuration_is_rejected_before_building(kwargs, message):
    args = dict(population_size=4, seed=0)
    args.update(kwargs)
    space = args.pop("space", SPACE)
    with pytest.raises((ValueError, TypeError), match=message):
        keras_pbt.Population(build, space, **args)


def test_two_concurrent_strategies_exploit_across_devices():
    strong, weak = {"learning_rate": 0.2, "momentum": 0.5}, {"learning_rate": 0.001, "momentum": 0.0}
    pop = keras_pbt.Population(build, SPACE, population_size=2, seed=3, initial_hparams=[strong, weak],
                               policy=keras_pbt.Policy(quantile=0.5))
    pop.fit(X, Y, validation_data=(XV, YV), epochs=4, batch_size=32)
    exploits = [r for r in pop.lineage if r.action == "exploit"]
    assert exploits, "the weak member must copy the strong one"
    # The first copy is the weak member's, of the strong one's published
    # snapshot, with hyperparameters explored from the strong one's.
    first = exploits[0]
    assert (first.member_id, first.parent, first.hparams_before) == (1, 0, weak)
    parent_report = next(r for r in pop.store.histories()[0] if r.step == first.parent_step)
    assert first.parent_metric == parent_report.metric > first.metric
    for name, op in first.ops.items():
        if op.startswith("*"):
            assert first.hparams[name] == pytest.approx(
                SPACE[name].clip(strong[name] * float(op[1:])), rel=1e-6)
    # A copy between members on different devices keeps each on its own device.
    a, b = pop.members
    snap = snapshot_lib.capture(a.model, a.member_id, a.callback.steps)
    snapshot_lib.restore(b.model, snap)
    for va, vb, want in zip(a.model.weights, b.model.weights, snap.weights):
        np.testing.assert_array_equal(vb.numpy(), want)
        assert _device_of(va) == CPU_DEVICES[0] and _device_of(vb) == CPU_DEVICES[1 % len(CPU_DEVICES)]
    assert set(pop.history) == {0, 1}
    assert len(pop.history[0]["val_accuracy"]) == 4


@needs_tf_data
def test_asynchronous_population_and_dataset_input():
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(32)
    pop = keras_pbt.Population(build, SPACE, population_size=4, synchronous=False, seed=5, policy=keras_pbt.Policy(quantile=0.25))
    pop.fit(data, validation_data=(XV, YV), epochs=4)
    steps = {m.member_id: m.callback.steps for m in pop.members}
    assert set(steps.values()) == {4 * 8}
    assert sum(r.action == "init" for r in pop.lineage) == 4


def test_best_model_is_the_member_with_the_best_final_metric():
    pop = keras_pbt.Population(build, SPACE, population_size=4, seed=1)
    pop.fit(X, Y, validation_data=(XV, YV), epochs=3, batch_size=32)
    finals = {m.member_id: pop.store.histories()[m.member_id][-1].metric for m in pop.members}
    best_id = max(finals, key=lambda k: (finals[k], -k))
    assert pop.best_member.member_id == best_id
    model = pop.best_model()
    assert model is pop.members[best_id].model
    _, acc = model.evaluate(XV, YV, verbose=0)
    assert acc == pytest.approx(finals[best_id], abs=1e-6)


def test_member_that_raises_is_restarted_from_a_top_member():
    failing = FailAt(epoch=2, times=1)
    pop = keras_pbt.Population(build, SPACE, population_size=4, seed=2)
    cb, seen = pop.members[1].callback, {}
    restart = cb.restart

    def watch(candidates, initial, reason):  # what the restart was offered, and what it did
        record = restart(candidates, initial, reason)
        seen["candidates"] = {s.member_id: s for s in candidates}
        seen["weights"] = [np.array(v.numpy()) for v in pop.members[1].model.weights]
        return record

    cb.restart = watch
    pop.fit(X, Y, validation_data=(XV, YV), epochs=4, batch_size=32,
            callbacks=lambda mid: [failing] if mid == 1 else [])
    restarts = [r for r in pop.lineage if r.action == "restart"]
    assert len(restarts) == 1
    r = restarts[0]
    assert r.member_id == 1 and "boom in member code" in r.reason
    # The one restart rule: the best snapshot another member published.
    offered = seen["candidates"]
    assert offered and 1 not in offered
    best = keras_pbt.core.ancestry.order_members({m: s.metric for m, s in offered.items()}, "max")[0]
    assert (r.parent, r.parent_step, r.parent_metric) == (best, offered[best].step, offered[best].metric)
    for got, want in zip(seen["weights"], offered[best].weights):
        np.testing.assert_array_equal(got, np.asarray(want))
    assert set(r.ops) == set(SPACE) and r.hparams_before != r.hparams
    assert pop.members[1].callback.epochs == 4
    assert all(m.callback.epochs == 4 for m in pop.members)
    assert len(pop.members[1].failures) == 1


@pytest.mark.parametrize("max_failures", [1, 2])
def test_member_that_keeps_failing_stops_the_population_naming_it(max_failures):
    # As the README says: after `max_failures` failures of a member, fit raises
    # (issue 13: the code allowed max_failures + 1).
    failing = FailAt(epoch=1, times=100, error=ValueError("bad user code"))
    pop = keras_pbt.Population(build, SPACE, population_size=3, seed=2, max_failures=max_failures,
                               member_ids=["a", "b", "c"])
    with pytest.raises(keras_pbt.PopulationError,
                       match=rf"Member 'b' failed {max_failures} times.*bad user code") as info:
        pop.fit(X, Y, validation_data=(XV, YV), epochs=3, batch_size=32,
                callbacks=lambda mid: [failing] if mid == "b" else [])
    assert info.value.member_id == "b" and isinstance(info.value.cause, ValueError)
    assert len(pop.members[1].failures) == max_failures
    restarts = [r.member_id for r in pop.lineage if r.action == "restart"]
    assert restarts == ["b"] * (max_failures - 1)


class _PoisonOnce(keras.callbacks.Callback):
    """Fills the weights with NaN once, as a diverging learning rate would."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.done = epoch, False

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch and not self.done:
            self.done = True
            for v in self.model.trainable_weights:
                v.assign(np.full(v.shape, np.nan, "float32"))


def test_nan_stopped_by_terminate_on_nan_restarts_the_member():
    poison = _PoisonOnce(epoch=2)
    pop = keras_pbt.Population(build, SPACE, population_size=4, seed=4)
    pop.fit(X, Y, validation_data=(XV, YV), epochs=4, batch_size=32,
            callbacks=lambda mid: [poison, keras.callbacks.TerminateOnNaN()] if mid == 2
            else [keras.callbacks.TerminateOnNaN()])
    restarts = [r for r in pop.lineage if r.action == "restart"]
    assert [r.member_id for r in restarts] == [2]
    assert "NaN" in restarts[0].reason
    model = pop.members[2].model
    assert all(np.all(np.isfinite(v.numpy())) for v in model.weights)
    assert pop.members[2].callback.epochs == 4


def test_progress_is_plain_lines_when_not_a_terminal(capsys):
    pop = keras_pbt.Population(build, SPACE, population_size=2, seed=0)
    pop.fit(X, Y, validation_data=(XV, YV), epochs=2, batch_size=32)
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    lines = out.strip().splitlines()
    for member in (0, 1):
        for epoch in (1, 2):
            assert any(line.startswith(f"member    {member}  epoch {epoch}/2  step {epoch * 8}  val_accuracy=")
                       and "learning_rate=" in line and "momentum=" in line for line in lines), out
    assert lines[-1].startswith("PBT done in ")
    assert f"best member {pop.best_member.member_id!r}" in lines[-1]
    exploits = sum(r.action == "exploit" for r in pop.lineage)
    assert f"{exploits} exploits" in lines[-1]


def test_progress_redraws_in_place_on_a_terminal():
    class Tty:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

        def isatty(self):
            return True

    tty = Tty()
    progress = keras_pbt.PopulationProgress([0, 1], "val_accuracy", epochs=3, verbose=1, stream=tty,
                                            min_interval=0.0)
    progress.update(0, epoch=1, step=8, metric=0.5, hparams={"lr": 0.1})
    progress.update(1, epoch=1, step=8, metric=0.6, hparams={"lr": 0.2})
    assert tty.text.count("\x1b[2F\x1b[J") == 1  # the second draw replaced the first two rows
    assert "member    1  epoch 1/3  step 8  val_accuracy=0.6  lr=0.2" in tty.text


def test_verbose_zero_prints_nothing(capsys):
    pop = keras_pbt.Population(build, SPACE, population_size=2, seed=0)
    pop.fit(X, Y, validation_data=(XV, YV), epochs=1, batch_size=32, verbose=0)
    assert capsys.readouterr().out == ""


def test_ctrl_c_stops_every_member_cleanly(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.getcwd()!r})
        import keras_pbt
        keras_pbt.configure_cpu_devices(2)
        from tests.test_population import build, SPACE, X, Y, XV, YV
        pop = keras_pbt.Population(build, SPACE, population_size=2, seed=0, logdir={str(tmp_path / 'runs')!r})
        try:
            pop.fit(X, Y, validation_data=(XV, YV), epochs=10000, batch_size=32, verbose=2)
        except KeyboardInterrupt:
            print("stopped at epochs", [m.callback.epochs for m in pop.members], flush=True)
            raise
    """))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=interruptible)
    deadline = time.monotonic() + 400  # a loaded machine takes minutes to import and trace
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line
        if "epoch 3/" in line or not line:
            break
    # Interrupting before epoch 3 would test another case (and read as a failure below).
    assert "epoch 3/" in seen, seen[-2000:]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    out = seen + out
    assert proc.returncode != 0
    assert "Interrupted: stopping every member" in out
    assert "stopped at epochs" in out
    assert "KeyboardInterrupt" in err
    stopped = eval(out.split("stopped at epochs")[-1].strip().splitlines()[0])  # noqa: S307 - our own output
    assert all(3 <= e < 10000 for e in stopped)
    assert sorted(os.listdir(tmp_path / "runs")) == ["member_0", "member_1"]


def test_a_seeded_population_is_reproducible():
    def run(seed):
        pop = keras_pbt.Population(build, SPACE, population_size=4, seed=seed, devices=keras_pbt.Devices(num_cpu=4))
        initial = [m.model.get_weights() for m in pop.members]
        pop.fit(X, Y, validation_data=(XV, YV), epochs=4, batch_size=32)
        decisions = sorted((r.member_id, r.step, r.action, repr(r.parent)) for r in pop.lineage)
        return initial, decisions, [m.model.get_weights() for m in pop.members]

    first, again, other = run(7), run(7), run(8)
    for a, b in zip(first[0] + first[2], again[0] + again[2]):
        for wa, wb in zip(a, b):
            np.testing.assert_array_equal(wa, wb)
    assert first[1] == again[1] and any(d[2] == "exploit" for d in first[1])
    # Another seed builds other initial weights.
    assert not np.array_equal(first[0][0][0], other[0][0][0])


@needs_tf_data
def test_steps_per_epoch_reaches_every_member_with_a_repeated_dataset():
    # Issue 13, bug 1: `steps_per_epoch` was popped inside the member loop,
    # so only member 0 got it (the others raised "pass `steps_per_epoch=`").
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(32).repeat()
    valid = tf.data.Dataset.from_tensor_slices((XV, YV)).batch(30).repeat()
    pop = keras_pbt.Population(build, SPACE, population_size=3, seed=0)
    pop.fit(data, validation_data=valid, epochs=2, steps_per_epoch=5, validation_steps=3)
    assert [m.callback.steps for m in pop.members] == [10, 10, 10]
    assert all(len(m.history["val_accuracy"]) == 2 for m in pop.members)


def test_steps_per_epoch_is_the_same_for_every_member_with_arrays():
    # With arrays, members after the first silently trained whole epochs.
    pop = keras_pbt.Population(build, SPACE, population_size=3, seed=0)
    pop.fit(X, Y, validation_data=(XV, YV), epochs=2, batch_size=32, steps_per_epoch=3)
    assert [m.callback.steps for m in pop.members] == [6, 6, 6]


def _build_by_width(hp):
    # A different architecture for member 1 (its learning rate is 0.02).
    units = 32 if hp["learning_rate"] == 0.02 else 16
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(units, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(hp["learning_rate"], momentum=hp["momentum"]),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def _build_by_optimizer(hp):
    # Same weights, another optimizer (other slots) for member 1.
    model = build(hp)
    if hp["learning_rate"] == 0.02:
        model.compile(keras.optimizers.RMSprop(hp["learning_rate"], momentum=hp["momentum"]),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


@pytest.mark.parametrize("fn, text", [
    (_build_by_width, r"\(8, 32\)"),
    (_build_by_optimizer, "the model has 4 weights, 10 optimizer variables; the snapshot 4 weights, 6"),
])
def test_members_with_other_architectures_are_rejected_at_construction(fn, text):
    # Issue 13, bug 3: accepted, then the population died at the first exploit.
    hps = [{"learning_rate": 0.01, "momentum": 0.5}, {"learning_rate": 0.02, "momentum": 0.5}]
    with pytest.raises(ValueError, match=rf"member 'b'.*member 'a'.*{text}") as info:
        keras_pbt.Population(fn, SPACE, population_size=2, seed=0, initial_hparams=hps,
                             member_ids=["a", "b"], devices=TWO_DEVICES or ["cpu"])
    assert "build" in str(info.value)


class _StopAfter(keras.callbacks.Callback):
    """Stops the population (as Ctrl-C does) at the end of epoch `epoch`."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.population = epoch, None

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.population.stop()


def test_a_stopped_population_flushes_every_boundary_to_the_logs(tmp_path):
    # Issue 13: synchronous members leave fit through PopulationStopped, so
    # on_train_end never flushed their TensorBoard writers.
    stopper = _StopAfter(epoch=2)
    pop = keras_pbt.Population(build, SPACE, population_size=3, seed=0, logdir=str(tmp_path))
    stopper.population = pop
    pop.fit(X, Y, validation_data=(XV, YV), epochs=50, batch_size=32,
            callbacks=lambda mid: [stopper] if mid == 0 else [])
    assert all(3 <= m.callback.epochs < 50 for m in pop.members)
    on_disk = sorted((r.member_id, r.step, r.action) for r in keras_pbt.read_lineage(str(tmp_path)))
    in_memory = sorted((r.member_id, r.step, r.action) for r in pop.lineage)
    assert on_disk == in_memory
    assert {s for _, s, _ in on_disk} >= {0, 8, 16, 24}


def test_the_population_names_stay_importable_from_keras_pbt_population():
    from keras_pbt.population import population

    for name in ("Population", "Member", "PopulationError", "NonFiniteStateError"):
        assert getattr(population, name) is getattr(keras_pbt, name)
    assert issubclass(keras_pbt.PopulationError, RuntimeError)


class _CountTraces(keras.layers.Layer):
    """Counts how often the step functions around it are traced (graph calls only)."""

    traces = []

    def call(self, x, training=None):
        import tensorflow as tf  # the test is TensorFlow-only; the module runs on every backend

        if not tf.executing_eagerly():
            self.traces.append((self.name, bool(training)))
        return x


@pytest.mark.tensorflow_only(reason="counts tf.function traces")
def test_members_trace_their_steps_once(caplog):
    # Issue 20: a learning-rate-only run printed "5 out of the last 5 calls
    # ... triggered tf.function retracing". TensorFlow counts traces per Python
    # code object, so five members' first traces of their own step functions
    # read as retraces of one. No step is traced again: exploits assign.
    _CountTraces.traces = []
    seen = {}

    def lr_build(hp):
        model = keras.Sequential([keras.Input((8,)), _CountTraces(), keras.layers.Dense(3)])
        model.compile(keras.optimizers.SGD(hp["learning_rate"]),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            name = self.model.layers[0].name
            seen.setdefault(name, []).append((_CountTraces.traces.count((name, True)),
                                              _CountTraces.traces.count((name, False))))

    logger = logging.getLogger("tensorflow")
    logger.addHandler(caplog.handler)
    try:
        pop = keras_pbt.Population(lr_build, {"learning_rate": keras_pbt.LogUniform(1e-3, 0.5)},
                                   population_size=6, seed=0, policy=keras_pbt.Policy(quantile=0.5))
        pop.fit(X, Y, validation_data=(XV, YV), epochs=3, batch_size=32, verbose=0,
                callbacks=lambda mid: [Watch()])
    finally:
        logger.removeHandler(caplog.handler)
    assert sum(r.action == "exploit" for r in pop.lineage) >= 1
    # Each member's train step is traced once, its test step during the first
    # epoch only, whatever the exploits of the later boundaries.
    assert len(seen) == 6, seen
    for counts in seen.values():
        assert [t for t, _ in counts] == [1, 1, 1] and len({e for _, e in counts}) == 1, seen
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
