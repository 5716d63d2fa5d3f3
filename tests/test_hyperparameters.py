"""The next gradient step uses a hyperparameter changed in the middle of `fit`.

One-weight model `y = w * x`, MSE, batch size 1: the gradient of each step is
`2 * (w * x - y) * x`. A NumPy reference applies Keras' update rules; each
test switches a value after step K through `HyperparameterApplier` (the code
`PBTCallback` uses) and checks the weight after every later step against the
reference with the new value, and that it differs from the stale one.
"""

import math

import keras
import numpy as np
import pytest

import keras_pbt
from keras_pbt.runtime.hyperparameters import HyperparameterApplier

pytestmark = pytest.mark.all_backends

X = np.array([[1.0], [-0.5], [2.0], [0.7], [-1.3], [1.1], [0.4], [-0.8]], "float32")
Y = np.array([[0.3], [0.9], [-0.4], [1.2], [0.1], [-0.6], [0.8], [0.2]], "float32")
W0 = 0.5
EAGER = keras.backend.backend() == "torch"
SWITCH = 3  # the change is applied after this many steps


def reference(opt, hp_before, hp_after, switch=SWITCH, l2=(0.0, 0.0), loss_w=(1.0, 1.0)):
    """Weights after each step under Keras' rules; hyperparameters switch after `switch`."""
    w, m, v, t, out = W0, 0.0, 0.0, 0, []
    for i in range(len(X)):
        hp = hp_before if i < switch else hp_after
        lw = loss_w[0] if i < switch else loss_w[1]
        reg = l2[0] if i < switch else l2[1]
        x, y = float(X[i, 0]), float(Y[i, 0])
        g = lw * 2.0 * (w * x - y) * x + 2.0 * reg * w
        clip = hp.get("clipnorm")
        if clip:
            g = g * clip / max(abs(g), clip)
        lr = hp["learning_rate"]
        if hp.get("weight_decay"):
            w = w - w * hp["weight_decay"] * lr
        if opt == "sgd":
            mom = hp.get("momentum", 0.0)
            if mom:
                m = m * mom - g * lr
                w = w + m
            else:
                w = w - g * lr
        else:
            b1, b2, eps = hp["beta_1"], hp["beta_2"], hp["epsilon"]
            t += 1
            m = m + (g - m) * (1 - b1)
            v = v + (g * g - v) * (1 - b2)
            alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            w = w - alpha * m / (math.sqrt(v) + eps)
        out.append(w)
    return np.array(out)


class _Switch(keras.callbacks.Callback):
    """Applies `values` after step `at` and records the weight after every step."""

    def __init__(self, names, values, at=SWITCH, setters=None):
        super().__init__()
        self.names, self.values, self.at, self.setters = names, values, at, setters
        self.weights = []
        self.retraced = None

    def on_train_begin(self, logs=None):
        self.applier = HyperparameterApplier(self.model, self.names, self.setters)

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append(float(self.model.layers[-1].kernel.numpy()[0, 0]))
        if batch + 1 == self.at:
            self.retraced = self.applier.apply(self.values)


def _model(optimizer, regularizer=None, loss=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant(W0),
                           kernel_regularizer=regularizer),
    ])
    model.compile(optimizer, loss or "mse")
    return model


def _run(model, switch):
    model.fit(X, Y, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[switch])
    return np.array(switch.weights)


SGD_BASE = {"learning_rate": 0.05, "momentum": 0.5}
ADAM_BASE = {"learning_rate": 0.05, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}

