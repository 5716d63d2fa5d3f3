"""Running members in threads: start, join, and Ctrl-C.

Python delivers Ctrl-C (`KeyboardInterrupt`) to the main thread only, and
only between bytecodes: a bare `thread.join()` would block it until every
member finished. `join` waits in short slices so that Ctrl-C reaches the
caller at once, and reports the threads that are still running after a
deadline instead of reading them as finished.
"""

import contextlib
import logging
import threading
import time

POLL_SECONDS = 0.1


def start(targets):
    """Starts one daemon thread per `(name, fn, args)`; returns the threads."""
    threads = [threading.Thread(target=fn, args=tuple(args), name=name, daemon=True)
               for name, fn, args in targets]
    for t in threads:
        t.start()
    return threads


def join(threads, timeout=None):
    """Waits for `threads`, in slices so that Ctrl-C is not held up.

    Args:
        threads: the threads to wait for.
        timeout: seconds to wait at most, or None for as long as they run.

    Returns:
        The threads still alive when the wait ended (empty when all
        finished).

    Raises:
        KeyboardInterrupt: Ctrl-C while waiting (the threads run on).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        alive = [t for t in threads if t.is_alive()]
        if not alive:
            return []
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return alive
        alive[0].join(POLL_SECONDS if left is None else min(POLL_SECONDS, left))


def names(threads):
    """The threads' names, for a message: `"pbt-member-0, pbt-member-3"`."""
    return ", ".join(t.name for t in threads)


class _FirstTracesOfMembers(logging.Filter):
    """Drops TensorFlow's "N out of the last N calls to <Keras' step function>
    triggered tf.function retracing" while members train in threads.

    TensorFlow counts traces per Python *code object*, not per `tf.function`:
    every member's train and test functions are made from the same Keras
    code, so the first trace of each member's own function counts as a
    "retrace" of one function. Measured on an 8-member learning-rate-only
    population (4 epochs, 6 exploits): each member's train step is traced
    once and its test step never again after the first epoch
    (`tests/test_population.py::test_members_trace_their_steps_once`), yet
    TensorFlow warns twice.
    """

    def filter(self, record):
        text = record.getMessage()
        return not ("triggered tf.function retracing" in text
                    and "TensorFlowTrainer._make_function" in text)


@contextlib.contextmanager
def quiet_first_traces():
    """While members train: TensorFlow's retracing warning about Keras' step
    functions is dropped (`_FirstTracesOfMembers` says why); other records
    pass."""
    logger = logging.getLogger("tensorflow")
    quiet = _FirstTracesOfMembers()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
