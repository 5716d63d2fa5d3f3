"""A TensorFlow member's input pipeline: per-replica `tf.data`.

Keras distributes a plain dataset with `experimental_distribute_dataset`,
whose iterators are MultiDeviceIterators; several members creating and
deleting those at once in threads (Keras makes new ones at every epoch and
every validation) crash TensorFlow 2.21 with a segmentation fault (seen in
~3% of population fits here). Per-replica datasets that are not fetched to
the device use plain tf.data iterators, which did not crash in the same
stress runs. Datasets repeat and every fit gets explicit steps, so no epoch
ends on an out-of-range error.

Imported only on the TensorFlow backend, or for a `tf.data.Dataset` given
by the user (`keras_pbt.population.data` decides).
"""

import math

import tensorflow as tf

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


def _distributes(strategy):
    # A TensorFlow strategy feeds each replica; a JAX/PyTorch member's
    # DeviceScope takes the plain dataset (one device, one pipeline).
    return hasattr(strategy, "distribute_datasets_from_function")


def distribute_arrays(strategy, arrays, num_samples, batch_size, seed):
    """In-memory arrays shuffled with `seed` (None: in order), batched,
    repeated, and split over the strategy's replicas."""

    def pipeline(batch, shard=None):
        ds = tf.data.Dataset.from_tensor_slices(arrays)
        if seed is not None:
            # The same seed in every replica's pipeline: one permutation, sharded.
            ds = ds.shuffle(num_samples, seed=seed, reshuffle_each_iteration=True)
        if shard is not None:
            ds = ds.shard(*shard)
        return ds.batch(batch).repeat().with_options(_ARRAY_OPTIONS)

    if not _distributes(strategy):
        return pipeline(batch_size)

    def dataset_fn(ctx):
        return pipeline(ctx.get_per_replica_batch_size(batch_size),
                        (ctx.num_input_pipelines, ctx.input_pipeline_id))

    return strategy.distribute_datasets_from_function(dataset_fn, _INPUT_OPTIONS)


def distribute_batches(strategy, dataset, seed=None, shuffle_buffer=None):
    """A batched dataset, its batches shuffled with `seed` (None: in order),
    repeated and split over the strategy's replicas."""
    if seed is not None:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
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
