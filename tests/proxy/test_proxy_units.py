"""The proxy's parts without a server: headers both ways, token sources, creditInfo splicing,
keys, the gateway's own answers, and what becomes of a hold (settle retries, in-flight work)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.credits.results import AccountState, Reservation, Settlement
from gateway.errors import Unavailable
from gateway.metrics import Metrics
from gateway.proxy.answers import credit_headers, refuse
from gateway.proxy.bodies import ClientGone, is_json, splice_credit_info
from gateway.proxy.flow import Proxy
from gateway.proxy.headers import (
    client_headers,
    credit_fields,
    pick,
    ratelimit_fields,
    upstream_headers,
)
from gateway.proxy.holds import Holds, InFlight
from gateway.proxy.idempotency import base_request_id, valid_key
from gateway.proxy.tokens import SseUsage, estimate, from_document, from_header
from tests.support.scrapes import series, total


def holds_on(engine: object, metrics: Metrics, restore: object = None) -> Holds:
    """``Holds`` on a stand-in for the engine (and for the restore); a hold of a minute
    unless the stand-in says otherwise."""
    if not hasattr(engine, "hold_ms"):
        engine.hold_ms = 60_000  # type: ignore[attr-defined]
    return Holds(
        engine=engine,  # type: ignore[arg-type]
        metrics=metrics,
        restore=restore,  # type: ignore[arg-type]
        inflight=InFlight(),
    )


def state(**changes: object) -> AccountState:
    values: dict[str, object] = {
        "account": "acct_1",
        "plan_credits": 4,
        "bonus_credits": 3,
        "tier": "free",
        "subscribed": False,
        "subscription_ends_ms": None,
        "period_end_ms": 1_000_000 + 1_900_000_500,
        "total_tokens": 10,
        "monthly_tokens": 5,
        "version": 3,
        "allowance": 5,
        "requests_per_minute": 20,
        "now_ms": 1_000_000,
    }
    values.update(changes)
    return AccountState(**values)  # type: ignore[arg-type]


def test_upstream_headers_drop_credentials_hop_by_hop_and_spoofed_gateway_fields() -> None:
    incoming = [
        (b"host", b"gw.example"),
        (b"authorization", b"Bearer cg_secret"),
        (b"connection", b"keep-alive, x-private"),
        (b"x-private", b"drop me"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"content-length", b"12"),
        (b"x-gateway-account", b"evil"),
        (b"X-Gateway-Signature", b"00"),
        (b"x-forwarded-for", b"10.0.0.1"),
        (b"accept", b"application/json"),
        (b"accept-encoding", b"gzip, deflate"),
    ]
    out = upstream_headers(
        incoming, client_ip="127.0.0.9", scheme="https", gateway={"X-Gateway-Account": "a1"}
    )
    assert out == [
        ("accept", "application/json"),
        ("X-Forwarded-For", "10.0.0.1, 127.0.0.9"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "gw.example"),
        ("X-Gateway-Account", "a1"),
    ]


def test_client_headers_drop_what_the_gateway_sets() -> None:
    upstream = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"10"),
        (b"Transfer-Encoding", b"chunked"),
        (b"X-Credits-Remaining", b"999"),
        (b"Server", b"backend"),
        (b"X-Custom", b"kept"),
        (b"X-Hop", b"named by Connection"),
        (b"Connection", b"close, X-Hop"),
    ]
    assert client_headers(upstream, keep_length=False) == [
        (b"content-type", b"application/json"),
        (b"x-custom", b"kept"),
    ]
    assert (b"content-length", b"10") in client_headers(upstream, keep_length=True)


def test_pick_reads_named_fields_in_one_pass_first_one_wins() -> None:
    raw = [(b"X-Tokens-Used", b"42"), (b"content-length", b"7"), (b"x-tokens-used", b"9")]
    wanted = frozenset({b"x-tokens-used", b"content-length", b"content-encoding"})
    assert pick(raw, wanted) == {b"x-tokens-used": "42", b"content-length": "7"}


def test_ratelimit_fields_follow_the_draft() -> None:
    fields = dict(ratelimit_fields(state(), 7, 2500))
    assert fields[b"ratelimit-policy"] == (
        b'"credits";q=5;w=2592000;qu="credits", "minute";q=20;w=60'
    )
    assert fields[b"ratelimit"] == b'"credits";r=7;t=1900001, "minute";r=7;t=3'


def test_ratelimit_fields_omit_the_minute_without_a_rate_limit() -> None:
    fields = dict(ratelimit_fields(state(requests_per_minute=0), None, 0))
    assert fields[b"ratelimit-policy"] == b'"credits";q=5;w=2592000;qu="credits"'
    assert fields[b"ratelimit"] == b'"credits";r=7;t=1900001'


def test_credit_fields() -> None:
    assert credit_fields(remaining=3, charged=1, tokens=None, request_id="r1") == [
        (b"x-credits-remaining", b"3"),
        (b"x-credits-charged", b"1"),
        (b"x-request-id", b"r1"),
    ]


def test_credit_headers_follow_the_head_credits_then_ratelimit() -> None:
    reservation = Reservation("ok", state(), 7, 2500, "held")
    fields = credit_headers(
        [(b"content-type", b"text/plain")],
        state(bonus_credits=0),
        reservation,
        charged=2,
        tokens=4000,
        request_id="r1",
    )
    assert [name for name, _ in fields] == [
        b"content-type",
        b"x-credits-remaining",
        b"x-credits-charged",
        b"x-tokens-used",
        b"x-request-id",
        b"ratelimit-policy",
        b"ratelimit",
    ]
    assert dict(fields)[b"x-credits-remaining"] == b"4"
    assert dict(fields)[b"ratelimit"] == b'"credits";r=4;t=1900001, "minute";r=7;t=3'


@pytest.mark.parametrize(
    ("reservation", "status", "outcome", "expected"),
    [
        (
            Reservation("insufficient", state(), 20, 0, ""),
            429,
            "insufficient",
            {b"retry-after": b"1900001", b"x-should-retry": b"false"},
        ),
        (
            Reservation("rate_limited", state(), 0, 2500, ""),
            429,
            "rate_limited",
            {b"retry-after": b"3", b"x-should-retry": b"true"},
        ),
        (
            Reservation("duplicate", state(), 20, 0, "charged"),
            409,
            "conflict",
            {b"x-credits-charged": b"0", b"idempotent-replayed": b"true"},
        ),
        (
            Reservation("missing", None, None, 0, ""),
            401,
            "unauthorized",
            {b"www-authenticate": b"Bearer"},
        ),
    ],
)
async def test_refusals(
    reservation: Reservation, status: int, outcome: str, expected: dict[bytes, bytes]
) -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    assert await refuse(send, reservation, [(b"x-request-id", b"r1")], "creditgate") == outcome
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == status
    assert headers[b"x-request-id"] == b"r1"
    assert {name: headers.get(name) for name in expected} == expected
    document = json.loads(body["body"])
    assert document["success"] is False
    assert ("creditInfo" in document) == (outcome == "insufficient")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"usage": {"total_tokens": 12}}, 12),
        ({"usage": {"total_tokens": -1}}, None),
        ({"usage": {"total_tokens": True}}, None),
        ({"usage": {"total_tokens": 1.5}}, None),
        ({"usage": "many"}, None),
        ([{"usage": {"total_tokens": 12}}], None),
    ],
)
def test_tokens_from_a_document(document: object, expected: int | None) -> None:
    assert from_document(document) == expected


def test_tokens_from_header_and_estimate() -> None:
    assert from_header(" 42 ") == 42
    assert from_header("-3") is None
    assert from_header("abc") is None
    assert from_header(None) is None
    assert estimate(3) == 6000


def test_sse_usage_takes_the_last_event_split_across_chunks() -> None:
    usage = SseUsage()
    stream = (
        b'data: {"delta": "a", "usage": {"total_tokens": 5}}\n\n'
        b'data: {"delta": "b"}\r\n\r\n'
        b'data: {"usage": {"total_tokens": 4321}}\n\ndata: [DONE]\n\n'
    )
    for i in range(0, len(stream), 7):
        usage.feed(stream[i : i + 7])
    usage.close()
    assert usage.tokens == 4321


def test_sse_usage_without_usage() -> None:
    usage = SseUsage()
    usage.feed(b"data: hello\n\ndata: {not json usage}\n\n")
    usage.close()
    assert usage.tokens is None


@pytest.mark.parametrize("body", [b'{"a": 1}', b"{}", b'{"a": {"b": []}}  \n'])
def test_splice_credit_info_keeps_the_object(body: bytes) -> None:
    info = {"tokensUsed": 1, "creditsRemaining": 2, "totalTokensUsed": 3}
    spliced = json.loads(splice_credit_info(body, info))
    assert spliced == {**json.loads(body), "creditInfo": info}


def test_is_json() -> None:
    assert is_json("application/json; charset=utf-8")
    assert is_json("application/problem+json")
    assert not is_json("text/event-stream")
    assert not is_json(None)


def test_idempotency_keys() -> None:
    assert valid_key("order-42")
    assert not valid_key("")
    assert not valid_key("x" * 256)
    assert not valid_key("tab\there")
    assert base_request_id("a", "k") == base_request_id("a", "k")
    assert base_request_id("a", "k") != base_request_id("b", "k")


async def test_in_flight_settles_survive_cancellation_and_are_drained() -> None:
    inflight = InFlight()
    gate = asyncio.Event()
    done: list[str] = []

    async def settle() -> str:
        await gate.wait()
        done.append("settled")
        return "ok"

    request = asyncio.create_task(inflight.run(settle()))
    await asyncio.sleep(0)
    request.cancel()  # the client's request is cancelled mid-settle
    with pytest.raises(asyncio.CancelledError):
        await request
    assert len(inflight) == 1
    gate.set()
    await inflight.drain()
    assert done == ["settled"] and len(inflight) == 0


async def test_a_replayed_reserve_of_our_own_id_counts_as_held() -> None:
    """A Redis client that re-sent the reserve after a lost reply gets 'duplicate'/'held' for
    the gateway's own request id: that hold is the request's, not another's."""

    async def replaying(request_id: str, retain_ms: int | None) -> Reservation:
        return Reservation("duplicate", state(), 5, 0, "held")

    async def no_restore(account: str) -> None:
        return None

    proxy = Proxy(
        engine=None,  # type: ignore[arg-type]
        keys=None,  # type: ignore[arg-type]
        upstream=None,  # type: ignore[arg-type]
        metrics=Metrics(),
        secret=b"s",
        restore=no_restore,
        holds=None,  # type: ignore[arg-type]
    )
    reservation, request_id = await proxy._reserve("acct_1", "rid-1", None, replaying, 1)
    assert (reservation.status, reservation.held, request_id) == ("ok", True, "rid-1")
    assert reservation.hold == 1


