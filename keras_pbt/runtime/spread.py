"""The per-example spread of a monitored metric that is not a proportion.

A noise-aware margin (`keras_pbt.StandardError`) needs each report's
standard error, `spread / sqrt(count)`. An accuracy's spread follows from
its value (`keras_pbt.core.noise.proportion_spread`); a loss's does not: it
is the standard deviation of the per-example losses on the validation
data. `ValidationSpread` computes it with one forward pass of the member's
model over the validation arrays, at a boundary, only when the policy's
margin needs it.
"""

import math

import keras
import numpy as np

from keras_pbt.core import selection as selection_lib


def per_example_fn(model, monitor):
    """`fn(y_true, y_pred) -> per-example values` of `monitor`, or None.

    `"val_loss"` / `"loss"` use the model's compiled loss (a Keras loss name,
    function or `keras.losses.Loss`, whose `call` is unreduced); another
    name is looked up as a Keras loss or metric function (`"val_mae"`).
    None when there is no per-example form (several outputs, a custom
    `compute_loss`, a metric such as AUC).
    """
    name = selection_lib.metric_name(monitor)
    target = getattr(model, "loss", None) if name == "loss" else name
    if isinstance(target, keras.losses.Loss):
        return target.call
    if isinstance(target, str):
        for lookup in (keras.losses.get, keras.metrics.get):
            try:
                fn = lookup(target)
            except (ValueError, TypeError):
                continue
            if isinstance(fn, keras.losses.Loss):
                return fn.call
            if callable(fn) and not isinstance(fn, keras.metrics.Metric):
                return fn
        return None
    if callable(target) and not isinstance(target, keras.metrics.Metric):
        return target
    return None


class ValidationSpread:
    """The standard deviation of a metric's per-example values on arrays.

    Args:
        x, y: the validation arrays (a single input and target).
        monitor: the monitored metric's name.
        batch_size: batch of the forward pass. Defaults to `256`.
    """

    def __init__(self, x, y, monitor, batch_size=256):
        self.x, self.y, self.monitor, self.batch_size = x, y, monitor, int(batch_size)

    def __call__(self, model):
        """The spread for `model` now, or None when it has no per-example form."""
        fn = per_example_fn(model, self.monitor)
        if fn is None:
            return None
        values = []
        for i in range(0, len(self.y), self.batch_size):
            pred = model(self.x[i:i + self.batch_size], training=False)
            per = keras.ops.convert_to_numpy(fn(self.y[i:i + self.batch_size], pred))
            values.append(np.reshape(per, (len(per), -1)).mean(axis=1))
        values = np.concatenate(values)
        spread = float(np.std(values, ddof=1)) if len(values) > 1 else None
        return spread if spread is not None and math.isfinite(spread) else None


def for_validation_data(validation_data, monitor):
    """A `ValidationSpread` for `(x, y)` arrays, or None (a Dataset, several inputs)."""
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        return None
    x, y = validation_data
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        return None
    return ValidationSpread(x, y, monitor)
