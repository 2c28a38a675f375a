"""Logging set up once per process: one line per record, carrying the request id.

The CLI calls ``configure_logging`` before any command runs, and the uvicorn factory of
``--workers N`` in each worker. ``CREDITGATE_LOG_FORMAT=json`` gives one JSON object per line
(python-json-logger): ``time``, ``level``, ``logger``, ``message``, ``request_id`` and whatever
the record carries as ``extra`` (the access line's fields, say), for a log shipper to index.
Keys, tokens and secrets are never logged, in either format.

The access line (``creditgate.access``, one per proxied request, written only when
``CREDITGATE_ACCESS_LOG`` or ``serve --access-log`` turns it on) is its own switch: it is shown
at INFO whatever ``--log-level`` says of the rest.
"""

from __future__ import annotations

import logging
from typing import Literal

LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s"
JSON_FIELDS = "{asctime}{levelname}{name}{message}{request_id}"
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger"}
ACCESS_LOGGER = "creditgate.access"
CHATTY_LOGGERS = ("alembic.runtime.plugins",)
"""Libraries' loggers that say nothing an operator needs at INFO: Alembic (1.18 and later)
logs the set-up of each of its own plugins, seven lines before every migration, the demo's
and ``serve``'s included. Shown at DEBUG."""


class _RequestIdDefault(logging.Filter):
    """Lets every record be formatted with ``request_id`` (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = "-"
        return True


def formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter  # only then: text logs never need it

        return JsonFormatter(JSON_FIELDS, style="{", rename_fields=JSON_NAMES)
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str = "INFO", log_format: LogFormat = "text") -> None:
    """Every handler of the root logger writes ``log_format`` lines carrying the request id."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    root.setLevel(level.upper())
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)
    quiet = logging.WARNING if root.level > logging.DEBUG else logging.NOTSET
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    for handler in root.handlers:
        handler.addFilter(_RequestIdDefault())
        handler.setFormatter(formatter(log_format))
