"""A new etcd session's first acquisition: one grant however many elections start, and a
refused grant reported as such. Real etcd.

The calls are seen through a recording wrapper of the backend's client. These
hold whatever the first campaign's timing against its grant is (sending the
campaign before the grant is answered was measured and not adopted: see
docs/backends/etcd.md, "Figures").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from leaderlib._errors import BackendError, LeaseLost
from leaderlib.backends.etcd import EtcdBackend
from tests.backends import test_etcd
from tests.backends.test_etcd import name

pytestmark = pytest.mark.timeout(60)

make = test_etcd.make  # the fixture: EtcdBackends on the session's etcd, closed after the test

#: The RPCs recorded (keepalives go on their own stream, through Client.keepalive).
RECORDED = ("LeaseGrant", "Txn")


class _Stub:
    """A gRPC stub whose calls of ``RECORDED`` methods note when they are sent and answered."""

    def __init__(self, stub: Any, events: list[tuple[str, str]]) -> None:
        self._stub, self._events = stub, events

    def __getattr__(self, method: str) -> Any:
        call = getattr(self._stub, method)
        if method not in RECORDED:
            return call

        async def recorded(*args: Any, **kwargs: Any) -> Any:
            self._events.append(("sent", method))
            try:
                return await call(*args, **kwargs)
            finally:
                self._events.append(("answered", method))

        return recorded


class _Client:
    """The backend's client as its calls see it, with recording stubs."""

    def __init__(self, client: Any, events: list[tuple[str, str]]) -> None:
        self._client = client
        self.leasestub = _Stub(client.leasestub, events)
        self.kvstub = _Stub(client.kvstub, events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def recording(backend: EtcdBackend) -> list[tuple[str, str]]:
    """Record ``backend``'s LeaseGrant and Txn calls, in the order they are sent and answered."""
    events: list[tuple[str, str]] = []
    channel = backend.channel
    plain = channel.call

    async def call(election: str | None, op: Callable[[Any], Awaitable[Any]]) -> Any:
        return await plain(election, lambda client: op(_Client(client, events)))

    channel.call = call  # type: ignore[method-assign]
    return events


async def test_elections_of_one_identity_starting_together_share_one_grant(
    make: Callable[..., EtcdBackend],
) -> None:
    """50 first acquisitions of one identity at once: one LeaseGrant, one session, all lead."""
    backend = make()
    leases = [backend.lease(name()) for _ in range(50)]
    await leases[0].get()  # a connected channel, as a running service has
    events = recording(backend)

    acquired = await asyncio.gather(*(lease.try_acquire("replica-a", 5.0, None) for lease in leases))

    assert all(acquisition.acquired for acquisition in acquired)
    assert events.count(("sent", "LeaseGrant")) == 1
    assert len(backend.sessions.by_slot) == 1


async def test_a_refused_grant_is_the_error_raised(make: Callable[..., EtcdBackend]) -> None:
    """etcd refuses a TTL over its maximum: try_acquire raises that refusal (not a
    LeaseLost of a campaign under the missing lease), and nothing is written."""
    backend = make()
    lease = backend.lease(name())
    with pytest.raises(BackendError, match="too large lease TTL") as raised:
        await lease.try_acquire("replica-a", 1e11, None)
    assert not isinstance(raised.value, LeaseLost)
    assert await lease.get() is None
    assert not backend.sessions.by_slot
