"""Checks a population makes before any training: initial values inside the
space, one weight and optimizer layout for every member, and what `fit` is
given (arrays of matching lengths, targets the loss needs, the validation
data a `val_` metric needs, an interval the training reaches)."""

import math
import numbers

import keras

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


# ---------------------------------------------------------- Population.fit


def check_fit_data(model, x, y, validation_data):
    """Arrays of one fit hold as many samples each, and targets where the loss needs them.

    Args:
        model: a member's compiled model (every member's layout is the same).
        x, y, validation_data: as given to `Population.fit`. A
            `tf.data.Dataset` (anything without a `shape`) is not looked into.

    Raises:
        ValueError: `x` and `y` (or validation's) differ in their number of
            samples, or `y` / validation's targets are missing while the
            model's compiled loss needs them.
    """
    _same_rows("x", x, "y", y, f"x.shape={_shapes(x)}, y.shape={_shapes(y)}")
    if y is None and _rows(x) is not None and _needs_targets(model):
        raise ValueError(
            f"`y` is missing: the members are compiled with loss={model.loss!r}, which needs "
            f"targets. Pass y=..., or a tf.data.Dataset of (x, y) in `x`. Received: y=None")
    if isinstance(validation_data, (tuple, list)) and validation_data:
        vx = validation_data[0]
        vy = validation_data[1] if len(validation_data) > 1 else None
        received = ("validation_data=(" + ", ".join(
            f"array of shape {_shapes(v)}" for v in validation_data) + ")")
        _same_rows("validation x", vx, "validation y", vy, received)
        if vy is None and _rows(vx) is not None and _needs_targets(model):
            raise ValueError(
                f"`validation_data` has no targets: the members are compiled with "
                f"loss={model.loss!r}, which needs them to compute the validation loss. Pass "
                f"validation_data=(x_val, y_val). Received: {received}")


def check_monitor_source(monitor, validation_data):
    """A `val_` metric needs `validation_data`: refused before the first epoch."""
    if validation_data is None and isinstance(monitor, str) and monitor.startswith("val_"):
        raise ValueError(
            f"The population ranks members by `monitor`={monitor!r}, a validation metric, but "
            f"fit got no `validation_data`. Pass validation_data=(x_val, y_val), or monitor a "
            f"training metric such as {monitor[4:]!r}. Received: validation_data=None")


def check_interval_reached(interval, epochs, steps_per_epoch):
    """At least one PBT decision happens before `epochs`: an interval longer than
    the training would train every member alone, without a word.

    Args:
        interval: the population's `keras_pbt.Interval`.
        epochs: the epochs `fit` trains.
        steps_per_epoch: the optimizer steps of one epoch.

    Raises:
        ValueError: naming the interval and `epochs`.
    """
    # The first boundary past the burn-in (boundaries are multiples of the length).
    first = (interval.burn_in // interval.length + 1) * interval.length
    if interval.steps is None and first > epochs:
        raise ValueError(
            f"`interval`={interval_text(interval)} decides first at epoch {first}, after the "
            f"{epochs} epochs of this fit: members would train to the end without a single PBT "
            f"decision. Train at least {first} epochs, or decide more often. "
            f"Received: interval={interval_text(interval)}, epochs={epochs}")
    total = None if steps_per_epoch is None else epochs * steps_per_epoch
    if interval.steps is not None and total is not None and first > total:
        raise ValueError(
            f"`interval`={interval_text(interval)} decides first at step {first}, after the "
            f"{total} steps of this fit ({epochs} epochs of {steps_per_epoch} steps): members "
            f"would train to the end without a single PBT decision. Train longer, or decide "
            f"more often. Received: interval={interval_text(interval)}, epochs={epochs}")


def interval_text(interval):
    """How the user spells `interval`: `2`, or `Interval(epochs=None, steps=100, burn_in=0)`."""
    if interval.steps is None and not interval.burn_in:
        return str(interval.epochs)
    return repr(interval)


def _needs_targets(model):
    """The compiled loss reads `y` (a model with its own train or test step may not)."""
    if getattr(model, "loss", None) is None:
        return False
    cls = type(model)
    return all(getattr(cls, name, None) is getattr(keras.Model, name, None)
               for name in ("train_step", "test_step", "compute_loss"))


def _leaves(data):
    return [] if data is None else keras.tree.flatten(data)


def _leaf_rows(leaf):
    shape = getattr(leaf, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) and shape[0] is not None else None


def _rows(data):
    """The number of samples of an array structure; None for anything else."""
    rows = [n for n in map(_leaf_rows, _leaves(data)) if n is not None]
    return rows[0] if rows else None


def _shapes(data):
    shapes = [tuple(getattr(leaf, "shape", ())) for leaf in _leaves(data)]
    return shapes[0] if len(shapes) == 1 else shapes


def _same_rows(name_x, x, name_y, y, received):
    rows = {}
    for name, data in ((name_x, x), (name_y, y)):
        for n in map(_leaf_rows, _leaves(data)):
            if n is not None:
                rows.setdefault(name, set()).add(n)
    if len(set().union(*rows.values())) > 1:
        described = ", ".join(f"`{name}` has {' and '.join(map(str, sorted(r)))}"
                              for name, r in rows.items())
        raise ValueError(
            f"`{name_x}` and `{name_y}` must hold the same number of samples: {described}. "
            f"Received: {received}")
