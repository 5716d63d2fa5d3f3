"""Population checkpoints: resume after SIGKILL and Ctrl-C, atomic writes,
corrupt or truncated files, and no pickle from disk."""

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import keras_pbt
from tests.pbt_helpers import interruptible
from keras_pbt.storage import checkpoint as ck
from tests.test_population import SPACE, X, XV, Y, YV, build

EPOCHS = 8

SCRIPT = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {root!r})
    import keras, keras_pbt
    keras_pbt.configure_cpu_devices(2)
    from tests.test_population import build, SPACE, X, Y, XV, YV

    class Pace(keras.callbacks.Callback):  # slow enough to be killed mid-run
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(0.3)

    pop = keras_pbt.Population(build, SPACE, population_size=3, seed=0, member_ids=["a", "b", "c"])
    pop.fit(X, Y, validation_data=(XV, YV), epochs={epochs}, batch_size=32, callbacks=[Pace()],
            checkpoint_dir={directory!r}, verbose=2)
    print("RESULT " + json.dumps({{
        "resumed_from": pop.resumed_from,
        "lineage": [[r.member_id, r.interval, r.step, r.action] for r in pop.lineage],
        "history": {{m: len(h["val_accuracy"]) for m, h in pop.history.items()}},
        "steps": {{m.member_id: m.callback.steps for m in pop.members}},
        "best": pop.best_member.member_id,
        "final": {{m: h["val_accuracy"][-1] for m, h in pop.history.items()}},
    }}), flush=True)
