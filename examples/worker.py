"""A worker process (in the style of an RQ or Celery worker) that also schedules work.

Every replica consumes the queue; only the leader enqueues the periodic
tasks, so each tick's task is enqueued once however many workers run. The
election and the scheduler run in a background thread (``BackgroundService``)
while the main thread works the queue; SIGTERM stops both gracefully.

    python examples/worker.py
    LEADERLIB_BACKEND=redis://127.0.0.1:6379/0 python examples/worker.py

Here the queue is an in-process ``queue.Queue``; in a real worker it is your
broker (Redis, SQS, a database table), and the enqueue carries
``ctx.fencing_token`` so the broker can refuse a paused ex-leader's late task.
"""

from __future__ import annotations

import queue
import signal
import threading
import types

from leaderlib import BackgroundService, JobContext, Service

service = Service("worker-example")
tasks: queue.Queue[tuple[str, int]] = queue.Queue()


@service.job(every=0.5, name="enqueue-cleanup")
def enqueue_cleanup(ctx: JobContext) -> None:
    ctx.check()
    tasks.put(("cleanup", ctx.fencing_token))


def main() -> int:
    stopping = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner = BackgroundService(service).start()
    done = 0
    led = False
    try:
        while not stopping.is_set():
            led = led or runner.is_leader
            try:
                name, token = tasks.get(timeout=0.1)
            except queue.Empty:
                continue
            done += 1  # the task's work, done with its fencing token
            print(f"did {name} (fencing token {token})", flush=True)
    finally:
        runner.stop()
    print(f"led={led} tasks={done}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
