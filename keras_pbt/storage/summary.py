"""TensorBoard summaries of one member: metric, hyperparameters, lineage.

One run per member under the log directory (`member_<id>`), holding
scalars `pbt/<monitor>` and `pbt/hparams/<name>` (so TensorBoard's Scalars
tab shows the schedules) and the lineage records as plugin data for the
`pbt_lineage` plugin.
"""

import json
import numbers
import os
import re

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from keras_pbt.core import lineage as lineage_lib


def run_name(member_id):
    """The run (sub-directory) name of a member: `member_<id>`, path-safe."""
    return "member_" + re.sub(r"[\\/]", "_", str(member_id))


def lineage_metadata():
    """`SummaryMetadata` of the lineage plugin's tensor summaries."""
    md = summary_pb2.SummaryMetadata()
    md.plugin_data.plugin_name = lineage_lib.PLUGIN_NAME
    md.plugin_data.content = json.dumps({"version": lineage_lib.LINEAGE_VERSION}).encode()
    # Without a data class the default (Rust) data server hides the data.
    md.data_class = summary_pb2.DATA_CLASS_TENSOR
    return md


class MemberSummaryWriter:
    """Writes one member's PBT summaries.

    Args:
        logdir: the population's log directory.
        member: the member id; the run is `logdir/member_<id>`.

    Example:

    >>> w = MemberSummaryWriter("runs/demo", 3)
    >>> w.write(step=100, metric=("val_accuracy", 0.9), hparams={"lr": 0.01},
    ...         records=[record])
    """

    def __init__(self, logdir, member_id):
        self.logdir = os.path.join(logdir, run_name(member_id))
        self._writer = tf.summary.create_file_writer(self.logdir)
        self._metadata = lineage_metadata()
        # TensorBoard's default (Rust) data server keeps one tensor per step:
        # a second write at the same step (a restart after a boundary) must
        # carry the step's earlier records too.
        self._step = None
        self._step_records = []

    def write(self, step, metric=None, hparams=None, records=()):
        """Writes the scalars and lineage records of one boundary.

        Args:
            step: the member's step (x-axis).
            metric: optional `(name, value)` of the monitored metric.
            hparams: optional dict; numeric and boolean values become scalars.
            records: `LineageRecord`s to write at this step (one tensor).
        """
        with self._writer.as_default(step=int(step)):
            if metric is not None and isinstance(metric[1], numbers.Real):
                tf.summary.scalar(f"pbt/{metric[0]}", float(metric[1]))
            for name, value in (hparams or {}).items():
                if isinstance(value, numbers.Real):
                    tf.summary.scalar(f"pbt/hparams/{name}", float(value))
            if records:
                if int(step) != self._step:
                    self._step, self._step_records = int(step), []
                self._step_records += list(records)
                tf.summary.write(
                    lineage_lib.LINEAGE_TAG,
                    tf.constant(lineage_lib.dumps(self._step_records)),
                    metadata=self._metadata,
                )

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()
