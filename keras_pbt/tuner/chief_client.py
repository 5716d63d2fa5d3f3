"""A distributed worker's calls to its keras-tuner chief, bounded in time.

keras-tuner's `OracleClient` makes every call with `wait_for_ready=True` and
a one-hour timeout: a worker whose chief is gone (killed, or never started)
waits an hour per call, and a call cut by the chief's death fails with a
bare gRPC error. `bound(client)` wraps the client's gRPC stub so that each
call waits at most `KERAS_PBT_CHIEF_TIMEOUT` seconds (set beside
`KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT`; default
`DEFAULT_TIMEOUT`) for the chief, retrying while the connection is down
(gRPC backs off between attempts: no busy loop), then raises
`ChiefUnavailableError`, which ends the worker's search with a message that
says what happened and what to do.

A worker that is training when its chief dies finishes its segment (and
writes its checkpoint), then waits at most that long to report it.
"""

import os
import time

import grpc
import keras_tuner

TIMEOUT_VARIABLE = "KERAS_PBT_CHIEF_TIMEOUT"
DEFAULT_TIMEOUT = 120.0


class ChiefUnavailableError(keras_tuner.errors.FatalRuntimeError):
    """The chief did not answer within `KERAS_PBT_CHIEF_TIMEOUT` seconds.

    A `keras_tuner.errors.FatalError`: keras-tuner's search loop does not
    count it as a failed trial, it ends the worker's `search()`.
    """


def chief_timeout(environ=None):
    """The seconds a worker waits for its chief (`KERAS_PBT_CHIEF_TIMEOUT`).

    Args:
        environ: the environment to read. Defaults to `os.environ`.

    Returns:
        A positive float; `DEFAULT_TIMEOUT` when the variable is not set.

    Raises:
        ValueError: the variable is not a positive number of seconds.
            `Received: KERAS_PBT_CHIEF_TIMEOUT='soon'`.

    Example:

    >>> chief_timeout({"KERAS_PBT_CHIEF_TIMEOUT": "30"})
    30.0
    """
    environ = os.environ if environ is None else environ
    text = environ.get(TIMEOUT_VARIABLE)
    if text is None or not text.strip():
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(
            f"`{TIMEOUT_VARIABLE}` must be a positive number of seconds that a worker waits for "
            f"its chief. Received: {TIMEOUT_VARIABLE}={text!r}")
    return value


class _BoundedStub:
    """The client's gRPC stub, with every call bounded by `timeout` seconds."""

    def __init__(self, stub, timeout, address):
        self._stub = stub
        self._timeout = timeout
        self._address = address

    def __getattr__(self, name):
        method = getattr(self._stub, name)

        def call(request, **kwargs):
            deadline = time.monotonic() + self._timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._unavailable(name, "no answer")
                try:
                    # wait_for_ready: a call waits while the chief is down
                    # (gRPC reconnects with backoff) instead of failing.
                    return method(request, **dict(kwargs, wait_for_ready=True, timeout=left))
                except grpc.RpcError as error:
                    code = error.code() if callable(getattr(error, "code", None)) else None
                    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise self._unavailable(name, "no answer") from None
                    if code != grpc.StatusCode.UNAVAILABLE:
                        raise
                    # The connection broke during the call (the chief died):
                    # wait for it again, within the same deadline.
                    time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))

        return call

    def _unavailable(self, name, what):
        return ChiefUnavailableError(
            f"The keras-tuner chief at {self._address} gave {what} to {name} for "
            f"{self._timeout:g} s ({TIMEOUT_VARIABLE}): it has stopped or was never started. "
            "This worker stops. Start (or restart) the chief with the same directory and "
            "project_name (overwrite=False resumes the search), then start the workers again.")


def bound(client, timeout=None):
    """Bounds every call of a keras-tuner `OracleClient` to `timeout` seconds.

    Args:
        client: the worker's `OracleClient` (`tuner.oracle` on a worker).
        timeout: seconds; defaults to `chief_timeout()`.

    Returns:
        `client`, whose `stub` now raises `ChiefUnavailableError` when the
        chief does not answer in time.
    """
    timeout = chief_timeout() if timeout is None else float(timeout)
    address = "{}:{}".format(os.environ.get("KERASTUNER_ORACLE_IP", "?"),
                             os.environ.get("KERASTUNER_ORACLE_PORT", "?"))
    if not isinstance(client.stub, _BoundedStub):
        client.stub = _BoundedStub(client.stub, timeout, address)
    return client
