"""The proxied routes: authenticate, reserve, forward, stream back, settle. Plain ASGI.

One request, in order: the API key is checked from the in-process cache (``accounts.keycache``);
a small body (<= ``BUFFER_LIMIT`` with a ``Content-Length``) is read; one ``EVALSHA`` reserves
the route's cost (credits and rate together); the request goes upstream with signed
``X-Gateway-*`` headers, the body streamed when large; the answer streams back; then:

- 2xx: charged after the last byte, with the tokens the backend reported (``gateway.proxy.tokens``).
  A JSON-object body is buffered (up to ``JSON_LIMIT``) to read its ``usage`` and gain
  ``creditInfo``; its figures are the reservation's plus this request's tokens, and the
  settle runs right after the answer is sent (one Redis round trip less on the path). Any
  other body (SSE included) is streamed as it arrives, so its headers are sent before the
  tokens are known: they carry the reservation's figures (``X-Credits-Charged`` = the cost,
  ``X-Tokens-Used`` = the backend's ``X-Tokens-Used`` header or the estimate ``cost x 2000``);
  the charge itself uses the final SSE event's ``usage.total_tokens`` when there is one.
- any other status: refunded before the headers are sent (``X-Credits-Charged: 0``).
- timeout before the answer: 504 ``gateway_timeout``; connection refused / reset: 502
  ``bad_gateway``; a client gone before the answer: the upstream call is cancelled. All refunded.
- a client gone in the middle of a 2xx stream: charged (the backend did the work), with the
  tokens seen so far or the estimate; noticed at the backend's next chunk, when the upstream
  stream is closed. (A streamed request body's client is watched once the body is read.)
- a backend that breaks in the middle of a 2xx stream: refunded, the client's stream cut.
- a request alive longer than the reservation's hold (``upstream_timeout`` + grace), e.g. a
  long stream: its deadline is pushed out every third of the hold (``engine.extend``) until
  it settles, so the reaper leaves it alone.

Redis or store outages answer 503 ``unavailable`` before anything is held. The request does
not wait for its settle: it is a future of the engine's batcher (it rides with the next
reserve's round trip), retried by a task if it fails; refunds are tasks. ``InFlight`` tracks
them all: a cancelled request still settles or refunds, and shutdown awaits them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from starlette.types import Receive, Scope, Send
from yarl import URL

from gateway.accounts.keycache import Caller, KeyCache
from gateway.accounts.usage import credit_info
from gateway.credits.engine import CreditEngine
from gateway.credits.results import AccountState, Reservation, Settlement
from gateway.errors import Unauthorized, Unavailable, error_body
from gateway.metrics import Metrics
from gateway.proxy import headers as hdr
from gateway.proxy import tokens as tok
from gateway.proxy.bodies import (
    ClientGone,
    has_chunked_body,
    is_json,
    read_body,
    send_error,
    send_json,
    splice_credit_info,
    stream_body,
    wait_disconnect,
    wait_disconnect_after,
)
from gateway.proxy.idempotency import reserve_idempotent, valid_key
from gateway.settings import Route
from gateway.signing import signed_headers

log = logging.getLogger("creditgate.proxy")

BUFFER_LIMIT = 1_048_576
"""Request bodies up to this size (with a Content-Length) are read before reserving."""
JSON_LIMIT = 8_388_608
"""2xx JSON bodies up to this size gain ``creditInfo``; larger ones stream untouched."""

ANSWER_FACTS = frozenset({b"x-tokens-used", b"content-length", b"content-encoding"})
"""The backend's response headers that decide how its answer is read and charged."""

SETTLE_RETRIES = (0.05, 0.25, 1.0)
"""Pauses between the attempts of a settle whose Redis call failed."""

T = TypeVar("T")
Restore = Callable[[str], Awaitable[AccountState | None]]


class InFlight:
    """Settles and refunds in flight: they finish even if the request is cancelled, and
    shutdown waits for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def track(self, outcome: asyncio.Future[T]) -> asyncio.Future[T]:
        """Keep ``outcome`` (a task or a future) until it is done."""
        self._tasks.add(outcome)
        outcome.add_done_callback(self._tasks.discard)
        return outcome

    def spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        return self.track(asyncio.ensure_future(work))

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """``spawn``, then wait for the outcome; cancelling the waiter leaves the work be."""
        return await asyncio.shield(self.spawn(work))

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait for every settle still running (lifespan shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


@dataclass(slots=True)
class Exchange:
    """One proxied request's facts, passed between the steps."""

    route: Route
    caller: Caller
    request_id: str
    reservation: Reservation

    @property
    def state(self) -> AccountState:
        assert self.reservation.account is not None
        return self.reservation.account


