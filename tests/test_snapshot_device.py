"""Device-resident snapshots: the GPU path of `snapshot.capture`, run on CPU.

On a GPU, `capture` copies each variable on its own device (a tensor) instead
of to host NumPy. `on_device=True` takes that same path on any device, so
its correctness is tested here on logical CPU devices: the copies are
tensors on the variable's device, training never reaches them, a restore
from them gives the parent's weights and optimizer slots, checkpoints write
them as NumPy, and on CPU the default is still the host path. What only a
GPU can show (speed, device memory) is measured by benchmarks/gpu_check.py.
"""

import gc
import weakref

import keras
import numpy as np
import pytest

from keras_pbt.storage import checkpoint as checkpoint_lib
from keras_pbt.population import devices
from keras_pbt.runtime import snapshot as snapshot_lib
from keras_pbt.storage.store import InMemoryStore
from keras_pbt.storage.payload import Snapshot
from keras_pbt.tuner import snapshots as tuner_checkpoint
from tests.pbt_helpers import blobs
from tests.pbt_helpers import mlp

pytestmark = pytest.mark.all_backends

X, Y = blobs(64)
DEVICES = ["/cpu:0", "/cpu:1", "/cpu:2", "/cpu:3"]
BACKEND = keras.backend.backend()
# Models on a second CPU device: TensorFlow's logical devices, JAX's host
# devices (tests/conftest.py); PyTorch has one CPU device.
SECOND_CPU = {"tensorflow": "/cpu:1", "jax": "cpu:1"}.get(BACKEND)


def _plain(seed=0):
    return mlp(seed, keras.optimizers.Adam(1e-2))


def _mirrored(seed=0):
    with devices.member_strategy(DEVICES).scope():
        return mlp(seed, keras.optimizers.Adam(1e-2))


def _on_cpu1(seed=0):
    with keras.device(SECOND_CPU):
        model = mlp(seed, keras.optimizers.Adam(1e-2))
    model.test_device = SECOND_CPU  # trained there too (JAX computes where fit runs)
    return model


BUILDERS = {"plain": _plain}
if SECOND_CPU:
    BUILDERS["cpu1"] = _on_cpu1
if BACKEND == "tensorflow":
    BUILDERS["mirrored"] = _mirrored
MIRRORED = "mirrored" if BACKEND == "tensorflow" else "plain"


def _numpy(tensor):
    return np.array(keras.ops.convert_to_numpy(tensor), copy=True)


def _device(tensor):
    """Where a backend tensor lives, comparably across tensors."""
    if BACKEND == "jax":
        return tuple(sorted(str(d) for d in tensor.devices()))
    return str(tensor.device)


def _is_device_tensor(a):
    return keras.ops.is_tensor(a) and not isinstance(a, np.ndarray)


def _train(model, steps=3):
    with keras.device(getattr(model, "test_device", None) or "cpu:0"):
        _fit(model, steps)


def _fit(model, steps):
    model.fit(X, Y, batch_size=16, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)


def _variables(model):
    return list(model.weights) + [v for _, o in snapshot_lib.optimizers(model) for v in o.variables]


def _values(model):
    return [np.array(v.numpy(), copy=True) for v in _variables(model)]


def _arrays(snap):
    return snap.weights + snap.optimizer


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_device_copies_are_tensors_on_the_variables_device(kind):
    model = BUILDERS[kind]()
    _train(model)
    snap = snapshot_lib.capture(model, "a", 3, on_device=True)
    assert snap.on_device
    for a, v in zip(_arrays(snap), _variables(model)):
        assert _is_device_tensor(a)
        assert _device(a) == _device(v.value)  # the primary replica's device when mirrored
        if kind == "cpu1":
            assert "CPU:1" in str(_device(a)).upper()
        np.testing.assert_array_equal(_numpy(a), v.numpy())
    host = snapshot_lib.capture(model, "a", 3, on_device=False)
    assert not host.on_device
    assert snap.nbytes == host.nbytes > 0
    assert snap.checksum() == host.checksum()


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_cpu_default_is_the_host_path(kind):
    # The choice must change nothing on CPU: the default is NumPy.
    model = BUILDERS[kind]()
    _train(model)
    snap = snapshot_lib.capture(model, "a", 3)
    assert not snap.on_device
    assert all(isinstance(a, np.ndarray) for a in _arrays(snap))
    assert snap.to_host() is snap


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_training_after_device_capture_does_not_change_it(kind):
    # A device copy must be a copy: the variables' buffers are updated in
    # place by the optimizer and by assign_add.
    model = BUILDERS[kind]()
    _train(model)
    snap = snapshot_lib.capture(model, "a", 3, on_device=True)
    frozen = [np.array(_numpy(a), copy=True) for a in _arrays(snap)]
    crc = snap.checksum()
    _train(model, steps=4)
    for v in _variables(model):
        v.assign_add(np.ones(v.shape, dtype=v.dtype))
    now = _values(model)
    assert all(not np.array_equal(a, b) for a, b in zip(frozen, now))
    for a, b in zip(_arrays(snap), frozen):
        np.testing.assert_array_equal(_numpy(a), b)
    assert snap.checksum() == crc


@pytest.mark.parametrize("parent_kind,child_kind",
                         sorted({("mirrored", "mirrored"), ("cpu1", "plain"), ("mirrored", "plain"),
                                 ("plain", "mirrored"), ("plain", "plain")}))
