"""The campaign's own machinery under the faults it must survive: a Toxiproxy call that
hangs while healing, and a fault step that never returns."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from leaderlib.testing.toxiproxy import Toxiproxy, ToxiproxyServer

from .campaign import HarnessHang, within
from .faults import _heal


@contextlib.contextmanager
def flooding_server() -> Iterator[tuple[tuple[str, int], threading.Event]]:
    """A TCP server that, once the yielded event is set, writes to each connection as
    fast as it can, until it closes. (Flooding from the first byte would race the
    test's toxic: Toxiproxy cannot add one to a link already blocked on a full socket.)"""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    flood = threading.Event()

    def serve(conn: socket.socket) -> None:
        chunk = b"x" * 65536
        with conn, contextlib.suppress(OSError):
            flood.wait(30)
            while not stop.is_set():
                conn.sendall(chunk)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname(), flood
    finally:
        flood.set()
        stop.set()
        listener.close()


@pytest.mark.timeout(60)
def test_heal_falls_back_to_reset_when_removing_a_held_toxic_hangs(
    toxiproxy_server: ToxiproxyServer,
) -> None:
    """Toxiproxy 2.5.0 blocks removing a latency toxic until it has handed its held bytes
    on; with a client that reads nothing they can never go, and the API call hangs
    (as it did on a busy gRPC connection). Healing must then reset the connections and
    leave the proxy clean and usable."""
    client = Toxiproxy(toxiproxy_server.url, timeout=2.0)
    with flooding_server() as (upstream, flood):
        proxy = client.create_proxy(upstream)
        try:
            with socket.create_connection((proxy.host, proxy.port)) as stalled:
                proxy.hold("downstream")
                flood.set()
                time.sleep(1.0)  # the proxy now holds data the client will never read
                delivered = _heal(proxy, deliver=True)
                assert not delivered, "removing the toxic did not hang: this test no longer reproduces it"
                assert proxy.toxics() == []
                assert client.proxy(proxy.name).enabled
                # The stalled connection was closed (EOF or reset, not left open).
                stalled.settimeout(5.0)
                with contextlib.suppress(ConnectionResetError):
                    while stalled.recv(1 << 20):
                        pass
            with socket.create_connection((proxy.host, proxy.port), timeout=5.0) as fresh:
                assert fresh.recv(1024), "a new connection flows"
        finally:
            proxy.delete()


def test_a_step_that_never_returns_is_a_harness_hang_with_its_stack() -> None:
    release = threading.Event()

    def stuck_in_toxiproxy() -> None:
        release.wait(30)

    try:
        with pytest.raises(HarnessHang, match="stuck_in_toxiproxy"):
            within(0.3, "fault 7 one_way_deliver", stuck_in_toxiproxy)
    finally:
        release.set()
    assert within(5.0, "a quick step", lambda: 42) == 42
    with pytest.raises(ValueError, match="boom"):
        within(5.0, "a failing step", lambda: int("boom"))
