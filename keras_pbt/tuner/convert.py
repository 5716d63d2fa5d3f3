"""keras-tuner hyperparameters -> keras-pbt search-space specs. Pure Python.

The converter reads a hyperparameter's class name and `get_config()`, so it
needs neither keras-tuner nor TensorFlow: it also accepts the config dicts
of `HyperParameters.get_config()["space"]`.

| keras-tuner | keras-pbt spec | explore |
|---|---|---|
| `Float(a, b)` | `Uniform(a, b)` | `* factor`, clipped to `[a, b]` |
| `Float(a, b, step=s)` | `Uniform(a, top, step=s)` | `* factor`, rounded to keras-tuner's grid (`top` its last value) |
| `Float(a, b, sampling="log")` | `LogUniform(a, b)` | `* factor`, clipped |
| `Float(a, b, step=s, sampling="log")` | `Choice([a, a*s, a*s**2, ...])` | a neighbour |
| `Float(a, b, sampling="reverse_log")` | `Uniform(a, b)` | `* factor`, clipped |
| `Int(a, b, step=s)` | `IntUniform(a, b, step=s)` | `* factor`, rounded, >= one step |
| `Int(a, b, sampling="log")` | `IntUniform(a, b, log=True)` | as above |
| `Int(a, b, step=s, sampling="log")` | `Choice([a, a*s, ...])` | a neighbour |
| `Choice(values)` | `Choice(values)` | a neighbour in the list's order |
| `Boolean` | `Choice([False, True])` | the other value |
| `Fixed` | not tuned | - |
"""

import math

from keras_pbt.core import space as space_lib


def _class_and_config(hp):
    if isinstance(hp, dict) and "class_name" in hp:
        return hp["class_name"], dict(hp["config"])
    return type(hp).__name__, dict(hp.get_config())


def _log_grid(low, high, step, integer):
    # keras-tuner's own values for sampling="log" with a step.
    n = int(math.log(high / low, step) + 1e-8) + 1
    values = [low * math.pow(step, i) for i in range(n)]
    return [int(v) for v in values] if integer else [float(v) for v in values]


def spec_from_hyperparameter(hp):
    """The keras-pbt spec of one keras-tuner hyperparameter.

    Args:
        hp: a keras-tuner `HyperParameter` (`Float`, `Int`, `Choice`,
            `Boolean`, `Fixed`) or its `{"class_name", "config"}` dict.

    Returns:
        A `Hyperparameter` spec, or `None` for `Fixed` and for a `Float` or
        `Int` with `min_value == max_value` (nothing to tune).

    Raises:
        TypeError: for a hyperparameter class it does not know.
    """
    kind, config = _class_and_config(hp)
    name = config.get("name")
    if kind == "Fixed":
        return None
    if kind == "Boolean":
        return space_lib.Choice([False, True])
    if kind == "Choice":
        return space_lib.Choice(list(config["values"]))
    if kind not in ("Float", "Int"):
        raise TypeError(
            f"Cannot convert keras-tuner hyperparameter {name!r} of class {kind}: "
            "keras-pbt knows Float, Int, Choice, Boolean and Fixed."
        )
    low, high = config["min_value"], config["max_value"]
    step, sampling = config.get("step"), (config.get("sampling") or "linear").lower()
    integer = kind == "Int"
    if low == high:
        return None  # a constant: nothing to tune
    if sampling == "log" and step:
        return space_lib.Choice(_log_grid(low, high, step, integer))
    if integer:
        return space_lib.IntUniform(int(low), int(high), step=int(step or 1),
                                    log=sampling == "log")
    if sampling == "log":
        return space_lib.LogUniform(float(low), float(high))
    # "linear" and "reverse_log" (only sampling differs for the latter).
    if step:
        # keras-tuner's own grid: `(max - min) // step + 1` values, computed
        # in floats, so Float(0, 0.5, step=0.1) never yields 0.5: neither
        # does its spec.
        n = int((high - low) // step + 1)
        if n < 2:
            return space_lib.Choice([float(low)])
        return space_lib.Uniform(float(low), float(low + (n - 1) * step), step=float(step))
    return space_lib.Uniform(float(low), float(high))


def space_from_hyperparameters(hyperparameters, exclude=()):
    """A keras-pbt search space from keras-tuner hyperparameters.

    Args:
        hyperparameters: a keras-tuner `HyperParameters` (its `.space` is
            read), a list of `HyperParameter`s, or the config dict of
            `HyperParameters.get_config()`.
        exclude: names to leave out (e.g. hyperparameters frozen during
            training).

    Returns:
        A dict name -> spec, in the order of the space, without `Fixed`
        hyperparameters and without `exclude`.

    A conditional hyperparameter (`parent_name=`, `conditional_scope`) is
    included: `PBTOracle` explores it where it is active, and never
    explores the parents it depends on.

    Example:

    >>> import keras_tuner
    >>> hp = keras_tuner.HyperParameters()
    >>> _ = hp.Float("lr", 1e-4, 1e-1, sampling="log")
    >>> space_from_hyperparameters(hp)
    {'lr': LogUniform(low=0.0001, high=0.1)}
    """
    if isinstance(hyperparameters, dict):
        items = hyperparameters["space"]
    elif hasattr(hyperparameters, "space"):
        items = hyperparameters.space
    else:
        items = list(hyperparameters)
    exclude = set(exclude)
    out = {}
    for hp in items:
        kind, config = _class_and_config(hp)
        name = config["name"]
        if name in exclude or name in out:
            continue
        spec = spec_from_hyperparameter(hp)
        if spec is None:
            continue
        out[name] = spec
    return out
