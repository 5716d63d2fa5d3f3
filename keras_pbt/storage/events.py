"""Reading lineage records back from a TensorBoard log directory.

The writer is `keras_pbt.storage.summary.MemberSummaryWriter` (one run
`member_<id>` per member, records as plugin data under
`keras_pbt.core.lineage.LINEAGE_TAG`). Reading imports TensorFlow when it is
called, not before.
"""

import os

from keras_pbt.core import lineage as lineage_lib


def read_lineage(logdir):
    """Reads the lineage records a run wrote to a TensorBoard log directory.

    `logdir` is the directory given as `logdir=` to `PBTCallback` or
    `Population` (it holds one `member_<id>` run per member). When a step's
    records were written more than once (a restart after a boundary), the
    last write, which carries the earlier records too, counts.

    Raises:
        ValueError: if there are no lineage records, or records of more than
            one population (runs in several directories): pass one of them.
    """
    runs = {}
    for root, _, files in os.walk(logdir):
        events = sorted(f for f in files if "tfevents" in f)
        if not events:
            continue
        by_step = {}
        for name in events:
            for event in _events(os.path.join(root, name)):
                for value in event.summary.value:
                    if (value.tag == lineage_lib.LINEAGE_TAG
                            and value.metadata.plugin_data.plugin_name in ("", lineage_lib.PLUGIN_NAME)):
                        by_step[event.step] = lineage_lib.loads(_tensor_text(value.tensor))
        if by_step:
            runs[root] = [r for step in sorted(by_step) for r in by_step[step]]
    if not runs:
        raise ValueError(f"No keras-pbt lineage records under {logdir!r}.")
    populations = sorted({os.path.dirname(run) for run in runs})
    if len(populations) > 1:
        raise ValueError(
            f"{logdir!r} holds the lineage of {len(populations)} populations: "
            f"{', '.join(populations)}. Pass one of them."
        )
    return [r for run in sorted(runs) for r in runs[run]]


def _events(path):
    """The `Event` protos of one event file; stops at a truncated last record
    (a run that is still writing)."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    try:
        for raw in tf.data.TFRecordDataset(path):
            yield event_pb2.Event.FromString(raw.numpy())
    except tf.errors.DataLossError:
        return


def _tensor_text(tensor):
    import tensorflow as tf

    return tf.make_ndarray(tensor).item()
