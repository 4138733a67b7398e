"""A leaderlib replica on a Kubernetes Lease that prints one JSON line per event.

The leaderlib side of the mixed client-go elections in
``test_kubernetes_clientgo.py``: it speaks the same event lines as
``backends/clientgo-elector`` (see :mod:`leaderlib.testing.clientgo`), so one
:class:`ClientGoElector`-style runner drives both, and adds what judging a
leaderlib term needs:

=================  ==============================================================
``ready``          the elector exists (``renew_deadline``: the one it keeps)
``acquire_sent``   an acquisition request is about to be sent
``renew_sent``     a renewal request is about to be sent (``fencing_token``)
``started_leading``  the term's work started (``fencing_token``)
``work_cancelled`` the term's work was cancelled: the term is over
=================  ==============================================================

A term lasts at most ``renew_deadline`` from its last ``*_sent`` stamp, which
is read just after the elector's own, so the bound is conservative.
SIGTERM stops the elector (it releases the Lease); run as
``python -m tests.backends.kube_replica`` from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from typing import Any

from leaderlib import ElectionConfig, LeaderElector, Leadership, LeaseRecord
from leaderlib.backends import Acquisition
from leaderlib.backends.kubernetes import KubernetesBackend, KubernetesLease

_identity = ""
_elector: LeaderElector | None = None


def emit(event: str, **fields: Any) -> None:
    """One event line, flushed at once (a SIGKILL must not lose what was printed)."""
    line = {
        "event": event,
        "identity": _identity,
        "leader": (_elector.leader if _elector is not None else None) or "",
        "monotonic": time.clock_gettime(time.CLOCK_MONOTONIC),
        "boottime": time.clock_gettime(time.CLOCK_BOOTTIME),
        "wall": time.time(),
        **fields,
    }
    print(json.dumps(line), flush=True)


class StampedBackend:
    """The Kubernetes backend, stamping each acquisition and renewal as it is sent."""

    def __init__(self, backend: KubernetesBackend) -> None:
        self._backend = backend
        self.scheme = backend.scheme
        self.observation_granularity = backend.observation_granularity

    def lease(self, election: str) -> StampedLease:
        return StampedLease(self._backend.lease(election))

    async def aclose(self) -> None:
        await self._backend.aclose()


class StampedLease:
    """One election's Lease, stamping each acquisition and renewal as it is sent."""

    def __init__(self, lease: KubernetesLease) -> None:
        self._lease = lease
        self.election = lease.election

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lease, name)

    async def try_acquire(
        self, identity: str, lease_duration: float, takeover: LeaseRecord | None
    ) -> Acquisition:
        emit("acquire_sent")
        return await self._lease.try_acquire(identity, lease_duration, takeover)

    async def renew(self, record: LeaseRecord) -> LeaseRecord:
        emit("renew_sent", fencing_token=record.fencing_token)
        return await self._lease.renew(record)


async def lead(leadership: Leadership) -> None:
    emit("started_leading", fencing_token=leadership.fencing_token)
    try:
        await asyncio.get_running_loop().create_future()
    except asyncio.CancelledError:
        emit("work_cancelled", fencing_token=leadership.fencing_token)
        raise


async def main() -> None:
    global _identity, _elector
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("kubeconfig", "namespace", "name", "identity"):
        parser.add_argument(f"--{flag}", required=True)
    for flag in ("lease-duration", "renew-deadline", "renew-interval", "retry-period"):
        parser.add_argument(f"--{flag}", type=float, required=True)
    args = parser.parse_args()
    _identity = args.identity
    backend = KubernetesBackend.from_url(f"kubernetes://{args.namespace}", kubeconfig=args.kubeconfig)
    config = ElectionConfig(
        identity=args.identity,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        renew_interval=args.renew_interval,
        retry_period=args.retry_period,
    )
    _elector = LeaderElector(
        args.name,
        StampedBackend(backend),  # type: ignore[arg-type]
        config,
        on_started_leading=lead,
        on_new_leader=lambda leader: emit("new_leader", leader=leader or ""),
    )
    emit("ready", renew_deadline=_elector.renew_deadline)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, _elector.stop)
    try:
        await _elector.run()
    finally:
        await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
