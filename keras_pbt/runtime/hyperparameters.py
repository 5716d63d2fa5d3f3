"""Applying hyperparameters to a compiled Keras model so the next step uses them.

Keras' compiled train step captures plain Python floats of the optimizer
(momentum, beta_1, epsilon, weight_decay, clipnorm, ...) when it is traced:
setting `optimizer.momentum = 0.9` in the middle of `fit` is silently
ignored. This module assigns what lives in a variable (the learning rate,
user `keras.Variable`s, and the common optimizer floats, which it backs by
variables for the duration of `fit`: see `keras_pbt.runtime.tunable`) and, only when
a value the step was traced with really changed, forces Keras to retrace
the train step.

A model may hold several optimizers (a GAN's `d_optimizer` and
`g_optimizer`): `"g_optimizer.learning_rate"` addresses the optimizer held
in the model attribute `g_optimizer`, with the same rules; a plain
`"learning_rate"` always means `model.optimizer`.
"""

import contextlib
import numbers

import keras

from keras_pbt import backend as backend_lib
from keras_pbt.runtime import trace_lock
from keras_pbt.runtime import tunable as tunable_lib


class _Setter:
    retraces = False  # True: applying any new value needs the train step retraced

    def read(self):
        return None

    def apply(self, value):
        """Sets `value`; returns True if the train step must be retraced."""
        raise NotImplementedError


class _LearningRateSetter(_Setter):
    def __init__(self, optimizer):
        self.optimizer = optimizer

    def read(self):
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def apply(self, value):
        backend_lib.current().assign(self.optimizer.learning_rate, float(value))
        return False


class _OptimizerAttrSetter(_Setter):
    """A numeric optimizer field. Float fields Keras only uses in arithmetic
    (`tunable.TUNABLE_FIELDS`) are backed by a variable: assigned, retraced
    only when a value moves to or from zero. Others are set, then retraced."""

    def __init__(self, optimizer, name, model):
        self.optimizer = optimizer
        self.name = name
        self.model = model
        backend = backend_lib.current()
        self._tunable = name in tunable_lib.TUNABLE_FIELDS and backend.carries_floats
        self._captured = backend.step_captures_floats(model)

    def read(self):
        value = getattr(self.optimizer, self.name)
        return float(value) if isinstance(value, tunable_lib.TunableFloat) else value

    def install(self):
        """Backs the field by a variable when it is a tunable float."""
        value = getattr(self.optimizer, self.name)
        if self._tunable and isinstance(value, float):
            tunable_lib.install(self.optimizer, self.name, self.model)

    def apply(self, value):
        current = getattr(self.optimizer, self.name)
        if isinstance(current, tunable_lib.TunableFloat):
            retrace = tunable_lib.needs_retrace(current.value, value)
            current.assign(value)
            return retrace
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = int(value) if isinstance(current, int) and float(value).is_integer() \
                and not isinstance(current, bool) else float(value)
        if value == current and type(value) is type(current):
            return False
        setattr(self.optimizer, self.name, value)
        self.install()  # e.g. clipnorm None -> 1.0: variable-backed from now on
        # An eager step (PyTorch) reads the new value by itself.
        return self._captured


class _VariableSetter(_Setter):
    """A `keras.Variable`: assigned. Where the compiled step takes its state
    as arguments (JAX), one that is not part of that state is carried in it
    while the applier manages it: in `optimizer`'s variables when it is read
    by the optimizer (a `ScaledSchedule`'s scale), else in the model's."""

    def __init__(self, variable, model, optimizer=None):
        self.variable = variable
        self.model = model
        self.optimizer = optimizer
        self._carried = backend_lib.current().carry_variable(model, variable, optimizer)

    def read(self):
        value = keras.ops.convert_to_numpy(self.variable)
        return value.item() if value.ndim == 0 else value.tolist()

    def apply(self, value):
        self.variable.assign(value)
        return False

    def release(self):
        if self._carried:
            backend_lib.current().drop_variable(self.model, self.variable, self.optimizer)
            self._carried = False


class _CallableSetter(_Setter):
    retraces = True

    def __init__(self, fn, model):
        self.fn = fn
        self.model = model

    def apply(self, value):
        self.fn(self.model, value)
        return True


class _LayerRateSetter(_Setter):
    """A Keras layer's `rate` (a `Dropout`): read from the layer, set on it;
    the compiled step captured the old float, so it is retraced."""

    retraces = True

    def __init__(self, layer):
        self.layer = layer

    def read(self):
        return float(self.layer.rate)

    def apply(self, value):
        self.layer.rate = float(value)
        return True


def _inner_optimizer(optimizer):
    # A LossScaleOptimizer wraps the optimizer that holds the hyperparameters.
    return getattr(optimizer, "inner_optimizer", optimizer)


def _is_schedule(lr):
    return isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) or (
        callable(lr) and not isinstance(lr, keras.Variable)
    )


