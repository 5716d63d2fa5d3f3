"""Argument checks shared by the public constructors. Pure Python + NumPy.

Every check raises an error that names the argument and the value received,
as Keras does (`"... Received: factor=1.5"`).
"""

import math
import numbers

import numpy as np


def check_int(name, value, minimum=1, allow_none=False, why=""):
    """Returns `int(value)`, checking it is an int (not a bool) >= `minimum`.

    Args:
        name: the argument's name, used in the error.
        value: the value received.
        minimum: the smallest allowed value. Defaults to `1`.
        allow_none: if True, `None` passes through. Defaults to `False`.
        why: optional text after the requirement, e.g. `" (PBT needs a population)"`.

    Returns:
        The value as an `int`, or `None`.

    Raises:
        ValueError: `"`size` must be an int >= 2. Received: size=1"`.

    Example:

    >>> check_int("epochs", 3)
    3
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        if minimum == 1:
            what = "a positive int"
        elif minimum == 0:
            what = "a non-negative int"
        else:
            what = f"an int >= {minimum}"
        raise ValueError(f"`{name}` must be {what}{why}. Received: {name}={value!r}")
    return int(value)


def check_bool(name, value):
    """Returns `value`, checking it is True or False.

    Raises:
        TypeError: `"`synchronous` must be True or False. Received: synchronous=1"`.

    Example:

    >>> check_bool("synchronous", True)
    True
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


def check_timeout(name, value, allow_zero=False):
    """Returns `float(value)`, checking it is a positive (or, with
    `allow_zero`, non-negative), finite number of seconds.

    Raises:
        ValueError: `"`timeout` must be a positive number of seconds. Received: timeout=0"`.

    Example:

    >>> check_timeout("timeout", 30)
    30.0
    """
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not (value >= 0 if allow_zero else value > 0) or not math.isfinite(value)):
        what = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"`{name}` must be {what} number of seconds. Received: {name}={value!r}")
    return float(value)


def check_choice(name, value, choices):
    """Returns `value`, checking it is one of `choices`.

    Raises:
        ValueError: `"`on_timeout` must be 'raise' or 'continue'. Received: on_timeout='x'"`.

    Example:

    >>> check_choice("on_timeout", "raise", ("raise", "continue"))
    'raise'
    """
    if not isinstance(value, str) or value not in choices:
        names = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
        raise ValueError(f"`{name}` must be {names}. Received: {name}={value!r}")
    return value


def check_monitor(monitor):
    """Returns `monitor`, checking it is a metric name (a non-empty str).

    Raises:
        TypeError: `"`monitor` must be a metric name. Received: monitor=''"`.
    """
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(f"`monitor` must be a metric name. Received: monitor={monitor!r}")
    return monitor


def new_seed():
    """A fresh random seed in `[0, 2**63)`."""
    return int(np.random.SeedSequence().entropy % (2**63))


def check_seed(seed):
    """Returns `seed` as an int (a fresh one for `None`); it must be a non-negative int."""
    return new_seed() if seed is None else check_int("seed", seed, minimum=0)


MODES = ("min", "max")


def check_mode(mode, allow_auto=False):
    """Returns `mode`, checking it is `"min"` or `"max"` (or `"auto"` when allowed).

    The one check of a metric's direction: the policy, the best-member rule
    and `resolve_mode` call it.

    Args:
        mode: the value received.
        allow_auto: if True, `"auto"` passes too (a front door's `mode=`,
            resolved later by `keras_pbt.core.selection.resolve_mode`).

    Returns:
        `mode`.

    Raises:
        ValueError: `"`mode` must be 'min' or 'max'. Received: mode='up'"`.

    Example:

    >>> check_mode("min")
    'min'
    """
    allowed = ("auto",) + MODES if allow_auto else MODES
    if not isinstance(mode, str) or mode not in allowed:
        names = " or ".join(repr(m) for m in allowed) if len(allowed) == 2 else "'auto', 'min' or 'max'"
        raise ValueError(f"`mode` must be {names}. Received: mode={mode!r}")
    return mode
