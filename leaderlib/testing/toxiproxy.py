"""Network faults between a client and a real server, through Toxiproxy.

:class:`ToxiproxyServer` runs ``toxiproxy-server`` (built by
``backends/install toxiproxy``) like the servers of
:mod:`leaderlib.testing.servers`: free loopback port, own process group, ready
when its API answers, killed at exit. :class:`Toxiproxy` is a small client for
its HTTP API, and a :class:`Proxy` is one TCP proxy with its faults:

    with ToxiproxyServer() as toxi, RedisServer() as redis:
        proxy = toxi.create_proxy((redis.host, redis.port))  # on a free loopback port
        url = f"redis://{proxy.listen}"
        proxy.one_way_cut()      # requests reach Redis, answers are held back
        proxy.heal()             # held answers are delivered, in order

What each fault does to the bytes (Toxiproxy 2.5.0, read from its source and
checked by ``tests/servers/test_toxiproxy.py``). "downstream" is
server -> client (answers), "upstream" is client -> server (requests):

* :meth:`Proxy.hold`: bytes on the stream are kept in the proxy and
  delivered in order when the toxic is removed (a latency toxic of a day). This
  is a network partition that heals before TCP gives up: the connection
  survives, nothing is lost. :meth:`Proxy.one_way_cut` and
  :meth:`Proxy.black_hole` use it by default.
* :meth:`Proxy.timeout`: Toxiproxy's ``timeout`` toxic. Bytes on the stream
  are DROPPED (not held); with ``ms > 0`` the connection is closed after
  ``ms``; with ``ms == 0`` it stays open until the toxic is removed, and
  removing it CLOSES the connections it was applied to (its cleanup closes
  the stream). ``one_way_cut(drop=True)`` and ``black_hole(drop=True)`` use it.
* :meth:`Proxy.reset_peer`: the next bytes on the stream (after ``ms``) make
  the proxy close the connection. Connections opened after the toxic was
  added are closed with SO_LINGER 0, i.e. a TCP RST (``ECONNRESET``); ones
  already open are closed with a plain FIN (EOF), because Toxiproxy sets the
  linger option only when a connection starts.
* :meth:`Proxy.latency` / :meth:`Proxy.delay`: every chunk is delayed.
* :meth:`Proxy.disable`: the proxy stops listening and closes every
  connection (new connections are refused); :meth:`Proxy.enable` listens again
  on the same port.
* :meth:`Proxy.recreate`: delete and create again on the same address, the
  one way out when removing a toxic that holds bytes hangs (see there).

One limitation of any proxy: while bytes are held or dropped, a *new*
connection is still accepted (by the proxy), whereas a real partition leaves
the client's SYN unanswered. Use :meth:`Proxy.disable` for "cannot connect".
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from leaderlib.testing.servers import (
    LOOPBACK,
    TOXIPROXY_VERSION,
    ServerError,
    _ports_given,
    _ports_lock,
    _Process,
    _Server,
    _wait_until,
    find_binary,
    free_port,
)

__all__ = [
    "TOXIPROXY_VERSION",
    "Proxy",
    "Stream",
    "Toxiproxy",
    "ToxiproxyError",
    "ToxiproxyServer",
]

log = logging.getLogger("leaderlib.testing")

Stream = Literal["downstream", "upstream"]
"""``downstream``: server -> client (answers); ``upstream``: client -> server (requests)."""

# hold() is a latency toxic this long: far beyond any test, so bytes leave only
# when the toxic is removed (a removed latency toxic flushes what it holds).
_HOLD_MS = 24 * 3600 * 1000

_BOTH: tuple[Stream, Stream] = ("upstream", "downstream")


class ToxiproxyError(ServerError):
    """The Toxiproxy API refused a request; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int, log_path: Path | None = None) -> None:
        super().__init__(message, log_path)
        self.status = status


