"""The credit engine: Redis only, and nothing of the store.

One ``.lua`` file per script (``common.lua`` their shared prelude), one typed method per script
in ``engine``, replies as the dataclasses of ``results``. Every Redis key is built in ``keys``;
``client`` connects (a URL, a Cluster, or the embedded fakeredis) and types the client at the
boundary; ``batching`` pipelines one loop turn's script calls, on ``wire``'s own connection for
a plain Redis.
"""

from __future__ import annotations

import sys

_OTEL_METRICS = "opentelemetry.sdk.metrics"


def _import_redis_without_otel_metrics() -> None:
    """Import redis-py with the OpenTelemetry metrics SDK out of its sight.

    redis-py imports that SDK whenever it is installed (``redis.observability``, for metrics
    creditgate never turns on), and with it some 60 modules, 2 MB of every process's memory
    (issue 16; it is installed with ``creditgate[otel]`` for tracing, which needs only the
    trace SDK). A module that is None in ``sys.modules`` fails to import, which redis-py
    takes for "not installed"; the entry is removed once redis-py is in, so that code that
    needs the SDK can still import it. Runs before any of this package's modules, and so
    before ``redis`` is imported by them, when this package is the first to ask for it.
    """
    if "redis" in sys.modules or _OTEL_METRICS in sys.modules:
        return
    sys.modules[_OTEL_METRICS] = None  # type: ignore[assignment]
    try:
        import redis.asyncio  # noqa: F401
    finally:
        del sys.modules[_OTEL_METRICS]


_import_redis_without_otel_metrics()
