"""The final model a search hands back, and which member it is.

`Population.choose(validation_data=...)` and `PBTTuner.choose(...)` hand
back a `FinalChoice`: the Keras model and what it is (the member, its
hyperparameters, its score on the split it was chosen on, the schedule
its weights were trained with). The choice is `choose_member`: the best
score by `mode`, non-finite scores last, equal scores broken by the lower
loss on the same split, then by member order
(`keras_pbt.core.ancestry.member_order_key`).

Pure Python.
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

from keras_pbt.core import ancestry as ancestry_lib
from keras_pbt.core import selection as selection_lib
from keras_pbt.core.validation import check_mode


@dataclasses.dataclass(frozen=True)
class FinalChoice:
    """The model a population (or the tuner) hands back, and what it is.

    Attributes:
        model: the chosen member's trained `keras.Model`.
        member_id: which member it is.
        hparams: the member's hyperparameters at the end of training.
        score: its metric on the split it was chosen on.
        metric: that metric's name (`"accuracy"` on `validation_data`, the
            monitored `"val_accuracy"` at the last boundary without it).
        split: `"validation_data"` (chosen on the data given to `choose`)
            or `"last boundary"` (the monitored metric PBT ranked on: it
            was selected on at every boundary, so it is optimistic).
        loss: its loss on the same split, when known (it breaks ties).
        scores: every member's score there, member id -> float.
        schedule: `[(step, hparams), ...]`, the hyperparameters its
            weights were trained with, oldest first
            (`keras_pbt.ancestry_schedule`): what `ScheduleCallback`
            replays.
        step: `None` for a member's final weights; the member's step for
            the weights it had at an Iterated PBT restart (`keras_pbt.Iterated`
            keeps the best member at each restart; its key in `scores` is
            `"<member_id>@<step>"`).

    Example:

    ```python
    final = pop.choose(validation_data=(x_select, y_select))
    print(final.member_id, final.score, final.hparams)
    final.model.evaluate(x_test, y_test)
    ```
    """

    model: Any
    member_id: Any
    hparams: Dict[str, Any]
    score: float
    metric: str
    split: str
    loss: Optional[float] = None
    scores: Dict[Any, float] = dataclasses.field(default_factory=dict)
    schedule: Tuple = ()
    step: Optional[int] = None

    def __repr__(self):
        at = "" if self.step is None else f", step={self.step}"
        return (f"FinalChoice(member_id={self.member_id!r}{at}, {self.metric}={self.score:.4g} on "
                f"{self.split}, hparams={self.hparams!r})")


def choose_member(scores, mode, losses=None):
    """The member to hand back: best score, then lower loss, then member order.

    Args:
        scores: dict member id -> score (None: not ranked).
        mode: `"min"` or `"max"`, the score's direction.
        losses: optional dict member id -> loss on the same split, to break
            equal scores (a lower loss wins; unknown or non-finite losses
            come after known ones).

    Returns:
        A member id.

    Raises:
        ValueError: no member has a score.

    Example:

    >>> choose_member({0: 0.9, 1: 0.9, 2: 0.8}, "max", losses={0: 0.31, 1: 0.27, 2: 0.1})
    1
    >>> choose_member({0: 0.9, 1: 0.9}, "max")
    0
    """
    check_mode(mode)
    ranked = [m for m, s in scores.items() if s is not None]
    if not ranked:
        raise ValueError(f"No member has a score to choose by. Received: scores={scores!r}")
    sign = -1.0 if mode == "max" else 1.0
    losses = losses or {}

    def key(member):
        s, loss = scores[member], losses.get(member)
        finite = selection_lib.is_finite(s)
        known = loss is not None and selection_lib.is_finite(loss)
        return (not finite, sign * float(s) if finite else 0.0, not known,
                float(loss) if known else 0.0, ancestry_lib.member_order_key(member))

    return min(ranked, key=key)
