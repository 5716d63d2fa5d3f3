"""One payload layout for a member's state on disk (keras_pbt.storage.payload):
a Population checkpoint's member file and a PBTTuner segment snapshot are
written and read by the same two functions."""

import math

import numpy as np
import pytest

from keras_pbt.storage import checkpoint as ck
from keras_pbt.storage import payload
from keras_pbt.storage.payload import Snapshot
from keras_pbt.tuner import snapshots

LAYOUT = (("weight", "kernel", (2, 3), "float32"), ("optimizer", "iteration", (), "int64"))


def _snapshot(member_id="Infinity", hparams=None, metric=math.nan, weights=None):
    weights = weights if weights is not None else np.arange(6, dtype="float32").reshape(2, 3)
    return Snapshot(member_id, 7, (weights,), (np.array(7, "int64"),),
                    hparams or {"optimizer": "NaN", "lr": 0.1}, metric, LAYOUT)


def test_round_trip_keeps_strings_spelled_like_non_finite_floats():
    # Issue 20: a string hyperparameter "NaN" came back as a float, and a
    # member id "Infinity" broke a resume; only the metric is a float.
    snap = _snapshot()
    arrays, meta = payload.encode_snapshot(snap, extra=[np.array([1, 2], "uint32")])
    data = ck.encode_arrays(arrays, meta)
    back, extra = payload.decode_snapshot(*ck.decode_arrays(data, "x.npz"), "x.npz")
    assert back.member_id == "Infinity" and back.hparams == {"optimizer": "NaN", "lr": 0.1}
    assert math.isnan(back.metric) and back.step == 7 and back.layout == LAYOUT
    assert back.checksum() == snap.checksum()
    assert [e.tolist() for e in extra] == [[1, 2]]


def test_counts_that_do_not_match_the_arrays_are_refused():
    arrays, meta = payload.encode_snapshot(_snapshot())
    del arrays["o00000"]
    with pytest.raises(ck.CheckpointError, match=r"x.npz holds 0 arrays for `num_optimizer`"):
        payload.decode_snapshot(arrays, meta, "x.npz")
    with pytest.raises(ck.CheckpointError, match="no 'snapshot' payload"):
        payload.decode_snapshot({}, {"n_weights": 1}, "x.npz")


def test_kept_snapshots_round_trip_beside_the_main_one():
    main = _snapshot(member_id=1, metric=0.5)
    kept = {"initial": _snapshot(member_id=1, weights=np.zeros((2, 3), "float32")),
            "champion0": _snapshot(member_id=1, metric=0.75)}
    arrays, meta = payload.encode_snapshot(main, extra=[np.array([3], "uint32")])
    payload.encode_kept(arrays, meta, kept)
    arrays, meta = ck.decode_arrays(ck.encode_arrays(arrays, meta), "x.npz")
    back, extra = payload.decode_snapshot(arrays, meta, "x.npz")  # the kept ones do not leak in
    assert back.checksum() == main.checksum() and [e.tolist() for e in extra] == [[3]]
    again = payload.decode_kept(arrays, meta, "x.npz")
    assert sorted(again) == ["champion0", "initial"]
    assert again["champion0"].metric == 0.75 and again["initial"].checksum() == kept[
        "initial"].checksum()
    del arrays["initial.w00000"]
    with pytest.raises(ck.CheckpointError, match=r"x.npz \(initial\) holds 0 arrays"):
        payload.decode_kept(arrays, meta, "x.npz")
    with pytest.raises(ValueError, match=r"Received: tag='a.b'"):
        payload.encode_kept({}, {}, {"a.b": main})


def test_the_tuner_and_the_population_share_the_layout(tmp_path):
    snap = _snapshot(member_id=3, metric=0.25)
    snapshots.save(str(tmp_path), snap)
    arrays, meta = ck.read_file(str(tmp_path), ck.read_manifest(str(tmp_path))["files"][0])
    back, extra = payload.decode_snapshot(arrays, meta, "f")
    assert extra == () and back.member_id == 3 and back.metric == 0.25
    assert set(meta) == {"snapshot"}


def test_a_snapshot_of_device_tensors_is_written_through_its_host_copy(tmp_path):
    # A PyTorch member on a GPU hands the tuner CUDA tensors, which
    # `np.asarray` cannot read. A CPU tensor that requires grad fails the
    # same way; the writer must go through `Snapshot.to_host()`.
    torch = pytest.importorskip("torch")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    weights = torch.arange(6, dtype=torch.float32, device=device).reshape(2, 3)
    weights.requires_grad_(True)
    with pytest.raises((RuntimeError, TypeError)):
        np.asarray(weights)
    snap = _snapshot(weights=weights, metric=0.5)
    snapshots.save(str(tmp_path), snap)
    back = snapshots.load(str(tmp_path))
    assert not back.on_device and back.weights[0].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert back.checksum() == snap.to_host().checksum()
