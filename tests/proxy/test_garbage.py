"""No proxied request leaves garbage that only the cycle collector can free.

Reference counting frees a request's objects the moment it ends; objects caught in a
reference cycle wait for the collector, and a server that leaves some at every request pays
for them in collections that walk tens of thousands of objects at once: stalls of tens of
milliseconds under load (issue 16). With the collector off, requests of every kind go through
the app in-process, and then ``gc.collect()`` must find (almost) nothing.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from starlette.types import ASGIApp, Message

from gateway.accounts.operations import create_account
from gateway.app import create_app
from gateway.proxy.bodies import CLIENT_GONE
from gateway.services import open_services
from gateway.settings import Route, Tier
from tests.support.asgi import empty_body_then_gone, http_scope
from tests.support.stores import in_process_settings

REQUESTS = 40
"""Requests of each kind; the cycles found before the fix were ~14 objects each."""
WARM = 8
"""Concurrent requests of each warm-up round."""
ROUNDS = 3
SLACK = 5
"""Objects the collector may find in all: far fewer than one per request."""
KINDS = {
    "json, charged": ("big", "/api/projects/anything", 200),
    "json, charged, the server's client-gone future": ("big", "/api/projects/anything?gone", 200),
    "sse stream, charged": ("big", "/api/projects/quick-sse", 200),
    "non-2xx, refunded": ("big", "/api/projects/status?code=500", 500),
    "429, nothing held": ("empty", "/api/projects/anything", 429),
    "401, unknown key": (None, "/api/projects/anything", 401),
}


async def call(app: ASGIApp, path: str, authorization: str) -> int:
    """One GET through ``app`` with nothing between (an HTTP client in the same process would
    bring cycles of its own); the answer's status."""
    scope = http_scope("GET", path.encode(), [(b"authorization", authorization.encode())])
    if path.endswith("?gone"):  # as creditgate's own server protocol gives it (``gateway.heads``)
        scope["extensions"] = {CLIENT_GONE: {"future": asyncio.get_running_loop().create_future()}}
    statuses: list[int] = []
    answered = asyncio.Event()
    receive = empty_body_then_gone(answered)

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        elif not message.get("more_body", False):
            answered.set()

    await app(scope, receive, send)
    return statuses[0]


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_request_leaves_no_reference_cycles(
    kind: str, tmp_path: Path, redis_url: str, stub: str, real_redis: aioredis.Redis
) -> None:
    settings = in_process_settings(
        tmp_path,
        redis_url,
        tiers={"big": Tier(credits=1_000_000), "empty": Tier(credits=0)},
        routes=[Route(prefix="/api/projects/", upstream=stub)],
    )
    services = open_services(settings, redis=real_redis)
    try:
        keys = {
            tier: (await create_account(services, tier=tier)).api_key for tier in ("big", "empty")
        }
        tier, path, status = KINDS[kind]
        auth = f"Bearer {keys[tier] if tier else 'cg_live_unknown'}"
        app = create_app(settings, services=services)
        async with app.router.lifespan_context(app):
            # Warm: scripts loaded, the key cached, and Redis connections opened for overlapping
            # round trips and the key cache's watcher (opening one leaves a few cycles in
            # redis-py, once per connection).
            await asyncio.gather(*(real_redis.ping() for _ in range(WARM)))
            for _ in range(3):
                answers = await asyncio.gather(*(call(app, path, auth) for _ in range(WARM)))
                assert answers == [status] * WARM
            # The least of a few rounds: a cycle made per request shows in every round, while
            # something else's once-off cycle (a connection opened, a task of an earlier test
            # ending) falls in one round only.
            rounds = []
            for _ in range(ROUNDS):
                gc.collect()
                gc.disable()
                try:
                    for _ in range(REQUESTS):
                        assert await call(app, path, auth) == status
                    rounds.append(gc.collect())
                finally:
                    gc.enable()
        assert min(rounds) <= SLACK, (
            f"{REQUESTS} requests ({kind}) left {rounds} objects in reference cycles"
        )
    finally:
        services.db.dispose()
