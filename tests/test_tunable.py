"""Variable-backed optimizer floats: PBT changes momentum & co. without a retrace.

The next-step numerics of every field are checked in test_hyperparameters.py
against a NumPy reference of Keras' rules; these tests check what makes the
retrace unnecessary, and that the model still saves and trains as usual.
"""

import json
import os
import zipfile

import keras
import numpy as np
import pytest

import keras_pbt
from keras_pbt.runtime import tunable
from keras_pbt.runtime.hyperparameters import HyperparameterApplier
from tests.pbt_helpers import X1, Y1, blobs, fit_in_threads, mlp, one_weight_model


@pytest.mark.parametrize("old, new, expected", [
    (0.5, 0.9, False), (0.9, 0.5, False), (1e-7, 0.3, False), (-0.5, -0.1, False),
    (0.0, 0.0, False), (None, None, False),
    (0.5, 0.0, True), (0.0, 0.5, True), (None, 0.5, True), (0.5, None, True),
    (0.5, -0.5, True), (-0.5, 0.0, True),
])
def test_needs_retrace_only_when_a_branch_changes(old, new, expected):
    assert tunable.needs_retrace(old, new) is expected


pytestmark = pytest.mark.all_backends
# PyTorch's eager step reads optimizer floats directly: no TunableFloat.
carries_floats = pytest.mark.skipif(keras.backend.backend() == "torch",
                                    reason="PyTorch reads plain optimizer floats")


def _tunable(value):
    model = one_weight_model(keras.optimizers.SGD(0.1))
    model.optimizer.build(model.trainable_variables)
    return tunable.TunableFloat(value, "x", model, model.optimizer)


@carries_floats
def test_python_side_acts_as_the_current_float():
    t = _tunable(0.9)
    assert float(t) == 0.9 and t == 0.9 and t != 0 and t > 0 and t >= 0.9 and t < 1 and t <= 0.9
    assert bool(t) and not bool(_tunable(0.0))
    assert f"{t:.2f}" == "0.90" and repr(t) == "TunableFloat(0.9)"
    t.assign(0.25)
    assert t == 0.25 and float(t.variable.numpy()) == 0.25


@pytest.mark.tensorflow_only(reason="float64 variables and tf.function")
def test_arithmetic_reads_the_variable_with_python_precision():
    import tensorflow as tf

    t = _tunable(0.999)
    # 1 - beta_2 in float64 then float32, as Keras converts a Python float.
    assert (1 - t).dtype == tf.float32
    assert float(1 - t) == np.float32(1 - 0.999)
    assert float(t * 2) == np.float32(1.998) and float(2.0 / t) == np.float32(2 / 0.999)
    assert float(-t) == np.float32(-0.999) and float(t ** 2) == np.float32(0.999 ** 2)
    assert float(keras.ops.cast(t, "float32")) == np.float32(0.999)
    half = tf.constant(0.5, tf.float16)
    assert (t * half).dtype == tf.float16  # takes a tensor operand's dtype

    @tf.function
    def step():
        return keras.ops.add(keras.ops.ones(()), t)

    assert float(step()) == pytest.approx(1.999)
    t.assign(0.5)
    assert float(step()) == pytest.approx(1.5)  # the traced function reads the new value
    assert step.experimental_get_tracing_count() == 1


class _Traces(keras.callbacks.Callback):
    """Counts traces of the train step (its Python body runs only while
    tracing) and records the train function and momentum after each epoch."""

    def __init__(self, model):
        super().__init__()
        self.functions, self.momentum, self.traces = [], [], 0
        train_step = model.train_step

        def counted(*args):  # (data) on TensorFlow and PyTorch, (state, data) on JAX
            self.traces += 1
            return train_step(*args)

        model.train_step = counted

    def on_epoch_end(self, epoch, logs=None):
        self.functions.append(self.model.train_function)
        self.momentum.append(float(self.model.optimizer.momentum))


def test_pbt_exploits_change_momentum_without_retracing():
    x, y = blobs(160)
    store = keras_pbt.InMemoryStore(seed=3, synchronous=True)
    space = {"learning_rate": keras_pbt.LogUniform(1e-3, 0.5), "momentum": keras_pbt.Uniform(0.3, 0.95)}
    jobs, traces, callbacks = [], [], []
    initial = [(0.3, 0.9), (0.05, 0.5), (0.002, 0.4), (0.001, 0.3)]
    for i, (lr, mom) in enumerate(initial):
        cb = keras_pbt.PBTCallback(store, i, space, monitor="accuracy", policy=keras_pbt.Policy(quantile=0.25))
        model = mlp(i, keras.optimizers.SGD(lr, momentum=mom))
        rec = _Traces(model)
        traces.append(rec)
        callbacks.append(cb)
        jobs.append((model,
                     dict(x=x, y=y, epochs=6, batch_size=32, verbose=0, callbacks=[cb, rec])))
    fit_in_threads(jobs)
    plain = mlp(0)
    baseline = _Traces(plain)  # Keras traces a fresh train function this often
    plain.fit(x, y, epochs=6, batch_size=32, verbose=0, callbacks=[baseline])
    exploits = [r for r in store.lineage() if r.action == "exploit"]
    assert exploits, "the test needs exploits that change momentum"
    for (model, _), rec, cb in zip(jobs, traces, callbacks):
        # One train function, traced once, for the whole fit...
        assert len({id(f) for f in rec.functions}) == 1
        assert rec.traces == baseline.traces
        # ...while momentum followed the member's hyperparameters.
        assert isinstance(model.optimizer.momentum, float)  # plain again after fit
        assert model.optimizer.momentum == pytest.approx(cb.hparams["momentum"])
    changed = {r.member_id for r in exploits}
    for member in changed:
        # (recorded after each epoch's boundary; an exploit at the first
        # boundary changes it from the initial value)
        values = {initial[member][1]} | {float(m) for m in traces[member].momentum}
        assert len(values) > 1, f"member {member} exploited but its momentum never changed"


