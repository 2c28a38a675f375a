"""``/healthz`` (the process runs), ``/readyz`` (Redis and the store answer), ``/metrics``.

Readiness checks are bounded by ``CHECK_TIMEOUT`` so a hung dependency makes the probe fail
rather than hang; a 503 names what failed, never a URL or a secret. The store is ready only at
this version's schema. The answer also says which Redis is in use (``embedded``, ``redis`` or
``cluster``) and the schema revision when ready, so a replica on the wrong one shows in one probe.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.credits.client import RedisClient
from gateway.errors import error_body
from gateway.metrics import CONTENT_TYPE
from gateway.services import Services
from gateway.settings import Settings
from store.errors import SchemaOutdated
from store.schema import head_revision

if TYPE_CHECKING:
    from sqlalchemy import Engine

CHECK_TIMEOUT = 2.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _redis_ok(redis: RedisClient) -> None:
    await redis.ping()


async def _store_ok(services: Services) -> None:
    """The store answers, at this version's schema (its revision read, nothing else)."""
    if services.direct is not None:
        await asyncio.to_thread(services.direct.check_schema)
    else:
        await asyncio.to_thread(_engine_ok, services.db)


def _engine_ok(db: Engine) -> None:
    from store.database import check_schema

    check_schema(db)


def redis_kind(settings: Settings) -> str:
    if settings.embedded_redis:
        return "embedded"
    return "cluster" if settings.redis_cluster else "redis"


async def _check(name: str, work: Any) -> tuple[str, str | None]:
    try:
        await asyncio.wait_for(work, CHECK_TIMEOUT)
    except TimeoutError:
        return name, "timed out"
    except SchemaOutdated as exc:
        return name, str(exc)
    except Exception as exc:  # any failure means not ready; report its kind only
        return name, type(exc).__name__
    return name, None


async def readyz(request: Request) -> Response:
    services = request.app.state.services
    results = await asyncio.gather(
        _check("redis", _redis_ok(services.redis)),
        _check("store", _store_ok(services)),
    )
    failed = {name: why for name, why in results if why is not None}
    checks = {name: ("ok" if why is None else f"failed: {why}") for name, why in results}
    about = {"redis": redis_kind(services.settings)}
    if failed:
        message = "not ready: " + ", ".join(f"{n} {w}" for n, w in failed.items())
        body = error_body("unavailable", message, checks=checks, **about)
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "checks": checks, **about, "schema": head_revision()})


async def metrics(request: Request) -> Response:
    """This server's figures, every worker's (``gateway.metrics``); rendered off the event loop,
    as summing the workers' files reads the disk."""
    metrics = request.app.state.metrics
    metrics.flush()  # in the loop's thread, which counts; the files are read in another
    body = await asyncio.to_thread(metrics.render)
    return Response(body, media_type=CONTENT_TYPE)


def health_routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
