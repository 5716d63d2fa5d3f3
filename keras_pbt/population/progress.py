"""One progress view for a whole population.

Pure Python. On a terminal (`verbose=1`) a table with one row per member is
redrawn in place; otherwise (`verbose=2`, or output that is not a terminal)
each update is one plain line. `verbose=0` prints nothing.
"""

import sys
import threading
import time


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class PopulationProgress:
    """Collects each member's progress and prints it.

    Args:
        members: the member ids, in display order.
        monitor: the monitored metric's name.
        epochs: epochs per member (for "epoch 3/20").
        verbose: 0, 1 or 2 as in Keras.
        stream: where to print. Defaults to `sys.stdout`.
        min_interval: seconds between two redraws of the table. Defaults to
            `0.5`.

    Example:

    >>> progress = PopulationProgress([0, 1], "val_accuracy", epochs=5, verbose=2)
    >>> progress.update(0, epoch=1, step=44, metric=0.8, hparams={"lr": 0.01})
    """

    def __init__(self, members, monitor, epochs, verbose=1, stream=None, min_interval=0.5):
        if verbose not in (0, 1, 2, "auto"):
            raise ValueError(f"`verbose` must be 0, 1 or 2. Received: verbose={verbose!r}")
        self.stream = stream or sys.stdout
        self.verbose = 1 if verbose == "auto" else verbose
        self.monitor = monitor
        self.epochs = epochs
        self.min_interval = min_interval
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.in_place = self.verbose == 1 and isatty
        self.rows = {m: {"status": "waiting"} for m in members}
        self._lock = threading.Lock()
        self._drawn_lines = 0
        self._last_draw = 0.0

    def update(self, member_id, **fields):
        """Updates a member's row (epoch, step, metric, hparams, exploit, status)."""
        if not self.verbose:
            return
        with self._lock:
            row = self.rows.setdefault(member_id, {})
            row.update(fields)
            if self.in_place:
                now = time.monotonic()
                if now - self._last_draw >= self.min_interval or fields.get("status") == "done":
                    self._draw()
                    self._last_draw = now
            elif set(fields) == {"status"}:
                self.stream.write(f"member {member_id!s:>4}  {fields['status']}\n")
                self.stream.flush()
            else:
                self.stream.write(self._line(member_id, row) + "\n")
                self.stream.flush()

    def message(self, text):
        """Prints a line that is not a member's row (a restart, an error)."""
        if not self.verbose:
            return
        with self._lock:
            if self.in_place:
                self._clear()
            self.stream.write(text + "\n")
            self.stream.flush()
            if self.in_place:
                self._draw()

    def close(self):
        if self.verbose and self.in_place:
            with self._lock:
                self._draw()
                self._drawn_lines = 0

    def _line(self, member_id, row):
        parts = [f"member {member_id!s:>4}"]
        if "epoch" in row:
            parts.append(f"epoch {row['epoch']}/{self.epochs}")
        if "step" in row:
            parts.append(f"step {row['step']}")
        if row.get("metric") is not None:
            parts.append(f"{self.monitor}={_fmt(row['metric'])}")
        if row.get("hparams"):
            parts.append(" ".join(f"{k}={_fmt(v)}" for k, v in row["hparams"].items()))
        if row.get("exploit"):
            parts.append(f"last exploit: {row['exploit']}")
        if row.get("status") not in (None, "training"):
            parts.append(f"[{row['status']}]")
        return "  ".join(parts)

    def _clear(self):
        if self._drawn_lines:
            self.stream.write(f"\x1b[{self._drawn_lines}F\x1b[J")

    def _draw(self):
        self._clear()
        lines = [self._line(m, r) for m, r in self.rows.items()]
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn_lines = len(lines)
