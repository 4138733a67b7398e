"""The health endpoint answers from one reading of the state per request."""

from __future__ import annotations

import asyncio
import itertools

from leaderlib._health import serve_health


async def get(port: int, path: str) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    response = (await reader.read()).decode()
    writer.close()
    status_line, _, rest = response.partition("\r\n")
    return status_line.split(" ", 1)[1], rest.rpartition("\r\n\r\n")[2]


async def test_status_and_body_agree_even_when_the_state_changes_between_reads() -> None:
    flips = itertools.cycle([True, False])
    server = await serve_health(lambda: next(flips), lambda: next(flips), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for path, good, bad in (
            ("/healthz", "ok", "renew deadline missed"),
            ("/leader", "leader", "follower"),
        ):
            for _ in range(4):
                status, body = await get(port, path)
                assert (status, body) in {("200 OK", good), ("503 Service Unavailable", bad)}
    finally:
        server.close()
