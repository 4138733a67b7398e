"""A plain threaded program (no asyncio) whose scheduled jobs run on one replica only.

The program does its own work in its own threads; leaderlib's asyncio core
runs in one background thread (``BackgroundService``), and the sync jobs each
run in a thread of their own while this replica leads. Start it twice: one
copy leads and runs the jobs, the other stands by.

    python examples/threaded_program.py --seconds 30
    LEADERLIB_BACKEND=redis://127.0.0.1:6379/0 python examples/threaded_program.py
"""

from __future__ import annotations

import argparse
import threading
import time

from leaderlib import BackgroundService, JobContext, Service

service = Service("threaded-example")
lock = threading.Lock()
runs = {"export": 0}


@service.job(every=1, name="export")
def export(ctx: JobContext) -> None:
    """A sync job: it runs in a thread of its own, so it may block."""
    for _batch in range(3):
        if not ctx.is_leader():  # leadership ended while it ran: stop before the next write
            return
        time.sleep(0.01)  # stands for a blocking write, done with ctx.fencing_token
    with lock:
        runs["export"] += 1


def serve_requests(stop: threading.Event) -> None:
    """The program's own work, in its own thread, on every replica alike."""
    while not stop.wait(0.2):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to run (default 30)")
    args = parser.parse_args()
    stop = threading.Event()
    worker = threading.Thread(target=serve_requests, args=(stop,), name="requests")
    worker.start()
    runner = BackgroundService(service).start()  # raises a bad configuration here, at once
    led = False
    try:
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            led = led or runner.is_leader
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()  # graceful: running jobs finish, the lease is released
        stop.set()
        worker.join()
    with lock:
        print(f"led={led} runs={runs['export']}")


if __name__ == "__main__":
    main()
