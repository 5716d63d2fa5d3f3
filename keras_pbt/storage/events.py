"""Reading lineage records back from a TensorBoard log directory.

The writer is `keras_pbt.storage.summary.MemberSummaryWriter` (one run
`member_<id>` per member, records as plugin data under
`keras_pbt.core.lineage.LINEAGE_TAG`). Reading needs the `tensorboard`
package's protos only, no TensorFlow, and imports them when it is called
(`import keras_pbt` stays light).
"""

import os
import struct

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
    from tensorboard.util import tensor_util

    runs = {}
    for root, _, files in os.walk(logdir):
        events = sorted(f for f in files if "tfevents" in f)
        if not events:
            continue
        by_step = {}
        for name in events:
            for event in read_events(os.path.join(root, name)):
                for value in event.summary.value:
                    if (value.tag == lineage_lib.LINEAGE_TAG
                            and value.metadata.plugin_data.plugin_name in ("", lineage_lib.PLUGIN_NAME)):
                        text = tensor_util.make_ndarray(value.tensor).item()
                        by_step[event.step] = lineage_lib.loads(text)
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


def read_events(path):
    """The `Event` protos of one event file, in order.

    A record is a little-endian uint64 length, a uint32 checksum, the
    data and a uint32 checksum (the TFRecord framing). Reading stops at a
    truncated last record (a run that is still writing).

    Args:
        path: an event file (`events.out.tfevents.*`).

    Yields:
        `tensorboard.compat.proto.event_pb2.Event`.
    """
    from tensorboard.compat.proto import event_pb2

    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            if len(data) < length or len(f.read(4)) < 4:
                return
            yield event_pb2.Event.FromString(data)