def test_restore_from_device_snapshot_gives_the_parents_state(parent_kind, child_kind):
    if parent_kind not in BUILDERS or child_kind not in BUILDERS:
        pytest.skip(f"no {parent_kind}/{child_kind} models on {BACKEND}")
    parent, child = BUILDERS[parent_kind](seed=0), BUILDERS[child_kind](seed=1)
    _train(parent, steps=4)
    _train(child, steps=2)
    snap = snapshot_lib.capture(parent, "parent", 4, on_device=True)
    frozen = [np.array(_numpy(a), copy=True) for a in _arrays(snap)]
    want = _values(parent)
    assert any(not np.array_equal(a, b) for a, b in zip(want, _values(child)))
    snapshot_lib.restore(child, snap)
    got = _values(child)
    # Weights, Adam's slots (m and v of every weight) and the iteration count.
    assert len(got) == len(want) and len(child.optimizer.variables) > 2 * len(child.weights)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    if child_kind == "mirrored":
        for v in _variables(child):
            for component in v.value.values:  # every replica holds the parent's value
                np.testing.assert_array_equal(_numpy(component), v.numpy())
    # The next step of the child equals the next step of the parent.
    _train(parent, steps=1)
    _train(child, steps=1)
    for a, b in zip(_values(child), _values(parent)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # ...and neither step wrote into the snapshot.
    for a, b in zip(_arrays(snap), frozen):
        np.testing.assert_array_equal(_numpy(a), b)


def test_to_host_gives_read_only_numpy_with_the_same_values():
    model = BUILDERS[MIRRORED]()
    _train(model)
    snap = snapshot_lib.capture(model, "a", 3, hparams={"lr": 0.1}, metric=0.5, on_device=True)
    host = snap.to_host()
    assert host is not snap and not host.on_device
    assert (host.member_id, host.step, host.hparams, host.metric, host.layout) == (
        snap.member_id, snap.step, snap.hparams, snap.metric, snap.layout)
    for a, t in zip(_arrays(host), _arrays(snap)):
        assert isinstance(a, np.ndarray) and not a.flags.writeable
        np.testing.assert_array_equal(a, _numpy(t))
    assert host.checksum() == snap.checksum() and host.nbytes == snap.nbytes


def test_population_checkpoint_encodes_a_device_snapshot(tmp_path):
    # Population._save_member writes snap.weights / snap.optimizer through
    # checkpoint.encode_arrays: device tensors must arrive as NumPy.
    model = _plain()
    _train(model)
    snap = snapshot_lib.capture(model, "a", 3, on_device=True)
    arrays = {f"w{i:05d}": a for i, a in enumerate(snap.weights)}
    arrays.update({f"o{i:05d}": a for i, a in enumerate(snap.optimizer)})
    data = checkpoint_lib.encode_arrays(arrays, {"member": "a"})
    decoded, meta = checkpoint_lib.decode_arrays(data, str(tmp_path / "x.npz"))
    assert meta["member"] == "a"
    names = sorted(decoded)
    restored = Snapshot("a", 3, tuple(decoded[k] for k in names if k.startswith("w")),
                        tuple(decoded[k] for k in names if k.startswith("o")), layout=snap.layout)
    assert restored.checksum() == snap.checksum()
    fresh = _plain(seed=5)
    _train(fresh, steps=1)  # its optimizer built
    snapshot_lib.restore(fresh, restored)
    for a, b in zip(_values(fresh), _values(model)):
        np.testing.assert_array_equal(a, b)


def test_tuner_checkpoint_saves_and_loads_a_device_snapshot(tmp_path):
    model = BUILDERS[MIRRORED]()
    _train(model)
    snap = snapshot_lib.capture(model, "t", 3, hparams={"lr": 0.01}, on_device=True)
    tuner_checkpoint.save(str(tmp_path), snap)
    back = tuner_checkpoint.load(str(tmp_path))
    assert not back.on_device and back.checksum() == snap.checksum()
    fresh = _plain(seed=7)
    _train(fresh, steps=1)
    snapshot_lib.restore(fresh, back)
    for a, b in zip(_values(fresh), _values(model)):
        np.testing.assert_array_equal(a, b)


def test_on_device_must_be_a_bool_or_none():
    with pytest.raises(ValueError, match="Received: on_device='gpu'"):
        snapshot_lib.capture(_plain(), "a", 0, on_device="gpu")


def test_store_keeps_one_published_snapshot_per_member():
    # Publishing replaces the member's previous snapshot: once nobody else
    # holds it, it is freed (device memory included), so the store never
    # keeps more than one snapshot per member.
    store = InMemoryStore(seed=0)
    model = _plain()
    _train(model)
    refs = []
    for step in range(4):
        snap = snapshot_lib.capture(model, "a", step, on_device=True)
        refs.append(weakref.ref(snap))
        store.publish(snap)
        other = snapshot_lib.capture(model, "b", step)
        refs.append(weakref.ref(other))
        store.publish(other)
        del snap, other
        gc.collect()
        alive = [r() for r in refs if r() is not None]
        assert sorted((s.member_id, s.step) for s in alive) == [("a", step), ("b", step)]
        del alive
    assert store.snapshot("a").step == 3 and store.snapshot_members() == {"a", "b"}