class Toxiproxy:
    """A client for a Toxiproxy server's HTTP API at ``api_url`` (``http://HOST:PORT``).

    Every call is bounded by ``timeout`` seconds. Proxies made by
    :meth:`create_proxy` are remembered, so :meth:`delete_proxies` can remove
    exactly those (a test's teardown).
    """

    def __init__(self, api_url: str, *, timeout: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self._created: dict[str, Proxy] = {}
        self._names = 0

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the API; returns the decoded JSON answer (None when empty).

        Raises :class:`ToxiproxyError` on a non-2xx status or no answer.
        """
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.api_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw: bytes = resp.read()
        except urllib.error.HTTPError as exc:
            # The error owns the answer's socket: read it, then close it, so no
            # unclosed-socket ResourceWarning fires later (tests turn them into errors).
            with exc:
                detail = exc.read().decode(errors="replace").strip()
            raise ToxiproxyError(f"toxiproxy {method} {path} -> {exc.code}: {detail}", exc.code) from exc
        except OSError as exc:
            raise ToxiproxyError(f"toxiproxy {method} {path}: no answer: {exc}", 0) from exc
        return json.loads(raw) if raw.strip() else None

    def version(self) -> str:
        """The server's version string (``2.5.0`` for the build from ``backends/install``)."""
        try:
            with urllib.request.urlopen(self.api_url + "/version", timeout=self.timeout) as resp:
                raw: bytes = resp.read()
        except OSError as exc:
            raise ToxiproxyError(f"toxiproxy GET /version: no answer: {exc}", 0) from exc
        return raw.decode(errors="replace").strip()

    def create_proxy(
        self,
        upstream: str | tuple[str, int],
        *,
        name: str | None = None,
        listen: str | None = None,
        enabled: bool = True,
    ) -> Proxy:
        """Create a proxy to ``upstream`` (``"HOST:PORT"`` or ``(host, port)``); returns it.

        It listens on ``listen`` or, by default, on a free port of 127.0.0.1
        chosen by the kernel, so creation never races another process for a
        port; :attr:`Proxy.listen` is the actual address.
        """
        if not isinstance(upstream, str):
            upstream = f"{upstream[0]}:{upstream[1]}"
        if name is None:
            self._names += 1
            name = f"proxy{self._names}-{upstream.replace(':', '_')}"
        body = {
            "name": name,
            "listen": listen or f"{LOOPBACK}:0",
            "upstream": upstream,
            "enabled": enabled,
        }
        proxy = Proxy(self, self.request("POST", "/proxies", body))
        # The port stays this proxy's while it is disabled (enable() listens on
        # it again), so free_port() must never hand it to a server.
        with _ports_lock:
            _ports_given.add(proxy.port)
        self._created[proxy.name] = proxy
        return proxy

    def proxy(self, name: str) -> Proxy:
        """The proxy called ``name``, as the server has it now."""
        return Proxy(self, self.request("GET", f"/proxies/{name}"))

    def proxies(self) -> dict[str, Proxy]:
        """Every proxy on the server, by name."""
        listed = self.request("GET", "/proxies") or {}
        return {name: Proxy(self, data) for name, data in listed.items()}

    def reset(self) -> None:
        """Enable every proxy and remove every toxic (Toxiproxy's ``POST /reset``)."""
        self.request("POST", "/reset")

    def delete_proxies(self) -> None:
        """Delete the proxies this client created (closing their connections)."""
        for proxy in list(self._created.values()):
            proxy.delete()


class Proxy:
    """One Toxiproxy proxy: ``listen`` -> ``upstream``, with methods that add faults.

    Each fault method returns the name of the toxic it added (the helpers
    that touch both streams return both names); :meth:`remove` takes one away,
    :meth:`heal` all of them. Names default to ``<kind>_<stream>``, so the same
    fault twice on one stream is refused (HTTP 409) unless given a new name.
    """

    def __init__(self, client: Toxiproxy, data: dict[str, Any]) -> None:
        self.client = client
        self.name: str = data["name"]
        self.upstream: str = data["upstream"]
        self.listen: str = data["listen"]
        """``HOST:PORT`` clients connect to."""
        self._enabled: bool = data.get("enabled", True)

    def __repr__(self) -> str:
        return f"<Proxy {self.name} {self.listen} -> {self.upstream}>"

    @property
    def host(self) -> str:
        """The host part of :attr:`listen`."""
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        """The port part of :attr:`listen`."""
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def _path(self) -> str:
        return f"/proxies/{self.name}"

    # ------------------------------------------------------------ toxics

    def add_toxic(
        self,
        kind: str,
        *,
        stream: Stream = "downstream",
        attributes: dict[str, Any] | None = None,
        name: str | None = None,
        toxicity: float = 1.0,
    ) -> str:
        """Add a toxic of type ``kind`` (any Toxiproxy type); returns its name.

        ``toxicity`` is the probability that a *connection* gets it (1.0: all).
        """
        name = name or f"{kind}_{stream}"
        body = {
            "name": name,
            "type": kind,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes or {},
        }
        self.client.request("POST", f"{self._path}/toxics", body)
        log.debug("toxiproxy %s: added %s (%s, %s)", self.name, name, kind, stream)
        return name

    def latency(
        self, ms: float, jitter: float = 0, stream: Stream = "downstream", *, name: str | None = None
    ) -> str:
        """Delay every chunk on ``stream`` by ``ms`` +/- ``jitter`` milliseconds; returns the toxic's name."""
        attributes = {"latency": round(ms), "jitter": round(jitter)}
        return self.add_toxic("latency", stream=stream, attributes=attributes, name=name)

    def timeout(self, ms: float = 0, stream: Stream = "downstream", *, name: str | None = None) -> str:
        """Drop every byte on ``stream``; close the connection after ``ms`` (0: never); returns the name.

        Dropped bytes are gone for good, and removing the toxic closes the
        connections it held open (see the module docstring); :meth:`hold`
        keeps the bytes instead.
        """
        return self.add_toxic("timeout", stream=stream, attributes={"timeout": round(ms)}, name=name)

    def reset_peer(self, ms: float = 0, stream: Stream = "downstream", *, name: str | None = None) -> str:
        """Close each connection ``ms`` after its next bytes on ``stream``; returns the toxic's name.

        Connections opened after this call are reset (RST); ones already open
        get an orderly close (EOF) instead (see the module docstring).
        """
        return self.add_toxic("reset_peer", stream=stream, attributes={"timeout": round(ms)}, name=name)

    def hold(self, stream: Stream = "downstream", *, name: str | None = None) -> str:
        """Keep every byte on ``stream`` in the proxy until the toxic is removed; returns the name.

        On removal the held bytes are delivered in order and the connection
        carries on, as after a partition shorter than TCP's retransmission
        limit.
        """
        attributes = {"latency": _HOLD_MS, "jitter": 0}
        return self.add_toxic("latency", stream=stream, attributes=attributes, name=name or f"hold_{stream}")

    def toxics(self) -> list[dict[str, Any]]:
        """The toxics on this proxy, as the API lists them (name, type, stream, attributes...)."""
        listed: list[dict[str, Any]] = self.client.request("GET", f"{self._path}/toxics") or []
        return listed

    def remove(self, toxic_name: str) -> None:
        """Remove the toxic ``toxic_name``."""
        self.client.request("DELETE", f"{self._path}/toxics/{toxic_name}")
        log.debug("toxiproxy %s: removed %s", self.name, toxic_name)

    def heal(self) -> None:
        """Remove every toxic on this proxy (the proxy's enabled flag is left as it is)."""
        for toxic in self.toxics():
            self.remove(toxic["name"])

    # ------------------------------------------------------------ high-level faults

    def one_way_cut(self, *, drop: bool = False) -> tuple[str, ...]:
        """Requests still reach the server, its answers do not; returns the toxics' names.

        By default answers are held and delivered on :meth:`heal`; with
        ``drop=True`` they are dropped and healing closes the connections.
        """
        if drop:
            return (self.timeout(0, "downstream", name="one_way_cut"),)
        return (self.hold("downstream", name="one_way_cut"),)

    def black_hole(self, *, drop: bool = False) -> tuple[str, ...]:
        """Nothing passes either way; returns the two toxics' names.

        Held (default) or, with ``drop=True``, dropped, as for :meth:`one_way_cut`.
        """
        if drop:
            return tuple(self.timeout(0, s, name=f"black_hole_{s}") for s in _BOTH)
        return tuple(self.hold(s, name=f"black_hole_{s}") for s in _BOTH)

    def delay(self, seconds: float, jitter: float = 0.0) -> tuple[str, ...]:
        """Every answer arrives ``seconds`` (+/- ``jitter``) late; returns the toxics' names.

        The delay is on the downstream only, so each request/answer round trip
        grows by ``seconds``.
        """
        return (self.latency(seconds * 1000, jitter * 1000, "downstream", name="delay"),)

    @contextmanager
    def fault(self, *toxic_names: str) -> Iterator[None]:
        """Remove the given toxics when the block ends (``with proxy.fault(*proxy.black_hole()):``)."""
        try:
            yield
        finally:
            for toxic_name in toxic_names:
                self.remove(toxic_name)

    # ------------------------------------------------------------ the proxy itself

    @property
    def enabled(self) -> bool:
        """The proxy's enabled flag as last set through this object."""
        return self._enabled

    def _update(self, **fields: Any) -> None:
        data = self.client.request("POST", self._path, fields)
        self.listen = data["listen"]
        self._enabled = data["enabled"]

    def disable(self) -> None:
        """Stop listening and close every connection through this proxy (new ones are refused)."""
        self._update(enabled=False)

    def enable(self) -> None:
        """Listen again (on the same address) after :meth:`disable`."""
        self._update(enabled=True)

    def recreate(self, timeout: float = 5.0) -> None:
        """Delete the proxy and create it again on the same address: every connection
        closed, every toxic gone, new connections accepted as before.

        Unlike :meth:`heal` and :meth:`disable`, this works while Toxiproxy 2.5.0 is
        stuck removing a latency toxic whose held bytes the client does not read
        (both wait for the stuck proxy and time out; deleting it closes the
        connections, which frees the toxic). Creating it again is retried for up to
        ``timeout`` seconds while the old listener lets go of the port.
        """
        self.delete()
        body = {"name": self.name, "listen": self.listen, "upstream": self.upstream, "enabled": True}
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self.client.request("POST", "/proxies", body)
                break
            except ToxiproxyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.listen, self._enabled = data["listen"], data["enabled"]
        self.client._created[self.name] = self

    def delete(self) -> None:
        """Delete the proxy, closing its connections; a proxy already gone is fine."""
        try:
            self.client.request("DELETE", self._path)
        except ToxiproxyError as exc:
            if exc.status != 404:
                raise
        self.client._created.pop(self.name, None)


class ToxiproxyServer(_Server):
    """A ``toxiproxy-server`` on a free loopback port; :attr:`client` drives it.

    Ready when ``GET /version`` answers. Proxies listen on 127.0.0.1 only.
    """

    kind = "toxiproxy"

    def __init__(self, *, directory: Path | None = None, start_timeout: float = 30.0) -> None:
        super().__init__(directory=directory, start_timeout=start_timeout)
        self.host = LOOPBACK
        self.port = free_port()
        self._proc: _Process | None = None
        self.client = Toxiproxy(self.url)
        """The API client for this server."""

    @property
    def url(self) -> str:
        """The API's base URL, ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    def create_proxy(self, upstream: str | tuple[str, int], *, name: str | None = None) -> Proxy:
        """Shorthand for ``self.client.create_proxy(upstream, name=name)``."""
        return self.client.create_proxy(upstream, name=name)

    def _ready(self) -> bool:
        try:
            return bool(self.client.version())
        except ToxiproxyError:
            return False  # not listening yet

    def _new_ports(self) -> bool:
        self.port = free_port()
        self.client = Toxiproxy(self.url)
        return True

    def _start(self) -> None:
        argv = [str(find_binary("toxiproxy-server")), "-host", self.host, "-port", str(self.port)]
        self._proc = _Process("toxiproxy-server", argv, self.log_path, self.directory)
        _wait_until("toxiproxy-server", self._ready, self.start_timeout, [self._proc], self.log_path)

    def _processes(self) -> list[_Process]:
        return [self._proc] if self._proc is not None else []
