"""One watch per namespace: a thread that lists and watches the Leases, dispatching by name.

Every handle's :meth:`~KubernetesLease.watch` subscribes to its Lease's name on
its backend's :class:`NamespaceWatch`. The first subscription starts the one
thread (a list of the namespace's Leases, then a watch of the collection from
the list's resourceVersion, resumed from the last version seen each time the
server ends it, re-listed on 410 Gone); the last one to leave stops it. Each
event goes to the subscribers of its Lease's name only: renewals included, so
followers restart their expiry count from them. Leases nobody subscribed to
(other controllers' in the same namespace) are only remembered, so a handle
that subscribes later gets its Lease at once, without a request.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from typing import Any

import urllib3

from ..._errors import BackendError, BackendUnavailable
from ._api import ERRORS, GROUP_PATH, Response, Rest, StatusError, loads

__all__ = ["Emit", "NamespaceWatch", "Subscription"]

#: Server-side end of one watch request; the watch then resumes from the last
#: resourceVersion, so this only bounds how long a silently dead connection goes
#: unnoticed (the read timeout, this plus 15 s, is its backstop).
_WATCH_SECONDS = 60

#: How the watch thread hands a subscriber ``("lease", object)``,
#: ``("deleted", None)`` or ``("error", BackendError)``; must not block.
Emit = Callable[[str, Any], None]


class Subscription:
    """One watcher of one Lease name."""

    def __init__(self, name: str, emit: Emit) -> None:
        self.name = name
        self.emit = emit


class _Run:
    """One run of the watch thread and the stream it reads, so another thread can stop it at once."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.stream: urllib3.BaseHTTPResponse | None = None
        self.thread: threading.Thread | None = None

    def attach(self, stream: urllib3.BaseHTTPResponse) -> bool:
        """Remember the open stream; False (and the stream closed) if we are stopping."""
        with self.lock:
            if self.stop.is_set():
                stream.close()
                return False
            self.stream = stream
            return True

    def detach(self) -> None:
        with self.lock:
            stream, self.stream = self.stream, None
        if stream is not None:
            stream.close()

    def cancel(self) -> None:
        """Stop the thread: a blocked read on the stream returns at once."""
        with self.lock:
            self.stop.set()
            stream = self.stream
        if stream is not None:
            # shutdown() interrupts a recv() blocked in the watch thread;
            # close() alone would wait for the next byte from the server.
            with contextlib.suppress(Exception):
                stream.shutdown()


class NamespaceWatch:
    """The one watch of a backend's namespace, and who listens to which Lease."""

    def __init__(self, rest: Rest) -> None:
        self._rest = rest
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[Subscription]] = {}
        self._objects: dict[str, dict[str, Any]] = {}
        """Every Lease of the namespace as last listed or streamed, by name."""
        self._listed = False
        self._run: _Run | None = None
        self._closed = False

    def subscribe(self, name: str, emit: Emit) -> Subscription:
        """Send ``name``'s Lease events to ``emit`` from now on, starting the thread if it is not running."""
        subscription = Subscription(name, emit)
        with self._lock:
            if self._closed:
                raise BackendUnavailable("the backend was closed", election=name, backend=self._rest.scheme)
            self._subscribers.setdefault(name, set()).add(subscription)
            if self._run is None:
                run = self._run = _Run()
                self._listed = False
                run.thread = threading.Thread(
                    target=self._thread,
                    args=(run,),
                    name=f"leaderlib-k8s-watch-{self._rest.namespace}",
                    daemon=True,
                )
                run.thread.start()
            elif self._listed:
                _deliver(subscription, self._objects.get(name))
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop sending to ``subscription``; the last one out stops the thread."""
        with self._lock:
            subscribers = self._subscribers.get(subscription.name)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[subscription.name]
            run = None
            if not self._subscribers and self._run is not None:
                run, self._run = self._run, None
        if run is not None:
            run.cancel()

    def close(self) -> threading.Thread | None:
        """Stop for good; return the thread to join, if one runs."""
        with self._lock:
            self._closed = True
            self._subscribers.clear()
            run, self._run = self._run, None
        if run is None:
            return None
        run.cancel()
        return run.thread

    # -- the thread -------------------------------------------------------------------

    def _thread(self, run: _Run) -> None:
        """List, then watch from that version; re-list on 410 Gone. Errors go to every subscriber."""
        rest = self._rest
        try:
            # Any failure becomes a leaderlib error: the loops must hear of it, or they wait forever.
            with ERRORS.translating(rest.at("watch"), election=None, backend=rest.scheme):
                version: str | None = None
                while not run.stop.is_set():
                    version = self._list(run) if version is None else self._stream(version, run)
        except BackendError as exc:
            with self._lock:
                if self._run is not run:
                    return  # stopped on purpose meanwhile
                self._run = None
                subscribers = [s for named in self._subscribers.values() for s in named]
                self._subscribers.clear()
            for subscription in subscribers:
                subscription.emit("error", exc)

    def _list(self, run: _Run) -> str:
        """List the namespace's Leases, hand each subscriber its own; return the list's resourceVersion."""
        rest = self._rest
        response = rest.request("GET", GROUP_PATH.format(namespace=rest.namespace), election=None)
        if response.status != 200:
            raise StatusError(response, "list")
        objects: dict[str, dict[str, Any]] = {}
        for item in response.body.get("items") or []:
            objects[str((item.get("metadata") or {}).get("name"))] = item
        with self._lock:
            if self._run is run:
                self._objects, self._listed = objects, True
                for name, subscribers in self._subscribers.items():
                    for subscription in subscribers:
                        _deliver(subscription, objects.get(name))
        version: str = response.body["metadata"]["resourceVersion"]
        return version

    def _event(self, run: _Run, kind: str, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if not isinstance(name, str):
            return
        with self._lock:
            if self._run is not run:
                return
            if kind == "DELETED":
                self._objects.pop(name, None)
            else:
                self._objects[name] = obj
            for subscription in self._subscribers.get(name, ()):
                _deliver(subscription, None if kind == "DELETED" else obj)

    def _stream(self, version: str, run: _Run) -> str | None:
        """Follow one watch request on the collection; return the version to resume from (None: re-list)."""
        rest = self._rest
        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(_WATCH_SECONDS)),
        ]
        response = rest.send(
            "GET",
            GROUP_PATH.format(namespace=rest.namespace),
            election=None,
            query=query,
            timeout=(rest.timeout, _WATCH_SECONDS + 15.0),
        )
        stream = response.response
        if response.status == 410:
            stream.close()
            return None
        if response.status != 200:
            data = stream.read()
            stream.close()
            raise StatusError(Response(response.status, loads(data)), "watch")
        if not run.attach(stream):
            return version
        try:
            with ERRORS.translating(rest.at("stream"), election=None, backend=rest.scheme):
                buffer = b""
                for chunk in stream.stream(amt=None, decode_content=False):
                    *lines, buffer = (buffer + chunk).split(b"\n")
                    for line in lines:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                return None  # our version is too old: re-list
                            raise StatusError(Response(int(obj.get("code") or 500), obj), "watch")
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            self._event(run, kind, obj)
                        # BOOKMARK only moves the version on.
                return version  # the server ended the watch: resume from where we were
        except BackendUnavailable:
            if run.stop.is_set():
                return version  # we closed the stream ourselves
            raise
        finally:
            run.detach()


def _deliver(subscription: Subscription, lease: dict[str, Any] | None) -> None:
    if lease is None:
        subscription.emit("deleted", None)
    else:
        subscription.emit("lease", lease)
