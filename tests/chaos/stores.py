"""The stores a campaign runs on, each reached by every replica through its own proxy.

A :class:`Store` starts (or adopts) its real server(s), gives replica slot
``i`` a backend URL that goes through Toxiproxy proxies of that slot alone
(so the slot that leads can be cut off by itself), and offers the store's
own faults: restarts of the server (Redis with its data kept by AOF, or
lost as without persistence), of one etcd member, of etcd's raft leader, of
all three members at once, of the kube-apiserver and of the etcd behind it.
SQLite has no network: no proxies. Nor has Redis Sentinel: it hands clients
the master's real address, so its replicas connect to the Sentinels directly
and its faults are failovers (see :class:`SentinelStore`).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from leaderlib.testing.sentinel import RedisSentinelGroup
from leaderlib.testing.servers import EtcdCluster, KubeAPIServer, RedisServer
from leaderlib.testing.toxiproxy import Proxy, Toxiproxy


class Store:
    """One store: URLs per replica slot, proxies per slot, store-level faults."""

    name = "store"
    network = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.proxies: list[list[Proxy]] = []
        """Per replica slot, the proxies its connections go through."""

    def start(self, toxiproxy: Toxiproxy | None, slots: int) -> None:
        raise NotImplementedError

    def url(self, slot: int) -> str:
        raise NotImplementedError

    def restarts(self) -> list[str]:
        """The names of this store's own faults (see :meth:`restart`)."""
        return []

    def restart(self, kind: str, down_for: float, rng: random.Random) -> tuple[bool, str]:
        """Inject store fault ``kind``, blocking until it has healed.

        Returns (a healthy majority remained meanwhile, what was done).
        """
        raise NotImplementedError(kind)

    def close(self) -> None:
        """Stop what this store started itself."""


