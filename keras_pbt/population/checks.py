"""Checks a population makes before any training: initial values inside the
space, and one weight and optimizer layout for every member."""

import math
import numbers

from keras_pbt.runtime import snapshot as snapshot_lib
from keras_pbt.core import space as space_lib


def check_initial(index, hp, space):
    """`initial_hparams[index]` names exactly `space`'s hyperparameters, each inside its spec."""
    if not hasattr(hp, "keys") or set(hp) != set(space):
        raise ValueError(
            f"`initial_hparams[{index}]` must name exactly the hyperparameters of `space` "
            f"({sorted(space)}). Received: initial_hparams[{index}]={hp!r}"
        )
    for name, spec in space.items():
        if not _inside(spec, hp[name]):
            raise ValueError(
                f"initial_hparams[{index}]: {name}={hp[name]!r} is outside {spec!r} (the member "
                f"at index {index}). Received: initial_hparams[{index}]={dict(hp)!r}"
            )


def _inside(spec, value):
    if isinstance(spec, space_lib.Choice):
        return any(v == value for v in spec.values)
    if hasattr(spec, "low") and hasattr(spec, "high"):
        return (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and math.isfinite(value) and spec.low <= value <= spec.high)
    try:  # a user's own Hyperparameter subclass: inside when clip keeps it
        return spec.clip(value) == value
    except (TypeError, ValueError):
        return False


def check_same_layout(first, member):
    """Every member must have the weight and optimizer layout of the first:
    exploit copies weights and optimizer state between any two of them."""
    mine, theirs = snapshot_lib.layout(member.model), snapshot_lib.layout(first.model)
    why = snapshot_lib.layout_mismatch(mine, theirs) or snapshot_lib.layout_mismatch(theirs, mine)
    if why is not None:
        raise ValueError(
            f"`build` returned another model for member {member.member_id!r} than for member "
            f"{first.member_id!r}: PBT copies weights and optimizer state between members, so every "
            "member needs the same layers, weight shapes and dtypes and optimizer class. "
            f"Tune only values that keep the layout. Comparing member {member.member_id!r} (the model) "
            f"with member {first.member_id!r} (the snapshot): {why}. Received: hp="
            f"{member.callback.hparams!r} for member {member.member_id!r}, hp={first.callback.hparams!r} "
            f"for member {first.member_id!r}"
        )
