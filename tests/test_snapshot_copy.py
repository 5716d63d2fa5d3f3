"""A snapshot's arrays are the snapshot's own: training never changes them.

`snapshot.capture` copies each variable once (on TensorFlow
`variable.value().numpy()`, which reads it and copies the tensor into a new
NumPy array)
and keeps that array. These tests are the evidence that this single copy is
enough: after a capture, training steps and in-place updates of the
variables (`assign_add`, the optimizer's own updates) leave the snapshot as
it was, for plain Keras variables and for variables mirrored over several
devices by a `MirroredStrategy`; and a model restored from a snapshot does
not write into it when it trains on.
"""

import keras
import numpy as np
import pytest

from keras_pbt.population import devices
from keras_pbt.runtime import snapshot as snapshot_lib
from tests.pbt_helpers import blobs
from tests.pbt_helpers import mlp

X, Y = blobs(64)


def _plain(seed=0, optimizer=None):
    return mlp(seed, optimizer and optimizer())


def _mirrored(seed=0, optimizer=None):
    # The optimizer is made in the scope too: its variables are mirrored.
    strategy = devices.member_strategy(["/cpu:0", "/cpu:1", "/cpu:2", "/cpu:3"])
    with strategy.scope():
        model = mlp(seed, optimizer and optimizer())
    return model


pytestmark = pytest.mark.all_backends

BUILDERS = {"plain": _plain}
if keras.backend.backend() == "tensorflow":
    BUILDERS["mirrored"] = _mirrored
OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.5),
    "adam": lambda: keras.optimizers.Adam(1e-2),
}


def _train(model, steps=3):
    model.fit(X, Y, batch_size=16, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)


def _variables(model):
    return list(model.weights) + [v for _, opt in snapshot_lib.optimizers(model)
                                  for v in opt.variables]


def _bump(model):
    """Changes every variable in place (`assign_add`), the iteration count too."""
    for v in _variables(model):
        v.assign_add(np.ones(v.shape, dtype=v.dtype))


def _values(model):
    return [np.array(v.numpy(), copy=True) for v in _variables(model)]


def _arrays(snap):
    return snap.weights + snap.optimizer


def _check_kind(model, kind):
    # The test must exercise what it claims: every variable (optimizer slots
    # and iteration count included) mirrored over 4 devices, or none.
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    for v in _variables(model):
        inner = v.value
        if kind == "mirrored":
            assert isinstance(inner, tf.distribute.DistributedValues), v.path
            assert len(inner.values) == 4
        else:
            assert not isinstance(inner, tf.distribute.DistributedValues), v.path


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_training_after_capture_does_not_change_the_snapshot(kind, opt):
    model = BUILDERS[kind](optimizer=OPTIMIZERS[opt])
    _train(model)  # the optimizer's slots exist and have stepped
    _check_kind(model, kind)
    snap = snapshot_lib.capture(model, "a", 3)
    frozen = [a.copy() for a in _arrays(snap)]
    crc = snap.checksum()
    assert all(np.array_equal(a, b) for a, b in zip(frozen, _values(model)))
    for a in _arrays(snap):
        # Memory NumPy allocated for this array: no view of a TensorFlow buffer.
        assert a.flags.owndata and a.base is None and not a.flags.writeable
    _train(model, steps=4)
    _bump(model)
    _train(model, steps=2)
    now = _values(model)
    assert sum(not np.array_equal(a, b) for a, b in zip(frozen, now)) == len(now), (
        "every variable changed, so an aliased snapshot array would have changed too")
    for a, b in zip(_arrays(snap), frozen):
        np.testing.assert_array_equal(a, b)
    assert snap.checksum() == crc


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_training_after_restore_does_not_change_the_snapshot(kind):
    # The other direction: a restored model's variables must not adopt the
    # snapshot's arrays as their buffers (the snapshot is shared by every
    # member that copies it).
    parent = BUILDERS[kind](seed=0, optimizer=lambda: keras.optimizers.Adam(1e-2))
    child = BUILDERS[kind](seed=1, optimizer=lambda: keras.optimizers.Adam(1e-2))
    _train(parent)
    _train(child)
    snap = snapshot_lib.capture(parent, "parent", 3)
    frozen = [a.copy() for a in _arrays(snap)]
    crc = snap.checksum()
    snapshot_lib.restore(child, snap)
    for a, b in zip(frozen, _values(child)):
        np.testing.assert_array_equal(a, b)
    _train(child, steps=4)
    _bump(child)
    snapshot_lib.restore(parent, snap)  # a second restore from the same arrays
    _train(parent, steps=2)
    for a, b in zip(_arrays(snap), frozen):
        np.testing.assert_array_equal(a, b)
    assert snap.checksum() == crc


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_two_captures_share_no_memory(kind):
    model = BUILDERS[kind]()
    _train(model)
    a, b = snapshot_lib.capture(model, "a", 3), snapshot_lib.capture(model, "a", 3)
    assert a.checksum() == b.checksum()
    for x in _arrays(a):
        assert x.flags.owndata
        assert not any(np.shares_memory(x, y) for y in _arrays(b))
    # Scalars (iteration count, learning rate) are 0-d arrays like the rest.
    scalars = [x for x in a.optimizer if x.ndim == 0]
    assert scalars and all(isinstance(x, np.ndarray) for x in scalars)