""")


def _start(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=os.getcwd(), epochs=EPOCHS, directory=str(tmp_path / "ckpt")))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=interruptible)


def _read_until(proc, pattern, timeout=120):
    seen, deadline = "", time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if re.search(pattern, line):
            return seen
    raise AssertionError(f"never printed {pattern!r}:\n{seen}")


def _trained_epochs(out):
    """member -> epochs printed by one run (one line per member per epoch)."""
    got = {}
    for m, e in re.findall(r"member +(\w+)  epoch (\d+)/", out):
        got.setdefault(m, []).append(int(e))
    return got


def _committed_epoch(directory):
    return ck.read_manifest(str(directory))["epoch"]


def _check_final(out, resumed_from):
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert result["resumed_from"] == resumed_from
    assert result["history"] == {m: EPOCHS for m in "abc"}, "no member lost an epoch"
    assert result["steps"] == {m: EPOCHS * 8 for m in "abc"}
    for m in "abc":
        mine = [(i, s, a) for member, i, s, a in result["lineage"] if member == m]
        # Continuous: one init, then exactly one decision per boundary, no repeats.
        assert [i for i, _, _ in mine] == list(range(EPOCHS + 1)), mine
        assert [s for _, s, _ in mine] == [8 * i for i in range(EPOCHS + 1)]
        assert mine[0][2] == "init" and all(a in ("keep", "exploit") for _, _, a in mine[1:])
    # The best member is the one with the best final val_accuracy (as Keras
    # logged it; ties go to the first id), resumed runs included.
    final = result["final"]
    assert result["best"] == min(final, key=lambda m: (-final[m], m)), final


def test_sigkill_then_ctrl_c_then_the_same_command_finishes(tmp_path):
    # 1. SIGKILL mid-run: the last complete interval is on disk.
    proc = _start(tmp_path)
    _read_until(proc, r"epoch 3/")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _committed_epoch(tmp_path / "ckpt")
    assert 2 <= killed_at < EPOCHS - 2

    # 2. The same command resumes there; Ctrl-C then saves and exits cleanly.
    proc = _start(tmp_path)
    out = _read_until(proc, rf"epoch {killed_at + 1}/")
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=120)
    out += rest
    assert f"Resuming from the checkpoint of epoch {killed_at} in" in out
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert "saving a checkpoint" in out
    saved = int(re.search(r"Checkpoint of epoch (\d+) is in", out).group(1))
    assert saved == _committed_epoch(tmp_path / "ckpt") >= killed_at + 1
    trained = _trained_epochs(out)
    assert all(e[0] == killed_at + 1 and e[-1] >= saved for e in trained.values()), trained
    assert not [f for _, _, fs in os.walk(tmp_path / "ckpt") for f in fs if f.startswith(".tmp-")]

    # 3. The same command again trains exactly the epochs after the last
    #    complete interval and produces the final result.
    proc = _start(tmp_path)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    assert _trained_epochs(out) == {m: list(range(saved + 1, EPOCHS + 1)) for m in "abc"}
    _check_final(out, resumed_from=saved)
    assert _committed_epoch(tmp_path / "ckpt") == EPOCHS
    assert sorted(os.listdir(tmp_path / "ckpt")) == [ck.epoch_dir(EPOCHS), ck.MANIFEST]


# ---------------------------------------------------------- in one process


def _population(**kwargs):
    args = dict(population_size=2, seed=7, policy=keras_pbt.Policy(quantile=0.5),
                devices=["/cpu:0", "/cpu:1"])
    args.update(kwargs)
    return keras_pbt.Population(build, SPACE, **args)


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """A 2-member population trained 3 epochs with checkpoints: (pop, dir)."""
    directory = tmp_path_factory.mktemp("pop") / "ckpt"
    pop = _population()
    pop.fit(X, Y, validation_data=(XV, YV), epochs=3, batch_size=32, checkpoint_dir=str(directory))
    return pop, directory


@pytest.fixture
def copy_of(checkpointed, tmp_path):
    _, directory = checkpointed
    target = tmp_path / "ckpt"
    shutil.copytree(directory, target)
    return target


def _member_file(directory, index=0):
    body = ck.read_manifest(str(directory))
    return directory / body["files"][index]["file"]


def test_checkpoint_holds_every_members_state(checkpointed):
    pop, directory = checkpointed
    body = ck.read_manifest(str(directory))
    assert body["epoch"] == 3 and body["member_ids"] == [0, 1] and body["seed"] == 7
    assert [f["file"] for f in body["files"]] == ["epoch_000003/member_0.npz", "epoch_000003/member_1.npz"]
    for member, entry in zip(pop.members, body["files"]):
        arrays, meta = ck.read_file(str(directory), entry)
        weights = [arrays[k] for k in sorted(arrays) if k.startswith("w")]
        for got, v in zip(weights, member.model.weights):
            np.testing.assert_array_equal(got, v.numpy())
        cb = member.callback
        state = meta["state"]
        assert (state["steps"], state["epochs"], state["boundaries"], state["exploits"]) == (
            cb.steps, cb.epochs, cb.boundaries, cb.exploits)
        assert state["hparams"] == cb.hparams and meta["snapshot"]["hparams"] == cb.hparams
        assert state["rng"] == cb.get_state()["rng"]
        assert meta["snapshot"]["num_weights"] == len(member.model.weights)
        assert len(meta["lineage"]) == 4 and len(meta["reports"]) == 3


def test_resume_in_a_new_population_continues_exactly(checkpointed, copy_of):
    pop, _ = checkpointed
    fresh = _population(seed=123)  # the checkpoint's seed wins
    fresh.fit(X, Y, validation_data=(XV, YV), epochs=3, batch_size=32, checkpoint_dir=str(copy_of))
    assert fresh.resumed_from == 3 and fresh.seed == 7
    # Nothing left to train: the state is the checkpointed one.
    for a, b in zip(pop.members, fresh.members):
        for va, vb in zip(a.model.weights + a.model.optimizer.variables,
                          b.model.weights + b.model.optimizer.variables):
            np.testing.assert_array_equal(va.numpy(), vb.numpy())
        assert b.hparams == a.hparams and b.callback.get_state()["rng"] == a.callback.get_state()["rng"]
        assert b.history == a.history
    key = lambda r: (r.member_id, r.interval, r.action, r.step, r.parent)  # noqa: E731
    assert sorted(map(key, fresh.lineage)) == sorted(map(key, pop.lineage))
    # Training on continues the counters and the lineage.
    fresh.fit(X, Y, validation_data=(XV, YV), epochs=5, batch_size=32, checkpoint_dir=str(copy_of))
    for m in fresh.members:
        assert m.callback.epochs == 5 and m.callback.steps == 40
        assert [r.interval for r in fresh.lineage if r.member_id == m.member_id] == [0, 1, 2, 3, 4, 5]
        assert len(m.history["val_accuracy"]) == 5
    assert _committed_epoch(copy_of) == 5


def test_a_crash_during_a_write_leaves_the_last_good_checkpoint(copy_of, monkeypatch):
    before = (copy_of / ck.MANIFEST).read_bytes()
    checkpointer = ck.Checkpointer(str(copy_of), {"member_ids": [0, 1]})
    real_replace = os.replace

    def crash(src, dst):
        if dst.endswith(ck.MANIFEST):
            raise OSError("killed while renaming")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    arrays = {"w00000": np.zeros(3, "float32")}
    assert checkpointer.save_member(0, 4, arrays, {"member": 0}) is False
    with pytest.raises(OSError, match="killed while renaming"):
        checkpointer.save_member(1, 4, arrays, {"member": 1})
    monkeypatch.undo()
    assert (copy_of / ck.MANIFEST).read_bytes() == before
    assert ck.read_manifest(str(copy_of))["epoch"] == 3
    assert not [f for f in os.listdir(copy_of) if f.startswith(".tmp-")], "temp file removed"
    checkpointer.clean()  # the incomplete epoch 4 goes; epoch 3 stays
    assert sorted(os.listdir(copy_of)) == ["epoch_000003", ck.MANIFEST]


def test_atomic_write_replaces_whole_files(tmp_path):
    path = tmp_path / "f.bin"
    ck.atomic_write(str(path), b"old")
    ck.atomic_write(str(path), b"new contents")
    assert path.read_bytes() == b"new contents"
    assert os.listdir(tmp_path) == ["f.bin"]


def _resume(directory):
    _population().fit(X, Y, validation_data=(XV, YV), epochs=3, batch_size=32,
                      checkpoint_dir=str(directory))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "append"])
def test_corrupt_or_truncated_member_file_is_a_clear_error(copy_of, damage):
    path = _member_file(copy_of, 1)
    data = path.read_bytes()
    if damage == "flip":
        data = data[:200] + bytes([data[200] ^ 0xFF]) + data[201:]
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "append":
        data = data + b"\0"
    if damage == "delete":
        path.unlink()
    else:
        path.write_bytes(data)
    with pytest.raises(ck.CheckpointError, match=re.escape(str(path))) as info:
        _resume(copy_of)
    assert info.value.path == str(path)


@pytest.mark.parametrize("damage", ["truncate", "edit", "garbage"])
def test_corrupt_manifest_is_a_clear_error(copy_of, damage):
    path = copy_of / ck.MANIFEST
    text = path.read_text()
    if damage == "truncate":
        text = text[: len(text) // 2]
    elif damage == "edit":
        text = text.replace('"seed": 7', '"seed": 8')
    else:
        text = "\x00\x01 not json"
    path.write_text(text)
    with pytest.raises(ck.CheckpointError, match=re.escape(str(path))):
        _resume(copy_of)


def test_a_checkpoint_of_another_population_is_refused(copy_of):
    other = keras_pbt.Population(lambda hp: build(dict(hp, momentum=0.5)),
                                 {"learning_rate": SPACE["learning_rate"]}, population_size=2, seed=7, devices=["/cpu:0", "/cpu:1"])
    with pytest.raises(ck.CheckpointError, match="another population: its space"):
        other.fit(X, Y, validation_data=(XV, YV), epochs=3, checkpoint_dir=str(copy_of))


def _rewrite_with_valid_checksums(directory, index, data):
    """Replaces member file `index` and fixes the manifest so that only the
    content checks can stop the load (as an attacker would)."""
    path = _member_file(directory, index)
    path.write_bytes(data)
    body = ck.read_manifest(str(directory))
    body["files"][index].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    ck.write_manifest(str(directory), body)
    return path


class _Payload:
    marker = None

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file if unpickled


def test_a_pickle_payload_is_never_loaded(copy_of, tmp_path):
    marker = tmp_path / "pwned"
    _Payload.marker = str(marker)
    path = _rewrite_with_valid_checksums(copy_of, 0, pickle.dumps(_Payload()))
    with pytest.raises(ck.CheckpointError, match=re.escape(str(path))):
        _resume(copy_of)
    assert not marker.exists()


def test_an_npz_with_an_object_array_is_refused(copy_of, tmp_path):
    marker = tmp_path / "pwned"
    _Payload.marker = str(marker)
    arrays, meta = ck.read_file(str(copy_of), ck.read_manifest(str(copy_of))["files"][0])

    buffer = io.BytesIO()
    obj = np.empty(1, dtype=object)
    obj[0] = _Payload()
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), w00000=obj)
    path = _rewrite_with_valid_checksums(copy_of, 0, buffer.getvalue())
    with pytest.raises(ck.CheckpointError, match="pickled data") as info:
        _resume(copy_of)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_lineage_loads_as_json_not_pickle():
    # Lineage inside checkpoints (and the TensorBoard plugin) is JSON only.
    with pytest.raises(ValueError):
        keras_pbt.core.lineage.loads(pickle.dumps([{"member": 0}]))


def test_checkpoint_dir_that_is_a_file_is_rejected(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="checkpoint_dir="):
        _population().fit(X, Y, validation_data=(XV, YV), epochs=1, checkpoint_dir=str(path))


def _lineage_intervals(pop):
    return {m.member_id: [r.interval for r in pop.lineage if r.member_id == m.member_id] for m in pop.members}


def test_asynchronous_population_checkpoints_at_its_boundary_epochs(tmp_path):
    kwargs = dict(synchronous=False, interval=2)
    pop = _population(**kwargs)
    pop.fit(X, Y, validation_data=(XV, YV), epochs=5, batch_size=32, checkpoint_dir=str(tmp_path))
    # Epoch 5 is no boundary: the last checkpoint is epoch 4.
    assert _committed_epoch(tmp_path) == 4
    assert sorted(os.listdir(tmp_path)) == ["epoch_000004", ck.MANIFEST]
    resumed = _population(**kwargs)
    resumed.fit(X, Y, validation_data=(XV, YV), epochs=6, batch_size=32, checkpoint_dir=str(tmp_path))
    assert resumed.resumed_from == 4
    assert all(m.callback.epochs == 6 and m.callback.steps == 48 for m in resumed.members)
    assert _lineage_intervals(resumed) == {0: [0, 1, 2, 3], 1: [0, 1, 2, 3]}
    assert all(len(m.history["loss"]) == 6 for m in resumed.members)


def test_step_intervals_checkpoint_at_every_epoch_end(tmp_path):
    kwargs = dict(interval=keras_pbt.Interval(steps=3), monitor="loss")
    pop = _population(**kwargs)
    pop.fit(X, Y, epochs=2, batch_size=32, checkpoint_dir=str(tmp_path))
    assert _committed_epoch(tmp_path) == 2
    steps_before = [r.step for r in pop.lineage if r.member_id == 0]
    resumed = _population(**kwargs)
    resumed.fit(X, Y, epochs=3, batch_size=32, checkpoint_dir=str(tmp_path))
    assert resumed.resumed_from == 2
    steps = [r.step for r in resumed.lineage if r.member_id == 0]
    assert steps[: len(steps_before)] == steps_before
    assert steps == [0, 3, 6, 9, 12, 15, 18, 21, 24]
    assert [r.interval for r in resumed.lineage if r.member_id == 0] == list(range(9))


def test_a_population_that_trained_in_memory_is_never_rolled_back(tmp_path):
    pop = _population(interval=2)
    pop.fit(X, Y, validation_data=(XV, YV), epochs=3, batch_size=32, checkpoint_dir=str(tmp_path))
    assert _committed_epoch(tmp_path) == 2
    pop.fit(X, Y, validation_data=(XV, YV), epochs=4, batch_size=32, checkpoint_dir=str(tmp_path))
    assert pop.resumed_from is None
    assert all(m.callback.epochs == 4 for m in pop.members)
    assert _committed_epoch(tmp_path) == 4


def _dropout_build(hp):
    import keras

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(hp["learning_rate"], momentum=hp["momentum"]),
                  "sparse_categorical_crossentropy")
    return model


def test_dropout_rng_state_is_checkpointed(tmp_path):
    kwargs = dict(population_size=2, seed=1, monitor="loss", devices=["/cpu:0", "/cpu:1"])
    pop = keras_pbt.Population(_dropout_build, SPACE, **kwargs)
    pop.fit(X, Y, epochs=2, batch_size=32, checkpoint_dir=str(tmp_path))
    resumed = keras_pbt.Population(_dropout_build, SPACE, **kwargs)
    rng_state = lambda m: [v.numpy().tolist() for v in m.model.variables if "seed" in v.name]  # noqa: E731
    assert rng_state(resumed.members[0]) != rng_state(pop.members[0])
    resumed.fit(X, Y, epochs=2, batch_size=32, checkpoint_dir=str(tmp_path))
    for a, b in zip(pop.members, resumed.members):
        assert rng_state(a) and rng_state(b) == rng_state(a)


def _refuse_bare_constants(name):
    raise AssertionError(f"bare {name} in a checkpoint file: not strict JSON")


def test_a_nan_metric_survives_a_checkpoint_as_strict_json(tmp_path):
    # A diverged member's metrics (NaN, inf) are written in keras_pbt.core.lineage's
    # one spelling ("NaN", "Infinity"), so the metadata parses as standard JSON.
    nan, inf = float("nan"), float("inf")
    meta = {"member": 0, "history": {"loss": [nan, 0.5, inf]},
            "reports": [{"metric": nan, "recent": [-inf, 0.25], "start_metric": None}],
            "hparams": {"activation": "relu", "learning_rate": 0.1}}
    checkpointer = ck.Checkpointer(tmp_path, {"member_ids": [0]})
    assert checkpointer.save_member(0, 1, {"w00000": np.ones(2, "float32")}, meta)
    data = (tmp_path / ck.epoch_dir(1) / "member_0.npz").read_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        raw = json.loads(npz["meta"].tobytes().decode("utf-8"),
                         parse_constant=_refuse_bare_constants)
    assert raw["history"]["loss"] == ["NaN", 0.5, "Infinity"]
    assert raw["reports"][0]["recent"] == ["-Infinity", 0.25]
    # Read back as written: the reader of each field turns its metrics into
    # floats (keras_pbt.population.member_checkpoint), nothing else.
    (arrays, back), = checkpointer.load()[1]
    assert back["history"]["loss"] == ["NaN", 0.5, "Infinity"]
    assert back["reports"][0]["start_metric"] is None
    assert back["hparams"] == {"activation": "relu", "learning_rate": 0.1}
    assert arrays["w00000"].tolist() == [1.0, 1.0]


def _named_build(hp):
    return build({"learning_rate": 0.05, "momentum": 0.5})


def test_strings_spelled_like_non_finite_floats_survive_a_resume(tmp_path):
    # Issue 20: a string hyperparameter "NaN" or "Infinity" came back as a
    # float after a resume, and member ids spelled so broke it.
    space = {"tag": keras_pbt.Choice(["NaN", "Infinity", "-Infinity"])}
    kwargs = dict(population_size=2, seed=3, member_ids=["NaN", "Infinity"], monitor="loss",
                  setters={"tag": lambda model, value: None}, devices=["/cpu:0", "/cpu:1"],
                  initial_hparams=[{"tag": "NaN"}, {"tag": "Infinity"}])
    pop = keras_pbt.Population(_named_build, space, **kwargs)
    pop.fit(X, Y, epochs=2, batch_size=32, checkpoint_dir=str(tmp_path), verbose=0)
    resumed = keras_pbt.Population(_named_build, space, **kwargs)
    resumed.fit(X, Y, epochs=3, batch_size=32, checkpoint_dir=str(tmp_path), verbose=0)
    assert resumed.resumed_from == 2
    for a, b in zip(pop.members, resumed.members):
        assert b.member_id == a.member_id and b.hparams == a.hparams
        assert all(isinstance(v, str) for v in b.hparams.values()), b.hparams
    records = [r for r in resumed.lineage if r.step <= 16]
    assert {r.member_id for r in records} == {"NaN", "Infinity"}
    assert all(isinstance(v, str) for r in records for v in r.hparams.values())
    before, after = pop.store.histories(), resumed.store.histories()
    assert set(after) == {"NaN", "Infinity"}
    for m in after:  # the checkpointed reports come back as they were, then one more
        assert [(r.step, r.metric, r.hparams) for r in after[m][:2]] == [
            (r.step, r.metric, r.hparams) for r in before[m]]
    assert [r.interval for r in resumed.lineage if r.member_id == "NaN"] == [0, 1, 2, 3]
