"""One module per store the conformance suite runs against.

Each module defines ``make_harness(request) -> Harness``; the suite finds the
modules by itself, so a new backend adds a module here and nothing else. A
harness may pull real servers from the session fixtures of
``leaderlib.testing.pytest_plugin`` with ``request.getfixturevalue``.

A harness may set ``consecutive_tokens = False`` where the fencing token is
a store-wide counter (etcd's create revision) rather than one per election;
the suite then checks only that tokens strictly increase.

A module sets ``CORRUPTIBLE = False`` only where no unreadable record can
exist (``memory://`` holds Python objects); the corrupt-record test is then
not generated for it.
"""

from __future__ import annotations

from typing import Protocol

from leaderlib.backends import Backend


class Harness(Protocol):
    """How the suite reaches one store."""

    url: str
    """The backend URL the suite's electors use."""

    bad_election_names: tuple[str, ...]
    """Names this store refuses (besides ""), each a ConfigError from ``backend.lease``."""

    def backend(self) -> Backend:
        """A new backend instance, as one replica would make it (own connection)."""
        ...

    async def write_foreign(self, election: str, holder: str, lease_duration: float) -> None:
        """Write a live lease held by ``holder`` as another implementation would
        (client-go for Kubernetes, ``etcdctl elect`` for etcd, raw commands otherwise)."""
        ...

    async def write_corrupt(self, election: str) -> None:
        """Put bytes where the election's record lives that no reader can parse as a lease."""
        ...

    async def write_corrupt_run(self, election: str, job: str) -> None:
        """Put bytes where ``job``'s run record lives that no reader can parse as a run."""
        ...
