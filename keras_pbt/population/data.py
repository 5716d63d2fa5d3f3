"""Members' input pipelines, the one steps-per-epoch rule, and the checks of
`Population.fit`'s data arguments.

Every member (of a `Population`, or a `PBTTuner` worker with `devices=`)
gets its data from `member_pipeline` / `validation_pipeline`: repeated,
shuffled with the member's own seed, and read for explicit steps per epoch
(`steps_per_epoch`, the same for every member). On TensorFlow that is a
per-replica `tf.data` pipeline (`keras_pbt.population.tf_pipeline`, which
says why it must be per-replica); on JAX and PyTorch, NumPy batches
(`keras_pbt.population.array_batches.ArrayBatches`), so no TensorFlow is
imported there. A `tf.data.Dataset` given by the user is fed through
tf.data on every backend.

`check_fit_arguments` runs once, before any member trains: it rejects bad
values with `Received: name=value` and fixes the steps every member trains
per epoch.
"""

import inspect
import math
import sys

import keras

from keras_pbt.core.validation import check_int

DEFAULT_BATCH_SIZE = 32
# Batches a `tf.data.Dataset` is shuffled over (`Population.fit(shuffle_buffer=)`).
DEFAULT_SHUFFLE_BUFFER = 1024

# `model.fit` arguments the population sets itself, and why.
_MANAGED = {
    "initial_epoch": "each member resumes from its own epoch count",
    "validation_split": "pass `validation_data`",
    "sample_weight": "pass a tf.data.Dataset of (x, y, sample_weight)",
    "validation_batch_size": "validation uses `batch_size`",
}
_FIT_ARGUMENTS = set(inspect.signature(keras.Model.fit).parameters) - {"self"}


def is_dataset(x):
    """True for a `tf.data.Dataset` (never imports TensorFlow: without it
    loaded, nothing can be one)."""
    tf = sys.modules.get("tensorflow")
    data = getattr(tf, "data", None)
    return data is not None and isinstance(x, data.Dataset)


def evaluation_args(validation_data):
    """`Model.evaluate`'s positional arguments for a split to evaluate on.

    Args:
        validation_data: `(x, y)` or a `tf.data.Dataset`.

    Returns:
        `(dataset,)` or `(x, y)`.

    Raises:
        ValueError: for anything else, naming its type.
    """
    if is_dataset(validation_data):
        return (validation_data,)
    if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
        return tuple(validation_data)
    raise ValueError("`validation_data` must be (x, y) or a tf.data.Dataset. Received: "
                     f"validation_data of type {type(validation_data).__name__}")


def steps_per_epoch(x, y=None, batch_size=None, steps=None, name="steps_per_epoch"):
    """The steps of one epoch: `steps` when given, else one pass over the data.

    The one rule for every front door: a dataset's number of batches (its
    cardinality), or `ceil(samples / batch_size)` for arrays.

    Args:
        x, y: arrays (a list or dict of arrays in `x` for several inputs), or
            a batched `tf.data.Dataset` in `x`.
        batch_size: for arrays. Defaults to `32`.
        steps: the steps asked for, or None.
        name: the argument named in an error (`"validation_steps"`).

    Returns:
        An int >= 1.

    Raises:
        ValueError: a dataset of unknown or infinite size and no `steps`.

    Example:

    >>> steps_per_epoch(np.zeros((100, 4)), batch_size=32)   # doctest: +SKIP
    4
    """
    if steps:
        return int(steps)
    if is_dataset(x):
        n = int(x.cardinality())
        if n < 0:
            raise ValueError(
                f"The dataset has an unknown or infinite number of batches: pass `{name}=` to fit. "
                f"Received: {name}=None"
            )
        return n
    return math.ceil(num_samples(x, y) / (batch_size or DEFAULT_BATCH_SIZE))


def num_samples(x, y=None):
    """The number of samples in arrays `x` (or `y`)."""
    return len(keras.tree.flatten(y if y is not None else x)[0])


