"""The example service the Kubernetes manifests run: one cron job, on the leader only.

In the pod (see ``Dockerfile`` and ``deployment.yaml``)::

    leaderlib run service.py:service --health-port 8080 --health-host 0.0.0.0 --log-format json

Every setting comes from the ``LEADERLIB_*`` variables of ``configmap.yaml``
(``LEADERLIB_BACKEND=kubernetes://``: a Lease in the pod's own namespace, with
the pod's service account). The election is the service's name,
``message-poller``: ``kubectl get lease message-poller`` shows who leads.
"""

from __future__ import annotations

import logging

from leaderlib import JobContext, Service

logger = logging.getLogger("message_poller")

service = Service("message-poller")


@service.job(cron="*/2 * * * * *", name="poll-messages")
async def poll_messages(ctx: JobContext) -> None:
    """Fetch pending messages and hand them on, with the fencing token on every write,
    so a downstream store can refuse a late batch from a paused ex-leader."""
    ctx.check()  # before the side effect: a leader that was paused past its term must not act
    logger.info("polling messages", extra={"fencing_token": ctx.fencing_token})
