"""Kept diversity: the lines a population keeps alive.

A member's *line* is the starting configuration whose weights it carries
(`Report.root`): its own, until it copies a member of another line. With
truncation, one line owns the whole population early in training (measured
on MNIST-1D: by boundary 4 of 30 with decisions every epoch), after which
PBT refines that line's schedule but cannot return to a slow starter that
would have ended best.

`KeepLines(min_lines=2)` protects the last member of a line while no more
than `min_lines` lines are alive: it copies only a parent better than it by
the protection's margin (by default 3 standard errors of the split,
`StandardError(3.0)`), a difference the split can tell. Members of lines
with several members are judged as usual.

Pure Python.
"""

import collections

from keras_pbt.core import noise as noise_lib
from keras_pbt.core.validation import check_int


class KeepLines:
    """Keep at least `min_lines` lines alive unless a parent is far better.

    Give it as `keras_pbt.Policy(lines=KeepLines(...))`.

    Args:
        min_lines: lines kept, >= 2. Defaults to `2`.
        margin: how much better a parent must be to replace the last member
            of a line when no more than `min_lines` lines are alive: a
            number or a `keras_pbt.Margin`. Defaults to `StandardError(3.0)`.

    Example:

    >>> from keras_pbt.core.selection import Report
    >>> reports = [Report(0, 1, 0.95, root=0), Report(1, 1, 0.94, root=0),
    ...            Report(2, 1, 0.92, root=2)]
    >>> KeepLines(margin=0.05).parents(reports[2], reports, "max")
    set()
    """

    def __init__(self, min_lines=2, margin=None):
        self.min_lines = check_int("min_lines", min_lines, minimum=2)
        self.margin = noise_lib.get_margin(noise_lib.StandardError(3.0) if margin is None
                                           else margin)

    def protects(self, me, reports):
        """Whether `me` is the last member of its line with no more than `min_lines` alive.

        Args:
            me: the deciding member's `Report`.
            reports: every member's `Report` at this boundary.

        Returns:
            A bool (False when a report has no `root`).
        """
        roots = [r.root for r in reports]
        if me.root is None or any(root is None for root in roots):
            return False
        counts = collections.Counter(roots)
        return counts[me.root] == 1 and len(counts) <= self.min_lines

    def parents(self, me, reports, mode):
        """The members `me` may copy.

        Args:
            me: the deciding member's `Report`.
            reports: every member's `Report` at this boundary.
            mode: `"min"` or `"max"`.

        Returns:
            A set of member ids: all but `me`, or, when `me` is protected,
            those better than it beyond the protection's margin.
        """
        others = {r.member_id for r in reports if r.member_id != me.member_id}
        if not self.protects(me, reports):
            return others
        return {r.member_id for r in reports if r.member_id != me.member_id
                and self.margin.exceeds(r, me, mode)}

    def __repr__(self):
        return f"KeepLines(min_lines={self.min_lines}, margin={self.margin!r})"

    def __eq__(self, other):
        return isinstance(other, KeepLines) and (self.min_lines, self.margin) == (
            other.min_lines, other.margin)

    def __hash__(self):
        return hash((KeepLines, self.min_lines, self.margin))


def lines_alive(reports):
    """How many distinct lines (`Report.root`) the reports hold (None counts as its member)."""
    return len({r.member_id if r.root is None else r.root for r in reports})