def test_model_saves_mid_fit_and_after_with_plain_floats(tmp_path):
    model = one_weight_model(keras.optimizers.Adam(0.01, beta_1=0.8, clipnorm=2.0))
    applier_box = {}

    class Switch(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            applier_box["a"] = HyperparameterApplier(self.model, ["beta_1", "clipnorm"])

        def on_epoch_end(self, epoch, logs=None):
            applier_box["a"].apply({"beta_1": 0.6, "clipnorm": 1.5})

    path = os.path.join(tmp_path, "mid.keras")
    save = keras.callbacks.ModelCheckpoint(path, save_weights_only=False)
    model.fit(X1, Y1, epochs=2, batch_size=4, verbose=0, callbacks=[Switch(), save])
    with zipfile.ZipFile(path) as z:
        config = json.loads(z.read("config.json"))["compile_config"]["optimizer"]["config"]
    assert config["beta_1"] == pytest.approx(0.6) and config["clipnorm"] == pytest.approx(1.5)
    applier_box["a"].release()
    assert type(model.optimizer.beta_1) is float and model.optimizer.beta_1 == pytest.approx(0.6)
    assert "get_config" not in vars(model.optimizer)
    # The mid-fit file holds the optimizer's own state only (on JAX the floats
    # rode in the optimizer's variables while PBT trained): it loads whole.
    mid = keras.saving.load_model(path)
    assert [v.shape for v in mid.optimizer.variables] == [v.shape for v in model.optimizer.variables]
    np.testing.assert_allclose(mid.optimizer.variables[0].numpy(), 2 * len(X1) // 4)
    model.save(os.path.join(tmp_path, "after.keras"))
    loaded = keras.saving.load_model(os.path.join(tmp_path, "after.keras"))
    assert loaded.optimizer.beta_1 == pytest.approx(0.6)
    np.testing.assert_allclose(loaded.predict(X1, verbose=0), model.predict(X1, verbose=0))


@pytest.mark.tensorflow_only(reason="MirroredStrategy")
def test_mirrored_member_over_two_devices_reads_the_new_momentum():
    # A member over two logical CPUs: both replicas must use the assigned value.
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice("/cpu:0"))
    with strategy.scope():
        model = one_weight_model(keras.optimizers.SGD(0.05, momentum=0.5))
    applier = HyperparameterApplier(model, ["momentum"])
    assert applier.apply({"momentum": 0.5}, force=True) is True
    model.fit(X1, Y1, epochs=1, batch_size=8, verbose=0, shuffle=False)
    with strategy.scope():
        twin = one_weight_model(keras.optimizers.SGD(0.05, momentum=0.9))
    twin.set_weights(model.get_weights())
    with strategy.scope():
        twin.optimizer.build(twin.trainable_variables)
    for a, b in zip(twin.optimizer.variables, model.optimizer.variables):
        a.assign(b)
    assert applier.apply({"momentum": 0.9}) is False  # assigned, no retrace
    model.fit(X1, Y1, epochs=3, batch_size=8, verbose=0, shuffle=False)
    twin.fit(X1, Y1, epochs=3, batch_size=8, verbose=0, shuffle=False)
    np.testing.assert_allclose(model.get_weights()[0], twin.get_weights()[0], rtol=1e-6)


def test_a_model_traced_before_pbt_uses_the_callbacks_values():
    # The first fit traces the step with a plain momentum of 0.5; the PBT fit
    # must rebuild it, or momentum 0.9 would be silently ignored.
    model = one_weight_model(keras.optimizers.SGD(0.05, momentum=0.5))
    model.fit(X1, Y1, batch_size=4, epochs=1, shuffle=False, verbose=0)
    twin = one_weight_model(keras.optimizers.SGD(0.05, momentum=0.9))
    twin.set_weights(model.get_weights())
    twin.optimizer.build(twin.trainable_variables)
    for a, b in zip(twin.optimizer.variables, model.optimizer.variables):
        a.assign(b.numpy())  # a copy: JAX's fit donates the buffers of its state
    space = {"momentum": keras_pbt.Uniform(0.0, 0.99)}
    cb = keras_pbt.PBTCallback(keras_pbt.InMemoryStore(), 0, space, monitor="loss",
                               initial_hparams={"momentum": 0.9})
    model.fit(X1, Y1, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=[cb])
    twin.fit(X1, Y1, batch_size=4, epochs=3, shuffle=False, verbose=0)
    np.testing.assert_allclose(model.get_weights()[0], twin.get_weights()[0], rtol=1e-6)
    assert model.optimizer.momentum == 0.9
