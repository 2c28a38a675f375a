"""Replayed answers of ``Idempotency-Key`` requests, in-process: what is kept and what is not,
the fingerprint, and the kept answer's encoding. (Across processes: ``tests/e2e``.)"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.accounts.operations import create_account
from gateway.app import create_app
from gateway.credits import keys
from gateway.errors import IdempotencyMismatch
from gateway.proxy.idempotency import base_request_id
from gateway.proxy.replays import FirstAnswer, Replays, fingerprint
from gateway.services import Services
from gateway.settings import Settings
from tests.support.gateways import wait_settled


@pytest.fixture
async def small(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """The app keeping answers of at most 40 bytes."""
    small = dataclasses.replace(settings, replay_max_bytes=40)
    app = create_app(small, services=services)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            yield http


async def test_an_answer_over_the_limit_is_not_kept(
    small: httpx.AsyncClient, services: Services, real_redis: aioredis.Redis
) -> None:
    payer = await create_account(services, tier="pro", months=1)
    auth = {"Authorization": f"Bearer {payer.api_key}"}
    short = await small.get("/api/projects/x", headers={**auth, "Idempotency-Key": "short"})
    # {"size":0,"method":"GET"} plus creditInfo: past 40 bytes
    assert len(short.content) > 40
    await wait_settled(services, payer.account_id, total_tokens=2000)  # no usage: the estimate
    retry = await small.get("/api/projects/x", headers={**auth, "Idempotency-Key": "short"})
    assert retry.status_code == 409 and retry.headers["idempotent-replayed"] == "true"
    kept = await real_redis.get(
        keys.account_keys(payer.account_id).replay(base_request_id(payer.account_id, "short"))
    )
    assert kept is not None and '"answer"' not in kept  # the claim only
    state = await services.credits.status(payer.account_id)
    assert state is not None and state.credits_remaining == 99


async def test_the_claim_refuses_another_request_for_the_key(real_redis: aioredis.Redis) -> None:
    replays = Replays(real_redis, max_bytes=100)
    first = fingerprint("POST", "/v1/x", b"", b"{}", "2")
    await replays.claim("acct", "idem-1", first)
    await replays.claim("acct", "idem-1", first)  # the same request: fine
    with pytest.raises(IdempotencyMismatch):
        await replays.claim("acct", "idem-1", fingerprint("POST", "/v1/x", b"", b"{ }", "3"))
    name = keys.account_keys("acct").replay("idem-1")
    assert 0 < await real_redis.pttl(name) <= 86_400_000


async def test_a_kept_answer_comes_back_byte_for_byte(real_redis: aioredis.Redis) -> None:
    replays = Replays(real_redis, max_bytes=100)
    asked = fingerprint("GET", "/v1/x", b"a=1", b"", "0")
    await replays.claim("acct", "idem-2", asked)
    assert await replays.first_answer("acct", "idem-2") is None
    body = bytes(range(256))  # not text, not JSON: the bytes count
    head = [(b"content-type", b"application/json"), (b"x-credits-charged", b"1")]
    await replays.keep("acct", "idem-2", asked, FirstAnswer(201, head, body))
    found = await replays.first_answer("acct", "idem-2")
    assert found == FirstAnswer(201, head, body)
    assert found.replayed() == [
        (b"content-type", b"application/json"),
        (b"x-credits-charged", b"0"),
        (b"idempotent-replayed", b"true"),
    ]
    await replays.claim("acct", "idem-2", asked)  # a retry's claim keeps the answer
    assert await replays.first_answer("acct", "idem-2") == found


@pytest.mark.parametrize(
    "other",
    [
        ("PUT", "/v1/x", b"", b"{}", "2"),
        ("POST", "/v1/y", b"", b"{}", "2"),
        ("POST", "/v1/x", b"q=1", b"{}", "2"),
        ("POST", "/v1/x", b"", b"[]", "2"),
        ("POST", "/v1/x", b"", None, "2"),
    ],
)
def test_the_fingerprint_counts_method_path_query_and_body(
    other: tuple[str, str, bytes, bytes | None, str],
) -> None:
    assert fingerprint(*other) != fingerprint("POST", "/v1/x", b"", b"{}", "2")
    assert fingerprint("POST", "/v1/x", b"", None, "9") != fingerprint(
        "POST", "/v1/x", b"", None, "chunked"
    )
