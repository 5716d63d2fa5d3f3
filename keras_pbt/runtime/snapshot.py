"""Capturing and restoring a member's weights and optimizer state.

A capture copies every model weight and every optimizer variable (slots,
iteration count, learning rate) in one go, between two train steps of the
member's own thread: the copy is consistent and the member can go on
training. A variable on a CPU is copied to a NumPy array in host memory; a
variable on a GPU is copied on its own GPU (a device tensor), so that an
exploit between GPU members is two device copies (parent -> snapshot ->
loser) instead of a round trip through host memory. Checkpoints write
NumPy (`Snapshot.to_host()`; their writers convert with `numpy.asarray`).

A restore checks that the layouts match before assigning, since a plain
`zip` would silently drop what does not pair up.

A model may hold several optimizers: a GAN written the standard Keras way
keeps `d_optimizer` and `g_optimizer` as attributes next to
`model.optimizer`. Every optimizer found on the model is captured and
restored, in the order of `optimizers(model)`.
"""

import keras
import numpy as np

from keras_pbt import backend as backend_lib
from keras_pbt.storage.payload import Snapshot


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
    attributes = vars(model)
    for name in sorted(attributes):
        value = attributes[name]
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
    backend = backend_lib.current()
    counts = [int(backend.host_copy(opt.iterations)) for _, opt in optimizers(model)]
    return max(counts) if counts else 0


# Variables a backend carries in the training state only as hyperparameters
# (JAX: keras_pbt.backend.jax_backend) are not state to copy: PBT applies
# the hyperparameters after every copy.


def _model_variables(model):
    hparam = backend_lib.current().is_hparam_variable
    return [v for v in model.weights if not hparam(v)]


def _own_variables(optimizer):
    """The optimizer's own state: its variables but the carried hyperparameters."""
    hparam = backend_lib.current().is_hparam_variable
    return [v for v in optimizer.variables if not hparam(v)]


def _optimizer_variables(model):
    return [v for _, _, own in _own_state(model) for v in own]


def _own_state(model):
    """`[(attribute, optimizer, its own variables)]` for `optimizers(model)`:
    walked once per capture or restore."""
    return [(name, opt, _own_variables(opt)) for name, opt in optimizers(model)]


def other_variables(model):
    """Model variables that are neither weights nor optimizer variables:
    the state of Keras' seed generators (dropout and other random layers),
    which a checkpoint saves beside the snapshot."""
    known = {id(v) for v in model.weights}
    known |= {id(v) for v in _optimizer_variables(model)}
    return [v for v in model.variables if id(v) not in known]


def _learning_rate_variables(state):
    out = set()
    for _, opt, _ in state:
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
    return _layout(_model_variables(model), _own_state(model))


def _layout(weights, state):
    rows = [("weight", v.name, tuple(v.shape), str(v.dtype)) for v in weights]
    for name, _, own in state:
        kind = "optimizer" if name == "optimizer" else f"optimizer:{name}"
        rows += [(kind, _slot_kind(v.name), tuple(v.shape), str(v.dtype)) for v in own]
    return tuple(rows)


def _copy(backend, variable, on_device):
    if on_device or (on_device is None and backend.has_gpu() and backend.on_gpu(variable)):
        return backend.device_copy(variable)
    return backend.host_copy(variable)


