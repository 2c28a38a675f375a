"""Logging set up once per process: single-line records carrying the request id.

``creditgate serve`` and the uvicorn factory of ``--workers N`` call it after the CLI's
``basicConfig``, so a server's records all carry the id. Keys and secrets are never logged.
"""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s"


class _RequestIdDefault(logging.Filter):
    """Lets every record be formatted with ``request_id`` (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = "-"
        return True


def configure_logging(level: str = "INFO") -> None:
    """Structured single-line logs carrying the request id; keys and secrets are never logged."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level.upper())
    for handler in root.handlers:
        handler.addFilter(_RequestIdDefault())
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