CASES = [
    # (id, optimizer kind, base hparams, name, new value, expect retrace).
    # Optimizer floats are variable-backed: a retrace only when a value
    # moves to or from zero (or from None), which changes Keras' branches.
    ("sgd-learning_rate", "sgd", SGD_BASE, "learning_rate", 0.2, False),
    ("sgd-momentum", "sgd", SGD_BASE, "momentum", 0.95, False),
    ("sgd-momentum-to-zero", "sgd", SGD_BASE, "momentum", 0.0, True),
    ("adam-learning_rate", "adam", ADAM_BASE, "learning_rate", 0.01, False),
    ("adam-beta_1", "adam", ADAM_BASE, "beta_1", 0.3, False),
    ("adam-beta_2", "adam", ADAM_BASE, "beta_2", 0.5, False),
    ("adam-epsilon", "adam", ADAM_BASE, "epsilon", 0.5, False),
    ("sgd-weight_decay", "sgd", dict(SGD_BASE, weight_decay=0.01), "weight_decay", 0.5, False),
    ("adamw-weight_decay", "adamw", dict(ADAM_BASE, weight_decay=0.01), "weight_decay", 0.8, False),
    ("sgd-clipnorm", "sgd", dict(SGD_BASE, clipnorm=10.0), "clipnorm", 0.05, False),
    ("adam-clipnorm", "adam", dict(ADAM_BASE, clipnorm=10.0), "clipnorm", 0.02, False),
    ("sgd-clipnorm-from-none", "sgd", dict(SGD_BASE, clipnorm=None), "clipnorm", 0.05, True),
]


def _optimizer(kind, hp):
    if kind == "sgd":
        return keras.optimizers.SGD(**hp)
    if kind == "adam":
        return keras.optimizers.Adam(**hp)
    return keras.optimizers.AdamW(**hp)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_next_step_uses_new_value(case):
    _, kind, base, name, new, expect_retrace = case
    after = dict(base, **{name: new})
    ref_kind = "sgd" if kind == "sgd" else "adam"
    # The reference reproduces Keras with unchanged hyperparameters...
    unchanged = _run(_model(_optimizer(kind, base)), _Switch([name], {name: base[name]}))
    np.testing.assert_allclose(unchanged, reference(ref_kind, base, base), rtol=2e-5, atol=1e-6)
    # ...and with the value switched after step SWITCH.
    switch = _Switch([name], {name: new})
    got = _run(_model(_optimizer(kind, base)), switch)
    want = reference(ref_kind, base, after)
    stale = reference(ref_kind, base, base)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    assert abs(got[SWITCH] - stale[SWITCH]) > 1e-4, "the very next step must differ from the stale update"
    # PyTorch's eager step reads the new float by itself: it never retraces.
    assert switch.retraced is (expect_retrace and EAGER is False)


def test_sgd_momentum_from_zero_creates_slots_and_applies():
    base = {"learning_rate": 0.05, "momentum": 0.0}
    model = _model(keras.optimizers.SGD(**base))
    switch = _Switch(["momentum"], {"momentum": 0.9})
    got = _run(model, switch)
    want = reference("sgd", base, {"learning_rate": 0.05, "momentum": 0.9})
    stale = reference("sgd", base, base)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    # The slot starts at zero, so step SWITCH+1 equals plain SGD; the one after cannot.
    assert abs(got[SWITCH + 1] - stale[SWITCH + 1]) > 1e-4
    assert len(model.optimizer.momentums) == 1


def test_user_variable_loss_weight_without_retrace():
    loss_weight = keras.Variable(1.0, trainable=False, name="loss_weight")

    def loss(y_true, y_pred):
        return loss_weight * keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)

    base = {"learning_rate": 0.05}
    model = _model(keras.optimizers.SGD(**base), loss=loss)
    switch = _Switch(["loss_weight"], {"loss_weight": 3.0}, setters={"loss_weight": loss_weight})
    got = _run(model, switch)
    np.testing.assert_allclose(got, reference("sgd", base, base, loss_w=(1.0, 3.0)), rtol=2e-5, atol=1e-6)
    assert switch.retraced is False


def test_callable_setter_regularisation_strength_retraces():
    reg = keras.regularizers.L2(0.01)
    base = {"learning_rate": 0.05}
    model = _model(keras.optimizers.SGD(**base), regularizer=reg)

    def set_l2(model, value):
        model.layers[-1].kernel_regularizer.l2 = float(value)

    switch = _Switch(["l2"], {"l2": 0.5}, setters={"l2": set_l2})
    got = _run(model, switch)
    np.testing.assert_allclose(got, reference("sgd", base, base, l2=(0.01, 0.5)), rtol=2e-5, atol=1e-6)
    stale = reference("sgd", base, base, l2=(0.01, 0.01))
    assert abs(got[SWITCH] - stale[SWITCH]) > 1e-4
    assert switch.retraced is True