class HyperparameterApplier:
    """Applies named hyperparameters to a compiled model.

    Supported names: `learning_rate` (assigned, no retrace), the optimizer
    floats `momentum`, `beta_1`, `beta_2`, `epsilon`, `rho`, `weight_decay`,
    `clipnorm`, `global_clipnorm`, `clipvalue` (backed by variables while
    the applier manages them: assigned, retraced only when a value moves to
    or from zero), any other numeric optimizer field (set, then the train
    step is retraced once), and user hyperparameters given in `setters`.
    Call `release()` when training ends to put plain floats back.
    `"<attribute>.<field>"` (e.g. `"g_optimizer.learning_rate"`,
    `"d_optimizer.beta_1"`) addresses another optimizer of the model, held
    in that attribute, with the same rules.

    Args:
        model: a compiled `keras.Model` whose optimizer is built.
        names: the hyperparameter names to manage.
        setters: optional dict name -> `keras.Variable` (assigned, no
            retrace), a Keras layer with a `rate` such as `Dropout` (its
            rate is read and set, then the train step is retraced), or a
            callable `fn(model, value)` (called, then the train step is
            retraced; its start value cannot be read). A setter takes
            precedence over an optimizer field of the same name.

    Raises:
        ValueError: naming a hyperparameter that is neither an optimizer
            field nor in `setters`.
        TypeError: when `learning_rate` is tuned but the optimizer uses a
            learning-rate schedule.

    Example:

    >>> applier = HyperparameterApplier(model, ["learning_rate", "momentum"])
    >>> applier.apply({"learning_rate": 0.05, "momentum": 0.9})
    """

    def __init__(self, model, names, setters=None):
        if getattr(model, "optimizer", None) is None:
            raise ValueError("The model has no optimizer: compile it before training with PBT.")
        self.model = model
        self.optimizer = _inner_optimizer(model.optimizer)
        if not model.optimizer.built and model.built:
            # Keras may build the optimizer only at the first step; build it
            # now so slots exist (and snapshots match) from the start.
            with _build_scope(model):
                model.optimizer.build(model.trainable_variables)
        setters = dict(setters or {})
        self._setters = {}
        for name in names:
            self._setters[name] = self._resolve(name, setters.get(name))
        # SGD optimizers whose momentum is tuned: they need momentum slots.
        self._momentum_optimizers = [
            s.optimizer for s in self._setters.values()
            if isinstance(s, _OptimizerAttrSetter) and s.name == "momentum"
        ]
        self._tunes_momentum = bool(self._momentum_optimizers)
        self.ensure_slots()
        for setter in self._setters.values():
            if isinstance(setter, _OptimizerAttrSetter):
                setter.install()
        self._current = {}

    def _resolve(self, name, setter):
        if setter is not None:
            if isinstance(setter, keras.Variable):
                return _VariableSetter(setter, self.model)
            if isinstance(setter, keras.layers.Layer):
                rate = getattr(setter, "rate", None)
                if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
                    raise TypeError(
                        f"`setters[{name!r}]` is a layer without a numeric `rate` (as a Dropout "
                        f"has); pass fn(model, value) to set it. Received: {setter!r}")
                return _LayerRateSetter(setter)
            if callable(setter):
                return _CallableSetter(setter, self.model)
            raise TypeError(
                f"`setters[{name!r}]` must be a keras.Variable, a layer with a `rate` (a "
                f"Dropout) or a callable fn(model, value). Received: {setter!r}"
            )
        opt, field = self.optimizer, name
        if "." in name:
            attribute, field = name.split(".", 1)
            opt = getattr(self.model, attribute, None)
            if not isinstance(opt, keras.optimizers.Optimizer):
                from keras_pbt.runtime.snapshot import optimizers

                found = [n for n, _ in optimizers(self.model)]
                raise ValueError(
                    f"Hyperparameter {name!r} names model attribute {attribute!r}, which is "
                    f"not an optimizer of the model (its optimizers: {found}) and no "
                    "setter was given for it."
                )
            opt = _inner_optimizer(opt)
        return self._resolve_field(name, field, opt)

    def _resolve_field(self, name, field, opt):
        if field == "learning_rate":
            if _is_schedule(getattr(opt, "_learning_rate", None)):
                raise TypeError(
                    "Cannot tune `learning_rate`: the optimizer uses a learning-rate "
                    f"schedule ({type(opt._learning_rate).__name__}) and PBT needs a "
                    "float it can assign. Compile with a float learning rate, or keep "
                    "the schedule and tune a multiplier: wrap it in "
                    "keras_pbt.ScaledSchedule and tune 'learning_rate_scale'."
                )
            return _LearningRateSetter(opt)
        if field == "learning_rate_scale":
            lr = getattr(opt, "_learning_rate", None)
            scale = getattr(lr, "scale", None)
            if scale is None:
                raise ValueError(
                    f"Hyperparameter {name!r} needs the optimizer's "
                    "learning rate to be a keras_pbt.ScaledSchedule."
                )
            return _VariableSetter(scale, self.model, opt)
        value = getattr(opt, field, _MISSING)
        if isinstance(value, tunable_lib.TunableFloat):
            value = value.value  # installed by an earlier applier
        if value is _MISSING or callable(value) or not (
            value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool))
        ):
            raise ValueError(
                f"Hyperparameter {name!r} is not a numeric field of the optimizer "
                f"{type(opt).__name__} and no setter was given for it. Pass "
                f"setters={{{name!r}: keras.Variable(...) or fn(model, value)}}."
            )
        return _OptimizerAttrSetter(opt, field, self.model)

    def ensure_slots(self):
        """Gives every SGD optimizer whose momentum is tuned its momentum slots.

        Keras SGD built with `momentum=0` has no momentum slots; every member
        needs them so that a later momentum > 0 works and snapshots match.
        An optimizer that the model's own `train_step` builds at its first
        step (a GAN's) gets them once it is built: `PBTCallback` calls this
        at every boundary, before it captures or restores a snapshot.
        """
        for opt in self._momentum_optimizers:
            if not isinstance(opt, keras.optimizers.SGD) or not opt.built:
                continue
            if opt is self.optimizer:
                variables = self.model.trainable_variables
            else:
                variables = list(getattr(opt, "_trainable_variables", []))
            if len(opt.momentums) == len(variables):
                continue
            with _build_scope(self.model):
                opt.momentums = opt.add_optimizer_variables(variables, "momentum")

    @property
    def names(self):
        return list(self._setters)

    def read(self):
        """Current values, `None` for a callable setter (it cannot be read)."""
        return {name: s.read() for name, s in self._setters.items()}

    def unreadable(self):
        return [n for n, s in self._setters.items() if isinstance(s, _CallableSetter)]

    def apply(self, values, force=False):
        """Applies `values` (a dict); returns True if the train step was retraced.

        Variables (the learning rate, user `keras.Variable`s, variable-backed
        optimizer floats) are assigned; an exploit may have overwritten
        them. Other traced values that changed are set, and the model's
        train function is rebuilt once, so the very next step uses them.
        `force` rebuilds it in any case (at the start of `fit`, so that the
        step is traced with the variable-backed fields).
        """
        retrace = force
        # JAX: in the middle of an epoch the variables hold a stale state;
        # write it back first, and the next step reads what is assigned here.
        backend_lib.current().sync_state(self.model)
        if self._tunes_momentum:
            self.ensure_slots()  # the optimizer may have been built since
        for name, value in values.items():
            setter = self._setters.get(name)
            if setter is None:
                continue
            if setter.retraces and not force and self._current.get(name, _MISSING) == value:
                continue
            retrace = setter.apply(value) or retrace
            self._current[name] = value
        if retrace:
            self.model.make_train_function(force=True)
            trace_lock.guard(self.model, "train_function")
        return retrace

    def release(self):
        """Puts plain floats back in the optimizer fields that `apply` backed
        by variables (at the end of `fit`, so the model saves as usual)."""
        # uninstall() clears every field of an optimizer: once per optimizer.
        optimizers = {id(s.optimizer): s.optimizer for s in self._setters.values()
                      if isinstance(s, _OptimizerAttrSetter)}
        for optimizer in optimizers.values():
            tunable_lib.uninstall(optimizer)
        for setter in self._setters.values():
            if isinstance(setter, _VariableSetter):
                setter.release()


