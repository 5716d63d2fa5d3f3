"""Writes small real PBT log directories for the TensorBoard plugin tests.

`train_population` runs a tiny `keras_pbt.Population` (sklearn digits, a
64-16-10 MLP, one member named with markup) with `logdir=` so that the
summaries are the ones users get. `write_synthetic_population` writes
hand-made records through the same `MemberSummaryWriter`, for shapes a tiny
run does not reach (many boundaries, many members).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HOSTILE_MEMBER = "<img src=x onerror=alert(1)>"


def train_population(logdir, member_ids=(0, 1, 2, HOSTILE_MEMBER), epochs=4, seed=0):
    """Trains a tiny synchronous `keras_pbt.Population`; returns its lineage records."""
    import keras
    from sklearn.datasets import load_digits

    import keras_pbt

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    xt, yt, xv, yv = x[:320], y[:320], x[1400:1560], y[1400:1560]
    space = {
        "learning_rate": keras_pbt.LogUniform(1e-3, 0.5),
        "momentum": keras_pbt.Uniform(0.0, 0.9),
    }

    def build(hp):
        model = keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)]
        )
        model.compile(
            keras.optimizers.SGD(hp["learning_rate"], momentum=hp["momentum"]),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    pop = keras_pbt.Population(
        build, space, population_size=len(member_ids), member_ids=list(member_ids),
        logdir=logdir, seed=seed, policy=keras_pbt.Policy(quantile=0.25))
    pop.store.timeout = 120
    pop.fit(xt, yt, validation_data=(xv, yv), epochs=epochs, batch_size=32)
    for member in pop.members:
        member.callback.close()
    return pop.lineage


def synthetic_records(n_members, n_boundaries, steps_per_interval=10, seed=0):
    """A plausible lineage: every boundary the worst quarter copies the best."""
    import random

    from keras_pbt.core.lineage import LineageRecord

    rnd = random.Random(seed)
    hp = {m: {"learning_rate": 10 ** rnd.uniform(-3, -1), "optimizer": rnd.choice(["sgd", "adam"])}
          for m in range(n_members)}
    metric = {m: rnd.uniform(0.1, 0.3) for m in range(n_members)}
    out = {m: [LineageRecord(m, 0, "init", dict(hp[m]), monitor="val_accuracy", mode="max")]
           for m in range(n_members)}
    for b in range(1, n_boundaries + 1):
        step = b * steps_per_interval
        for m in metric:
            metric[m] = min(0.99, metric[m] + rnd.uniform(0, 0.02) * hp[m]["learning_rate"] * 30)
        ranked = sorted(metric, key=lambda m: (metric[m], m))
        k = max(1, n_members // 4)
        losers, winners = ranked[:k], ranked[-k:]
        for m in range(n_members):
            if m in losers and b < n_boundaries and metric[winners[0]] > metric[m]:
                p = rnd.choice(winners)
                before = dict(hp[m])
                hp[m] = {"learning_rate": hp[p]["learning_rate"] * 1.2, "optimizer": hp[p]["optimizer"]}
                out[m].append(LineageRecord(
                    m, step, "exploit", dict(hp[m]), before, metric[m], p, step, metric[p],
                    {"learning_rate": "* 1.2", "optimizer": "copy"}, b, "val_accuracy", "max",
                    "truncation"))
                metric[m] = metric[p]
            else:
                out[m].append(LineageRecord(
                    m, step, "keep", dict(hp[m]), dict(hp[m]), metric[m], interval=b,
                    monitor="val_accuracy", mode="max"))
    return out


def write_synthetic_population(logdir, n_members, n_boundaries, seed=0):
    """Writes `synthetic_records` as real summaries; returns them (member -> list)."""
    return write_records(logdir, synthetic_records(n_members, n_boundaries, seed=seed))


def write_records(logdir, records):
    """Writes `records` (member -> list of `LineageRecord`) as real summaries; returns them."""
    from keras_pbt.storage.summary import MemberSummaryWriter

    for m, recs in records.items():
        w = MemberSummaryWriter(logdir, m)
        for r in recs:
            w.write(r.step, metric=None if r.metric is None else ("val_accuracy", r.metric),
                    hparams=r.hparams, records=[r])
        w.close()
    return records


def restart_records():
    """Two members: member 0 ends with an Iterated PBT restart from its own
    weights (parent = itself), member 1 copied member 0 once."""
    from keras_pbt.core.lineage import LineageRecord

    hp = {"learning_rate": 0.01}
    kw = dict(monitor="val_accuracy", mode="max")
    return {
        0: [LineageRecord(0, 0, "init", hp, **kw),
            LineageRecord(0, 10, "keep", hp, hp, 0.5, interval=1, **kw),
            LineageRecord(0, 20, "restart", {"learning_rate": 0.02}, hp, 0.6, 0, 20, 0.6,
                          {"learning_rate": "resample"}, 2, reason="iterated PBT", **kw)],
        1: [LineageRecord(1, 0, "init", hp, **kw),
            LineageRecord(1, 10, "exploit", hp, hp, 0.3, 0, 10, 0.5, {"learning_rate": "copy"},
                          1, **kw),
            LineageRecord(1, 20, "keep", hp, hp, 0.55, interval=2, **kw)],
    }


# A payload cut in the middle, as a crash while writing could leave it.
TRUNCATED_PAYLOAD = '{"version": 1, "records": [{"version": 1, "member": 0, "st'


def write_malformed_population(logdir):
    """A population whose lineage data is partly unreadable.

    `member_0` has two good records (init, keep) and, at other steps, a
    truncated payload, an unknown record version, a record whose hparams are
    not an object, and a float tensor under the lineage tag. `member_1` has a
    good record but plugin metadata of an unknown version.

    Returns:
        the number of malformed tensors `member_0` holds.
    """
    import json

    import numpy as np
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.util import tensor_util

    from keras_pbt.core import lineage as lineage_lib
    from keras_pbt.storage.summary import EventFile, MemberSummaryWriter, lineage_metadata

    def tensor(f, value, step, metadata):
        summary = summary_pb2.Summary()
        summary.value.add(tag=lineage_lib.LINEAGE_TAG, metadata=metadata,
                          tensor=tensor_util.make_tensor_proto(value))
        f.add(summary, step)

    good = MemberSummaryWriter(logdir, 0)
    good.write(0, hparams={"lr": 0.1}, records=[
        lineage_lib.LineageRecord(0, 0, "init", {"lr": 0.1}, monitor="loss", mode="min")])
    good.write(10, metric=("loss", 1.5), hparams={"lr": 0.1}, records=[
        lineage_lib.LineageRecord(0, 10, "keep", {"lr": 0.1}, {"lr": 0.1}, 1.5,
                                  monitor="loss", mode="min")])
    good.close()
    bad_record = lineage_lib.LineageRecord(0, 40, "keep", {"lr": 0.1}).to_dict()
    bad_record["hparams"] = "<b>not an object</b>"
    f = EventFile(f"{logdir}/member_0")
    md = lineage_metadata()
    tensor(f, TRUNCATED_PAYLOAD, 20, md)
    tensor(f, '{"version": 7, "records": []}', 30, md)
    tensor(f, json.dumps({"version": 1, "records": [bad_record]}), 40, md)
    tensor(f, np.float32(3.5), 50, md)
    f.close()
    future = summary_pb2.SummaryMetadata()
    future.CopyFrom(lineage_metadata())
    future.plugin_data.content = b'{"version": 99}'
    f = EventFile(f"{logdir}/member_1")
    record = lineage_lib.LineageRecord(1, 0, "init", {"lr": 0.2})
    tensor(f, lineage_lib.dumps([record]), 0, future)
    f.close()
    return 4


_SHARED = {}


def shared_logdir():
    """One logdir for the whole test session: `(logdir, info)`.

    `pop_a`: a real tiny population run (members 0, 1, 2 and a hostile id);
    `pop_b`: 6 synthetic members x 15 boundaries (more than TensorBoard's
    default 10 samples per tensor series); `pop_bad`: malformed data.
    `info` holds what was written: `lineage_a` (the store's records),
    `records_b` (member -> records), `malformed` (count).
    """
    if "logdir" not in _SHARED:
        import atexit
        import shutil
        import tempfile

        logdir = tempfile.mkdtemp(prefix="pbt_lineage_logdir_")
        atexit.register(shutil.rmtree, logdir, True)
        info = {
            "lineage_a": train_population(os.path.join(logdir, "pop_a")),
            "records_b": write_synthetic_population(os.path.join(logdir, "pop_b"), 6, 15),
            "malformed": write_malformed_population(os.path.join(logdir, "pop_bad")),
        }
        _SHARED["logdir"], _SHARED["info"] = logdir, info
    return _SHARED["logdir"], _SHARED["info"]