def test_learning_rate_schedule_is_a_clear_error():
    sched = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    model = _model(keras.optimizers.SGD(sched))
    model.optimizer.build(model.trainable_variables)
    with pytest.raises(TypeError, match="learning-rate schedule.*ScaledSchedule"):
        HyperparameterApplier(model, ["learning_rate"])


def test_scaled_schedule_tunes_the_scale():
    sched = keras_pbt.ScaledSchedule(keras.optimizers.schedules.ExponentialDecay(0.05, 1, 1.0))
    base = {"learning_rate": 0.05}
    switch = _Switch(["learning_rate_scale"], {"learning_rate_scale": 4.0})
    got = _run(_model(keras.optimizers.SGD(sched)), switch)
    want = reference("sgd", base, {"learning_rate": 0.2})
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_unknown_hyperparameter_names_it():
    model = _model(keras.optimizers.SGD(0.1))
    model.optimizer.build(model.trainable_variables)
    with pytest.raises(ValueError, match="'dropout' is not a numeric field of the optimizer SGD"):
        HyperparameterApplier(model, ["dropout"])
    with pytest.raises(TypeError, match=r"setters\['dropout'\]"):
        HyperparameterApplier(model, ["dropout"], setters={"dropout": 0.5})


# --- a model with several optimizers (a GAN's d_optimizer / g_optimizer) ---


# The model's own train_step below is written with tf.GradientTape, as
# keras.io's TensorFlow GAN examples are: these tests run on TensorFlow only.
tensorflow_only = pytest.mark.tensorflow_only(reason="the test model's train_step uses tf.GradientTape")


class _TwoOptimizers(keras.Model):
    """Two one-weight models `y = a x` and `y = b x`, each with its own optimizer,
    compiled the way keras.io's GAN examples are (`super().compile()` plus
    optimizer attributes)."""

    def __init__(self):
        super().__init__()
        self.a = self.add_weight(shape=(1, 1), initializer=keras.initializers.Constant(W0), name="a")
        self.b = self.add_weight(shape=(1, 1), initializer=keras.initializers.Constant(W0), name="b")

    def compile(self, a_optimizer, b_optimizer):
        super().compile()
        self.a_optimizer = a_optimizer
        self.b_optimizer = b_optimizer

    def train_step(self, data):
        import tensorflow as tf

        x, y = data
        for weight, optimizer in ((self.a, self.a_optimizer), (self.b, self.b_optimizer)):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(tf.matmul(x, weight) - y))
            optimizer.apply([tape.gradient(loss, weight)], [weight])
        return {"a": self.a[0, 0], "b": self.b[0, 0]}


class _SwitchTwo(_Switch):
    def on_train_batch_end(self, batch, logs=None):
        self.weights.append((float(self.model.a.numpy()[0, 0]), float(self.model.b.numpy()[0, 0])))
        if batch + 1 == self.at:
            self.retraced = self.applier.apply(self.values)


def _two(kind_a, hp_a, kind_b, hp_b):
    model = _TwoOptimizers()
    model.compile(_optimizer(kind_a, hp_a), _optimizer(kind_b, hp_b))
    return model


@tensorflow_only
@pytest.mark.parametrize("name, new, expect_retrace", [
    ("b_optimizer.learning_rate", 0.2, False),
    ("b_optimizer.momentum", 0.95, False),
])
def test_second_optimizer_next_step_uses_new_value(name, new, expect_retrace):
    field = name.split(".", 1)[1]
    a_hp = {"learning_rate": 0.05, "momentum": 0.5}
    switch = _SwitchTwo([name], {name: new})
    model = _two("sgd", a_hp, "sgd", SGD_BASE)
    got = np.array(_run(model, switch))
    # a's optimizer is untouched; b's next step uses the new value.
    np.testing.assert_allclose(got[:, 0], reference("sgd", a_hp, a_hp), rtol=2e-5, atol=1e-6)
    want = reference("sgd", SGD_BASE, dict(SGD_BASE, **{field: new}))
    np.testing.assert_allclose(got[:, 1], want, rtol=2e-5, atol=1e-6)
    stale = reference("sgd", SGD_BASE, SGD_BASE)
    assert abs(got[SWITCH, 1] - stale[SWITCH]) > 1e-4
    assert switch.retraced is expect_retrace


