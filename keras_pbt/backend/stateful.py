"""The answers of a backend whose variables always hold the training state.

TensorFlow and PyTorch read a `keras.Variable` at every step, wherever it is
tracked: there is nothing to write back before a boundary, and nothing to
carry into the step's state. (JAX differs: `jax_backend`.)
"""


def sync_state(model):
    """Variables always hold the state: nothing to do."""
    del model


def is_hparam_variable(variable):
    """No variable is carried in the state only as a hyperparameter."""
    del variable
    return False


def release_tunable(optimizer, variable):
    del optimizer, variable


def carry_variable(model, variable, optimizer=None):
    """A `keras.Variable` is read at every step: nothing to carry."""
    del model, variable, optimizer
    return False


def drop_variable(model, variable, optimizer=None):
    del model, variable, optimizer


def share_compilations():
    """Nothing to share: TensorFlow traces per model, PyTorch runs eagerly."""
