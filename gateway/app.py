"""The gateway application: ``create_app(settings)`` and the uvicorn factory ``app_from_env``.

The one place the front ends meet: the proxy, the web app's routes and the admin API are
wired together here, each built by its own package without knowing the others.

Proxied prefixes are served by ``GatewayApp`` straight to the ``Proxy``, plain ASGI in front
of Starlette (the hot path skips its middleware, routing and request objects). Everything else is a
Starlette route: ``GET /api/user/usage``, health, metrics and ``/admin``; unknown paths get
the contract's JSON 404. The lifespan owns the Services (unless given), the upstream client,
the API key cache and its revocation watcher, and the tracer (unless given, and only when
``CREDITGATE_TRACING`` asks for one); on shutdown it awaits in-flight settles. The app's
``Metrics`` are handed to the proxy, and to the credit engine as its script observer.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Mount

from gateway.accounts.keycache import KeyCache, store_lookup, store_toucher
from gateway.accounts.restore import restore_from_store
from gateway.admin.console import console_routes
from gateway.admin.openapi import admin_paths
from gateway.admin.routes import admin_routes
from gateway.logs import configure_logging
from gateway.metrics import Metrics
from gateway.proxy.flow import Proxy
from gateway.proxy.holds import Holds, InFlight
from gateway.proxy.replays import Replays
from gateway.proxy.router import GatewayApp
from gateway.proxy.upstream import Upstream
from gateway.services import Services, open_services
from gateway.settings import Settings
from gateway.web.dashboard import dashboard_routes
from gateway.web.errors import EXCEPTION_HANDLERS
from gateway.web.health import health_routes
from gateway.web.history import history_routes
from gateway.web.keys import key_routes
from gateway.web.openapi import openapi_route
from gateway.web.user import user_routes

if TYPE_CHECKING:
    from gateway.tracing import Tracing

log = logging.getLogger("creditgate.app")


def signing_secret(settings: Settings) -> bytes:
    """The configured signing secret, or a random one for this process, said loudly."""
    if settings.signing_secret:
        return settings.signing_secret.encode()
    log.warning(
        "CREDITGATE_SIGNING_SECRET is not set: generated a random one for this process; "
        "backends cannot verify X-Gateway-Signature unless they are given the same secret"
    )
    return secrets.token_urlsafe(32).encode()


def open_tracing(settings: Settings) -> Tracing | None:
    """The tracer ``CREDITGATE_TRACING`` asks for, or None: with tracing off, the OpenTelemetry
    packages are never imported (the settings have checked they are installed when on)."""
    if settings.tracing == "off":
        return None
    from gateway.tracing import Tracing

    return Tracing.exporting(settings.tracing)


GC_YOUNG_THRESHOLD = 50_000
"""Allocations between collections of the youngest generation in a server (Python's: 700)."""


def tune_gc() -> None:
    """Keep the garbage collector out of the requests' tail in a long-running server.

    What exists once the app has started (modules, settings, pools) is frozen out of every
    later collection, and the youngest generation is collected every ``GC_YOUNG_THRESHOLD``
    allocations. Since no proxied request leaves a reference cycle (``tests/proxy/
    test_garbage.py``), reference counting frees nearly all a request allocates and the
    collector's count hardly moves: it then almost never runs. Chosen by the longest
    collection, not the mean (``bench/collector.py``, one worker, nginx behind, 3 rounds of
    ``wrk -c50`` then ``-c1``, the machine shared and loaded, so its latencies are noisy;
    the collections are timed inside the gateway with ``gc.callbacks``):

    ====================  ==========================  ================  ===============
    setting               collections / 1,000 req.    longest (ms)      time per req.
    ====================  ==========================  ================  ===============
    Python's (700)        43                          252 (full heap)   144 µs
    frozen, 700           64                          16                27 µs
    frozen, 50,000        0                           none              0
    ====================  ==========================  ================  ===============

    Unfrozen, the 50,000 threshold also collected nothing in those runs, but its first full
    collection walks the whole heap of modules (the 252 ms above).
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def create_app(
    settings: Settings,
    *,
    services: Services | None = None,
    server: bool = False,
    tracing: Tracing | None = None,
) -> GatewayApp:
    """The gateway as an ASGI app; ``services`` given: used and left open at shutdown.

    ``server``: this process is a server that runs nothing else (``tune_gc`` at start-up).
    ``tracing`` given: the proxy's spans go to it (left open at shutdown) whatever the
    settings say; else the settings' ``tracing`` decides.
    """
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: GatewayApp) -> AsyncIterator[None]:
        svc = services if services is not None else open_services(settings)
        svc.credits.observer = metrics.script_ran
        upstream = Upstream(read_timeout=settings.upstream_timeout)
        tracer = tracing if tracing is not None else open_tracing(settings)
        keys = KeyCache(svc.redis, store_lookup(svc), touch=store_toucher(svc))
        await keys.start()
        inflight = InFlight()
        restore = functools.partial(restore_from_store, svc)
        proxy = Proxy(
            engine=svc.credits,
            keys=keys,
            upstream=upstream,
            metrics=metrics,
            secret=signing_secret(settings),
            restore=restore,
            holds=Holds(
                engine=svc.credits,
                metrics=metrics,
                restore=restore,
                inflight=inflight,
                tracing=tracer,
            ),
            replays=Replays(svc.redis, max_bytes=settings.replay_max_bytes),
            access_log=settings.access_log,
            tracing=tracer,
        )
        app.proxy = proxy
        app.state.services = svc
        app.state.keys = keys
        app.state.proxy = proxy
        flushing = asyncio.ensure_future(metrics.flushing())
        if server:
            tune_gc()
        try:
            yield
        finally:
            app.proxy = None
            await inflight.drain()
            flushing.cancel()  # its last flush counts the drained settles
            await asyncio.gather(flushing, return_exceptions=True)
            await keys.stop()
            await upstream.close()
            if services is None:
                await svc.close()
            if tracing is None and tracer is not None:
                await asyncio.to_thread(tracer.shutdown)  # exports the last spans

    routes: list[BaseRoute] = [
        *user_routes(),
        *history_routes(),
        *key_routes(),
        *dashboard_routes(),
        *health_routes(),
        *console_routes(),
        Mount("/admin", routes=admin_routes()),
        openapi_route(admin_paths()),
    ]
    app = GatewayApp(
        routes=routes,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.route_proxied(list(settings.routes))
    app.state.settings = settings
    app.state.metrics = metrics
    return app


def app_from_env() -> GatewayApp:
    """uvicorn factory (``--workers N``): the settings ``creditgate serve`` validated and handed
    over (else from the environment, as ``creditgate serve`` reads them)."""
    settings = Settings.handed_over() or Settings.load()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, server=True)
