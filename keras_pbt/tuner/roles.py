"""What each hyperparameter of a hypermodel changes, found by building it.

`PBTTuner` builds the hypermodel once with its default values and once per
hyperparameter with a neighbouring value (the one explore would move to:
`spec.perturb(default, 1.2)`, else `0.8`, ...; the next `Choice`; the other
`Boolean`; a sampled value where no factor moves it, as from 0), and compares what it gets:

* the weights' layout (names, shapes and dtypes of every weight and
  optimizer variable, after the optimizer is built): a hyperparameter that
  changes it (`hp.Int("units")`, an optimizer class) is **layout**: a member
  cannot take another value's weights, so it is never explored and an
  exploit copies it from the parent (`PBTOracle(inherited=...)`);
* else the model's config (`model.get_config()`) or its compile config
  without the optimizer (loss, metrics): such a hyperparameter
  (`hp.Choice("activation")`, `hp.Boolean("dropout")` adding a `Dropout`
  layer, a dropout rate) is **rebuild**: it is explored, and a segment whose
  value differs from the model a worker holds builds the model again (the
  weights carry over: the layout is the same); a `Dropout` layer has no
  weights, so it stays explorable and the rebuilt model's train step
  applies it;
* else the optimizer's config, in exactly one field that
  `keras_pbt.HyperparameterApplier` assigns (`learning_rate`, `momentum`,
  `beta_1`, ...) and whose value is the hyperparameter's own: **optimizer**:
  explored, and assigned to the model a worker keeps, with no rebuild and
  no retrace;
* a hyperparameter whose change shows in none of these is **rebuild** (its
  effect is hidden, so a change rebuilds to be safe). One the builds never
  declare (declared in `HyperModel.fit`, such as a batch size) is read by
  `fit` at every segment and needs nothing.
"""

import dataclasses
import math
from typing import Dict, Tuple

import keras
import numpy as np

from keras_pbt.runtime import snapshot as snapshot_lib
from keras_pbt.runtime.hyperparameters import HyperparameterApplier
from keras_pbt.tuner import convert

LAYOUT = "layout"
REBUILD = "rebuild"
OPTIMIZER = "optimizer"


@dataclasses.dataclass(frozen=True)
class Roles:
    """The role of every hyperparameter the hypermodel's `build` declares.

    Attributes:
        layout: names of the hyperparameters that change the weights' layout.
        rebuild: names of those whose change needs a new model.
        optimizer: dict name -> the optimizer field it sets.
    """

    layout: Tuple[str, ...] = ()
    rebuild: Tuple[str, ...] = ()
    optimizer: Dict[str, str] = dataclasses.field(default_factory=dict)

    def model_key(self, values):
        """What a model built with `values` is determined by (besides optimizer fields)."""
        return tuple(repr(values.get(n)) for n in self.layout + self.rebuild)


def optimizer_fields(model, extra=()):
    """The optimizer fields a worker manages: the learning rate (unless a
    schedule), SGD's momentum (so every member has momentum slots), and
    `extra`."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    names = []
    if isinstance(getattr(optimizer, "_learning_rate", None), keras.Variable):
        names.append("learning_rate")
    if isinstance(optimizer, keras.optimizers.SGD):
        names.append("momentum")
    return list(dict.fromkeys(names + list(extra)))


def prepare(model, extra=()):
    """Builds the optimizer (with SGD momentum slots); returns its `HyperparameterApplier`."""
    return HyperparameterApplier(model, optimizer_fields(model, extra))


def _neighbour(hp, value):
    spec = convert.spec_from_hyperparameter(hp)
    if spec is None:
        return None
    rng = np.random.default_rng(0)
    for factor in (1.2, 0.8, 2.0, 0.5, 10.0, 0.1):
        new, _ = spec.perturb(value, factor, rng)
        if new != value:
            return new
    for _ in range(20):  # e.g. a value of 0, which no factor moves
        new = spec.sample(rng)
        if new != value:
            return new
    return None


def _config(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - a model without a config: compared as unknown
        return None


def _fingerprint(model):
    applier = prepare(model)
    applier.release()
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    compile_config = _config(model.get_compile_config) or {}
    compile_config = {k: v for k, v in compile_config.items() if k != "optimizer"}
    return (snapshot_lib.layout(model), _config(model.get_config), compile_config,
            _config(optimizer.get_config) or {})


def _same(a, b):
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    return a == b


def _optimizer_field(base, other, value, new):
    """The one optimizer field that moved from `value` to `new`, else None."""
    moved = [k for k in set(base) | set(other) if not _same(base.get(k), other.get(k))]
    if len(moved) != 1:
        return None
    field = moved[0]
    a, b = base.get(field), other.get(field)
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b, value, new))
    if numeric and _same(float(a), float(value)) and _same(float(b), float(new)):
        return field
    return None


def find_roles(build, hyperparameters):
    """Classifies the hyperparameters of `hyperparameters.space` by building.

    Args:
        build: `fn(hp) -> compiled keras.Model` (the tuner's, under its
            strategy). Keras' session is cleared before each build (and
            after the last), so automatic layer names match between builds.
        hyperparameters: the oracle's `keras_tuner.HyperParameters`.

    Returns:
        A `Roles`.
    """
    space = list(hyperparameters.space)
    layout, rebuild, optimizer = [], [], {}

    def fingerprint(values):
        hps = hyperparameters.copy()
        hps.values = dict(values)
        keras.backend.clear_session(free_memory=False)  # gc.collect takes ~1 s
        return _fingerprint(build(hps))

    cache = {}
    for hp in space:
        if convert.spec_from_hyperparameter(hp) is None:
            continue  # Fixed, or a constant: never changes
        base = {h.name: h.default for h in space}
        for condition in hp.conditions:  # make `hp` active
            base[condition.name] = condition.values[0]
        value = base[hp.name]
        new = _neighbour(hp, value)
        if new is None:
            continue
        key = repr(sorted(base.items()))
        if key not in cache:
            cache[key] = fingerprint(base)
        before = cache[key]
        after = fingerprint(dict(base, **{hp.name: new}))
        if before[0] != after[0]:
            layout.append(hp.name)
        elif before[1] != after[1] or before[2] != after[2] or before[1] is None:
            rebuild.append(hp.name)
        else:
            field = _optimizer_field(before[3], after[3], value, new)
            if field is None:
                rebuild.append(hp.name)
            else:
                optimizer[hp.name] = field
    keras.backend.clear_session(free_memory=False)
    return Roles(tuple(dict.fromkeys(layout)), tuple(dict.fromkeys(rebuild)), optimizer)
