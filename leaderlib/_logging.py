"""Logging: details that every handler prints, and the CLI's text or JSON formatting.

The library logs constant messages with details in ``extra=`` (STYLE.md rule
8) and never configures handlers. A plain handler (``logging.basicConfig``)
prints only ``getMessage()``, which would drop the details, so every
leaderlib logger is made by :func:`get_logger` and carries a
:class:`DetailsFilter` that appends them to the message as ``key=value``. The
constant message stays on the record (``leaderlib_message``) and the details
stay attributes, so structured formatters (:class:`JsonFormatter`) print each
once. ``leaderlib run`` and ``leaderlib demo`` install the handlers.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

__all__ = [
    "DetailsFilter",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "constant_message",
    "details_of",
    "get_logger",
]

#: The record attribute that keeps the constant message once DetailsFilter
#: has put the details into ``msg``.
CONSTANT_MESSAGE = "leaderlib_message"

#: Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    CONSTANT_MESSAGE,
}


def details_of(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a log record."""
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


def constant_message(record: logging.LogRecord) -> str:
    """A record's message without the details :class:`DetailsFilter` appended (for tests, formatters)."""
    constant = getattr(record, CONSTANT_MESSAGE, None)
    return constant if isinstance(constant, str) else record.getMessage()


def _as_text(details: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in details.items())


class DetailsFilter(logging.Filter):
    """Appends a record's ``extra=`` details to its message, so any handler prints them.

    ``became leader`` with ``extra={"election": "billing", "fencing_token": 3}``
    reads ``became leader election=billing fencing_token=3`` from
    ``getMessage()``; the constant message is kept as ``leaderlib_message``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, CONSTANT_MESSAGE):
            return True  # already done (a record passed to a second leaderlib logger)
        constant = record.getMessage()
        setattr(record, CONSTANT_MESSAGE, constant)
        if details := details_of(record):
            # The message is final text now: no %-args left to apply to it.
            record.msg, record.args = f"{constant} {_as_text(details)}", ()
        return True


_DETAILS = DetailsFilter()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the :class:`DetailsFilter`: how leaderlib modules get a logger."""
    logger = logging.getLogger(name)
    if _DETAILS not in logger.filters:
        logger.addFilter(_DETAILS)
    return logger


class TextFormatter(logging.Formatter):
    """``2026-11-28 12:00:05,123 INFO leaderlib.elector became leader election=x fencing_token=3``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if hasattr(record, CONSTANT_MESSAGE):
            return text  # DetailsFilter already put the details into the message
        extra = _as_text(details_of(record))
        return f"{text} {extra}" if extra else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (Unix seconds), level, logger, message, details."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname,
            "logger": record.name,
            # The constant message: the details follow as fields of their own.
            "message": constant_message(record),
            **details_of(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send logs to stderr in ``fmt`` ("text" or "json") at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
