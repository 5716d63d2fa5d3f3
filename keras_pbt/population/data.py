"""Members' input pipelines, and the checks of `Population.fit`'s data arguments.

Keras distributes a plain dataset with `experimental_distribute_dataset`,
whose iterators are MultiDeviceIterators; several members creating and
deleting those at once in threads (Keras makes new ones at every epoch and
every validation) crash TensorFlow 2.21 with a segmentation fault (seen in
~3% of population fits here). Per-replica datasets that are not fetched to
the device use plain tf.data iterators, which did not crash in the same
stress runs. Datasets repeat and every fit gets explicit steps, so no epoch
ends on an out-of-range error.

`check_fit_arguments` runs once, before any member trains: it rejects bad
values with `Received: name=value` and fixes the steps every member trains
per epoch (the same for all).
"""

import inspect
import math

import keras
import tensorflow as tf

from keras_pbt.core.validation import check_int

_INPUT_OPTIONS = tf.distribute.InputOptions(
    experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA,
    experimental_fetch_to_device=False,
)

# In-memory arrays need no tf.data autotuning, and its background thread can
# make an iterator's destructor wait (seen: a member's `fit` took ~9 s to
# return, blocked in ~RootDataset::Iterator, in about half of the population
# runs here).
_ARRAY_OPTIONS = tf.data.Options()
_ARRAY_OPTIONS.autotune.enabled = False

DEFAULT_BATCH_SIZE = 32

# `model.fit` arguments the population sets itself, and why.
_MANAGED = {
    "initial_epoch": "each member resumes from its own epoch count",
    "validation_split": "pass `validation_data`",
    "sample_weight": "pass a tf.data.Dataset of (x, y, sample_weight)",
    "validation_batch_size": "validation uses `batch_size`",
}
_FIT_ARGUMENTS = set(inspect.signature(keras.Model.fit).parameters) - {"self"}


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
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError("`y` must be None when `x` is a tf.data.Dataset. Received: y=...")
        if batch_size is not None:
            raise ValueError("`batch_size` must be None when `x` is a tf.data.Dataset (it is "
                             f"already batched). Received: batch_size={batch_size!r}")
        steps = steps or dataset_steps(x, "steps_per_epoch")
    else:
        n = _num_samples(x, y)
        steps = steps or math.ceil(n / (batch_size or DEFAULT_BATCH_SIZE))
    if validation_data is None:
        vsteps = None
    elif isinstance(validation_data, tf.data.Dataset):
        vsteps = vsteps or dataset_steps(validation_data, "validation_steps")
    elif not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (1, 2, 3):
        raise ValueError(
            "`validation_data` must be (x,), (x, y), (x, y, sample_weight) or a "
            f"tf.data.Dataset. Received: validation_data of type {type(validation_data).__name__}"
        )
    else:
        n = _num_samples(validation_data[0], validation_data[1] if len(validation_data) > 1 else None)
        vsteps = vsteps or math.ceil(n / (batch_size or DEFAULT_BATCH_SIZE))
    return steps, vsteps, fit_kwargs


def member_data(strategy, x, y, batch_size, seed, shuffle_buffer):
    """A member's training data, repeated and distributed over its slice.

    Args:
        strategy: the member's `tf.distribute` strategy.
        x, y: arrays, or a batched `tf.data.Dataset` in `x`.
        batch_size: the global batch size for arrays (None: 32).
        seed: the member's shuffling seed, or None not to shuffle.
        shuffle_buffer: buffer of the batch shuffle for a Dataset.

    Returns:
        A distributed dataset.
    """
    if isinstance(x, tf.data.Dataset):
        if seed is not None:
            x = x.shuffle(shuffle_buffer, seed=seed)
        return distribute_batches(strategy, x)
    arrays = (x, y) if y is not None else x
    return distribute_arrays(strategy, arrays, batch_size or DEFAULT_BATCH_SIZE, seed)


def member_validation(strategy, validation_data, batch_size):
    """The validation data distributed over a member's slice (None if none)."""
    if validation_data is None:
        return None
    if isinstance(validation_data, tf.data.Dataset):
        return distribute_batches(strategy, validation_data)
    arrays = tuple(validation_data) if len(validation_data) > 1 else validation_data[0]
    return distribute_arrays(strategy, arrays, batch_size or DEFAULT_BATCH_SIZE, None)


def _num_samples(x, y):
    first = y if y is not None else tf.nest.flatten(x)[0]
    return len(first)


def dataset_steps(dataset, name):
    n = int(dataset.cardinality())
    if n < 0:
        raise ValueError(
            f"The dataset has an unknown or infinite number of batches: pass `{name}=` to fit. "
            f"Received: {name}=None"
        )
    return n


def _distributes(strategy):
    # A TensorFlow strategy feeds each replica; a JAX/PyTorch member's
    # DeviceScope takes the plain dataset (one device, one pipeline).
    return hasattr(strategy, "distribute_datasets_from_function")


def distribute_arrays(strategy, arrays, batch_size, seed):
    n = _num_samples(arrays[0] if isinstance(arrays, tuple) else arrays,
                     arrays[1] if isinstance(arrays, tuple) else None)

    def pipeline(batch, shard=None):
        ds = tf.data.Dataset.from_tensor_slices(arrays)
        if seed is not None:
            # The same seed in every replica's pipeline: one permutation, sharded.
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if shard is not None:
            ds = ds.shard(*shard)
        return ds.batch(batch).repeat().with_options(_ARRAY_OPTIONS)

    if not _distributes(strategy):
        return pipeline(batch_size)

    def dataset_fn(ctx):
        return pipeline(ctx.get_per_replica_batch_size(batch_size),
                        (ctx.num_input_pipelines, ctx.input_pipeline_id))

    return strategy.distribute_datasets_from_function(dataset_fn, _INPUT_OPTIONS)


def distribute_batches(strategy, dataset):
    if not _distributes(strategy):
        return dataset.repeat()
    replicas = strategy.num_replicas_in_sync
    if replicas > 1:
        first = tf.nest.flatten(next(iter(dataset)))[0]
        per_replica = max(1, math.ceil(int(first.shape[0]) / replicas))

    def dataset_fn(ctx):
        ds = dataset
        if replicas > 1:
            ds = ds.rebatch(per_replica).shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return ds.repeat()

    return strategy.distribute_datasets_from_function(dataset_fn, _INPUT_OPTIONS)


def validation_size(validation_data, validation_steps=None):
    """How many examples `validation_data` holds, or `None` when unknown.

    Arrays give their length (all of it is evaluated unless
    `validation_steps` is set); a `tf.data.Dataset` gives `None`, its
    examples are not counted.
    """
    if validation_data is None or validation_steps is not None or isinstance(
            validation_data, tf.data.Dataset):
        return None
    y = validation_data[1] if len(validation_data) > 1 else None
    return _num_samples(validation_data[0], y)