@pytest.mark.tensorflow_only(reason="TensorFlow's host copy goes through variable.value().numpy()")
def test_capture_copies_a_view_it_is_given():
    # Where a variable's `numpy()` returned a view of memory it does not own
    # (another backend, or a later TensorFlow), capture still copies.
    from keras_pbt.backend import tensorflow_backend

    backing = np.arange(6, dtype=np.float32)

    class ViewVariable:  # its value() is a tensor whose numpy() is a view
        def value(self):
            return self

        def numpy(self):
            view = backing[:]
            assert not view.flags.owndata
            return view

    got = tensorflow_backend.host_copy(ViewVariable())
    backing[:] = -1
    np.testing.assert_array_equal(got, np.arange(6, dtype=np.float32))
    assert got.flags.owndata
    scalar = tensorflow_backend.host_copy(type("S", (), {"value": lambda self: self,
                                                         "numpy": lambda self: np.float32(2.5)})())
    assert isinstance(scalar, np.ndarray) and scalar.shape == () and scalar == 2.5


@pytest.mark.tensorflow_only(reason="MirroredStrategy replicas")
def test_restore_and_hyperparameters_reach_every_replica():
    # Copies read one replica and assigns write each replica directly
    # (not through tf.distribute's update path): every replica must hold
    # the snapshot, and the learning rate and momentum PBT applies.
    from keras_pbt.runtime.hyperparameters import HyperparameterApplier

    parent = _mirrored(seed=0, optimizer=lambda: keras.optimizers.SGD(0.05, momentum=0.5))
    child = _mirrored(seed=1, optimizer=lambda: keras.optimizers.SGD(0.05, momentum=0.5))
    _train(parent)
    _train(child)
    snap = snapshot_lib.capture(parent, "parent", 3)
    snapshot_lib.restore(child, snap)
    arrays = _arrays(snap)
    variables = _variables(child)
    assert len(arrays) == len(variables)
    for array, variable in zip(arrays, variables):
        replicas = variable.value.values
        assert len(replicas) == 4
        for replica in replicas:
            np.testing.assert_array_equal(replica.numpy(), array)
    applier = HyperparameterApplier(child, ["learning_rate", "momentum"])
    applier.apply({"learning_rate": 0.125, "momentum": 0.25})
    optimizer = child.optimizer
    for replica in optimizer.learning_rate.value.values:
        assert replica.numpy() == np.float32(0.125)
    momentum = optimizer.momentum.variable  # backed by a variable while PBT trains
    assert [float(r.numpy()) for r in momentum.values] == [0.25] * 4
    applier.release()
