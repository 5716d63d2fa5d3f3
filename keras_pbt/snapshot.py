"""Capturing and restoring a member's weights and optimizer state.

A capture copies every model weight and every optimizer variable (slots,
iteration count, learning rate) to host memory in one go, between two train
steps of the member's own thread: the copy is consistent and the member can
go on training. A restore checks that the layouts match before assigning,
since a plain `zip` would silently drop what does not pair up.

A model may hold several optimizers: a GAN written the standard Keras way
keeps `d_optimizer` and `g_optimizer` as attributes next to
`model.optimizer`. Every optimizer found on the model is captured and
restored, in the order of `optimizers(model)`.
"""

import keras
import numpy as np

from keras_pbt.store import Snapshot


def optimizers(model):
    """The model's optimizers as `[(name, optimizer)]`, in a fixed order.

    `("optimizer", model.optimizer)` first when it is set, then every
    `keras.optimizers.Optimizer` attribute of the model (e.g. a GAN's
    `d_optimizer` and `g_optimizer`), sorted by attribute name. An
    optimizer reachable under two names is listed once, under the first.
    """
    out, seen = [], set()
    main = getattr(model, "optimizer", None)
    if isinstance(main, keras.optimizers.Optimizer):
        out.append(("optimizer", main))
        seen.add(id(main))
    for name in sorted(vars(model)):
        value = vars(model)[name]
        if isinstance(value, keras.optimizers.Optimizer) and id(value) not in seen:
            out.append((name, value))
            seen.add(id(value))
    return out


def iterations(model):
    """The model's optimizer step count: the largest `iterations` of its optimizers.

    A GAN's `model.optimizer` (from `super().compile()`) never steps; its
    `d_optimizer` and `g_optimizer` do. Where one optimizer is applied
    several times per batch (a WGAN's critic), the count follows it.
    """
    counts = [int(keras.ops.convert_to_numpy(opt.iterations)) for _, opt in optimizers(model)]
    return max(counts) if counts else 0


def _model_variables(model):
    return list(model.weights)


def _optimizer_variables(model):
    return [v for _, opt in optimizers(model) for v in opt.variables]


def _learning_rate_variables(model):
    out = set()
    for _, opt in optimizers(model):
        for o in (opt, getattr(opt, "inner_optimizer", opt)):
            lr = getattr(o, "_learning_rate", None)
            if isinstance(lr, keras.Variable):
                out.add(id(lr))
    return out


def _slot_kind(name):
    # Optimizer slot names embed the model variable's path, which differs
    # between members ("dense_kernel_momentum" vs "dense_3_kernel_momentum");
    # the trailing word says what the slot is.
    return name.rsplit("_", 1)[-1]


def layout(model):
    """`(kind, name, shape, dtype)` of every weight, then every optimizer variable.

    The kind of an optimizer variable is `"optimizer"` for `model.optimizer`
    and `"optimizer:<attribute>"` for another optimizer of the model.
    """
    rows = [("weight", v.name, tuple(v.shape), str(v.dtype)) for v in _model_variables(model)]
    for name, opt in optimizers(model):
        kind = "optimizer" if name == "optimizer" else f"optimizer:{name}"
        rows += [(kind, _slot_kind(v.name), tuple(v.shape), str(v.dtype)) for v in opt.variables]
    return tuple(rows)


def _to_numpy(variable):
    return np.array(variable.numpy(), copy=True)


def capture(model, member, step, hparams=None, metric=None):
    """Copies `model`'s weights and optimizer variables into a `Snapshot`.

    Args:
        model: a compiled, built `keras.Model`.
        member: the member id.
        step: the member's step.
        hparams: its hyperparameters now.
        metric: its metric now.

    Returns:
        A `Snapshot` (read-only arrays).
    """
    return Snapshot(
        member=member,
        step=int(step),
        weights=tuple(_to_numpy(v) for v in _model_variables(model)),
        optimizer=tuple(_to_numpy(v) for v in _optimizer_variables(model)),
        hparams=dict(hparams or {}),
        metric=metric,
        layout=layout(model),
    )


def _counts(rows):
    counts = {}
    for row in rows:
        counts[row[0]] = counts.get(row[0], 0) + 1
    return counts


def _describe(counts):
    return ", ".join(
        f"{n} weights" if kind == "weight" else f"{n} {kind} variables"
        for kind, n in counts.items()
    )


def _mismatch(model_layout, snap_layout):
    mine, theirs = _counts(model_layout), _counts(snap_layout)
    if mine != theirs:
        return f"the model has {_describe(mine)}; the snapshot {_describe(theirs)}"
    for a, b in zip(model_layout, snap_layout):
        if a != b:
            return f"{a} does not match the snapshot's {b}"
    return None


def restore(model, snapshot, copy_optimizer_state=True):
    """Assigns a `Snapshot` to `model`.

    Args:
        model: the receiving model (built, same architecture and optimizer).
        snapshot: the `Snapshot` to copy.
        copy_optimizer_state: if True, copy the optimizer's variables too
            (slots and iteration count) of every optimizer. If False, reset
            the optimizer state: every optimizer variable but the learning
            rates is set to zero, as in a freshly built optimizer.

    Raises:
        ValueError: if the layouts differ (other architecture, other
            optimizer, or SGD slots present in one and not the other).
    """
    problem = _mismatch(layout(model), snapshot.layout)
    if problem:
        raise ValueError(
            f"Cannot copy member {snapshot.member!r}'s state: {problem}. Members of a "
            "population must share the architecture and the optimizer class."
        )
    for variable, value in zip(_model_variables(model), snapshot.weights):
        variable.assign(value)
    opt_vars = _optimizer_variables(model)
    if copy_optimizer_state:
        for variable, value in zip(opt_vars, snapshot.optimizer):
            variable.assign(value)
    else:
        rates = _learning_rate_variables(model)
        for variable in opt_vars:
            if id(variable) not in rates:
                variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