def check_fit_arguments(x, y, validation_data, batch_size, shuffle, shuffle_buffer, fit_kwargs):
    """Checks `Population.fit`'s data arguments and fixes the steps per epoch.

    Args:
        x, y, validation_data, batch_size, shuffle, shuffle_buffer: as given
            to `Population.fit`.
        fit_kwargs: the other keyword arguments given to `Population.fit`;
            `steps_per_epoch` and `validation_steps` are taken out of it.

    Returns:
        `(steps, validation_steps, fit_kwargs)`: the steps every member
        trains per epoch, the validation steps (None without validation
        data), and the keyword arguments left for `model.fit`.

    Raises:
        ValueError: a bad value, naming it (`Received: batch_size=0`).
        TypeError: an argument `model.fit` does not take.
    """
    fit_kwargs = dict(fit_kwargs)
    for key, value in fit_kwargs.items():
        if key in _MANAGED:
            raise ValueError(f"Population.fit manages `{key}` itself: {_MANAGED[key]}. "
                             f"Received: {key}={value!r}")
        if key not in _FIT_ARGUMENTS:
            raise TypeError(f"Population.fit got an argument `model.fit` does not take: `{key}`. "
                            f"Received: {key}={value!r}")
    steps = check_int("steps_per_epoch", fit_kwargs.pop("steps_per_epoch", None), allow_none=True)
    vsteps = check_int("validation_steps", fit_kwargs.pop("validation_steps", None), allow_none=True)
    batch_size = check_int("batch_size", batch_size, allow_none=True)
    check_int("shuffle_buffer", shuffle_buffer)
    if not isinstance(shuffle, bool):
        raise TypeError(f"`shuffle` must be True or False. Received: shuffle={shuffle!r}")
    if x is None:
        raise ValueError("`x` is required: NumPy arrays or a tf.data.Dataset. Received: x=None")
    if is_dataset(x):
        if y is not None:
            raise ValueError("`y` must be None when `x` is a tf.data.Dataset. Received: y=...")
        if batch_size is not None:
            raise ValueError("`batch_size` must be None when `x` is a tf.data.Dataset (it is "
                             f"already batched). Received: batch_size={batch_size!r}")
    steps = steps_per_epoch(x, y, batch_size, steps)
    if validation_data is None:
        vsteps = None
    elif is_dataset(validation_data):
        vsteps = steps_per_epoch(validation_data, steps=vsteps, name="validation_steps")
    elif not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (1, 2, 3):
        raise ValueError(
            "`validation_data` must be (x,), (x, y), (x, y, sample_weight) or a "
            f"tf.data.Dataset. Received: validation_data of type {type(validation_data).__name__}"
        )
    else:
        vsteps = steps_per_epoch(validation_data[0], validation_data[1] if len(validation_data) > 1
                                 else None, batch_size, vsteps, "validation_steps")
    return steps, vsteps, fit_kwargs


def member_pipeline(strategy, x, y=None, sample_weight=None, batch_size=None, seed=None,
                    shuffle_buffer=DEFAULT_SHUFFLE_BUFFER):
    """A member's training data: endless, shuffled with its seed, on its devices.

    Give `fit` the result with `steps_per_epoch(...)` steps per epoch.

    Args:
        strategy: the member's `MirroredStrategy` (TensorFlow) or
            `DeviceScope` (JAX, PyTorch).
        x, y, sample_weight: arrays, or a batched `tf.data.Dataset` in `x`.
        batch_size: the global batch size for arrays. Defaults to `32`.
        seed: the member's shuffling seed, or None not to shuffle.
        shuffle_buffer: batches a dataset is shuffled over. Defaults to `1024`.

    Returns:
        What `model.fit` takes as `x`: a (distributed) `tf.data.Dataset` on
        TensorFlow or for a dataset, else an `ArrayBatches`.
    """
    if is_dataset(x):
        if y is not None or sample_weight is not None:
            raise ValueError("`y` must be None when `x` is a tf.data.Dataset. Received: y=...")
        from keras_pbt.population import tf_pipeline

        return tf_pipeline.distribute_batches(strategy, x, seed, shuffle_buffer)
    arrays = tuple(a for a in (x, y, sample_weight) if a is not None)
    batch_size = batch_size or DEFAULT_BATCH_SIZE
    if _uses_tf_data(strategy):
        from keras_pbt.population import tf_pipeline

        return tf_pipeline.distribute_arrays(strategy, arrays if len(arrays) > 1 else arrays[0],
                                             num_samples(x, y), batch_size, seed)
    from keras_pbt.population.array_batches import ArrayBatches

    return ArrayBatches(arrays, batch_size, seed)


def validation_pipeline(strategy, validation_data, batch_size=None):
    """The validation data of a member, in order, endless (None if none).

    Args:
        strategy: as for `member_pipeline`.
        validation_data: `(x,)`, `(x, y)`, `(x, y, sample_weight)` or a
            batched `tf.data.Dataset`, or None.
        batch_size: for arrays. Defaults to `32`.

    Returns:
        As `member_pipeline`; read it for `steps_per_epoch(...,
        name="validation_steps")` steps.
    """
    if validation_data is None:
        return None
    if is_dataset(validation_data):
        return member_pipeline(strategy, validation_data)
    return member_pipeline(strategy, *validation_data, batch_size=batch_size)


def _uses_tf_data(strategy):
    # A TensorFlow member's MirroredStrategy feeds its replicas from tf.data.
    return hasattr(strategy, "distribute_datasets_from_function")


def validation_size(validation_data, validation_steps=None):
    """How many examples `validation_data` holds, or `None` when unknown.

    Arrays give their length (all of it is evaluated unless
    `validation_steps` is set); a `tf.data.Dataset` gives `None`, its
    examples are not counted.

    Args:
        validation_data: as given to `Population.fit`, or None.
        validation_steps: the steps the user asked for, or None.

    Returns:
        An int, or None.
    """
    if validation_data is None or validation_steps is not None or is_dataset(validation_data):
        return None
    y = validation_data[1] if len(validation_data) > 1 else None
    return num_samples(validation_data[0], y)