class Proxy:
    """Handles one proxied request end to end; built once per process by the app's lifespan."""

    def __init__(
        self,
        *,
        engine: CreditEngine,
        keys: KeyCache,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        secret: bytes,
        restore: Restore,
    ) -> None:
        self.engine = engine
        self.keys = keys
        self.session = session
        self.metrics = metrics
        self.secret = secret
        self.restore = restore
        self.inflight = InFlight()

    # -- admission -------------------------------------------------------------------------

    async def handle(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = idem_key = content_length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"idempotency-key":
                idem_key = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value
        outcome = "error"
        try:
            outcome = await self._admit(
                route, scope, receive, send, authorization, idem_key, content_length
            )
        finally:
            self.metrics.requests.inc(route=route.prefix, outcome=outcome)

    async def _admit(
        self,
        route: Route,
        scope: Scope,
        receive: Receive,
        send: Send,
        authorization: str | None,
        idem_key: str | None,
        content_length: bytes | None,
    ) -> str:
        request_id = secrets.token_hex(16)
        rid_header = [(b"x-request-id", request_id.encode())]
        try:
            caller = await self.keys.authenticate(authorization)
        except Unauthorized as exc:
            await send_error(send, exc, rid_header)
            return "unauthorized"
        except Unavailable as exc:
            self.metrics.store_errors.inc()
            await send_error(send, exc, rid_header)
            return "unavailable"
        if idem_key is not None and not valid_key(idem_key):
            invalid = error_body(
                "invalid_request", "Idempotency-Key must be 1 to 255 printable ASCII characters"
            )
            await send_json(send, 400, invalid, rid_header)
            return "invalid"

        body: bytes | None = None
        if content_length is not None and content_length.isdigit():
            if int(content_length) <= BUFFER_LIMIT:
                try:
                    body = await read_body(receive)
                except ClientGone:
                    return "client_gone"
        elif content_length is None and not has_chunked_body(scope):
            body = b""

        try:
            reservation, request_id = await self._reserve(
                caller.account_id, request_id, idem_key, route.cost
            )
        except (Unavailable, asyncio.CancelledError) as exc:
            # The script may have run before the failure or the cancellation: give back
            # whatever it held now rather than at the reaper's deadline. (Not for an
            # Idempotency-Key: its id may belong to an attempt in flight elsewhere.)
            if idem_key is None:
                self._release(caller.account_id, request_id)
            if isinstance(exc, asyncio.CancelledError):
                raise
            self.metrics.redis_errors.inc(op="reserve")
            log.warning("reserve failed: %s", exc, extra={"request_id": request_id})
            await send_error(send, exc, rid_header)
            return "unavailable"
        rid_header = [(b"x-request-id", request_id.encode())]
        self.metrics.reservations.inc(status=reservation.status)
        if reservation.status != "ok":
            return await self._refuse(send, reservation, rid_header)
        exchange = Exchange(route, caller, request_id, reservation)
        try:
            return await self._forward(exchange, scope, receive, send, body)
        except BaseException:
            # Whatever went wrong, the reservation must not stay held: refunding a request
            # that was already settled changes nothing, so this is always safe.
            await self._refund(exchange, "gateway error")
            raise

    async def _reserve(
        self, account: str, request_id: str, idem_key: str | None, cost: int
    ) -> tuple[Reservation, str]:
        for attempt in range(2):
            if idem_key is not None:
                reservation, request_id = await reserve_idempotent(
                    self.engine, account, idem_key, cost
                )
            else:
                reservation = await self.engine.reserve(account, request_id, cost)
                if reservation.status == "duplicate" and reservation.state == "held":
                    # This id is ours alone: a client that retried the script after a lost
                    # reply (redis-py's cluster client does) finds our own hold. It is held.
                    reservation = dataclasses.replace(reservation, status="ok")
            if reservation.status != "missing" or attempt:
                break
            if await self.restore(account) is None:
                break
        return reservation, request_id

    async def _refuse(
        self, send: Send, reservation: Reservation, rid_header: hdr.RawHeaders
    ) -> str:
        state = reservation.account
        if state is None:  # missing, and the store does not know the account either
            await send_error(send, Unauthorized("unknown account"), rid_header)
            return "unauthorized"
        fields = [
            *rid_header,
            *hdr.ratelimit_fields(state, reservation.rate_remaining, reservation.rate_wait_ms),
        ]
        if reservation.status == "insufficient":
            body = error_body(
                "insufficient_credits",
                f"this request costs more than the {state.credits_remaining} credits left",
                creditInfo=credit_info(state, 0),
            )
            retry = max(1, math.ceil(state.ms_to_period_end / 1000))
            fields += [(b"retry-after", str(retry).encode()), (b"x-should-retry", b"false")]
            await send_json(send, 429, body, fields)
            return "insufficient"
        if reservation.status == "rate_limited":
            retry = max(1, math.ceil(reservation.rate_wait_ms / 1000))
            body = error_body(
                "rate_limited",
                f"over the {state.tier} tier's {state.requests_per_minute} requests per minute",
            )
            fields += [(b"retry-after", str(retry).encode()), (b"x-should-retry", b"true")]
            await send_json(send, 429, body, fields)
            return "rate_limited"
        # duplicate: an Idempotency-Key seen before.
        fields.append((b"x-credits-charged", b"0"))
        if reservation.state == "held":
            message = "a request with this Idempotency-Key is still in flight; retry later"
        elif reservation.state == "charged":
            message = "a request with this Idempotency-Key already succeeded and was charged"
            fields.append((b"idempotent-replayed", b"true"))
        else:
            message = "this Idempotency-Key failed too many times; use a new key"
        await send_json(send, 409, error_body("conflict", message), fields)
        return "conflict"

    # -- upstream --------------------------------------------------------------------------

    async def _forward(
        self, ex: Exchange, scope: Scope, receive: Receive, send: Send, body: bytes | None
    ) -> str:
        method: str = scope["method"]
        path: str = scope["path"]
        raw_path: bytes = scope.get("raw_path") or path.encode()
        query: bytes = scope.get("query_string", b"")
        target = ex.route.upstream + raw_path.decode("latin-1")
        if query:
            target += "?" + query.decode("latin-1")
        state = ex.state
        gateway = signed_headers(
            self.secret,
            method=method,
            path=path,
            account=state.account,
            tier=state.tier,
            request_id=ex.request_id,
            credits_remaining=state.credits_remaining,
        )
        client = scope.get("client")
        fwd = hdr.upstream_headers(
            scope["headers"],
            client_ip=client[0] if client else None,
            scheme=scope.get("scheme", "http"),
            gateway=gateway,
        )
        data: bytes | AsyncIterator[bytes]
        if body is not None:
            data = body
            watch = asyncio.ensure_future(wait_disconnect(receive))
        else:
            read = asyncio.Event()
            data = stream_body(receive, read)
            watch = asyncio.ensure_future(wait_disconnect_after(read, receive))
        stop_keep_alive = self._keep_alive(ex)
        started = time.perf_counter()
        try:
            try:
                response = await self._request(watch, method, target, fwd, data)
            except ClientGone:
                await self._refund(ex, "client disconnected")
                return "client_gone"
            except TimeoutError:
                return await self._fail(ex, send, 504, "gateway_timeout", "the backend timed out")
            except (aiohttp.ClientError, OSError) as exc:
                log.warning(
                    "upstream %s unreachable: %s",
                    ex.route.prefix,
                    type(exc).__name__,
                    extra={"request_id": ex.request_id},
                )
                return await self._fail(ex, send, 502, "bad_gateway", "the backend is unreachable")
            self.metrics.upstream_latency.observe(
                time.perf_counter() - started, route=ex.route.prefix
            )
            async with response:
                return await self._respond(ex, response, send, watch, method)
        finally:
            stop_keep_alive()
            if not watch.done():
                watch.cancel()

    async def _request(
        self,
        watch: asyncio.Future[Any],
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        data: bytes | AsyncIterator[bytes],
    ) -> aiohttp.ClientResponse:
        """The backend's answer (its headers), or ``ClientGone`` when ``watch`` sees the client
        leave first: the wait is cancelled and aiohttp closes the upstream connection. The
        session's read timeout (``upstream_timeout``) bounds the wait. Awaited in the
        request's own task rather than a task of its own: two loop turns less a request."""
        task = asyncio.current_task()
        assert task is not None
        waiting, left = True, False

        def client_left(_: object) -> None:
            nonlocal left
            if waiting:
                left = True
                task.cancel()

        watch.add_done_callback(client_left)
        try:
            return await self.session.request(
                method, URL(target, encoded=True), headers=headers, data=data, allow_redirects=False
            )
        except asyncio.CancelledError:
            if left and task.uncancel() == 0:
                raise ClientGone from None
            raise  # this request itself is cancelled (the server is stopping)
        finally:
            waiting = False

    async def _fail(self, ex: Exchange, send: Send, status: int, code: str, message: str) -> str:
        settlement = await self._refund(ex, code)
        state = (settlement.account if settlement else None) or ex.state
        fields = [
            *hdr.credit_fields(
                remaining=state.credits_remaining, charged=0, tokens=0, request_id=ex.request_id
            ),
            *hdr.ratelimit_fields(
                state, ex.reservation.rate_remaining, ex.reservation.rate_wait_ms
            ),
        ]
        await send_json(send, status, error_body(code, message), fields)
        return code

    async def _refund(self, ex: Exchange, reason: str) -> Settlement | None:
        self.metrics.refunds.inc(reason=reason.split(" ")[0])
        try:
            return await self.inflight.run(
                self.engine.refund(ex.caller.account_id, ex.request_id, reason=reason)
            )
        except Unavailable as exc:
            # The reaper refunds the reservation when its deadline passes.
            self.metrics.redis_errors.inc(op="refund")
            log.error("refund failed: %s", exc, extra={"request_id": ex.request_id})
            return None

    def _keep_alive(self, ex: Exchange) -> Callable[[], None]:
        """While the request is alive, push its reservation's deadline out every third of the
        hold, so the reaper refunds only reservations whose replica is gone; returns the stop.

        A timer rather than a task: most requests end long before the first beat, and then
        cancelling a timer is all this costs them.
        """
        loop = asyncio.get_running_loop()
        every = self.engine.hold_ms / 3000
        beat: asyncio.TimerHandle | asyncio.Future[None] | None = None

        async def extend() -> None:
            nonlocal beat
            try:
                alive = await self.engine.extend(ex.caller.account_id, ex.request_id)
            except Unavailable as exc:
                # The answer goes on; at worst the reaper refunds it at the old deadline.
                self.metrics.redis_errors.inc(op="extend")
                log.warning("extending the reservation failed: %s", exc)
                alive = True
            if alive:
                beat = loop.call_later(every, start)

        def start() -> None:
            nonlocal beat
            beat = asyncio.ensure_future(extend())

        def stop() -> None:
            if beat is not None:
                beat.cancel()

        beat = loop.call_later(every, start)
        return stop

    def _release(self, account: str, request_id: str) -> None:
        """Refund a reservation that may or may not exist, in the background, quietly."""

        async def release() -> None:
            try:
                await self.engine.refund(account, request_id, reason="reserve interrupted")
            except Unavailable:
                pass  # the reaper refunds it at its deadline

        self.inflight.spawn(release())

    def _settle(self, ex: Exchange, tokens: int) -> None:
        """Charge the reservation without waiting: the answer has gone out. The engine defers
        the call to share the next reserve's round trip; a failed or ``missing`` attempt is
        retried in a task of its own (``_charge``). Shutdown awaits both (``InFlight``)."""
        settled = self.engine.settle_soon(ex.caller.account_id, ex.request_id, tokens)
        self.inflight.track(settled).add_done_callback(functools.partial(self._settled, ex, tokens))

    def _settled(self, ex: Exchange, tokens: int, settled: asyncio.Future[Settlement]) -> None:
        if settled.cancelled():  # shutdown gave up waiting: the reaper refunds the hold
            log.error("settle abandoned at shutdown", extra={"request_id": ex.request_id})
            return
        error = settled.exception()
        if error is None and settled.result().status != "missing":
            self._count(settled.result())
            return
        if error is not None:
            self.metrics.redis_errors.inc(op="settle")
            if not isinstance(error, Unavailable):
                log.error("settle failed: %r", error, extra={"request_id": ex.request_id})
        self.inflight.spawn(self._charge(ex, tokens, restore_first=error is None))

    async def _charge(self, ex: Exchange, tokens: int, *, restore_first: bool) -> None:
        """Settle again after a failed attempt: one lost round trip must not turn a success
        into the reaper's refund (settles are idempotent). An account Redis lost meanwhile
        is restored from the store first (``restore_first``: the last answer was missing)."""
        account = ex.caller.account_id
        for pause in SETTLE_RETRIES:
            await asyncio.sleep(pause)
            try:
                if restore_first:
                    await self.restore(account)
                settled = await self.engine.settle(account, ex.request_id, tokens)
            except Unavailable as exc:
                self.metrics.redis_errors.inc(op="settle")
                log.warning("settle retry failed: %s", exc, extra={"request_id": ex.request_id})
                continue
            if settled.status != "missing":
                self._count(settled)
                return
            restore_first = True
        log.error(
            "settle failed %d times; the reaper will refund the reservation",
            len(SETTLE_RETRIES) + 1,
            extra={"request_id": ex.request_id},
        )

    def _count(self, settled: Settlement) -> None:
        self.metrics.settles.inc()
        if settled.status == "charged":  # not a repeat of a settle that had landed
            self.metrics.settled_credits.inc(settled.credits)

    # -- answer ----------------------------------------------------------------------------

    async def _respond(
        self,
        ex: Exchange,
        response: aiohttp.ClientResponse,
        send: Send,
        watch: asyncio.Future[Any] | None,
        method: str,
    ) -> str:
        raw = response.raw_headers
        status = response.status
        if not 200 <= status < 300:
            settlement = await self._refund(ex, f"upstream {status}")
            state = (settlement.account if settlement else None) or ex.state
            fields = [
                *hdr.client_headers(raw, keep_length=True),
                *hdr.credit_fields(
                    remaining=state.credits_remaining, charged=0, tokens=0, request_id=ex.request_id
                ),
                *hdr.ratelimit_fields(
                    state, ex.reservation.rate_remaining, ex.reservation.rate_wait_ms
                ),
            ]
            await send({"type": "http.response.start", "status": status, "headers": fields})
            await self._pipe(response, send, watch, None)
            return "refunded"

        facts = hdr.pick(raw, ANSWER_FACTS)
        header_tokens = tok.from_header(facts.get(b"x-tokens-used"))
        length = facts.get(b"content-length")
        if (
            method != "HEAD"
            and status not in (204, 205, 304)
            and is_json(response.content_type if "content-type" in response.headers else None)
            and b"content-encoding" not in facts
            and (length is None or (length.isdigit() and int(length) <= JSON_LIMIT))
        ):
            return await self._respond_json(ex, response, send, header_tokens)

        sse = response.content_type == "text/event-stream"
        shown_tokens = header_tokens if header_tokens is not None else tok.estimate(ex.route.cost)
        state = ex.state
        fields = [
            *hdr.client_headers(raw, keep_length=True),
            *hdr.credit_fields(
                remaining=state.credits_remaining,
                charged=ex.route.cost,
                tokens=shown_tokens,
                request_id=ex.request_id,
            ),
            *hdr.ratelimit_fields(
                state, ex.reservation.rate_remaining, ex.reservation.rate_wait_ms
            ),
        ]
        await send({"type": "http.response.start", "status": status, "headers": fields})
        usage = tok.SseUsage() if sse else None
        outcome = await self._pipe(response, send, watch, usage)
        if outcome == "broken":
            await self._refund(ex, "upstream broke mid-stream")
            return "refunded"
        tokens = usage.tokens if usage is not None and usage.tokens is not None else shown_tokens
        self._settle(ex, tokens)
        return "charged" if outcome == "complete" else "charged_client_gone"

    async def _respond_json(
        self,
        ex: Exchange,
        response: aiohttp.ClientResponse,
        send: Send,
        header_tokens: int | None,
    ) -> str:
        try:
            body = await response.content.read()  # bounded by the Content-Length check
        except (aiohttp.ClientError, OSError, TimeoutError):
            return await self._fail(ex, send, 502, "bad_gateway", "the backend's answer broke off")
        document: object = None
        if body:
            try:
                document = json.loads(body)
            except ValueError:
                document = None
        tokens = tok.from_document(document)
        if tokens is None:
            tokens = header_tokens if header_tokens is not None else tok.estimate(ex.route.cost)
        # The figures are the reservation's (credits were taken when it was held) plus this
        # request's tokens, so the answer goes out before the settle: one Redis round trip
        # less on the response path. Concurrent requests of the account are not reflected.
        state = ex.state
        if isinstance(document, dict):
            body = splice_credit_info(body, credit_info(state, tokens, unsettled=True))
        fields = [
            *hdr.client_headers(response.raw_headers, keep_length=False),
            (b"content-length", str(len(body)).encode()),
            *hdr.credit_fields(
                remaining=state.credits_remaining,
                charged=ex.route.cost,
                tokens=tokens,
                request_id=ex.request_id,
            ),
            *hdr.ratelimit_fields(
                state, ex.reservation.rate_remaining, ex.reservation.rate_wait_ms
            ),
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": fields})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        self._settle(ex, tokens)
        return "charged"

    async def _pipe(
        self,
        response: aiohttp.ClientResponse,
        send: Send,
        watch: asyncio.Future[Any] | None,
        usage: tok.SseUsage | None,
    ) -> str:
        """Stream the backend's body to the client: ``complete``, ``client_gone`` or ``broken``."""
        try:
            async for chunk in response.content.iter_any():
                if usage is not None:
                    usage.feed(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if watch is not None and watch.done():
                    response.close()
                    return "client_gone"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("upstream stream broke: %s", type(exc).__name__)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return "broken"
        if usage is not None:
            usage.close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return "complete"
