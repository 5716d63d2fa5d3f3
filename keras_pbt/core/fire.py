"""Improvement-rate selection against PBT's greediness (after FIRE-PBT).

Truncation every few epochs replaces members that start slowly but would
end best. FIRE-PBT (Dalibard & Jaderberg, 2021) keeps part of the
population out of that race: its sub-populations are ranked by how fast
their fitness improves, not by where it is, and the greedy sub-population
takes their weights once they are ahead.

`FireSelection` is that idea in two groups, built from the paper's rules
but simplified (no separate evaluator workers):

* the **fitness** group (the first members in member-id order, as
  `keras_pbt.core.ancestry.member_order_key` sorts them): its
  bottom quantile copies a member drawn from the top quantile of the
  *whole* population by metric, so a member of the other group that has
  overtaken it is copied into it (promotion);
* the **improvement** group (the rest): ranked inside the group by the
  least-squares slope of each member's latest evaluations since its last
  exploit (`ImprovementRate`); its bottom quantile copies a member drawn
  from its top quantile by slope. A member with fewer than two evaluations
  since its last exploit has no slope and is neither a loser nor a parent
  there, which protects it for `window - 1` intervals. A member whose
  metric is NaN or inf is a loser in either group.

Pure Python.
"""

import math

from keras_pbt.core import ranking as ranking_lib
from keras_pbt.core import ancestry as schedule_lib
from keras_pbt.core import selection as selection_lib
from keras_pbt.core.validation import check_int


class FireSelection(selection_lib.Selection):
    """Two groups: one ranked by metric, one by improvement rate.

    Args:
        fraction: share of the population in the improvement group, in
            `(0, 1)`; at least one member is in each group. Defaults to `0.5`.
        quantile: fraction of losers and parents in each group, in
            `(0, 0.5]`. Defaults to `0.25`.
        window: evaluations since the last exploit used for the slope, >= 2.
            Defaults to `3`.

    Example:

    >>> sel = FireSelection(fraction=0.5, quantile=0.25, window=3)
    >>> sel.groups([0, 1, 2, 3])
    ([0, 1], [2, 3])
    """

    name = "fire"

    def __init__(self, fraction=0.5, quantile=0.25, window=3):
        if (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                or not 0 < fraction < 1):
            raise ValueError(f"`fraction` must be in (0, 1). Received: fraction={fraction!r}")
        self.fraction = float(fraction)
        self.quantile = selection_lib.check_quantile(quantile)
        self.window = check_int("window", window, minimum=2)
        self.history_length = self.window

    def __repr__(self):
        return (f"FireSelection(fraction={self.fraction}, quantile={self.quantile}, "
                f"window={self.window})")

    def groups(self, members):
        """`(fitness, improvement)`: member ids split in member-id order
        (`schedule.member_order_key`: integers by value, so 2 before 10)."""
        ordered = sorted(members, key=schedule_lib.member_order_key)
        n = len(ordered)
        n_improvement = min(max(1, round(n * self.fraction)), n - 1) if n > 1 else 0
        cut = n - n_improvement
        return ordered[:cut], ordered[cut:]

    def _improvement_order(self, reports, mode):
        """Scored members of the improvement group, best slope first, and
        `rate(report)`: a slope signed so that larger is better in `mode`."""
        slope = ranking_lib.ImprovementRate(self.window).score
        sign = 1.0 if mode == "max" else -1.0

        def rate(report):
            return sign * slope(report)

        scored = [(rate(r), r) for r in reports if selection_lib.is_finite(r.metric)]
        scored = [(s, r) for s, r in scored if not math.isnan(s)]
        # Stable on the tie-broken metric ranking the reports arrive in.
        return [r for s, r in sorted(scored, key=lambda sr: -sr[0])], rate

    def parent_candidates(self, ranked, mode):
        fitness, improvement = self.groups([r.member_id for r in ranked])
        k = selection_lib.quantile_count(len(ranked), self.quantile)
        out = [r.member_id for r in ranked[:k]]
        group = [r for r in ranked if r.member_id in improvement]
        order, _ = self._improvement_order(group, mode)
        kk = selection_lib.quantile_count(len(group), self.quantile) if len(group) > 1 else 0
        return out + [r.member_id for r in order[:kk] if r.member_id not in out]

    def choose_parent(self, member_id, ranked, mode, rng, available=None):
        fitness, improvement = self.groups([r.member_id for r in ranked])
        me = next(r for r in ranked if r.member_id == member_id)

        def can_copy(r):
            return r.member_id != member_id and (available is None or r.member_id in available)

        if member_id in fitness or not selection_lib.is_finite(me.metric):
            group = [r for r in ranked if r.member_id in fitness]
            k = selection_lib.quantile_count(len(group), self.quantile) if len(group) > 1 else 1
            losers = {r.member_id for r in group[len(group) - k:]}
            if member_id not in losers and selection_lib.is_finite(me.metric):
                return None
            kk = max(1, selection_lib.quantile_count(len(ranked), self.quantile))
            top = [r for r in ranked[:kk]
                   if can_copy(r) and selection_lib.is_better(r.metric, me.metric, mode)]
            return top[int(rng.integers(len(top)))] if top else None
        group = [r for r in ranked if r.member_id in improvement]
        order, rate = self._improvement_order(group, mode)
        if len(order) < 2:
            return None
        k = selection_lib.quantile_count(len(order), self.quantile)
        if member_id not in {r.member_id for r in order[len(order) - k:]}:
            return None
        mine = rate(me)
        top = [r for r in order[:k] if can_copy(r) and rate(r) > mine]
        return top[int(rng.integers(len(top)))] if top else None
