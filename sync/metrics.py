"""The sync worker's own counters; each pass adds its share to the hash that every gateway
replica's ``/metrics`` renders (``gateway.credits.sync_stats``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class SyncStats:
    """Counters since the worker started, and the lag seen by its latest pass."""

    applied: int = 0
    batches: int = 0
    errors: int = 0
    rejected: int = 0
    reaped: int = 0
    expired: int = 0
    lag_ms: int = 0
    passes: int = 0

    def minus(self, before: SyncStats) -> SyncStats:
        """The counters added since ``before`` (the lag is this one's)."""
        values = {f.name: getattr(self, f.name) - getattr(before, f.name) for f in fields(self)}
        values["lag_ms"] = self.lag_ms
        return SyncStats(**values)

    def copy(self) -> SyncStats:
        return SyncStats(**{f.name: getattr(self, f.name) for f in fields(self)})
