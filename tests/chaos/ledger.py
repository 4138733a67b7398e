"""The campaign's ledger: an independent, linearizable, fencing record of what leaders did.

One :class:`LedgerServer` per campaign (a thread of the harness process) owns
a SQLite file on local disk and a Unix datagram socket. Replicas send it
messages (:class:`LedgerClient`); the server handles them one at a time, so
its order is the order of the record. A write whose fencing token is below
the highest the ledger has seen for its election is REJECTED, and every
attempt is recorded either way, with the replica's own stamps (taken before
it sent) and the server's (taken when it applied it), on ``CLOCK_BOOTTIME``
and ``CLOCK_MONOTONIC``, which every process on the host shares.

Why a server rather than each replica writing the SQLite file itself: a
replica frozen by SIGSTOP inside a write transaction would hold the file's
lock and freeze every other replica's loop with it, a fault of the harness,
not of the library.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS fence (election TEXT PRIMARY KEY, token INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    election TEXT, replica TEXT, pid INTEGER, kind TEXT, token INTEGER, tick TEXT,
    boot REAL,          -- replica's CLOCK_BOOTTIME just before it judged is_leader()
    mono REAL,          -- replica's CLOCK_MONOTONIC then (what the process saw: shimmed clocks show here)
    believed INTEGER,   -- ctx.is_leader() when it wrote
    valid_until REAL,   -- the term's deadline as the replica knew it (boottime)
    server_boot REAL, server_mono REAL,
    highest INTEGER,    -- the ledger's highest token for the election before this attempt
    accepted INTEGER
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    election TEXT, replica TEXT, pid INTEGER, kind TEXT, token INTEGER, reason TEXT,
    boot REAL, mono REAL, valid_until REAL, server_boot REAL
);
"""


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class LedgerServer:
    """The ledger's single writer; also tracks which replica processes hold open terms."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "ledger.sqlite3"
        # AF_UNIX paths are limited to 108 bytes: a short directory of its own.
        self._sockdir = Path(tempfile.mkdtemp(prefix="chaos-", dir="/tmp"))
        self.address = str(self._sockdir / "ledger.sock")
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.address)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.open_terms: dict[int, tuple[str, int]] = {}
        """pid -> (election, token) of each term begun and not yet logged as ended."""
        self._acted = threading.Condition(self._lock)
        self._acts: dict[int, int] = {}
        self._thread = threading.Thread(target=self._serve, name="chaos-ledger", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                message = json.loads(data)
                reply = self._apply(message)
            except Exception as exc:  # a bad message must not stop the record
                reply = {"error": str(exc)}
            if sender and message.get("op") == "write":
                with contextlib.suppress(OSError):  # the replica may be gone
                    self._sock.sendto(json.dumps(reply).encode(), sender)

    def _apply(self, m: dict[str, Any]) -> dict[str, Any]:
        now_boot, now_mono = boottime(), time.monotonic()
        with self._lock:
            if m["op"] == "event":
                self._db.execute(
                    "INSERT INTO events (election, replica, pid, kind, token, reason, boot, mono,"
                    " valid_until, server_boot) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        m["election"],
                        m["replica"],
                        m["pid"],
                        m["kind"],
                        m.get("token"),
                        m.get("reason"),
                        m["boot"],
                        m["mono"],
                        m.get("valid_until"),
                        now_boot,
                    ),
                )
                if m["kind"] == "became":
                    self.open_terms[m["pid"]] = (m["election"], m["token"])
                elif m["kind"] == "stopped":
                    self.open_terms.pop(m["pid"], None)
                return {}
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT token FROM fence WHERE election = ?", (m["election"],)).fetchone()
            highest = row[0] if row else None
            accepted = highest is None or m["token"] >= highest
            if accepted:
                self._db.execute(
                    "INSERT INTO fence VALUES (?, ?) ON CONFLICT(election) DO UPDATE SET token = excluded.token",
                    (m["election"], m["token"]),
                )
            self._db.execute(
                "INSERT INTO attempts (election, replica, pid, kind, token, tick, boot, mono, believed,"
                " valid_until, server_boot, server_mono, highest, accepted) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    m["election"],
                    m["replica"],
                    m["pid"],
                    m["kind"],
                    m["token"],
                    m.get("tick"),
                    m["boot"],
                    m["mono"],
                    int(bool(m.get("believed"))),
                    m.get("valid_until"),
                    now_boot,
                    now_mono,
                    highest,
                    int(accepted),
                ),
            )
            self._db.execute("COMMIT")
            if m["kind"] == "act":
                self._acts[m["pid"]] = self._acts.get(m["pid"], 0) + 1
                self._acted.notify_all()
            return {"accepted": accepted, "id": m.get("id")}

    def wait_for_act(self, pid: int, timeout: float) -> bool:
        """Block until replica ``pid``'s next ``act`` write has been applied: a fault
        injected right then catches it inside its run, between its checked and its
        unchecked write (where fencing matters)."""
        with self._acted:
            seen = self._acts.get(pid, 0)
            return self._acted.wait_for(lambda: self._acts.get(pid, 0) > seen, timeout)

    def forget(self, pid: int) -> None:
        """A replica process is gone (SIGKILL): its open term will never log its end."""
        with self._lock:
            self.open_terms.pop(pid, None)

    def rows(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self._db.execute(f"SELECT * FROM {table} ORDER BY seq")  # the table names are our own
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
        self._db.close()
        shutil.rmtree(self._sockdir, ignore_errors=True)


class LedgerClient:
    """A replica's side: writes wait for the ledger's verdict, events do not."""

    def __init__(self, address: str, election: str, replica: str) -> None:
        self.election = election
        self.replica = replica
        self.pid = os.getpid()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # A datagram reply needs an address to go to.
        self._sock.bind(f"{address}.{self.pid}")
        self._sock.settimeout(1.0)
        self._address = address
        self._lock = threading.Lock()
        self._ids = 0

    def _send(self, message: dict[str, Any]) -> None:
        base = {"election": self.election, "replica": self.replica, "pid": self.pid}
        self._sock.sendto(json.dumps({**base, **message}).encode(), self._address)

    def event(self, kind: str, **fields: Any) -> None:
        with self._lock, contextlib.suppress(OSError):
            self._send({"op": "event", "kind": kind, "boot": boottime(), "mono": time.monotonic(), **fields})

    def write(self, kind: str, token: int, boot: float, mono: float, **fields: Any) -> bool | None:
        """Send one fenced write; True/False is the ledger's verdict, None: no answer in time."""
        with self._lock:
            try:
                self._ids += 1
                self._send(
                    {"op": "write", "id": self._ids, "kind": kind, "token": token, "boot": boot, "mono": mono}
                    | fields
                )
                # A verdict that came too late for an earlier write is skipped.
                while (verdict := json.loads(self._sock.recv(65536))).get("id") != self._ids:
                    pass
            except OSError:
                return None
            return bool(verdict.get("accepted"))
