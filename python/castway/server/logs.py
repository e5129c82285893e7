"""How ``castway serve`` writes its log: one line per record, as text or as JSON.

A record about a route carries the route's name as the ``route`` attribute (pass
``extra=about(name)``); the audit trail adds ``call``, ``key``, ``peer``, ``status`` and
``target`` (the name or id the call is about). The text format shows them in the message
already; the JSON format gives each its own field, so a log shipper can filter by route without
parsing messages::

    {"time": "2026-11-23T01:40:00.123Z", "level": "warning", "logger": "castway.control",
     "message": "route news cannot start …", "route": "news"}
"""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")
# Attributes of a record that become fields of its JSON line, in this order.
FIELDS = ("route", "call", "key", "peer", "status", "target")


def about(route: str) -> dict[str, Any]:
    """The ``extra`` of a record about ``route``."""
    return {"route": route}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ms), level, logger, message, then the fields
    above that the record has, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC)
        doc: dict[str, Any] = {
            "time": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                doc[field] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def formatter(kind: str, text: str) -> logging.Formatter:
    """The formatter for ``--log-format kind``; ``text`` is the text format's pattern."""
    return JsonFormatter() if kind == "json" else logging.Formatter(text)


class JsonLines(io.TextIOBase):
    """A text stream whose every line goes out as one JSON log record (logger
    ``castway.serve``) on ``out``: what ``castway serve`` prints (where it listens, the admin
    key's file, what the config file changed) stays machine-readable under
    ``--log-format json``. A leading ``castway: `` is dropped."""

    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self._out = out
        self._pending = ""
        self._format = JsonFormatter()

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self.line(line.removeprefix("castway: "))
        return len(text)

    def line(self, message: str, level: int = logging.INFO) -> None:
        record = logging.LogRecord("castway.serve", level, __file__, 0, message, None, None)
        self._out.write(self._format.format(record) + "\n")
        self._out.flush()

    def flush(self) -> None:
        self._out.flush()
