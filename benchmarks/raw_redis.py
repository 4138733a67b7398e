"""The raw round trip for ``redis://`` (and ``rediss://``): one ``SET key value NX PX``.

Same client as the backend: a ``redis.asyncio.Redis`` configured exactly as
``RedisBackend.from_url`` configures it (URL, credentials, TLS files,
timeouts, RESP version), warm connection pool, no leaderlib logic in the
operation. Each operation sets a fresh key, so it always succeeds, as an
uncontended acquisition does; the keys expire after a minute.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable

from leaderlib.backends.redis import RedisBackend


async def raw_round_trip(url: str) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """(one ``SET NX PX`` on a fresh key, close) for a ``redis://`` or ``rediss://`` URL."""
    backend = RedisBackend.from_url(url)
    client = backend._client  # the very client the backend would use, not its logic
    prefix = f"{backend.prefix}raw-bench-{uuid.uuid4().hex[:8]}:"
    counter = itertools.count()
    await client.ping()

    async def operation() -> None:
        await client.set(f"{prefix}{next(counter)}", b"raw", nx=True, px=60_000)

    async def close() -> None:
        await backend.aclose()

    return operation, close
