"""Redis Sentinel for tests: a master, a replica and three Sentinels on loopback.

    with RedisSentinelGroup() as group:
        url = group.url                    # redis+sentinel://127.0.0.1:P1,...:P3/leaderlib
        old = group.kill_master()          # SIGKILL, a crash
        new = group.wait_for_failover(old) # the replica, once every Sentinel reports it
        old, new = group.failover()        # SENTINEL FAILOVER, an operator's switch-over

Each Sentinel is ``redis-server sentinel.conf --sentinel`` (the plain
``redis-server`` binary, so nothing beyond Debian's ``redis-server`` package is
needed). Timings are short so a failover completes in a few seconds: the
master is subjectively down after ``down_after_ms`` (1000) without an answer,
objectively down once ``quorum`` (2) Sentinels agree, and one Sentinel, elected
by the others, then promotes the replica (Sentinels wait up to a second at
random before they ask for votes, so that is 1.5 to 4 s after a crash here).
``failover_timeout_ms`` (3000) bounds one failover attempt; a failed attempt
is retried after twice that.

Every wait here (:meth:`master`, :meth:`wait_for_failover`, :meth:`failover`,
a replica's sync) is a :func:`~leaderlib.testing.servers.poll`: a server or
Sentinel that does not answer meanwhile (a paused master, a server resetting
its clients as the Sentinels reconfigure it) counts as "not yet", and the
deadline's error says what was waited for and the last error seen.

A killed master can be started again with :meth:`restart`: it comes back as a
replica of whichever server is master then (the Sentinels would reconfigure
it anyway; starting it that way avoids a moment with two masters).

:meth:`cut_replication` makes the master's later writes miss its replicas
(deterministically, unlike a race with a kill): a failover then promotes a
replica that lacks them, the case asynchronous replication allows.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from pathlib import Path

from leaderlib.testing.servers import (
    LOOPBACK,
    NotYet,
    RedisServer,
    ServerError,
    _Process,
    _Server,
    _wait_until,
    find_binary,
    free_port,
    poll,
)

__all__ = ["RedisSentinelGroup"]

log = logging.getLogger("leaderlib.testing")

#: Every data server's extra config: a replica's full sync starts at once
#: (Redis 7 waits 5 s by default, hoping more replicas join one transfer).
_SERVER_LINES = ("repl-diskless-sync-delay 0",)


def _command(port: int, *args: str, timeout: float = 1.0) -> list[str] | str | int | None:
    """One RESP command to ``127.0.0.1:port``; the decoded reply (errors as ``ServerError``).

    A few lines of RESP keep this module free of a client library: the
    Sentinel commands used here answer simple strings, integers and flat arrays.
    A connection closed before the reply raises ``ConnectionError`` (an ``OSError``,
    as a reset is).
    """
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with (
        socket.create_connection((LOOPBACK, port), timeout=timeout) as sock,
        sock.makefile("rb") as reader,
    ):
        sock.sendall(payload.encode())

        def read() -> list[str] | str | int | None:
            raw = reader.readline()
            if not raw.endswith(b"\n"):
                raise ConnectionError(f"{' '.join(args)} on port {port}: the connection was closed")
            line = raw.rstrip(b"\r\n").decode()
            kind, rest = line[:1], line[1:]
            if kind == "+":
                return rest
            if kind == "-":
                raise ServerError(f"{' '.join(args)} on port {port}: {rest}")
            if kind == ":":
                return int(rest)
            if kind == "$":
                if rest == "-1":
                    return None
                data = reader.read(int(rest) + 2)
                if len(data) < int(rest) + 2:
                    raise ConnectionError(f"{' '.join(args)} on port {port}: the connection was closed")
                return data[:-2].decode()
            if kind == "*":
                if rest == "-1":
                    return None
                return [str(read()) for _ in range(int(rest))]
            raise ServerError(f"unexpected reply {line!r} from port {port}")

        return read()


class RedisSentinelGroup(_Server):
    """A Redis master, ``replicas`` replicas (1) and ``sentinels`` Sentinels (3), all on loopback.

    :attr:`url` is the ``redis+sentinel://`` URL of the Sentinels and
    :attr:`service_name`; :attr:`servers` are the data servers (index 0 starts
    as the master). :meth:`master` asks the Sentinels which one is master now.
    """

    kind = "redis-sentinel"

    def __init__(
        self,
        *,
        service_name: str = "leaderlib",
        replicas: int = 1,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        directory: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(directory=directory, start_timeout=start_timeout)
        self.service_name = service_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.servers = [
            RedisServer(directory=self.directory / f"redis{i}", start_timeout=start_timeout)
            for i in range(1 + replicas)
        ]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self._sentinels: list[_Process | None] = [None] * sentinels

    # -- addresses ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/SERVICE``."""
        hosts = ",".join(f"{LOOPBACK}:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service_name}"

    def sentinel_log(self, index: int) -> Path:
        return self.directory / f"sentinel{index}.log"

    def _server_at(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    def reported_masters(self) -> list[int | None]:
        """The master's port as each Sentinel reports it now (None: no answer)."""
        ports: list[int | None] = []
        for port in self.sentinel_ports:
            try:
                reply = _command(port, "SENTINEL", "get-master-addr-by-name", self.service_name)
            except (OSError, ServerError):
                reply = None
            ports.append(int(reply[1]) if isinstance(reply, list) and len(reply) == 2 else None)
        return ports

    def master(self, timeout: float = 10.0) -> RedisServer:
        """The server a majority of Sentinels report as master (waited for up to ``timeout``
        seconds while they disagree or do not answer, as during a failover)."""

        def agreed() -> RedisServer:
            reported = self.reported_masters()
            for port in set(reported):
                if port is not None and reported.count(port) * 2 > len(self.sentinel_ports):
                    return self._server_at(port)
            raise NotYet(f"the Sentinels report {reported}")

        return poll("a majority of Sentinels to agree on the master", agreed, timeout, log_path=self.log_path)

    def replicas(self) -> list[RedisServer]:
        """The running servers other than the master."""
        master = self.master()
        return [server for server in self.servers if server is not master and server.running()]

    # -- lifecycle ---------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        """The first Sentinel's log (``+switch-master`` and friends); each server logs in ``redisN/``."""
        return self.sentinel_log(0)

    def _sentinel_config(self, port: int, master_port: int) -> str:
        name = self.service_name
        return "\n".join(
            [
                f"port {port}",
                f"bind {LOOPBACK}",
                "daemonize no",
                'logfile ""',
                f"dir {self.directory}",
                f"sentinel monitor {name} {LOOPBACK} {master_port} {self.quorum}",
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {name} 1",
                "",
            ]
        )

    def _start(self) -> None:
        binary = str(find_binary("redis-server"))
        master, *replicas = self.servers
        master.config_lines = _SERVER_LINES
        master.start()
        for replica in replicas:
            replica.config_lines = (*_SERVER_LINES, f"replicaof {LOOPBACK} {master.port}")
            replica.start()
        self._wait_synced(replicas)
        for index, port in enumerate(self.sentinel_ports):
            # Sentinel rewrites its config file (it records what it learns), so each has its own.
            conf = self.directory / f"sentinel{index}.conf"
            conf.write_text(self._sentinel_config(port, master.port))
            self._sentinels[index] = _Process(
                f"redis-sentinel {index}",
                [binary, str(conf), "--sentinel"],
                self.sentinel_log(index),
                self.directory,
            )
        procs = [p for p in self._sentinels if p is not None]
        _wait_until(
            "redis sentinels", self._sentinels_know_everyone, self.start_timeout, procs, self.log_path
        )

    def _sentinels_know_everyone(self) -> bool:
        """Every Sentinel reports the master, its replicas and the other Sentinels (ready to fail over)."""
        name = self.service_name
        for port in self.sentinel_ports:
            master = _command(port, "SENTINEL", "master", name)
            fields = dict(zip(master[::2], master[1::2], strict=True)) if isinstance(master, list) else {}
            if int(fields.get("num-slaves", 0)) < len(self.servers) - 1:
                return False
            if int(fields.get("num-other-sentinels", 0)) < len(self.sentinel_ports) - 1:
                return False
        return True

    def _processes(self) -> list[_Process]:
        own = [p for p in self._sentinels if p is not None]
        return [*own, *(p for server in self.servers for p in server._processes())]

    def stop(self, *, keep: bool = False) -> None:
        for server in self.servers:
            server.stop(keep=keep)
        super().stop(keep=keep)

    # -- faults ----------------------------------------------------------------------

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master (a crash: no shutdown, nothing saved); returns it."""
        master = self.master()
        master._kill_processes()
        master._started = False
        log.info("redis master on port %d killed", master.port)
        return master

    def pause_master(self) -> RedisServer:
        """SIGSTOP the current master (a hung host: connections stay open, nothing answers); returns it."""
        master = self.master()
        self.pause(master)
        return master

    def pause(self, server: RedisServer) -> None:
        """SIGSTOP one server (say a replica, so it receives no replication until resumed)."""
        for proc in server._processes():
            proc._signal_group(signal.SIGSTOP)

    def resume(self, server: RedisServer) -> None:
        """SIGCONT a server :meth:`pause_master` or :meth:`pause` stopped."""
        for proc in server._processes():
            proc._signal_group(signal.SIGCONT)

    def failover(self, timeout: float = 30.0) -> tuple[RedisServer, RedisServer]:
        """``SENTINEL FAILOVER`` (an operator's switch-over: no agreement needed, the master
        is demoted to a replica); waits for it; returns (old master, new master).

        Asked again until it happens: right after a failover the demoted master is
        still a master for some seconds (the Sentinels convert it only once it has
        reported that role for a while), so a second failover then finds no replica
        and is aborted (``-failover-abort-no-good-slave``), or refused outright.
        """
        old = self.master()
        deadline = time.monotonic() + timeout

        def switched() -> RedisServer:
            try:
                _command(self.sentinel_ports[0], "SENTINEL", "FAILOVER", self.service_name)
            except ServerError as exc:
                # -INPROG: the Sentinels are still finishing the previous failover;
                # -NOGOODSLAVE: the replica has not synced (or been seen) since.
                if "INPROG" in str(exc) or "NOGOODSLAVE" in str(exc):
                    raise NotYet(str(exc)) from exc
                raise
            attempt = max(1.0, min(2 * self.failover_timeout_ms / 1000, deadline - time.monotonic()))
            try:
                return self.wait_for_failover(old, attempt)
            except ServerError as exc:
                raise NotYet(f"SENTINEL FAILOVER accepted, no failover within {attempt:.1f} s") from exc

        return old, poll(f"a switch-over from port {old.port}", switched, timeout, log_path=self.log_path)

    def cut_replication(self) -> RedisServer:
        """From now on the master's writes reach no replica; returns the master.

        Each replica is given a wrong ``masterauth`` and its link to the
        master is dropped, so its reconnection (retried every second) stops
        at AUTH. Every server stays up for the Sentinels, and a replica whose
        link has been down for less than ten ``down-after-milliseconds`` may
        still be promoted: it keeps what it had, without the master's writes
        since. :meth:`heal_replication` undoes it. (Refusing PSYNC on the
        master instead left the replica's next partial resync desynchronised
        now and then: a protocol error and a full resync.)
        """
        master = self.master()
        for replica in self.replicas():
            replica.cli("CONFIG", "SET", "masterauth", "not-the-master-password")
            replica.cli("CLIENT", "KILL", "TYPE", "master")
        log.info("replication from the redis master on port %d cut", master.port)
        return master

    def heal_replication(self) -> None:
        """Let the replicas sync from the master again (after :meth:`cut_replication`); waits until they have."""
        replicas = self.replicas()
        for replica in replicas:
            replica.cli("CONFIG", "SET", "masterauth", "")
        self._wait_synced(replicas)

    def _wait_synced(self, replicas: list[RedisServer]) -> None:
        for replica in replicas:
            replica.wait_for_info("master_link_status:up", timeout=self.start_timeout)

    def restart(self, server: RedisServer) -> None:
        """Start a killed server again, as a replica of the current master."""
        server.config_lines = (*_SERVER_LINES, f"replicaof {LOOPBACK} {self.master().port}")
        server.start()

    def wait_for_failover(self, old: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Wait until every Sentinel reports a master other than ``old`` and it acts as one; returns it.

        Raises :class:`ServerError` (with the first Sentinel's log tail) on timeout.
        """

        def promoted() -> RedisServer:
            reported = self.reported_masters()
            port = reported[0]
            if port is None or port == old.port or reported.count(port) != len(reported):
                raise NotYet(f"the Sentinels report {reported}")
            new = self._server_at(port)
            new.check_info("role:master")
            return new

        return poll(
            f"a failover from port {old.port} (every Sentinel reporting one other master, acting as one)",
            promoted,
            timeout,
            log_path=self.log_path,
            interval=0.05,
        )
