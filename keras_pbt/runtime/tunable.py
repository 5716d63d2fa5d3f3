"""Optimizer floats backed by a variable, so PBT can change them without a retrace.

Keras optimizers keep `momentum`, `beta_1`, `epsilon`, `clipnorm`, ... as
Python floats, and a compiled train step (a `tf.function`, a jitted JAX
function) bakes their values in as constants when it is traced. Changing one
in the middle of `fit` therefore needs a retrace (about 0.3 s on a small
model under a `tf.distribute` strategy, holding the GIL, so every member of a
population waits). PyTorch's eager step reads the floats at every step and
needs neither (`keras_pbt.backend.current().carries_floats` is False there).

`TunableFloat` stands in for such a float on the optimizer while PBT trains:

- In arithmetic and tensor conversion (`ops.cast(self.momentum, dtype)`,
  `1 - self.beta_1`, `ops.add(v, self.epsilon)`) it reads a variable, so the
  traced step reads the current value at every step and an `assign` is
  enough.
- In Python comparisons and truth tests (`if self.momentum != 0:`,
  `if self.clipnorm and self.clipnorm > 0:`) it acts as its current float.
  Those branches are decided at trace time; they only change when a value
  moves to or from zero (or changes sign), and `needs_retrace` says so.

The variable behind it is the backend's (`keras_pbt.backend`): a float64
`tf.Variable` in the model's strategy scope on TensorFlow; on JAX a
`keras.Variable` carried in the optimizer's own variables, so that it is
part of the state the jitted step takes as an argument.

`install` puts them on an optimizer (and makes the optimizer's `get_config`
report plain floats, so saving a model mid-training works); `uninstall`
puts plain floats back.
"""

import functools
import operator

import keras

from keras_pbt import backend as backend_lib

# Optimizer fields Keras only uses in arithmetic, casts and comparisons with
# zero (read from Keras 3's SGD, RMSprop, Adam(W/ax), Nadam, Adadelta, Lamb,
# Lion and the base optimizer's gradient clipping and weight decay). Other
# float fields keep the retrace path.
TUNABLE_FIELDS = frozenset({
    "momentum", "beta_1", "beta_2", "epsilon", "rho",
    "weight_decay", "clipnorm", "global_clipnorm", "clipvalue",
})


def _branch(value):
    """What the trace-time comparisons of Keras depend on."""
    if value is None:
        return None
    value = float(value)
    return (value > 0) - (value < 0)


def needs_retrace(old, new):
    """True when going from `old` to `new` changes a trace-time branch.

    Args:
        old: the value the train step was traced with (a number or None).
        new: the value to apply.

    Returns:
        True if the two differ in being None, zero, positive or negative.

    Example:

    >>> needs_retrace(0.5, 0.9), needs_retrace(0.0, 0.9)
    (False, True)
    """
    return _branch(old) != _branch(new)


class TunableFloat:
    """A float read through a variable in traced code, a float in Python.

    Args:
        value: the initial value.
        name: a name for the variable.
        model: the model whose optimizer holds it.
        optimizer: that optimizer.

    Example:

    >>> opt.momentum = TunableFloat(0.9, "momentum", model, opt)
    >>> opt.momentum.assign(0.5)  # the next step uses 0.5, no retrace
    """

    __slots__ = ("variable", "value", "_backend")

    def __init__(self, value, name, model, optimizer):
        self.value = float(value)
        self._backend = backend_lib.current()
        self.variable = self._backend.tunable_variable(self.value, name, model, optimizer)

    def assign(self, value):
        self.value = float(value)
        self._backend.assign(self.variable, self.value)

    def tensor(self, dtype=None):
        """The current value as a tensor (float32 unless `dtype` is given)."""
        return self._backend.read_tunable(self.variable, dtype)

    def __jax_array__(self):
        return self.tensor()

    # Python-side: the current float, as Keras' trace-time checks expect.
    def __float__(self):
        return self.value

    def __bool__(self):
        return self.value != 0

    def __eq__(self, other):
        return self.value == _plain(other)

    def __ne__(self, other):
        return self.value != _plain(other)

    def __lt__(self, other):
        return self.value < _plain(other)

    def __le__(self, other):
        return self.value <= _plain(other)

    def __gt__(self, other):
        return self.value > _plain(other)

    def __ge__(self, other):
        return self.value >= _plain(other)

    __hash__ = object.__hash__

    def __format__(self, spec):
        return format(self.value, spec)

    def __repr__(self):
        return f"TunableFloat({self.value!r})"

    # Tensor-side: arithmetic reads the variable (in float64, then float32,
    # as Keras would convert a Python float result).
    def _binary(self, other, op, reverse):
        if isinstance(other, TunableFloat):
            other = other.tensor()
        if isinstance(other, (int, float)):
            mine = self._backend.read_tunable(self.variable, self._backend.tunable_dtype)
            a, b = (other, mine) if reverse else (mine, other)
            return keras.ops.cast(op(a, b), "float32")
        mine = self.tensor(getattr(other, "dtype", None))
        return op(other, mine) if reverse else op(mine, other)

    def __neg__(self):
        return -self.tensor()


def _plain(value):
    return value.value if isinstance(value, TunableFloat) else value


def _define(name, op):
    setattr(TunableFloat, f"__{name}__", lambda self, other: self._binary(other, op, False))
    setattr(TunableFloat, f"__r{name}__", lambda self, other: self._binary(other, op, True))


for _name, _op in (("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("pow", operator.pow)):
    _define(_name, _op)


def _read(value, dtype=None):
    return value.tensor(dtype)


def _register():
    # TensorFlow needs a conversion function for `ops.cast(self.momentum, ...)`;
    # JAX converts through `__jax_array__`.
    backend = backend_lib.current()
    if backend.carries_floats:
        backend.register_tunable_type(TunableFloat, _read)


_register()


def _float_config(optimizer, get_config):
    config = get_config()
    return {k: float(v) if isinstance(v, TunableFloat) else v for k, v in config.items()}


def install(optimizer, field, model):
    """Puts a `TunableFloat` in `optimizer.<field>`; returns it.

    The field must hold a float. An already installed one is returned as is.

    Args:
        optimizer: a Keras optimizer.
        field: one of `TUNABLE_FIELDS`.
        model: the model it belongs to.

    Returns:
        The `TunableFloat` now held in the field.
    """
    current = getattr(optimizer, field)
    if isinstance(current, TunableFloat):
        return current
    tunable = TunableFloat(current, field, model, optimizer)
    setattr(optimizer, field, tunable)
    if "get_config" not in vars(optimizer):
        optimizer.get_config = functools.partial(_float_config, optimizer, optimizer.get_config)
    return tunable


def uninstall(optimizer):
    """Puts plain floats back in every field of `optimizer` that holds a `TunableFloat`.

    A train step traced while they were installed keeps reading their
    variables, which hold the same values; Keras retraces on the next
    `compile`, as it always does.
    """
    for field in TUNABLE_FIELDS:
        value = getattr(optimizer, field, None)
        if isinstance(value, TunableFloat):
            value._backend.release_tunable(optimizer, value.variable)
            setattr(optimizer, field, value.value)
    if "get_config" in vars(optimizer):
        del optimizer.get_config
