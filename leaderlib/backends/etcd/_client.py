"""One member's connection: aetcd's client over TLS and with auth, and its keepalive stream.

:func:`tls_credentials` reads an ``etcds://`` URL's certificate options.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aetcd
import grpc  # type: ignore[import-untyped]  # no stubs in the venv; pyproject lists aetcd only
from aetcd import rpc

from ..._errors import ConfigError

__all__ = ["Client", "tls_credentials"]


class Client(aetcd.Client):  # type: ignore[misc]  # aetcd is untyped
    """aetcd's client, connected over TLS when given credentials (aetcd only dials plaintext).

    Everything else (auth token metadata, the generated stubs) is aetcd's.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        username: str | None,
        password: str | None,
        timeout: float,
        credentials: grpc.ChannelCredentials | None,
        reconnect_backoff: float,
    ) -> None:
        host, _, port = endpoint.rpartition(":")
        super().__init__(host=host, port=int(port), username=username, password=password, timeout=timeout)
        self.endpoint = endpoint
        self._credentials = credentials
        backoff_ms = max(1, round(reconnect_backoff * 1000))
        self._options = [
            # Reconnect at a steady pace, not gRPC's 1 s growing 1.6x to 120 s:
            # after a long outage a replica must hear that etcd is back within
            # about a retry period, as it would from any store without backoff.
            ("grpc.initial_reconnect_backoff_ms", backoff_ms),
            ("grpc.max_reconnect_backoff_ms", backoff_ms),
            # C-core's minimum time given to one connection attempt (default
            # 20 s): never longer than a call may take.
            ("grpc.min_reconnect_backoff_ms", max(backoff_ms, round(timeout * 1000))),
        ]
        self._connect_lock = asyncio.Lock()
        self.watchstub: Any = None
        # One LeaseKeepAlive stream for every keepalive on this channel: opening
        # a stream per keepalive costs about as much as the keepalive itself.
        # etcd answers a stream's requests one at a time, in order.
        self._keepalive_call: Any = None
        self._keepalive_lock = asyncio.Lock()

    async def connect(self) -> None:
        """Open the channel and authenticate; raw ``grpc.aio.AioRpcError`` on failure."""
        if self._connected.is_set():
            return
        async with self._connect_lock:
            if self._connected.is_set():
                return
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(self.endpoint, self._credentials, options=self._options)
            else:
                channel = grpc.aio.insecure_channel(self.endpoint, options=self._options)
            try:
                metadata = None
                if self._username is not None:
                    auth = rpc.AuthStub(channel)
                    response = await auth.Authenticate(
                        rpc.AuthenticateRequest(name=self._username, password=self._password),
                        timeout=self._timeout,
                    )
                    metadata = (("token", response.token),)
            except BaseException:
                await channel.close()
                raise
            self.channel = channel
            self.metadata = metadata
            self.kvstub = rpc.KVStub(channel)
            self.leasestub = rpc.LeaseStub(channel)
            self.watchstub = rpc.WatchStub(channel)
            self._connected.set()

    async def keepalive(self, lease_id: int, timeout: float) -> Any:
        """One LeaseKeepAlive request and its answer on the channel's shared stream.

        Any failure or cancellation discards the stream, so an unread answer
        can never be taken for the next request's. Raises ``TimeoutError``
        after ``timeout`` (the stream itself has no deadline).
        """
        async with self._keepalive_lock:
            if self._keepalive_call is None or self._keepalive_call.done():
                self._keepalive_call = self.leasestub.LeaseKeepAlive(metadata=self.metadata)
            call = self._keepalive_call
            try:
                async with asyncio.timeout(timeout):
                    await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                    return await call.read()
            except BaseException:
                call.cancel()
                self._keepalive_call = None
                raise

    async def close(self, grace: float | None = None) -> None:
        """Close the channel; calls still running on it get ``grace`` seconds to finish."""
        if self.channel is not None:
            await self.channel.close(grace)
        self._init_channel_attrs()
        self._connected.clear()


def tls_credentials(
    scheme: str, cacert: str | None, cert: str | None, key: str | None
) -> grpc.ChannelCredentials | None:
    """The credentials of an ``etcds://`` URL's options; None for ``etcd://`` (which refuses them)."""
    if scheme != "etcds":
        for name, value in (("cacert", cacert), ("cert", cert), ("key", key)):
            if value is not None:
                raise ConfigError(f"TLS option {name!r} needs an etcds:// URL", field=name)
        return None
    if (cert is None) != (key is None):
        raise ConfigError("a client certificate needs both 'cert' and 'key'", field="cert")

    def read(name: str, path: str | None) -> bytes | None:
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {path!r}: {exc.strerror}", field=name) from exc

    return grpc.ssl_channel_credentials(
        root_certificates=read("cacert", cacert),
        private_key=read("key", key),
        certificate_chain=read("cert", cert),
    )
