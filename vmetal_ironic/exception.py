"""Errors shared by every layer of vmetal-ironic.

Every error carries a one-line, operator-facing message that names the
offending value. Errors are split the way a controller needs them: a
:class:`PermanentError` will fail again until someone changes the input,
a :class:`TemporaryError` is worth retrying after ``retry_after`` seconds.
"""


class VmetalError(Exception):
    """Base class of every error vmetal-ironic raises on purpose."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


class PermanentError(VmetalError):
    """The input is wrong; retrying without changing it cannot help."""


class TemporaryError(VmetalError):
    """A dependency is unavailable or contended; retrying may succeed.

    :param message: one-line description of what failed.
    :param retry_after: suggested delay in seconds before retrying.
    """

    def __init__(self, message, retry_after=1.0):
        super().__init__(message)
        self.retry_after = retry_after


class InvalidProperty(PermanentError):
    """A host, node type or environment property has a bad value."""


class InvalidNetworkData(PermanentError):
    """A network_data.json document is not usable."""


class NotFound(PermanentError):
    """The thing asked for does not exist in the store."""


class StoreUnavailable(TemporaryError):
    """The store could not be reached or did not answer in time."""


class StoreConflict(TemporaryError):
    """Concurrent writers kept winning; the bounded retries ran out."""


class RevisionExpired(TemporaryError):
    """A follower's position in the store's history is too old to resume
    from (Kubernetes 410 Gone); list again and follow from there."""
