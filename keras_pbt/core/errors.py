"""The errors a population raises while it trains. Pure Python."""


class BarrierTimeoutError(TimeoutError):
    """A synchronous boundary waited longer than its timeout for some members.

    Attributes:
        member_id: the member that waited.
        interval: the boundary index.
        missing: the members that did not report for `interval` in time.
        timeout: the timeout in seconds.
    """

    def __init__(self, message, member_id=None, interval=None, missing=(), timeout=None):
        super().__init__(message)
        self.member_id = member_id
        self.interval = interval
        self.missing = list(missing)
        self.timeout = timeout


class ConfigurationError(ValueError):
    """A mistake in the population's configuration found during training
    (e.g. the monitored metric is not in the logs): it stops the whole
    population instead of counting as one member's fault."""


class PopulationStopped(RuntimeError):
    """The store was closed (the population stops): waiting members leave."""