class SQLiteStore(Store):
    name = "sqlite"
    network = False

    def start(self, toxiproxy: Toxiproxy | None, slots: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proxies = [[] for _ in range(slots)]

    def url(self, slot: int) -> str:
        return f"sqlite:///{(self.directory / 'leases.sqlite3').as_posix().lstrip('/')}"


class RedisStore(Store):
    """Redis with AOF (``appendfsync always``): a restart keeps the lease and the token counter;
    ``redis_restart_lost`` deletes the AOF while Redis is down, which is what restarting a
    Redis without persistence does: every lease and fencing counter is gone.
    """

    name = "redis"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.server = RedisServer(
            config_lines=["appendonly yes", "appendfsync always"], directory=directory / "redis"
        )

    def start(self, toxiproxy: Toxiproxy | None, slots: int) -> None:
        assert toxiproxy is not None
        self.server.start()
        self.proxies = [[toxiproxy.create_proxy((self.server.host, self.server.port))] for _ in range(slots)]

    def url(self, slot: int) -> str:
        return f"redis://{self.proxies[slot][0].listen}"

    def restarts(self) -> list[str]:
        return ["redis_restart", "redis_restart_lost"]

    def restart(self, kind: str, down_for: float, rng: random.Random) -> tuple[bool, str]:
        self.server.stop()
        if kind == "redis_restart_lost":
            shutil.rmtree(self.server.directory / "appendonlydir", ignore_errors=True)
            (self.server.directory / "dump.rdb").unlink(missing_ok=True)
        time.sleep(down_for)
        self.server.start()
        kept = "data lost (no persistence)" if kind == "redis_restart_lost" else "AOF"
        return False, f"redis down {down_for:.1f}s ({kept})"

    def close(self) -> None:
        self.server.stop()


class EtcdStore(Store):
    """A 3-member etcd cluster; each slot has one proxy per member and lists all three."""

    name = "etcd"

    def __init__(self, directory: Path, cluster: EtcdCluster | None = None) -> None:
        super().__init__(directory)
        self._own = cluster is None
        self.cluster = cluster or EtcdCluster(3, directory=directory / "etcd")

    def start(self, toxiproxy: Toxiproxy | None, slots: int) -> None:
        assert toxiproxy is not None
        if self._own:
            self.cluster.start()
        self.proxies = [[toxiproxy.create_proxy(e) for e in self.cluster.endpoints] for _ in range(slots)]

    def url(self, slot: int) -> str:
        return "etcd://" + ",".join(p.listen for p in self.proxies[slot])

    def restarts(self) -> list[str]:
        return ["etcd_member_restart", "etcd_raft_leader_restart", "etcd_all_restart"]

    def raft_leader(self) -> int | None:
        """The index of the member that is raft leader now (``etcdctl endpoint status``)."""
        ids: dict[int, int] = {}
        leader_id = None
        for index, member in enumerate(self.cluster.members):
            if not member.running():
                continue
            try:
                [status] = json.loads(member.etcdctl("endpoint", "status", "-w", "json", timeout=5))
            except Exception:  # a member that does not answer is not the leader
                continue
            ids[status["Status"]["header"]["member_id"]] = index
            leader_id = status["Status"]["leader"] or leader_id
        return ids.get(leader_id) if leader_id is not None else None

    def restart(self, kind: str, down_for: float, rng: random.Random) -> tuple[bool, str]:
        if kind == "etcd_all_restart":
            self.cluster.kill_all()
            time.sleep(down_for)
            self.cluster.restart_all()
            return False, f"etcd all three members down {down_for:.1f}s"
        leader = self.raft_leader()
        if kind == "etcd_raft_leader_restart" and leader is not None:
            index, what = leader, "raft leader"
        else:
            index = rng.choice([i for i in range(len(self.cluster.members)) if i != leader])
            what = "follower member"
        self.cluster.kill(index)
        time.sleep(down_for)
        self.cluster.restart(index)
        self.cluster.wait_healthy()
        return True, f"etcd {what} member{index} down {down_for:.1f}s"

    def close(self) -> None:
        if self._own:
            self.cluster.stop()


class KubeStore(Store):
    """A kube-apiserver (and its etcd); each slot has a kubeconfig that points at its proxy."""

    name = "kubernetes"

    def __init__(self, directory: Path, server: KubeAPIServer | None = None) -> None:
        super().__init__(directory)
        self._own = server is None
        self.server = server or KubeAPIServer(directory=directory / "kube")
        self._kubeconfigs: list[Path] = []

    def start(self, toxiproxy: Toxiproxy | None, slots: int) -> None:
        assert toxiproxy is not None
        if self._own:
            self.server.start()
        port = self.server.port
        text = Path(self.server.kubeconfig).read_text()
        self.directory.mkdir(parents=True, exist_ok=True)
        for slot in range(slots):
            proxy = toxiproxy.create_proxy(("127.0.0.1", port))
            self.proxies.append([proxy])
            path = self.directory / f"kubeconfig-{slot}"
            # The serving certificate names 127.0.0.1, whatever the port.
            path.write_text(re.sub(rf"127\.0\.0\.1:{port}\b", proxy.listen, text))
            self._kubeconfigs.append(path)

    def url(self, slot: int) -> str:
        return f"kubernetes://{self.server.namespace}?kubeconfig={self._kubeconfigs[slot]}"

    def restarts(self) -> list[str]:
        return ["apiserver_restart", "apiserver_etcd_restart"]

    def restart(self, kind: str, down_for: float, rng: random.Random) -> tuple[bool, str]:
        if kind == "apiserver_etcd_restart":
            # The API server stays up, answering errors, and reconnects by itself.
            self.server.etcd.kill()
            time.sleep(down_for)
            self.server.etcd.start()
            self.server.wait_ready()
            return False, f"etcd behind the kube-apiserver down {down_for:.1f}s"
        self.server.restart_apiserver(kill=rng.random() < 0.5, down_for=down_for)
        return False, f"kube-apiserver down {down_for:.1f}s"

    def close(self) -> None:
        if self._own:
            self.server.stop()


class SentinelStore(Store):
    """A Redis master, a replica and three Sentinels; every replica slot uses ``redis+sentinel://``.

    The Sentinels hand out the master's real address, so no proxy can sit in
    between: this store has only the process faults and its failovers.
    ``sentinel_failover`` is ``SENTINEL FAILOVER`` (an operator's switch-over),
    ``sentinel_kill_master`` a crash of the master (SIGKILL; it rejoins as a
    replica after the failover), and ``sentinel_lost_write`` the asynchronous-
    replication case: replication is cut (``cut_replication``) while a new
    term is acquired on the master alone, then the master crashes and the
    replica, which never saw that acquisition's ``INCR``, is promoted.
    """

    name = "redis-sentinel"
    network = False

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.group = RedisSentinelGroup(directory=directory / "sentinel")

    def start(self, toxiproxy: Toxiproxy | None, slots: int) -> None:
        self.group.start()
        self.proxies = [[] for _ in range(slots)]

    def url(self, slot: int) -> str:
        return self.group.url

    def restarts(self) -> list[str]:
        return ["sentinel_failover", "sentinel_kill_master", "sentinel_lost_write"]

    def restart(self, kind: str, down_for: float, rng: random.Random) -> tuple[bool, str]:
        began = time.monotonic()
        if kind == "sentinel_failover":
            old, new = self.group.failover()
            return False, f"SENTINEL FAILOVER {old.port} -> {new.port} in {time.monotonic() - began:.1f}s"
        old = self.group.kill_master()
        new = self.group.wait_for_failover(old)
        promoted = time.monotonic() - began
        time.sleep(max(0.0, down_for - promoted))
        self.group.restart(old)
        return (
            False,
            f"master {old.port} killed, {new.port} promoted in {promoted:.1f}s, old back after {down_for:.1f}s",
        )

    def lose_write(self, new_term: Callable[[], str], down_for: float) -> str:
        """Replication cut, ``new_term()`` (a new term acquired on the master alone), the
        master killed and the replica, which never got that term's INCR, promoted;
        returns what was done."""
        old = self.group.cut_replication()
        done = new_term()
        self.group.kill_master()
        began = time.monotonic()
        new = self.group.wait_for_failover(old)
        promoted = time.monotonic() - began
        # The promoted replica still has the wrong masterauth: it could not follow the
        # next master it is demoted under.
        new.cli("CONFIG", "SET", "masterauth", "")
        time.sleep(max(0.0, down_for - promoted))
        self.group.restart(old)
        return f"replication cut; {done}; master {old.port} killed, {new.port} promoted in {promoted:.1f}s"

    def close(self) -> None:
        self.group.stop(keep=True)


STORES: dict[str, type[Store]] = {
    "sqlite": SQLiteStore,
    "redis": RedisStore,
    "etcd": EtcdStore,
    "kubernetes": KubeStore,
    "redis-sentinel": SentinelStore,
}
