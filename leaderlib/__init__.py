"""leaderlib: leader election for Python services.

Every replica of a service embeds leaderlib; one at a time holds the
service's lease and runs its scheduled jobs, the others stand by and take
over when it dies, hangs, is cut off or shuts down.

Safety model, in short: a leader trusts only its own monotonic clock and
steps down ``renew_deadline`` after its last successful renewal was sent; a
follower never trusts a remote timestamp and waits ``lease_duration`` from
when it last saw the lease change (or lets the store expire it); every
leadership carries a fencing token that strictly increases, so a paused
ex-leader's late writes can be rejected downstream.
"""

from ._clock import Clock, FakeClock, SystemClock
from ._config import DEFAULT_BACKEND, ElectionConfig, Settings, default_identity, load_settings
from ._elector import ElectorState, LeaderElector, Leadership
from ._errors import (
    AccessDenied,
    BackendError,
    BackendNotInstalled,
    BackendUnavailable,
    ConfigError,
    CorruptLeaseRecord,
    LeaderlibError,
    LeaseLost,
    NotLeader,
)
from ._runtime import JobContext, Mode, Service
from ._sync import BackgroundService
from ._triggers import CronTrigger, IntervalTrigger, Trigger
from .backends import Acquisition, Backend, Lease, LeaseRecord, backend_from_url

__all__ = [
    "DEFAULT_BACKEND",
    "AccessDenied",
    "Acquisition",
    "Backend",
    "BackendError",
    "BackendNotInstalled",
    "BackendUnavailable",
    "BackgroundService",
    "Clock",
    "ConfigError",
    "CorruptLeaseRecord",
    "CronTrigger",
    "ElectionConfig",
    "ElectorState",
    "FakeClock",
    "IntervalTrigger",
    "JobContext",
    "LeaderElector",
    "LeaderlibError",
    "Leadership",
    "Lease",
    "LeaseLost",
    "LeaseRecord",
    "Mode",
    "NotLeader",
    "Service",
    "Settings",
    "SystemClock",
    "Trigger",
    "backend_from_url",
    "default_identity",
    "load_settings",
]
