"""A tiny HTTP endpoint for Kubernetes probes: ``GET /healthz`` and ``GET /leader``.

``/healthz`` answers 503 when a leader has outlived its renew deadline (its
event loop is wedged), 200 otherwise; ``/leader`` answers 200 on the leader
and 503 on followers, for a readiness probe that routes traffic to the leader.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from ._errors import ConfigError

__all__ = ["serve_health"]


async def serve_health(
    healthy: Callable[[], bool], is_leader: Callable[[], bool], host: str, port: int
) -> asyncio.Server:
    """Start the endpoint; the caller closes the returned server.

    Raises :class:`ConfigError` when ``host:port`` cannot be listened on."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            # One reading per request, so the status and the body agree.
            if path == "/healthz":
                ok = healthy()
                body = "ok" if ok else "renew deadline missed"
            elif path == "/leader":
                ok = is_leader()
                body = "leader" if ok else "follower"
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            status = "200 OK" if ok else "503 Service Unavailable"
            payload = body.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + payload
            )
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    try:
        return await asyncio.start_server(handle, host, port)
    except OSError as exc:
        # A port in use or a host that is not this machine's: say so in one line
        # (asyncio's own text repeats the address inside a long sentence).
        reason = os.strerror(exc.errno) if isinstance(exc.errno, int) and exc.errno > 0 else exc.strerror
        raise ConfigError(
            f"cannot listen on {host}:{port}: {reason or exc}", field="health endpoint"
        ) from exc