def capture(model, member_id, step, hparams=None, metric=None, on_device=None):
    """Copies `model`'s weights and optimizer variables into a `Snapshot`.

    Args:
        model: a compiled, built `keras.Model`.
        member_id: the member id.
        step: the member's step.
        hparams: its hyperparameters now.
        metric: its metric now.
        on_device: where the copies live. `None` (default): a variable on a
            GPU is copied on that GPU (a tensor), any other to host NumPy.
            `False`: every variable to host NumPy (what a checkpoint holds).
            `True`: every variable on its own device, CPU included (the GPU
            path, taken on any machine).

    Returns:
        A `Snapshot` (read-only arrays, or immutable device tensors).

    Example:

    >>> snap = capture(model, "a", step=100)            # doctest: +SKIP
    >>> restore(other_model, snap)                       # doctest: +SKIP
    >>> checkpoint_arrays = snap.to_host().weights       # doctest: +SKIP
    """
    if on_device not in (None, True, False):
        raise ValueError(f"`on_device` must be None, True or False. Received: on_device={on_device!r}")
    backend = backend_lib.current()  # resolved once, not per variable
    backend.sync_state(model)
    weights, state = _model_variables(model), _own_state(model)  # walked once
    return Snapshot(
        member_id=member_id,
        step=int(step),
        weights=tuple(_copy(backend, v, on_device) for v in weights),
        optimizer=tuple(_copy(backend, v, on_device) for _, _, own in state for v in own),
        hparams=dict(hparams or {}),
        metric=metric,
        layout=_layout(weights, state),
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


def _blocks(rows):
    blocks = {}
    for i, row in enumerate(rows):
        blocks.setdefault(row[0], []).append(i)
    return blocks


def _unbuilt(rows):
    # An optimizer that has not stepped yet holds only these two variables.
    return all(r[1] in ("iteration", "rate") for r in rows)


def _align(model_layout, snap_layout):
    """Snapshot row index for each model row (`None`: reset to zero), or an error text.

    The layouts must match, except that an optimizer the snapshot holds
    unbuilt (taken before its first step, e.g. a GAN's `d_optimizer`
    before training) restores its iteration count and learning rate and
    resets the slots the model's built optimizer has since created.
    """
    mine, theirs = _blocks(model_layout), _blocks(snap_layout)
    if list(mine) != list(theirs):
        return f"the model has {_describe(_counts(model_layout))}; the snapshot {_describe(_counts(snap_layout))}"
    pairs = [None] * len(model_layout)
    for kind, rows in mine.items():
        a = [model_layout[i] for i in rows]
        b = [snap_layout[j] for j in theirs[kind]]
        if a != b and not (
            kind.startswith("optimizer") and len(b) < len(a) and a[:len(b)] == b and _unbuilt(b)
        ):
            return _mismatch(model_layout, snap_layout)
        for i, j in zip(rows, theirs[kind]):
            pairs[i] = j
    return pairs


def layout_mismatch(model_layout, snapshot_layout):
    """Why a snapshot of `snapshot_layout` cannot be restored into a model of
    `model_layout` (both from `layout`), or None when `restore` accepts it."""
    pairs = _align(model_layout, snapshot_layout)
    return pairs if isinstance(pairs, str) else None


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
        model: the receiving model (built, same architecture and optimizers).
        snapshot: the `Snapshot` to copy.
        copy_optimizer_state: if True, copy the variables of every optimizer
            too (slots and iteration count). If False, reset the optimizer
            state: every optimizer variable but the learning rates is set to
            zero, as in a freshly built optimizer.

    Raises:
        ValueError: if the layouts differ (other architecture, other
            optimizer, or SGD slots present in one and not the other). An
            optimizer the snapshot holds before its first step (no slots
            yet) is the one exception: its slots are reset to zero.
    """
    backend = backend_lib.current()
    backend.sync_state(model)
    weights, state = _model_variables(model), _own_state(model)  # walked once
    pairs = _align(_layout(weights, state), snapshot.layout)
    if isinstance(pairs, str):
        raise ValueError(
            f"Cannot copy member {snapshot.member_id!r}'s state: {pairs}. Members of a "
            "population must share the architecture and the optimizer classes."
        )
    # One assign per variable, straight from the snapshot's array, with one
    # copy (`backend.assign`): TensorFlow converts it into a new tensor (it
    # never keeps a view of NumPy memory) and copies a device tensor into
    # the variable's buffer; PyTorch copies in place; JAX puts a copy on the
    # variable's device. So the snapshot, shared by every member that
    # copies it, is never written to (tests/test_snapshot_copy.py,
    # tests/test_snapshot_device.py).
    values = snapshot.weights + snapshot.optimizer
    variables = weights + [v for _, _, own in state for v in own]
    rates = _learning_rate_variables(state)
    n_weights = len(weights)
    for i, (variable, j) in enumerate(zip(variables, pairs)):
        if i >= n_weights and not copy_optimizer_state:
            if id(variable) not in rates:
                variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
        elif j is None:
            variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
        else:
            backend.assign(variable, values[j])


def weight_pairs(model, snapshot):
    """Each weight of `model` with its value in `snapshot`, the optimizer's left out.

    The backend's training state is synced into the variables first (JAX).

    Args:
        model: a built `keras.Model`.
        snapshot: a `Snapshot` of a model of the same architecture.

    Returns:
        A list of `(variable, array)` in `layout` order.

    Raises:
        ValueError: the snapshot holds another number of weights.
    """
    backend_lib.current().sync_state(model)
    weights = _model_variables(model)
    if len(weights) != len(snapshot.weights):
        raise ValueError(f"The snapshot of member {snapshot.member_id!r} holds "
                         f"{len(snapshot.weights)} weights; the model has {len(weights)}.")
    return list(zip(weights, snapshot.weights))


def restore_weights(model, snapshot):
    """Assigns `snapshot`'s weights, trainable or not, to `model` and leaves its
    optimizer as it is (unbuilt, or with its own state and step count).

    Args:
        model: a built `keras.Model`.
        snapshot: a `Snapshot` of a model of the same architecture.
    """
    backend = backend_lib.current()
    for variable, value in weight_pairs(model, snapshot):
        backend.assign(variable, value)
