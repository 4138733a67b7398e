"""The exceptions leaderlib raises.

::

    LeaderlibError                  base of everything below
    ├── ConfigError                 bad configuration, URL or cron expression (also a ValueError)
    │   └── BackendNotInstalled     the URL's scheme needs an extra that is not installed
    ├── NotLeader                   code acted on a leadership that has ended; carries
    │                               ``election``. Not a store failure: ``except BackendError``
    │                               (retry the store) must not swallow it
    └── BackendError                the store failed; carries ``election`` and ``backend``
        ├── BackendUnavailable      transient: connection refused or dropped, timeout, 5xx;
        │                           the elector retries these
        ├── AccessDenied            credentials or permissions are wrong; never retried
        │                           blindly, the message says what to grant
        ├── CorruptLeaseRecord      the stored record cannot be read as a lease
        └── LeaseLost               a compare-and-swap found someone else's record: this
                                    replica no longer holds the lease

Every backend translates its driver's exceptions into these with
``raise ... from exc``; no ``redis.*``, ``grpc.*`` or ``ApiException`` reaches a
caller.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "BackendError",
    "BackendNotInstalled",
    "BackendUnavailable",
    "ConfigError",
    "CorruptLeaseRecord",
    "LeaderlibError",
    "LeaseLost",
    "NotLeader",
]


class LeaderlibError(Exception):
    """Base class of every exception leaderlib raises on purpose."""


class ConfigError(LeaderlibError, ValueError):
    """A configuration value, URL or expression is invalid.

    ``field`` names what was wrong (a config field, a URL part, a job name) so
    the message can point at it.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        self.reason = message
        """The message without the ``field:`` prefix, for wrapping it in more context."""
        super().__init__(f"{field}: {message}" if field else message)


class BackendNotInstalled(ConfigError):
    """The URL's scheme belongs to a backend whose extra is not installed."""


class BackendError(LeaderlibError):
    """The store could not do what was asked.

    ``election`` and ``backend`` (the URL scheme) say where it happened.
    """

    def __init__(self, message: str, *, election: str | None = None, backend: str | None = None) -> None:
        self.election = election
        self.backend = backend
        where = ", ".join(
            part for part in (f"election {election!r}" if election else "", backend or "") if part
        )
        super().__init__(f"{message} ({where})" if where else message)


class BackendUnavailable(BackendError):
    """A transient failure: the same request may succeed if retried."""


class AccessDenied(BackendError):
    """The store refused the credentials or the permission; retrying will not help."""


class CorruptLeaseRecord(BackendError):
    """The stored lease record is not one leaderlib (or client-go) can read."""


class LeaseLost(BackendError):
    """The lease is held by someone else now; this replica is not the leader."""


class NotLeader(LeaderlibError):
    """Work checked its leadership and found the term over (lost, expired or stopped).

    ``election`` names the election whose term ended. ``backend`` is accepted
    for the older signature and ignored: the store did nothing wrong.
    """

    def __init__(self, message: str, *, election: str | None = None, backend: str | None = None) -> None:
        del backend  # kept so callers written for the old BackendError subclass still work
        self.election = election
        super().__init__(f"{message} (election {election!r})" if election else message)