@tensorflow_only
def test_second_optimizer_adam_beta_1_and_plain_name_means_model_optimizer():
    switch = _SwitchTwo(["a_optimizer.beta_1", "b_optimizer.learning_rate"],
                        {"a_optimizer.beta_1": 0.3, "b_optimizer.learning_rate": 0.01})
    model = _two("adam", ADAM_BASE, "sgd", SGD_BASE)
    got = np.array(_run(model, switch))
    np.testing.assert_allclose(got[:, 0], reference("adam", ADAM_BASE, dict(ADAM_BASE, beta_1=0.3)),
                               rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(got[:, 1], reference("sgd", SGD_BASE, dict(SGD_BASE, learning_rate=0.01)),
                               rtol=2e-5, atol=1e-6)
    # A plain name addresses model.optimizer (the unused RMSprop of super().compile()).
    applier = HyperparameterApplier(model, ["learning_rate", "b_optimizer.learning_rate"])
    assert applier._setters["learning_rate"].optimizer is model.optimizer
    assert applier.read()["b_optimizer.learning_rate"] == pytest.approx(0.01)


@tensorflow_only
def test_second_optimizer_sgd_momentum_from_zero_gets_slots_once_built():
    model = _two("sgd", {"learning_rate": 0.05}, "sgd", {"learning_rate": 0.05, "momentum": 0.0})
    switch = _SwitchTwo(["b_optimizer.momentum"], {"b_optimizer.momentum": 0.9})
    got = np.array(_run(model, switch))
    base = {"learning_rate": 0.05, "momentum": 0.0}
    np.testing.assert_allclose(got[:, 1], reference("sgd", base, dict(base, momentum=0.9)),
                               rtol=2e-5, atol=1e-6)
    assert len(model.b_optimizer.momentums) == 1


@tensorflow_only
def test_unknown_optimizer_attribute_names_the_models_optimizers():
    model = _two("sgd", SGD_BASE, "sgd", SGD_BASE)
    with pytest.raises(ValueError, match=r"'c_optimizer'.*\['optimizer', 'a_optimizer', 'b_optimizer'\]"):
        HyperparameterApplier(model, ["c_optimizer.learning_rate"])
    with pytest.raises(ValueError, match="'b_optimizer.dropout' is not a numeric field of the optimizer SGD"):
        HyperparameterApplier(model, ["b_optimizer.dropout"])


def test_a_dropout_layer_is_a_setter_whose_start_value_is_read_from_the_model():
    # Issue 20: a callback needed initial_hparams= only to read a setter's
    # start value; a Dropout layer's rate is read, and set so that the very
    # next train step uses it.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(64),
                              keras.layers.Dropout(0.9, name="drop"), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.0), "mse")   # lr 0: the weights never move
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 1), "float32")
    layer = model.get_layer("drop")
    cb = keras_pbt.PBTCallback(keras_pbt.InMemoryStore(seed=0), "d",
                               {"dropout": keras_pbt.Uniform(0.0, 0.95)}, monitor="loss",
                               setters={"dropout": layer})
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    assert cb.hparams == {"dropout": pytest.approx(0.9)}   # read from the layer
    no_dropout = float(model.evaluate(x, y, verbose=0))
    assert float(model.train_on_batch(x, y)) != pytest.approx(no_dropout)
    applier = HyperparameterApplier(model, ["dropout"], {"dropout": layer})
    assert applier.read() == {"dropout": pytest.approx(0.9)}
    assert applier.apply({"dropout": 0.0}) is True and layer.rate == 0.0
    assert float(model.train_on_batch(x, y)) == pytest.approx(no_dropout, rel=1e-6)
    with pytest.raises(TypeError, match=r"setters\['dense'\].*numeric `rate`"):
        HyperparameterApplier(model, ["dense"], {"dense": model.layers[0]})