def _build_scope(model):
    # TensorFlow builds variables in the model's strategy; JAX and PyTorch
    # on the device the member's thread is placed on.
    strategy = getattr(model, "distribute_strategy", None)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


_MISSING = object()


@keras.saving.register_keras_serializable(package="keras_pbt")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule times a tunable scale.

    PBT cannot assign a schedule, but it can tune its scale: compile with
    `ScaledSchedule(schedule)` and put `"learning_rate_scale"` in the space.

    Args:
        schedule: a `keras.optimizers.schedules.LearningRateSchedule`.
        scale: the initial multiplier. Defaults to `1.0`.

    Example:

    >>> sched = ScaledSchedule(keras.optimizers.schedules.CosineDecay(0.1, 1000))
    >>> model.compile(keras.optimizers.SGD(sched), "mse")
    >>> space = {"learning_rate_scale": keras_pbt.LogUniform(0.1, 10.0)}
    """

    def __init__(self, schedule, scale=1.0):
        if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            raise TypeError(
                "`schedule` must be a keras LearningRateSchedule. "
                f"Received: schedule={schedule!r}"
            )
        self.schedule = schedule
        self.scale = keras.Variable(float(scale), trainable=False, name="learning_rate_scale")

    def __call__(self, step):
        return self.schedule(step) * keras.ops.cast(self.scale, "float32")

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "scale": float(keras.ops.convert_to_numpy(self.scale)),
        }

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["schedule"]), config["scale"])
