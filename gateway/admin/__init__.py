"""The operator's surface: the /admin HTTP API and the ``accounts`` / ``keys`` commands."""

from __future__ import annotations