@pytest.mark.parametrize("first", ["redis down", "account missing", "restore fails"])
async def test_a_background_settle_that_failed_is_retried_until_it_lands(
    first: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy does not wait on its settle; a failed first attempt (Redis unreachable, or
    the account lost, and its restore failing once) is settled again by a task that
    shutdown drains."""
    monkeypatch.setattr("gateway.proxy.holds.RETRY_FIRST_S", 0.001)
    calls: list[str] = []

    class Flaky:
        def settle_soon(
            self, account: str, request_id: str, tokens: int, charge: int | None
        ) -> asyncio.Future[Any]:
            calls.append("soon")
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            if first == "redis down":
                future.set_exception(Unavailable("redis: connection refused"))
            else:
                future.set_result(Settlement("missing", None, 0))
            return future

        async def settle(
            self, account: str, request_id: str, tokens: int, charge: int | None
        ) -> Settlement:
            calls.append("settle")
            if first == "redis down" and calls.count("settle") < 2:
                raise Unavailable("redis: still down")
            return Settlement("charged", state(), 2)

    async def restore(account: str) -> None:
        calls.append("restore")
        if first == "restore fails" and calls.count("restore") == 1:
            raise Unavailable("database: connection failed")

    metrics = Metrics()
    holds = holds_on(Flaky(), metrics, restore)
    holds.settle("acct_1", "rid-1", 4000)
    await holds.inflight.drain()
    assert (
        calls
        == {
            "redis down": ["soon", "settle", "settle"],
            "account missing": ["soon", "restore", "settle"],
            "restore fails": ["soon", "restore", "restore", "settle"],
        }[first]
    )
    metrics.flush()
    assert total(metrics.render().decode(), "creditgate_credits_charged_total") == 2


class Outage:
    """An engine whose settles and refunds fail ``failures`` times, then land."""

    def __init__(self, failures: int, *, hold_ms: int = 60_000) -> None:
        self.failures = failures
        self.hold_ms = hold_ms
        self.calls: list[str] = []

    def _call(self, name: str) -> Settlement:
        self.calls.append(name)
        if len(self.calls) <= self.failures:
            raise Unavailable("redis: connection refused")
        return Settlement("charged" if name == "settle" else "refunded", state(), 1)

    def settle_soon(
        self, account: str, request_id: str, tokens: int, charge: int | None = None
    ) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self.settle(account, request_id, tokens, charge))

    async def settle(
        self, account: str, request_id: str, tokens: int, charge: int | None = None
    ) -> Settlement:
        return self._call("settle")

    async def refund(self, account: str, request_id: str, *, reason: str) -> Settlement:
        return self._call("refund")


@pytest.mark.parametrize("what", ["settle", "refund", "release"])
async def test_settles_and_refunds_outlast_a_redis_outage(
    what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settle tried four times in 1.3 s (a refund or a release once) left a served request
    free, or a failed one held, through any longer outage: they retry until Redis answers."""
    monkeypatch.setattr("gateway.proxy.holds.RETRY_FIRST_S", 0.001)
    monkeypatch.setattr("gateway.proxy.holds.RETRY_MAX_S", 0.005)
    engine = Outage(failures=30)
    metrics = Metrics()
    holds = holds_on(engine, metrics)
    holds.opened("rid-1")
    if what == "settle":
        holds.settle("acct_1", "rid-1", 10)
    elif what == "refund":
        assert await holds.refund("acct_1", "rid-1", "upstream 500") is None  # not yet
    else:
        holds.release("acct_1", "rid-1")
    await holds.inflight.drain(timeout=30)
    assert engine.calls == ["refund" if what == "release" else what] * 31
    metrics.flush()
    text = metrics.render().decode()
    if what == "settle":
        assert total(text, "creditgate_credits_charged_total") == 1
    elif what == "refund":
        assert total(text, "creditgate_credits_refunded_total") == 1
    if what != "release":
        assert total(text, "creditgate_open_reservations") == 0


async def test_retries_stop_short_of_the_reservation_deadline(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Past its deadline the reaper refunds a hold: a settle retried beyond it would race the
    reaper, so the retries end a margin before it and the hold is the reaper's."""
    monkeypatch.setattr("gateway.proxy.holds.RETRY_FIRST_S", 0.01)
    monkeypatch.setattr("gateway.proxy.holds.RETRY_MAX_S", 0.02)
    monkeypatch.setattr("gateway.proxy.holds.DEADLINE_MARGIN_S", 0.1)
    engine = Outage(failures=1_000_000, hold_ms=400)
    holds = holds_on(engine, Metrics())
    holds.opened("rid-1")
    holds.settle("acct_1", "rid-1", 10)
    await holds.inflight.drain(timeout=30)
    assert "until its reservation's deadline; the reaper will refund it" in caplog.text
    assert "abandoned at shutdown" not in caplog.text
    assert 3 < len(engine.calls) < 100


async def test_a_short_hold_keeps_most_of_its_time_for_retries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The proof's 5 s holds with a 2 s margin left a settle 1.3 s to outlast a Redis restart
    that came as the answer went out: the reaper refunded a served request. The margin is at
    most a tenth of the hold."""
    monkeypatch.setattr("gateway.proxy.holds.RETRY_FIRST_S", 0.01)
    monkeypatch.setattr("gateway.proxy.holds.RETRY_MAX_S", 0.02)
    engine = Outage(failures=1_000_000, hold_ms=1_000)  # the 2 s margin would be all of it
    holds = holds_on(engine, Metrics())
    loop = asyncio.get_running_loop()
    holds.opened("rid-1")
    started = loop.time()
    holds.settle("acct_1", "rid-1", 10)
    await holds.inflight.drain(timeout=30)
    assert "until its reservation's deadline; the reaper will refund it" in caplog.text
    assert loop.time() - started > 0.8  # retried until 0.1 s before the deadline


async def test_shutdown_bounds_the_retries_and_names_what_it_leaves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("gateway.proxy.holds.RETRY_FIRST_S", 0.001)
    monkeypatch.setattr("gateway.proxy.holds.RETRY_MAX_S", 0.005)
    holds = holds_on(Outage(failures=1_000_000), Metrics())
    holds.opened("rid-1")
    holds.settle("acct_1", "rid-1", 10)
    await asyncio.sleep(0.05)  # retrying by now
    await holds.inflight.drain(timeout=0.1)
    assert len(holds.inflight) == 0
    abandoned = [r for r in caplog.records if "abandoned at shutdown" in r.getMessage()]
    assert [r.__dict__["request_id"] for r in abandoned] == ["rid-1"]
    assert "1 settle(s) or refund(s) still waiting on Redis" in caplog.text


async def test_a_cancelled_request_is_not_mistaken_for_a_client_gone() -> None:
    """The upstream wait is cancelled by the disconnect watcher (ClientGone) or by the server
    stopping: the latter must stay a cancellation."""
    started = asyncio.Event()

    class Hanging:
        def origin(self, url: str) -> str:
            return url

        async def request(self, *args: object, **kwargs: object) -> None:
            started.set()
            await asyncio.Event().wait()

    proxy = Proxy(
        engine=None,  # type: ignore[arg-type]
        keys=None,  # type: ignore[arg-type]
        upstream=Hanging(),  # type: ignore[arg-type]
        metrics=Metrics(),
        secret=b"s",
        restore=None,  # type: ignore[arg-type]
        holds=None,  # type: ignore[arg-type]
    )
    loop = asyncio.get_running_loop()
    for who in ("client", "server"):
        started.clear()
        watch: asyncio.Future[None] = loop.create_future()
        request = asyncio.ensure_future(proxy._request(watch, "GET", "http://x", "/", [], b""))
        await started.wait()
        if who == "client":
            watch.set_result(None)
            with pytest.raises(ClientGone):
                await request
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        else:
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request


async def test_a_hold_refunded_twice_is_closed_and_counted_once() -> None:
    """The flow refunds again after any error, whatever relay did: that repeat changes nothing
    in Redis (``refunded_before``) and nothing in the metrics."""
    answers = [Settlement("refunded", state(), 1), Settlement("refunded_before", state(), 0)]

    class Once:
        async def refund(self, account: str, request_id: str, *, reason: str) -> Settlement:
            return answers.pop(0)

    metrics = Metrics()
    holds = holds_on(Once(), metrics)
    holds.opened("rid-1")
    metrics.flush()
    assert total(metrics.render().decode(), "creditgate_open_reservations") == 1
    await holds.refund("acct_1", "rid-1", "upstream 500")
    await holds.refund("acct_1", "rid-1", "gateway error")
    metrics.flush()
    text = metrics.render().decode()
    assert total(text, "creditgate_open_reservations") == 0
    assert total(text, "creditgate_credits_refunded_total") == 1
    assert series(text, "creditgate_refunds_total", "reason") == {("upstream",): 1}
