"""The raw etcd transaction, without leaderlib: the floor under ``etcd://``'s figures.

One operation is one ``Txn`` round trip through aetcd's own
``Client.transaction``: ``IF create_revision(k) == 0 THEN put(k) ELSE get(k)``
on a fresh scratch key each time, which is the shape (and the raft write) of
the transaction an etcd election candidate makes. The client is the one the
backend uses: aetcd's, dialled as the backend dials it (TLS and credentials
from the URL), on the first endpoint of the URL.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable

from leaderlib.backends.etcd import EtcdBackend, _Client


async def raw_round_trip(
    url: str,
) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """Return (one raw guarded-put transaction, close) against the etcd ``url`` names."""
    backend = EtcdBackend.from_url(url)  # only to parse the URL the same way
    client = _Client(
        backend.endpoint,
        username=backend._user,
        password=backend._password,
        timeout=backend.timeout,
        credentials=backend._credentials,
    )
    await client.connect()
    prefix = f"/leaderlib-bench/raw-{uuid.uuid4().hex[:8]}/"
    counter = itertools.count()

    async def operation() -> None:
        key = f"{prefix}{next(counter)}".encode()
        succeeded, _ = await client.transaction(
            compare=[client.transactions.create(key) == 0],
            success=[client.transactions.put(key, b"bench")],
            failure=[client.transactions.get(key)],
        )
        if not succeeded:
            raise RuntimeError("the raw transaction found its fresh scratch key already there")

    async def close() -> None:
        try:
            await client.delete_prefix(prefix.encode())
        finally:
            await client.close()
            await backend.aclose()

    return operation, close
