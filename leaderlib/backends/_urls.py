"""Backend URLs: splitting them, their query-string options, and the entry points
(group ``leaderlib.backends``) that map a URL's scheme to its backend class."""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import SplitResult, parse_qsl, urlsplit

from .._errors import BackendNotInstalled, ConfigError

if TYPE_CHECKING:
    from . import Backend

#: The extra that installs each scheme's driver, for "pip install" hints.
_EXTRAS = {
    "redis": "redis",
    "rediss": "redis",
    "redis+sentinel": "redis",
    "etcd": "etcd",
    "etcds": "etcd",
    "kubernetes": "kubernetes",
}


class BackendFactory(Protocol):
    """A backend class, as registered under the ``leaderlib.backends`` entry points."""

    def from_url(self, url: str, **options: Any) -> Backend: ...


def split_url(url: str) -> SplitResult:
    """Split a backend URL, raising :class:`ConfigError` that shows the URL if it has no scheme."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"{url!r} is not a backend URL; expected SCHEME://..., one of: {', '.join(known_schemes())}",
            field="backend",
        )
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"{url!r} is not a valid URL: {exc}", field="backend") from exc


def parse_options(url: SplitResult, allowed: dict[str, type], given: dict[str, Any]) -> dict[str, Any]:
    """Merge the URL's query-string options with keyword ``given`` ones (which win).

    Each option is converted to its type in ``allowed``; an unknown option or a
    bad value raises :class:`ConfigError` naming it and the URL's scheme.
    """
    merged: dict[str, Any] = {}
    for key, raw in parse_qsl(url.query, keep_blank_values=True):
        merged[key] = raw
    merged.update({key: value for key, value in given.items() if value is not None})
    result: dict[str, Any] = {}
    for key, raw in merged.items():
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(
                f"unknown option {key!r} for {url.scheme}://; known options: {known}", field=key
            )
        kind = allowed[key]
        if isinstance(raw, kind):
            result[key] = raw
            continue
        try:
            if kind is bool:
                text = str(raw).lower()
                if text not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
                    raise ValueError(raw)
                result[key] = text in {"1", "true", "yes", "on"}
            else:
                result[key] = kind(raw)
        except (TypeError, ValueError):
            raise ConfigError(
                f"option {key!r} of {url.scheme}:// must be {kind.__name__}, got {raw!r}", field=key
            ) from None
    return result


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group="leaderlib.backends")}


def known_schemes() -> list[str]:
    """The URL schemes of every registered backend, sorted."""
    return sorted(_entry_points())


def backend_from_url(url: str, **options: Any) -> Backend:
    """Make the backend for ``url``: its scheme picks the class, its query string the options.

    Raises :class:`ConfigError` for an unknown scheme (listing the known ones)
    and :class:`BackendNotInstalled` when the scheme's extra is missing.
    """
    scheme = split_url(url).scheme
    entry_point = _entry_points().get(scheme)
    if entry_point is None:
        raise ConfigError(
            f"unknown backend scheme {scheme!r} in {url!r}; known schemes: {', '.join(known_schemes())}",
            field="backend",
        )
    try:
        factory: BackendFactory = entry_point.load()
    except ImportError as exc:
        extra = _EXTRAS.get(scheme, scheme)
        raise BackendNotInstalled(
            f"the {scheme}:// backend needs a package that is not installed ({exc.name or exc}); "
            f"install it with: pip install 'leaderlib[{extra}]'",
            field="backend",
        ) from exc
    return factory.from_url(url, **options)
