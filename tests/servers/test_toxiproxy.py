"""Each Toxiproxy fault does to the bytes what leaderlib.testing.toxiproxy says it does.

Proved against a real TCP echo server and a real Redis, through raw sockets
where the exact bytes matter (a held answer must arrive later on the same
connection; a dropped one never).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from leaderlib.testing.pytest_plugin import require_binary, started
from leaderlib.testing.servers import LOOPBACK, TOXIPROXY_VERSION, RedisServer
from leaderlib.testing.toxiproxy import Proxy, Toxiproxy, ToxiproxyError, ToxiproxyServer

REPO = Path(__file__).resolve().parents[2]

# How long "nothing arrives" is watched for; long against loopback round trips
# (well under 10 ms) and short enough to keep the suite quick.
QUIET = 0.5


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A threaded TCP echo server on loopback; yields its (host, port)."""
    listener = socket.create_server((LOOPBACK, 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            while not stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def _connect(proxy: Proxy) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _round_trip(sock: socket.socket, payload: bytes = b"ping\n") -> float:
    """Send ``payload``, read it back whole; returns the seconds it took."""
    t0 = time.monotonic()
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-answer"
        got += chunk
    assert got == payload
    return time.monotonic() - t0


def _nothing_arrives(sock: socket.socket, seconds: float = QUIET) -> bool:
    """True if no byte (and no EOF) arrives on ``sock`` within ``seconds``."""
    sock.settimeout(seconds)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(5)
    return False


def _read_eof(sock: socket.socket) -> bytes:
    """Read until the peer closes (EOF or reset); returns what arrived first (bounded by 5 s)."""
    got = b""
    sock.settimeout(5)
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            got += chunk
    return got


def _resp(*args: str) -> bytes:
    """A Redis command in RESP, the bytes redis-py would send."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


@pytest.fixture
def redis_direct(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client that talks to Redis without the proxy, to see what the server applied."""
    client = redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_proxy(toxiproxy: Toxiproxy, redis_server: RedisServer) -> Proxy:
    return toxiproxy.create_proxy((redis_server.host, redis_server.port))


# ------------------------------------------------------------------ the server and its API


def test_pinned_version_matches_the_wrapper_module() -> None:
    mod = (REPO / "backends/toxiproxy/go.mod").read_text()
    assert re.search(rf"github\.com/Shopify/toxiproxy/v2 {re.escape(TOXIPROXY_VERSION)}\b", mod)


def test_server_reports_its_release_and_stops_cleanly() -> None:
    server = ToxiproxyServer()
    with started(server):
        assert server.client.version() == TOXIPROXY_VERSION.removeprefix("v")
        assert server._proc is not None
        pid = server._proc.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not server.directory.exists()


def test_proxy_listens_on_loopback_and_passes_bytes(
    toxiproxy: Toxiproxy, echo_server: tuple[str, int]
) -> None:
    proxy = toxiproxy.create_proxy(echo_server)
    assert proxy.host == LOOPBACK and proxy.port > 0
    assert proxy.upstream == f"{echo_server[0]}:{echo_server[1]}"
    assert proxy.name in toxiproxy.proxies()
    with _connect(proxy) as sock:
        assert _round_trip(sock) < 0.2


def test_duplicate_toxic_is_refused_and_heal_removes_all(
    toxiproxy: Toxiproxy, echo_server: tuple[str, int]
) -> None:
    proxy = toxiproxy.create_proxy(echo_server)
    assert proxy.latency(10) == "latency_downstream"
    with pytest.raises(ToxiproxyError) as refused:
        proxy.latency(10)
    assert refused.value.status == 409
    proxy.latency(10, stream="upstream")
    proxy.black_hole()
    assert len(proxy.toxics()) == 4
    proxy.heal()
    assert proxy.toxics() == []


# ------------------------------------------------------------------ latency


def test_latency_is_applied_per_stream_and_removed(
    toxiproxy: Toxiproxy, echo_server: tuple[str, int]
) -> None:
    proxy = toxiproxy.create_proxy(echo_server)
    with _connect(proxy) as sock:
        assert _round_trip(sock) < 0.2
        down = proxy.latency(300)
        assert 0.3 <= _round_trip(sock) < 1.5
        up = proxy.latency(200, stream="upstream")
        assert 0.5 <= _round_trip(sock) < 2.0
        proxy.remove(down)
        proxy.remove(up)
        assert _round_trip(sock) < 0.2


def test_delay_slows_each_redis_round_trip(redis_proxy: Proxy) -> None:
    client = redis.Redis(host=redis_proxy.host, port=redis_proxy.port, socket_timeout=5)
    try:
        assert client.ping()
        names = redis_proxy.delay(0.4)
        t0 = time.monotonic()
        assert client.ping()
        assert 0.4 <= time.monotonic() - t0 < 2.0
        with redis_proxy.fault(*names):
            pass
        t0 = time.monotonic()
        assert client.ping()
        assert time.monotonic() - t0 < 0.2
    finally:
        client.close()


# ------------------------------------------------------------------ one-way cut and black hole


def test_one_way_cut_applies_requests_holds_answers_until_heal(
    redis_proxy: Proxy, redis_direct: redis.Redis
) -> None:
    key = f"toxi:{uuid.uuid4()}"
    with _connect(redis_proxy) as sock:
        redis_proxy.one_way_cut()
        sock.sendall(_resp("SET", key, "v1"))
        # The request reached Redis and was applied...
        deadline = time.monotonic() + 5
        while redis_direct.get(key) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert redis_direct.get(key) == b"v1"
        # ...but its answer does not come back.
        assert _nothing_arrives(sock)
        redis_proxy.heal()
        # The held answer arrives on the same connection, which carries on.
        assert sock.recv(64) == b"+OK\r\n"
        sock.sendall(_resp("GET", key))
        assert sock.recv(64) == b"$2\r\nv1\r\n"


def test_one_way_cut_drop_loses_answers_and_heal_closes(
    redis_proxy: Proxy, redis_direct: redis.Redis
) -> None:
    key = f"toxi:{uuid.uuid4()}"
    with _connect(redis_proxy) as sock:
        (name,) = redis_proxy.one_way_cut(drop=True)
        assert redis_proxy.toxics()[0]["type"] == "timeout"
        sock.sendall(_resp("SET", key, "v1"))
        deadline = time.monotonic() + 5
        while redis_direct.get(key) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert redis_direct.get(key) == b"v1"
        assert _nothing_arrives(sock)
        redis_proxy.remove(name)
        # Toxiproxy's timeout toxic dropped the answer, and removing it closes
        # the connection: the "+OK" never arrives.
        assert _read_eof(sock) == b""
    # A new connection works normally.
    with _connect(redis_proxy) as sock:
        sock.sendall(_resp("GET", key))
        assert sock.recv(64) == b"$2\r\nv1\r\n"


def test_black_hole_holds_both_ways_until_heal(redis_proxy: Proxy, redis_direct: redis.Redis) -> None:
    key = f"toxi:{uuid.uuid4()}"
    with _connect(redis_proxy) as sock:
        names = redis_proxy.black_hole()
        assert len(names) == 2
        sock.sendall(_resp("SET", key, "v1"))
        assert _nothing_arrives(sock)
        # The request never reached Redis.
        assert redis_direct.get(key) is None
        redis_proxy.heal()
        assert sock.recv(64) == b"+OK\r\n"
        assert redis_direct.get(key) == b"v1"


def test_black_hole_drop_loses_requests(redis_proxy: Proxy, redis_direct: redis.Redis) -> None:
    key = f"toxi:{uuid.uuid4()}"
    with _connect(redis_proxy) as sock:
        redis_proxy.black_hole(drop=True)
        sock.sendall(_resp("SET", key, "v1"))
        assert _nothing_arrives(sock)
        redis_proxy.heal()
        assert _read_eof(sock) == b""
    assert redis_direct.get(key) is None


def test_timeout_with_ms_closes_the_connection(toxiproxy: Toxiproxy, echo_server: tuple[str, int]) -> None:
    proxy = toxiproxy.create_proxy(echo_server)
    with _connect(proxy) as sock:
        _round_trip(sock)
        proxy.timeout(300)
        t0 = time.monotonic()
        sock.sendall(b"lost\n")
        assert _read_eof(sock) == b""
        assert 0.25 <= time.monotonic() - t0 < 3.0


def test_redis_client_times_out_under_a_one_way_cut(redis_proxy: Proxy) -> None:
    client = redis.Redis(host=redis_proxy.host, port=redis_proxy.port, socket_timeout=QUIET)
    try:
        assert client.ping()
        redis_proxy.one_way_cut()
        with pytest.raises(redis.exceptions.TimeoutError):
            client.ping()
        redis_proxy.heal()
        # redis-py drops a connection that timed out, so the next call is clean.
        assert client.ping()
    finally:
        client.close()


# ------------------------------------------------------------------ reset and disable


def test_reset_peer_resets_new_connections_and_closes_existing_ones(
    toxiproxy: Toxiproxy, echo_server: tuple[str, int]
) -> None:
    proxy = toxiproxy.create_proxy(echo_server)
    with _connect(proxy) as before:
        _round_trip(before)
        proxy.reset_peer()
        with _connect(proxy) as after:
            after.sendall(b"boom\n")
            # Opened under the toxic: SO_LINGER 0, so the close is an RST.
            with pytest.raises(ConnectionResetError):
                while after.recv(65536):
                    pass
                raise AssertionError("the proxy closed with a FIN, not a reset")
        # Opened before it: Toxiproxy sets SO_LINGER only when a connection
        # starts, so this one is closed (FIN) at its next bytes, not reset.
        before.sendall(b"boom\n")
        assert _read_eof(before) == b""


def test_reset_peer_breaks_a_redis_client(redis_proxy: Proxy) -> None:
    client = redis.Redis(host=redis_proxy.host, port=redis_proxy.port, socket_timeout=5)
    try:
        assert client.ping()
        name = redis_proxy.reset_peer()
        with pytest.raises(redis.exceptions.ConnectionError):
            client.ping()
        redis_proxy.remove(name)
        assert client.ping()
    finally:
        client.close()


def test_disable_closes_connections_and_refuses_new_ones(
    toxiproxy: Toxiproxy, echo_server: tuple[str, int]
) -> None:
    proxy = toxiproxy.create_proxy(echo_server)
    with _connect(proxy) as sock:
        _round_trip(sock)
        proxy.disable()
        assert not proxy.enabled
        assert _read_eof(sock) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=5).close()
    proxy.enable()
    assert proxy.enabled
    with _connect(proxy) as sock:
        assert _round_trip(sock) < 0.2


def test_testenv_serves_toxiproxy(capfd: pytest.CaptureFixture[str]) -> None:
    from leaderlib.testing import testenv

    require_binary("toxiproxy-server")
    check = (
        "import os, urllib.request; "
        "url = os.environ['LEADERLIB_TEST_TOXIPROXY_URL']; "
        "print('version', urllib.request.urlopen(url + '/version', timeout=5).read().decode())"
    )
    assert testenv.main(["--toxiproxy", "--", sys.executable, "-c", check]) == 0
    out = capfd.readouterr().out
    assert "LEADERLIB_TEST_TOXIPROXY_URL=http://127.0.0.1:" in out
    assert f"version {TOXIPROXY_VERSION.removeprefix('v')}" in out
