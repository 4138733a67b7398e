"""The one shape of error translation every backend uses: a table, and a context manager.

Each backend writes ONE table from its driver's exceptions to leaderlib's
(as httpx's ``map_httpcore_exceptions`` maps httpcore's), and wraps every
driver call in it::

    _ERRORS = error_map(
        [
            Row(redis.AuthenticationError, AccessDenied, lambda exc, at: f"... ({exc}) ..."),
            Row(redis.ResponseError, CorruptLeaseRecord, wrong_type, when=lambda exc, at: "WRONGTYPE" in str(exc)),
            Row((redis.RedisError, OSError), BackendUnavailable, lambda exc, at: f"... {exc}"),
        ]
    )

    with _ERRORS.translating(self, election=self.election, backend=self.scheme):
        await self._client.get(key)

Rows are tried in order; the first whose ``match`` fits (an exception type,
or, for drivers that carry a status in one exception type, a code such as a
gRPC ``StatusCode`` or an HTTP status, read by ``code=``) and whose ``when``
holds builds the error, ``raise ... from`` the driver's exception. ``at`` is
whatever the backend passes to :meth:`ErrorMap.translating` (its lease
handle, its endpoint...), so messages can name the key, file or member.
leaderlib's own errors pass through untouched, and so does anything no row
matches (cancellation above all) unless the map has a ``default`` row.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from .._errors import BackendError, LeaderlibError

__all__ = ["ErrorMap", "Row", "error_map"]

C = TypeVar("C")

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


@dataclasses.dataclass(frozen=True)
class Row(Generic[C]):
    """One line of a backend's error table: which driver errors, and the leaderlib error they become."""

    match: ExceptionTypes | Hashable
    """An exception type (or tuple of them), matched with ``isinstance``; anything
    else is a code compared with the map's ``code(exc)``."""
    error: type[BackendError]
    """The leaderlib error raised."""
    message: Callable[[Any, C], str]
    """Builds the message from the driver's exception and the call's context."""
    when: Callable[[Any, C], bool] | None = None
    """A further condition (the text of the driver's message, the step of the call)."""


class ErrorMap(Generic[C]):
    """A backend's error table; :meth:`translating` applies it to a block of driver calls."""

    def __init__(
        self,
        rows: Sequence[Row[C]],
        *,
        code: Callable[[BaseException], Hashable | None] | None = None,
        default: Row[C] | None = None,
    ) -> None:
        self.rows = tuple(rows)
        self._code = code
        self.default = default
        """Applied to any other :class:`Exception` (never to cancellation), if given."""

    def _matches(self, row: Row[C], exc: BaseException, code: Hashable | None) -> bool:
        match = row.match
        if isinstance(match, type) or (
            isinstance(match, tuple) and all(isinstance(kind, type) for kind in match)
        ):
            return isinstance(exc, match)
        return code is not None and code == match

    def error_for(
        self, exc: BaseException, at: C, *, election: str | None, backend: str | None
    ) -> BackendError | None:
        """The leaderlib error for ``exc`` by this table, or None if no row matches."""
        if isinstance(exc, LeaderlibError):
            return None
        code = self._code(exc) if self._code is not None else None
        for row in self.rows:
            if self._matches(row, exc, code) and (row.when is None or row.when(exc, at)):
                return row.error(row.message(exc, at), election=election, backend=backend)
        if self.default is not None and isinstance(exc, Exception):
            return self.default.error(self.default.message(exc, at), election=election, backend=backend)
        return None

    @contextlib.contextmanager
    def translating(self, at: C, *, election: str | None, backend: str | None) -> Iterator[None]:
        """Raise the table's leaderlib error, ``from`` the driver's, for any error inside."""
        try:
            yield
        except BaseException as exc:
            error = self.error_for(exc, at, election=election, backend=backend)
            if error is None:
                raise
            raise error from exc


def error_map(
    rows: Sequence[Row[C]],
    *,
    code: Callable[[BaseException], Hashable | None] | None = None,
    default: Row[C] | None = None,
) -> ErrorMap[C]:
    """Make a backend's error table (see the module docstring)."""
    return ErrorMap(rows, code=code, default=default)
