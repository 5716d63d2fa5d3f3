"""TensorBoard summaries of one member: metric, hyperparameters, lineage.

One run per member under the log directory (`member_<id>`), holding
scalars `pbt/<monitor>` and `pbt/hparams/<name>` (so TensorBoard's Scalars
tab shows the schedules) and the lineage records as plugin data for the
`pbt_lineage` plugin.

Written with the `tensorboard` package alone, on every backend: no
TensorFlow. The records are TensorBoard's own (`RecordWriter`, the framing
and checksums of TFRecord files), the summaries the protos `tf.summary`
writes: a scalar is a float32 tensor with the scalars plugin's metadata,
the lineage a string tensor with `DATA_CLASS_TENSOR` (without a data class
the default data server hides it). A local directory is written directly
(synchronously, flushed at each `flush()` and at most `FLUSH_SECS` after a
write); a URL (`gs://...`) through TensorBoard's `EventFileWriter`, which
reaches remote file systems through TensorFlow where it is installed.
"""

import itertools
import json
import numbers
import os
import re
import socket
import threading
import time

import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util

from keras_pbt.core import lineage as lineage_lib

# A write flushes the file when the last flush is older than this (as
# `tf.summary`'s default `flush_millis=10000`).
FLUSH_SECS = 10.0
_FILE_IDS = itertools.count()


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


class EventFile:
    """One TensorBoard event file in `logdir`, written without TensorFlow.

    Args:
        logdir: the directory (created if absent); a URL goes through
            TensorBoard's `EventFileWriter`.

    Example:

    >>> f = EventFile("runs/demo/member_0")
    >>> f.add(summary, step=3)
    >>> f.close()
    """

    def __init__(self, logdir):
        self.logdir = logdir
        self._lock = threading.Lock()
        if "://" in logdir:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            self._remote = EventFileWriter(logdir, flush_secs=FLUSH_SECS)
            return
        self._remote = None
        os.makedirs(logdir, exist_ok=True)
        name = "events.out.tfevents.%010d.%s.%s.%s.v2" % (
            time.time(), socket.gethostname(), os.getpid(), next(_FILE_IDS))
        self.path = os.path.join(logdir, name)
        self._records = RecordWriter(open(self.path, "wb"))
        self._add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    def add(self, summary, step):
        """Writes `summary` (a `Summary` proto) at `step`."""
        self._add(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))
        if self._remote is None and time.monotonic() - self._flushed > FLUSH_SECS:
            self.flush()

    def _add(self, event):
        if self._remote is not None:
            self._remote.add_event(event)
            return
        with self._lock:
            self._records.write(event.SerializeToString())

    def flush(self):
        """Writes what is buffered to the file."""
        if self._remote is not None:
            self._remote.flush()
            return
        with self._lock:
            if not self._records.closed:
                self._records.flush()
            self._flushed = time.monotonic()

    def close(self):
        """Flushes and closes the file (later writes raise)."""
        if self._remote is not None:
            self._remote.close()
            return
        with self._lock:
            if not self._records.closed:
                self._records.flush()
                self._records.close()


def scalar_summary(tag, value):
    """A `Summary` holding one scalar as `tf.summary.scalar` writes it."""
    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, tensor=tensor_util.make_tensor_proto(np.float32(value)),
                      metadata=scalar_metadata.create_summary_metadata(display_name="",
                                                                       description=""))
    return summary


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
        self._file = EventFile(self.logdir)
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
        summary = summary_pb2.Summary()
        if metric is not None and isinstance(metric[1], numbers.Real):
            summary.MergeFrom(scalar_summary(f"pbt/{metric[0]}", float(metric[1])))
        for name, value in (hparams or {}).items():
            if isinstance(value, numbers.Real):
                summary.MergeFrom(scalar_summary(f"pbt/hparams/{name}", float(value)))
        if records:
            if int(step) != self._step:
                self._step, self._step_records = int(step), []
            self._step_records += list(records)
            summary.value.add(
                tag=lineage_lib.LINEAGE_TAG,
                tensor=tensor_util.make_tensor_proto(lineage_lib.dumps(self._step_records)),
                metadata=self._metadata,
            )
        if summary.value:
            self._file.add(summary, step)

    def flush(self):
        self._file.flush()

    def close(self):
        self._file.close()
