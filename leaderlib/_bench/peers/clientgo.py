"""client-go ``tools/leaderelection`` with a ``LeaseLock``: the ``clientgo-elector`` binary
(``backends/install``), run as child processes; its events carry CLOCK_MONOTONIC stamps.

client-go polls every ``retry_period`` (its default 2 s; also its renew
interval) and releases on a graceful stop (``ReleaseOnCancel``). Its
renewals are not visible from outside, so a failover's last renewal is read
back from the Lease's ``renewTime`` (microseconds, wall clock, same host).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
import uuid
from typing import Any, ClassVar

from leaderlib.testing.clientgo import ClientGoElector

from ..stores import Target
from . import BENCH_TIMING, Candidate, Peer


class ClientGoCandidate(Candidate):
    """A :class:`ClientGoElector` seen through the :class:`Candidate` interface."""

    # "started" is when it has seen the holder: only then is a follower really waiting.
    _NAMES: ClassVar[dict[str, str]] = {"leading": "started_leading", "started": "new_leader"}

    def __init__(self, elector: ClientGoElector) -> None:
        self.identity = elector.identity
        self.elector = elector.start()
        self.started = time.monotonic()

    def stamps(self, event: str) -> list[float]:
        name = self._NAMES.get(event, event)
        return [e.monotonic for e in self.elector.events if e.event == name]

    def running(self) -> bool:
        return self.elector.running()

    def terminate(self) -> None:
        self.elector._signal(signal.SIGTERM)

    def kill(self) -> None:
        self.elector.kill()

    def close(self, timeout: float = 5.0) -> None:
        self.elector.terminate(timeout)


class ClientGoPeer(Peer):
    key = "client-go"
    subject = "client-go"
    retry = 2.0
    renew_deadline = 2.5  # client-go wants renew_deadline > 1.2 x retry_period
    settings = (
        f"lease {BENCH_TIMING.lease:g} s, renew_deadline 2.5 s, "
        "retry_period 2 s (its default; defaults 15/10/2 s)"
    )
    unsupported: ClassVar[dict[str, str]] = {
        "renew": "a Go process: its renewals are not timed from outside",
        "scale": "one election per process (the binary's design)",
    }

    def elector(self, target: Target, election: str, identity: str) -> ClientGoElector:
        return ClientGoElector(
            target.kubeconfig, target.namespace, election, identity,
            lease_duration=BENCH_TIMING.lease, renew_deadline=self.renew_deadline,
            retry_period=self.retry,
        )  # fmt: skip

    def spawn(self, target: Target, election: str, identity: str) -> Candidate:
        return ClientGoCandidate(self.elector(target, election, identity))

    async def acquire_samples(self, target: Target, n: int) -> list[float]:
        def measure() -> list[float]:
            samples = []
            for _ in range(n):
                go = self.elector(target, f"bench-go-{uuid.uuid4().hex[:8]}", "bench")
                started = time.monotonic()
                with go:
                    samples.append(go.wait_for("started_leading", 10.0).monotonic - started)
            return samples

        return await asyncio.to_thread(measure)

    def last_renewal(self, target: Target, election: str, killed: Candidate) -> float | None:
        from kubernetes import client, config

        api = client.CoordinationV1Api(config.new_client_from_config(target.kubeconfig or None))
        lease: Any = api.read_namespaced_lease(election, target.namespace)
        renew: dt.datetime = lease.spec.renew_time
        return renew.timestamp() - (time.time() - time.monotonic())


class ClientGoMatchedPeer(ClientGoPeer):
    key = "client-go-matched"
    subject = "client-go (retry 1 s)"
    retry = BENCH_TIMING.renew_interval
    renew_deadline = BENCH_TIMING.renew_deadline
    settings = (
        f"lease {BENCH_TIMING.lease:g} s, renew_deadline {BENCH_TIMING.renew_deadline:g} s, "
        f"retry_period {BENCH_TIMING.renew_interval:g} s (matched to leaderlib's renew_interval)"
    )
