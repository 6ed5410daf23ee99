"""Errors shared by every layer of vmetal-ironic.

Every error carries a one-line, operator-facing message that names the
offending value. Errors are split by whose fault they are, the way a
controller needs them:

* :class:`PermanentError` - the input is wrong (a property, a network-data
  document, a record in the store); it fails again until someone changes
  that input;
* :class:`DeploymentError` - the input is fine but the deployment is not
  (permissions, a missing namespace, an unwritable database, a store
  setting, a ceiling of the store); the message says what to fix;
* :class:`TemporaryError` - a dependency is unavailable or contended;
  worth retrying after ``retry_after`` seconds.
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


class DeploymentError(VmetalError):
    """The deployment is wrong, not the input; an operator must fix it.

    Neither retrying nor changing the host's properties helps: the store's
    credentials lack a permission, its namespace or database file is
    missing or read-only, a setting is unusable, or a stated ceiling of the
    store is reached. The message names what to fix.
    """


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
