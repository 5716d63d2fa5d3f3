"""One member inside `model.fit`: the callback and what it acts with.

`PBTCallback` (the boundary glue), applying hyperparameters so the next
step uses them, optimizer floats backed by variables, weight and optimizer
snapshots, and replaying a found schedule. The Keras backends' differences
live in `keras_pbt.backend`.
"""
