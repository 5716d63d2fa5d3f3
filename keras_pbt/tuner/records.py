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
        saved: their decisions are taken again.

        Raises:
            ValueError: if the file holds fewer than `count` rows.
        """
        rows = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
        if len(rows) < count:
            raise ValueError(
                f"{self.path} holds {len(rows)} lineage records; oracle.json expects {count}."
            )
        self.rows = rows[:count]
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, allow_nan=False) + "\n" for r in self.rows)
        os.replace(tmp, self.path)
