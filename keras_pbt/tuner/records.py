"""Where `PBTOracle` keeps its lineage: a JSON-lines file and TensorBoard runs.

Records are `keras_pbt.LineageRecord.to_dict()` rows, so non-finite
metrics are spelled as everywhere else in keras-pbt (`"NaN"`,
`"Infinity"`), one row a line in `<project>/pbt_lineage.jsonl`, appended at
each decision. `oracle.json`, which keras-tuner rewrites at every call,
holds only their count. TensorBoard summaries (one run `member_<id>` per
member) are written as `PBTCallback` writes them, for the lineage tab.
"""

import json
import os

from keras_pbt.core import lineage as lineage_lib
from keras_pbt.storage import checkpoint as checkpoint_lib
from keras_pbt.storage.checkpoint import CheckpointError

LINEAGE_FILE = "pbt_lineage.jsonl"


class LineageLog:
    """The oracle's lineage records, on disk and in TensorBoard.

    Args:
        path: the JSON-lines file.
        monitor: the objective's name (the scalar written per record).
    """

    def __init__(self, path, monitor):
        self.path = path
        self.monitor = monitor
        self.rows = []
        self.logdir = None
        self._writers = {}

    def add(self, record):
        """Appends `record` (a `LineageRecord`) to the file and to TensorBoard."""
        row = record.to_dict()
        self.rows.append(row)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, allow_nan=False) + "\n")
        if self.logdir is None:
            return
        writer = self._writers.get(record.member_id)
        if writer is None:
            from keras_pbt.storage.summary import MemberSummaryWriter

            writer = self._writers[record.member_id] = MemberSummaryWriter(self.logdir, record.member_id)
        writer.write(
            record.step,
            metric=None if record.metric is None else (self.monitor, record.metric),
            hparams=record.hparams,
            records=[record],
        )
        writer.flush()

    def records(self):
        return [lineage_lib.LineageRecord.from_dict(dict(r)) for r in self.rows]

    def restore(self, count):
        """Keeps the first `count` rows of the file (those `oracle.json` knows).

        Rows appended after the last save belong to trials that were never
        saved: their decisions are taken again. They are dropped unread (the
        last one may be cut short by a crash); the file is rewritten with
        `keras_pbt.storage.checkpoint.atomic_write`.

        Raises:
            CheckpointError: naming the file if it holds fewer than `count`
                rows, or one of them is not a JSON record.
        """
        lines = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8", errors="replace") as f:
                lines = [line for line in f if line.strip()]
        if len(lines) < count:
            raise CheckpointError(
                f"{self.path} holds {len(lines)} lineage records; oracle.json expects {count}. "
                "Pass overwrite=True or a new project_name to start a new search.", self.path)
        rows = []
        for number, line in enumerate(lines[:count], 1):
            try:
                rows.append(json.loads(line))
            except ValueError as error:
                raise CheckpointError(
                    f"{self.path} line {number} is not a lineage record ({error}). Pass "
                    "overwrite=True or a new project_name to start a new search.",
                    self.path) from None
        self.rows = rows
        text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in self.rows)
        checkpoint_lib.atomic_write(self.path, text.encode("utf-8"))
