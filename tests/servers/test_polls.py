"""The harness's waits ride out a server that does not answer for a while (``poll``).

A Sentinel reconfiguring a server kills its clients (``CLIENT KILL TYPE normal``)
and a paused master answers nothing: a wait polling either must count that as
"not yet", not end the test. Ports that reset connections (``SO_LINGER`` 0: an
RST) stand in for the Sentinels and servers here, scripted per command, so each
case is deterministic; a real ``redis-server`` is SIGSTOPped for the pause.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from leaderlib.testing.sentinel import RedisSentinelGroup
from leaderlib.testing.servers import LOOPBACK, RedisServer, ServerError, poll

Answer = Callable[[list[str]], bytes]


def bulk(text: str) -> bytes:
    return f"${len(text.encode())}\r\n{text}\r\n".encode()


def array(*items: str) -> bytes:
    return f"*{len(items)}\r\n".encode() + b"".join(bulk(item) for item in items)


class ScriptedPort:
    """A loopback port answering RESP commands with ``answer(args)``, except that the
    first ``resets[KEY]`` commands of each KEY (its first two words, upper-cased) are
    answered with a reset: the command is read, then the socket closed with SO_LINGER 0."""

    def __init__(self, answer: Answer, resets: dict[str, int] | None = None) -> None:
        self.answer = answer
        self.resets = dict(resets or {})
        self.reset: list[str] = []  # the keys of the commands answered with a reset
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            with conn, conn.makefile("rb") as reader:
                while (args := self._read(reader)) is not None:
                    key = " ".join(args[:2]).upper()
                    if self.resets.get(key, 0) > 0:
                        self.resets[key] -= 1
                        self.reset.append(key)
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        break
                    conn.sendall(self.answer(args))

    @staticmethod
    def _read(reader: Any) -> list[str] | None:
        header = reader.readline()
        if not header.startswith(b"*"):
            return None
        args = []
        for _ in range(int(header[1:])):
            size = int(reader.readline()[1:])
            args.append(reader.read(size + 2)[:-2].decode())
        return args

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        self._listener.close()
        self._thread.join(5)


class Ports:
    """Makes scripted ports; remembers them to close them and to count the resets they made."""

    def __init__(self) -> None:
        self.made: list[ScriptedPort] = []

    def __call__(self, answer: Answer, resets: dict[str, int] | None = None) -> ScriptedPort:
        self.made.append(ScriptedPort(answer, resets))
        return self.made[-1]

    def resets(self, key: str) -> int:
        """How many ``key`` commands were answered with a reset."""
        return sum(port.reset.count(key) for port in self.made)


@pytest.fixture
def ports() -> Iterator[Ports]:
    made = Ports()
    yield made
    for port in made.made:
        port.close()


def fake_group(tmp_path: Path, make: Ports, resets: dict[str, int]) -> RedisSentinelGroup:
    """A RedisSentinelGroup whose Sentinels and two servers are scripted ports (nothing is
    started): each answers as real ones would around a failover, and resets ``resets``."""
    group = RedisSentinelGroup(directory=tmp_path)
    state = {"master": 0}

    def sentinel(args: list[str]) -> bytes:
        if args[1].upper() == "FAILOVER":
            state["master"] = 1
            return b"+OK\r\n"
        assert args[1] == "get-master-addr-by-name", args
        return array(LOOPBACK, str(group.servers[state["master"]].port))

    def server(index: int) -> Answer:
        def info(args: list[str]) -> bytes:
            assert args == ["INFO", "replication"], args
            return bulk(f"# Replication\r\nrole:{'master' if state['master'] == index else 'slave'}\r\n")

        return info

    group.sentinel_ports = [make(sentinel, resets).port for _ in group.sentinel_ports]
    for index, data in enumerate(group.servers):
        data.port = make(server(index), resets).port
    return group


def test_master_waits_out_sentinels_that_reset_connections(tmp_path: Path, ports: Ports) -> None:
    """Every Sentinel resets its first two queries: no majority at first, one after."""
    group = fake_group(tmp_path, ports, {"SENTINEL GET-MASTER-ADDR-BY-NAME": 2})
    assert group.master() is group.servers[0]
    assert ports.resets("SENTINEL GET-MASTER-ADDR-BY-NAME") == 2 * len(group.sentinel_ports)


def test_a_failover_rides_out_resets_of_the_sentinel_and_the_promoted_server(
    tmp_path: Path, ports: Ports
) -> None:
    """SENTINEL FAILOVER is reset twice, and the promoted server's INFO three times (it is
    reconfigured): failover() asks again each time and returns the switch."""
    group = fake_group(tmp_path, ports, {"SENTINEL FAILOVER": 2, "INFO REPLICATION": 3})
    old, new = group.failover(timeout=20)
    assert (old, new) == (group.servers[0], group.servers[1])
    # The demoted server answers too, once its own resets are through.
    assert "role:slave" in old.wait_for_info("role:slave", timeout=20)
    assert ports.resets("SENTINEL FAILOVER") == 2
    assert ports.resets("INFO REPLICATION") == 3 * len(group.servers)


def test_a_poll_that_never_sees_its_condition_says_what_it_waited_for_and_the_last_error(
    tmp_path: Path, ports: Ports
) -> None:
    group = fake_group(tmp_path, ports, {"INFO REPLICATION": 1_000_000})
    server = group.servers[1]
    with pytest.raises(ServerError) as raised:
        server.wait_for_info("role:slave", timeout=0.5)
    message = str(raised.value)
    assert f"for role:slave in port {server.port}'s INFO replication" in message
    assert "last error: ServerUnreachable" in message and "Connection reset by peer" in message, message
    # One that answers, but not what is waited for: what it saw instead.
    with pytest.raises(ServerError, match=r"last seen: the Sentinels report \[\d+, \d+, \d+\]"):
        group.wait_for_failover(group.servers[0], timeout=0.5)


def test_poll_propagates_an_error_that_is_not_transient() -> None:
    def probe() -> bool:
        raise KeyError("a bug in the probe")

    with pytest.raises(KeyError):
        poll("nothing", probe, 10)


@contextlib.contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    pid = server._processes()[0].pid
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


def test_a_paused_redis_is_polled_until_it_is_resumed(redis_server: RedisServer) -> None:
    """SIGSTOPped, a server accepts connections and answers nothing: each probe times out
    and is asked again; resumed a moment later, it answers."""
    with paused(redis_server):
        with pytest.raises(ServerError, match=r"last error: ServerUnreachable: .*no answer within"):
            redis_server.wait_for_info("role:master", timeout=0.5)
        threading.Timer(1.0, os.killpg, (redis_server._processes()[0].pid, signal.SIGCONT)).start()
        assert "role:master" in redis_server.wait_for_info("role:master", timeout=30)
