"""keras-pbt without TensorFlow: imports, member pipelines, summaries.

Runs under every backend (`all_backends`); `make test` runs it again in a
virtualenv that has no TensorFlow at all (tests/other_backends.sh). The
pipeline and summary tests compare against TensorFlow's own where it is
installed.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_pbt.core import lineage as lineage_lib
from keras_pbt.population import data as data_lib
from keras_pbt.population.array_batches import ArrayBatches
from keras_pbt.storage import events
from keras_pbt.storage.summary import MemberSummaryWriter

pytestmark = pytest.mark.all_backends

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAS_TF, reason="compares with TensorFlow's own")


def _subprocess(code, backend, timeout=300):
    env = dict(os.environ, KERAS_BACKEND=backend,
               PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tensorboard_plugin"),
                                           os.environ.get("PYTHONPATH", "")]))
    if backend is None:
        env.pop("KERAS_BACKEND")
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.skipif(not HAS_TF, reason="nothing can import TensorFlow where it is not installed; "
                    "this pass trains populations on this backend in every other test")
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_population_on_jax_or_torch_imports_no_tensorflow(backend, tmp_path):
    # Without a seed: `Population(seed=)` calls `keras.utils.set_random_seed`,
    # which seeds (so imports) TensorFlow too wherever it is installed.
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    proc = _subprocess(f"""
        import json, sys
        import keras_pbt
        for name in keras_pbt._LAZY:
            getattr(keras_pbt, name)
        for name in keras_pbt._SUBMODULES:
            getattr(keras_pbt, name)
        import keras, numpy as np
        from keras_pbt.tuner import tuner, worker
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 4)).astype("float32"); y = (x[:, 0] > 0).astype("int32")

        def build(hp):
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            model.compile(keras.optimizers.SGD(hp["learning_rate"]),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"])
            return model

        pop = keras_pbt.Population(build, {{"learning_rate": keras_pbt.LogUniform(1e-3, 0.1)}},
                                   population_size=2, logdir={str(tmp_path)!r})
        pop.fit(x, y, validation_data=(x, y), epochs=2, batch_size=16, verbose=0)
        records = keras_pbt.read_lineage({str(tmp_path)!r})
        print(json.dumps({{"tf": sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"),
                          "records": len(records), "backend": keras.backend.backend()}}))
    """, backend)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"tf": [], "records": 6, "backend": backend}  # init + 2 boundaries, x2


@pytest.mark.skipif(HAS_TF, reason="TensorFlow is installed here")
def test_default_backend_without_tensorflow_says_what_to_install():
    proc = _subprocess("import keras_pbt\nkeras_pbt.Population\n", None)
    assert proc.returncode != 0
    assert "pip install 'keras-pbt[tensorflow]'" in proc.stderr
    assert "KERAS_BACKEND=jax" in proc.stderr


def test_array_batches_every_pass_is_a_seeded_permutation():
    x = np.arange(10, dtype="float32")[:, None]
    y = np.arange(10) * 10
    batches = ArrayBatches((x, y), batch_size=4, seed=3)
    assert batches.batches_per_pass == 3 and batches.num_batches is None
    passes = []
    for p in range(3):
        got = [batches[p * 3 + j] for j in range(3)]
        assert [len(b[0]) for b in got] == [4, 4, 2]  # the last batch of a pass is short
        rows = np.concatenate([b[0][:, 0] for b in got]).astype(int)
        assert sorted(rows) == list(range(10))
        np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), rows * 10)
        passes.append(list(rows))
    assert passes[0] != passes[1] != passes[2]
    again = ArrayBatches((x, y), batch_size=4, seed=3)
    assert [list(again[i][1]) for i in range(6)] == [list(batches[i][1]) for i in range(6)]
    other = ArrayBatches((x, y), batch_size=4, seed=4)
    assert [list(other[i][1]) for i in range(3)] != [list(batches[i][1]) for i in range(3)]
    ordered = ArrayBatches((x,), batch_size=4)
    assert [list(ordered[i][0][:, 0]) for i in (0, 2, 3)] == [[0, 1, 2, 3], [8, 9], [0, 1, 2, 3]]


def test_array_batches_take_several_inputs_and_sample_weights():
    x = {"a": np.zeros((5, 2)), "b": np.arange(5)}
    batch = ArrayBatches((x, np.arange(5), np.ones(5)), batch_size=2, seed=0)[0]
    assert len(batch) == 3 and set(batch[0]) == {"a", "b"}
    assert batch[0]["a"].shape == (2, 2)
    np.testing.assert_array_equal(batch[0]["b"], batch[1])
    with pytest.raises(ValueError, match="same number of samples"):
        ArrayBatches((np.zeros(4), np.zeros(5)), batch_size=2)


def test_one_steps_per_epoch_rule():
    x = np.zeros((100, 3))
    assert data_lib.steps_per_epoch(x) == 4  # 32 by default
    assert data_lib.steps_per_epoch(x, batch_size=10) == 10
    assert data_lib.steps_per_epoch(x, batch_size=10, steps=3) == 3
    assert data_lib.steps_per_epoch({"a": x, "b": x[:, 0]}, np.zeros(100), batch_size=64) == 2
    steps, vsteps, rest = data_lib.check_fit_arguments(
        x, np.zeros(100), (x[:50], np.zeros(50)), 16, True, 1024, {"class_weight": None})
    assert (steps, vsteps, rest) == (7, 4, {"class_weight": None})


@needs_tf
def test_steps_of_a_dataset_and_the_tf_pipeline_batches():
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices(np.zeros((10, 2))).batch(4)
    assert data_lib.is_dataset(data) and not data_lib.is_dataset(np.zeros(3))
    assert data_lib.steps_per_epoch(data) == 3
    with pytest.raises(ValueError, match="validation_steps=None"):
        data_lib.steps_per_epoch(data.repeat(), name="validation_steps")
    # tf.data's pipeline for arrays and ArrayBatches cut the same batches.
    x = np.arange(10, dtype="float32")
    from keras_pbt.population import tf_pipeline

    ds = tf_pipeline.distribute_arrays(None, x, 10, 4, seed=1)
    assert [len(b) for b in ds.take(6)] == [len(ArrayBatches((x,), 4, 1)[i][0]) for i in range(6)]


def _events(logdir):
    return [e for path in sorted(os.listdir(logdir))
            for e in events.read_events(os.path.join(logdir, path))]


def test_summaries_are_written_and_read_without_tensorflow(tmp_path):
    writer = MemberSummaryWriter(str(tmp_path), "a/b")
    record = lineage_lib.LineageRecord("a/b", 10, "keep", {"lr": 0.1}, {"lr": 0.1}, 0.5,
                                       monitor="loss", mode="min")
    writer.write(10, metric=("loss", 0.5), hparams={"lr": 0.1, "name": "x"}, records=[record])
    writer.flush()
    run = tmp_path / "member_a_b"
    got = _events(run)
    assert got[0].file_version == "brain.Event:2"
    values = {v.tag: v for v in got[1].summary.value}
    assert got[1].step == 10
    assert sorted(values) == sorted([lineage_lib.LINEAGE_TAG, "pbt/hparams/lr", "pbt/loss"])
    assert values["pbt/loss"].metadata.plugin_data.plugin_name == "scalars"
    assert values[lineage_lib.LINEAGE_TAG].metadata.data_class == 2  # DATA_CLASS_TENSOR
    assert events.read_lineage(str(tmp_path)) == [record]
    # A record cut short (a run still writing) ends the file; nothing raises.
    path = run / os.listdir(run)[0]
    path.write_bytes(path.read_bytes()[:-7])
    assert len(_events(run)) == 1
    writer.close()


@needs_tf
def test_summaries_are_the_protos_tf_summary_writes(tmp_path):
    import tensorflow as tf

    writer = MemberSummaryWriter(str(tmp_path / "ours"), 0)
    record = lineage_lib.LineageRecord(0, 0, "init", {"lr": 0.1})
    writer.write(3, metric=("loss", 0.25), records=[record])
    writer.close()
    tf_writer = tf.summary.create_file_writer(str(tmp_path / "tf"))
    from keras_pbt.storage.summary import lineage_metadata

    with tf_writer.as_default(step=3):
        tf.summary.scalar("pbt/loss", 0.25)
        tf.summary.write(lineage_lib.LINEAGE_TAG, tf.constant(lineage_lib.dumps([record])),
                         metadata=lineage_metadata())
    tf_writer.close()
    ours = {v.tag: v for e in _events(tmp_path / "ours" / "member_0") for v in e.summary.value}
    theirs = {v.tag: v for e in _events(tmp_path / "tf") for v in e.summary.value}
    assert sorted(ours) == sorted(theirs)
    from tensorboard.util import tensor_util

    for tag in ours:
        mine, tfs = (tensor_util.make_ndarray(v[tag].tensor) for v in (ours, theirs))
        assert mine.dtype == tfs.dtype and mine.shape == tfs.shape == () and mine == tfs, tag
        assert ours[tag].metadata.data_class == theirs[tag].metadata.data_class
        assert (ours[tag].metadata.plugin_data.plugin_name
                == theirs[tag].metadata.plugin_data.plugin_name)
