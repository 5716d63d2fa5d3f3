"""A member's input pipeline without TensorFlow: NumPy batches, endlessly.

On JAX and PyTorch a member trains on one device, and Keras takes a
`keras.utils.PyDataset` on every backend: `ArrayBatches` cuts in-memory
arrays into batches, pass after pass, each pass in its own permutation
drawn from the member's seed. The batches a member sees are those of
TensorFlow's pipeline for the same arrays (`shuffle(n)`, `batch`,
`repeat`: every pass whole, its last batch short), and `fit` gets explicit
steps per epoch (`keras_pbt.population.data.steps_per_epoch`).
"""

import math

import keras
import numpy as np


class ArrayBatches(keras.utils.PyDataset):
    """Endless batches of in-memory arrays, shuffled per pass with a seed.

    Batch `i` is batch `i % batches_per_pass` of pass `i // batches_per_pass`;
    pass `p` is in the order `numpy.random.default_rng([seed, p]).permutation(n)`
    (in the arrays' own order when `seed` is None). So the data a member
    sees depend only on its seed and the step, also when `fit` starts again
    (a restart) or several members read the same arrays at once.

    Args:
        arrays: a tuple `(x,)`, `(x, y)` or `(x, y, sample_weight)`; each
            may be an array or a list / dict of arrays with the same first
            dimension.
        batch_size: samples per batch.
        seed: the member's shuffling seed, or None not to shuffle.

    Example:

    >>> batches = ArrayBatches((x, y), batch_size=32, seed=7)
    >>> model.fit(batches, steps_per_epoch=batches.batches_per_pass, epochs=3)  # doctest: +SKIP
    """

    def __init__(self, arrays, batch_size, seed=None):
        super().__init__()
        if not isinstance(arrays, tuple) or len(arrays) not in (1, 2, 3):
            raise ValueError("`arrays` must be (x,), (x, y) or (x, y, sample_weight). "
                             f"Received: arrays of type {type(arrays).__name__}")
        self.arrays = keras.tree.map_structure(np.asarray, arrays)
        sizes = {len(a) for a in keras.tree.flatten(self.arrays)}
        if len(sizes) != 1:
            raise ValueError(f"The arrays must have the same number of samples. Received: "
                             f"sizes {sorted(sizes)}")
        self.num_samples = sizes.pop()
        self.batch_size = int(batch_size)
        self.batches_per_pass = math.ceil(self.num_samples / self.batch_size)
        self.seed = seed
        self._pass = None
        self._order = None

    @property
    def num_batches(self):
        """None: endless (`fit`'s `steps_per_epoch` ends each epoch)."""
        return None

    def order(self, p):
        """The sample order of pass `p` (None: the arrays' own order)."""
        if self.seed is None:
            return None
        return np.random.default_rng([int(self.seed), int(p)]).permutation(self.num_samples)

    def __getitem__(self, index):
        p, j = divmod(int(index), self.batches_per_pass)
        start, stop = j * self.batch_size, (j + 1) * self.batch_size
        if self.seed is None:
            return keras.tree.map_structure(lambda a: a[start:stop], self.arrays)
        if p != self._pass:
            self._pass, self._order = p, self.order(p)
        rows = self._order[start:stop]
        return keras.tree.map_structure(lambda a: a[rows], self.arrays)
