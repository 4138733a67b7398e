"""gRPC's errors as leaderlib's: :data:`ERRORS`, the one table every etcd call is translated by.

Rows go by status code and, where etcd reuses a code, by its details; the
messages name the member and, for a missing permission, the grant to make.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grpc  # type: ignore[import-untyped]  # no stubs in the venv; pyproject lists aetcd only

from ..._errors import AccessDenied, BackendError, BackendUnavailable, LeaseLost
from .._errors import ErrorMap, Row, error_map

__all__ = ["ERRORS", "At", "details"]

#: gRPC codes that say "try again later" rather than "you are wrong".
_TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


def details(exc: BaseException) -> str:
    return (exc.details() if isinstance(exc, grpc.aio.AioRpcError) else None) or ""


def _code(exc: BaseException) -> Any:
    return exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None


@dataclasses.dataclass(frozen=True)
class At:
    """The member a call failed on, and what the messages of :data:`ERRORS` name."""

    endpoint: str
    user: str | None
    prefix: str


#: gRPC's errors as leaderlib's, by status code (and, where etcd reuses a code, its details).
ERRORS: ErrorMap[At] = error_map(
    [
        Row(
            grpc.StatusCode.INVALID_ARGUMENT,
            AccessDenied,
            lambda exc, at: f"etcd at {at.endpoint} rejected user {at.user!r}: wrong user name or password",
            when=lambda exc, at: "authentication failed" in details(exc),
        ),
        Row(
            grpc.StatusCode.INVALID_ARGUMENT,
            AccessDenied,
            lambda exc, at: (
                f"etcd at {at.endpoint} has authentication enabled and no user was given "
                f"({details(exc)}); put USER:PASSWORD in the URL or pass user= and password="
            ),
            when=lambda exc, at: "user name is empty" in details(exc),
        ),
        Row(
            grpc.StatusCode.UNAUTHENTICATED,
            AccessDenied,
            lambda exc, at: (
                f"etcd at {at.endpoint} requires authentication ({details(exc)}); "
                "put USER:PASSWORD in the URL or pass user= and password="
            ),
        ),
        Row(
            grpc.StatusCode.PERMISSION_DENIED,
            AccessDenied,
            lambda exc, at: (
                f"etcd at {at.endpoint} denied user {at.user!r} ({details(exc)}); grant its role "
                f"readwrite on the election prefix: etcdctl role grant-permission ROLE "
                f"--prefix=true readwrite {at.prefix}"
            ),
        ),
        Row(
            grpc.StatusCode.FAILED_PRECONDITION,
            AccessDenied,
            lambda exc, at: (
                f"etcd at {at.endpoint} has authentication disabled but credentials were given; "
                "drop them from the URL or enable auth"
            ),
            when=lambda exc, at: "authentication is not enabled" in details(exc),
        ),
        Row(
            grpc.StatusCode.NOT_FOUND,
            LeaseLost,
            lambda exc, at: f"the etcd session lease is gone ({details(exc)})",
            when=lambda exc, at: "lease not found" in details(exc),
        ),
        Row(
            grpc.aio.AioRpcError,
            BackendUnavailable,
            lambda exc, at: f"etcd at {at.endpoint}: {exc.code().name}: {details(exc)}",
            when=lambda exc, at: exc.code() in _TRANSIENT_CODES,
        ),
        Row(
            grpc.aio.AioRpcError,
            BackendError,
            lambda exc, at: f"etcd at {at.endpoint}: {exc.code().name}: {details(exc)}",
        ),
        # Only the keepalive stream times out this way (it has no gRPC deadline).
        Row(
            TimeoutError,
            BackendUnavailable,
            lambda exc, at: f"etcd at {at.endpoint}: no keepalive answer within the deadline",
        ),
    ],
    code=_code,
)
