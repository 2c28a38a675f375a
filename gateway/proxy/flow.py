"""The proxied routes' request flow: authenticate, reserve, forward. Plain ASGI.

One request, in order: the API key is checked from the in-process cache (``accounts.keycache``);
a small body (<= ``BUFFER_LIMIT`` with a ``Content-Length``) is read; one ``EVALSHA`` reserves
the route's cost (credits and rate together); the request goes upstream with signed
``X-Gateway-*`` headers, the body streamed when large; then ``relay`` streams the answer back
and charges (2xx) or refunds (any other status). Along the way:

- refused before anything is held (``answers``): 401, 400 for a malformed
  ``Idempotency-Key``, 422 for one first used for another request, 429
  ``insufficient_credits`` / ``rate_limited``, the kept first answer or 409 for an
  ``Idempotency-Key`` seen before (``replays``); Redis or store outages: 503 ``unavailable``.
- timeout before the answer: 504 ``gateway_timeout``; connection refused / reset: 502
  ``bad_gateway``; a client gone before the answer: the upstream call is cancelled. All refunded.
  (creditgate's own server says when a client is gone; under another ASGI server a task waits
  on ``receive``, for a streamed request body once the body is read.)
- a request alive longer than the reservation's hold (``upstream_timeout`` + grace), e.g. a
  long stream, keeps its hold alive until it settles, so the reaper leaves it alone.
- a reserve interrupted (Redis failed, or the request was cancelled) is released; any other
  error after the reserve refunds the hold before it propagates.

The request does not wait for its settle, and a cancelled request still settles or refunds:
``holds`` owns what becomes of the reservation after the answer, its retries, and shutdown's
wait. Each request is counted once, by its ``Outcome`` (``exchange``), and, when the access
line or tracing is on, leaves its ``Trail`` (``trail``) at the same place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope, Send

from gateway.accounts.keycache import KeyCache, authorization_of
from gateway.credits.engine import CreditEngine
from gateway.credits.results import Reservation
from gateway.credits.scopes import KeyRules
from gateway.errors import IdempotencyMismatch, InvalidRequest, Unauthorized, Unavailable
from gateway.metrics import Metrics
from gateway.proxy import answers, pricing, relay
from gateway.proxy import headers as hdr
from gateway.proxy.bodies import (
    ClientGone,
    client_gone,
    has_chunked_body,
    read_body,
    send_error,
    stream_body,
    wait_disconnect,
    wait_disconnect_after,
)
from gateway.proxy.connection import Answer
from gateway.proxy.exchange import Exchange, Keep, Outcome
from gateway.proxy.holds import Holds, Restore
from gateway.proxy.idempotency import Reserve, base_request_id, reserve_idempotent, valid_key
from gateway.proxy.replays import FirstAnswer, Replays, fingerprint
from gateway.proxy.trail import Trail
from gateway.proxy.upstream import Upstream
from gateway.settings import Route
from gateway.signing import signed_headers

if TYPE_CHECKING:
    from gateway.tracing import Tracing

log = logging.getLogger("creditgate.proxy")

BUFFER_LIMIT = 1_048_576
"""Request bodies up to this size (with a Content-Length) are read before reserving."""


class Proxy:
    """Takes each proxied request from its key to the backend's answer; built once per process
    by the app's lifespan, with the ``Holds`` that settle and refund after the answer.

    ``access_log``: one ``creditgate.access`` line per request; ``tracing``: a span per request,
    with its reserve and backend call, the trace context passed to the backend. Either makes
    each request a ``Trail``; with neither (the default) the flow's only cost is the checks.
    """

    def __init__(
        self,
        *,
        engine: CreditEngine,
        keys: KeyCache,
        upstream: Upstream,
        metrics: Metrics,
        secret: bytes,
        restore: Restore,
        holds: Holds,
        replays: Replays | None = None,
        access_log: bool = False,
        tracing: Tracing | None = None,
    ) -> None:
        self.engine = engine
        self.keys = keys
        self.upstream = upstream
        self.metrics = metrics
        self.secret = secret
        self.restore = restore
        self.holds = holds
        self.replays = replays
        self.access_log = access_log
        self.tracing = tracing
        self.observed = access_log or tracing is not None

    # -- admission -------------------------------------------------------------------------

    async def handle(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        idem_key = content_length = None
        for name, value in scope["headers"]:
            if name == b"idempotency-key":
                idem_key = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value
        request_id = secrets.token_hex(16)
        trail = None
        if self.observed:
            trail = Trail(route, scope, request_id, send, log=self.access_log, tracing=self.tracing)
            send = trail.send
        outcome: Outcome = "error"
        try:
            outcome = await self._admit(
                route,
                scope,
                receive,
                send,
                idem_key,
                content_length,
                request_id,
                trail,
            )
        finally:
            # Every proxied request ends here, whatever became of it.
            self.metrics.requests(route.prefix, outcome).inc()
            if trail is not None:
                trail.end(outcome)

    async def _admit(
        self,
        route: Route,
        scope: Scope,
        receive: Receive,
        send: Send,
        idem_key: str | None,
        content_length: bytes | None,
        request_id: str,
        trail: Trail | None,
    ) -> Outcome:
        rid_header = [(b"x-request-id", request_id.encode())]
        style = route.errors
        try:
            caller = await self.keys.authenticate(authorization_of(scope["headers"]))
        except InvalidRequest as exc:
            await send_error(send, exc, rid_header, style=style)
            return "invalid"
        except Unauthorized as exc:
            await send_error(send, exc, rid_header, style=style)
            return "unauthorized"
        except Unavailable as exc:
            self.metrics.store_errors.inc()
            await send_error(send, exc, rid_header, style=style)
            return "unavailable"
        if trail is not None:
            trail.caller = caller
        if idem_key is not None and not valid_key(idem_key):
            await answers.refuse_idempotency_key(send, rid_header, style)
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

        keep: Keep | None = None
        base_id = ""
        if idem_key is not None and self.replays is not None:
            base_id = base_request_id(caller.account_id, idem_key)
            asked = fingerprint(
                scope["method"],
                scope["path"],
                scope.get("query_string", b""),
                body,
                content_length.decode("latin-1") if content_length is not None else "chunked",
            )
            try:
                await self.replays.claim(caller.account_id, base_id, asked)
            except (IdempotencyMismatch, Unavailable) as exc:
                await send_error(send, exc, rid_header, style=style)
                return "mismatch" if isinstance(exc, IdempotencyMismatch) else "unavailable"
            keep = functools.partial(self._keep, caller.account_id, base_id, asked)

        hold = pricing.hold_of(route, body)
        least = route.cost if pricing.metered(route) else None
        rules = caller.rules
        ask: Reserve = functools.partial(
            self._ask,
            caller.account_id,
            hold,
            least,
            caller.key_id,
            rules,
            route.prefix,
            scope["path"],
        )
        reserve: Awaitable[tuple[Reservation, str]] = self._reserve(
            caller.account_id, request_id, idem_key, ask, hold
        )
        if self.tracing is not None:
            reserve = self.tracing.run("redis reserve", reserve, {"creditgate.cost": hold})
        try:
            reservation, request_id = await reserve
        except (Unavailable, asyncio.CancelledError) as exc:
            # The script may have run before the failure or the cancellation: give back
            # whatever it held now rather than at the reaper's deadline. (Not for an
            # Idempotency-Key: its id may belong to an attempt in flight elsewhere.)
            if idem_key is None:
                self.holds.release(caller.account_id, request_id)
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.warning("reserve failed: %s", exc, extra={"request_id": request_id})
            await send_error(send, exc, rid_header, style=style)
            return "unavailable"
        rid_header = [(b"x-request-id", request_id.encode())]
        if trail is not None:
            trail.request_id = request_id  # an Idempotency-Key's request id is derived from it
        self.metrics.reservations(reservation.status).inc()
        if reservation.status != "ok":
            if keep is not None and reservation.state == "charged":
                if await self._replay(send, caller.account_id, base_id):
                    return "replayed"
            return await answers.refuse(send, reservation, rid_header, style)
        self.holds.opened(request_id)
        exchange = Exchange(route, caller, request_id, reservation, keep=keep)
        if trail is not None:
            trail.exchange = exchange
        try:
            return await self._forward(exchange, scope, receive, send, body, trail)
        except BaseException:
            # Whatever went wrong, the reservation must not stay held: refunding a request
            # that was already settled changes nothing, so this is always safe.
            await self.holds.refund(caller.account_id, request_id, "gateway error")
            raise

    async def _keep(self, account: str, base_id: str, asked: str, answer: FirstAnswer) -> None:
        """Keep a charged answer for the retries of its ``Idempotency-Key`` if it fits."""
        if self.replays is not None and self.replays.fits(len(answer.body)):
            await self.replays.keep(account, base_id, asked, answer)

    async def _replay(self, send: Send, account: str, base_id: str) -> bool:
        """Send the kept first answer of a charged ``Idempotency-Key``; False if none was kept."""
        assert self.replays is not None
        first = await self.replays.first_answer(account, base_id)
        if first is None:
            return False
        start = {"type": "http.response.start", "status": first.status, "headers": first.replayed()}
        await send(start)
        await send({"type": "http.response.body", "body": first.body, "more_body": False})
        return True

    def _ask(
        self,
        account: str,
        cost: int,
        least: int | None,
        key_id: str,
        rules: KeyRules | None,
        prefix: str,
        path: str,
        request_id: str,
        retain_ms: int | None,
    ) -> Awaitable[Reservation]:
        """The engine's reserve of one request (``idempotency.Reserve``)."""
        return self.engine.reserve(
            account,
            request_id,
            cost,
            retain_ms=retain_ms,
            least=least,
            key_id=key_id,
            rules=rules,
            route=prefix,
            path=path,
        )

    async def _reserve(
        self, account: str, request_id: str, idem_key: str | None, ask: Reserve, cost: int
    ) -> tuple[Reservation, str]:
        for attempt in range(2):
            if idem_key is not None:
                reservation, request_id = await reserve_idempotent(ask, account, idem_key)
            else:
                reservation = await ask(request_id, None)
                if reservation.status == "duplicate" and reservation.state == "held":
                    # This id is ours alone: a client that retried the script after a lost
                    # reply (redis-py's cluster client does) finds our own hold. It is held.
                    reservation = dataclasses.replace(reservation, status="ok", hold=cost)
            if reservation.status != "missing" or attempt:
                break
            if await self.restore(account) is None:
                break
        return reservation, request_id

    # -- upstream --------------------------------------------------------------------------

    async def _forward(
        self,
        ex: Exchange,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes | None,
        trail: Trail | None,
    ) -> Outcome:
        method: str = scope["method"]
        path: str = scope["path"]
        raw_path: bytes = scope.get("raw_path") or path.encode()
        query: bytes = scope.get("query_string", b"")
        target = raw_path.decode("latin-1")
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
        # creditgate's server says when the client is gone (``heads``); under another, a task
        # waits on ``receive`` for it (for a streamed body, once the body is read).
        gone = client_gone(scope)
        watch: asyncio.Future[Any]
        if body is not None:
            data = body
            watch = gone if gone is not None else asyncio.ensure_future(wait_disconnect(receive))
        else:
            read = asyncio.Event()
            data = stream_body(receive, read)
            if gone is not None:
                watch = gone
            else:
                watch = asyncio.ensure_future(wait_disconnect_after(read, receive))
        stop_keep_alive = self.holds.keep_alive(ex.caller.account_id, ex.request_id)
        started = time.perf_counter()
        try:
            try:
                call: Awaitable[Answer] = self._request(
                    watch, method, ex.route.upstream, target, fwd, data
                )
                if trail is not None:
                    call = trail.upstream(call, fwd)  # timed; traced: fwd gets the traceparent
                response = await call
            except ClientGone:
                await self.holds.refund(ex.caller.account_id, ex.request_id, "client disconnected")
                return "client_gone"
            except TimeoutError:
                return await relay.fail(
                    self.holds, ex, send, "gateway_timeout", "the backend timed out"
                )
            except OSError as exc:  # the connection refused, failed or broke (UpstreamError)
                log.warning(
                    "upstream %s unreachable: %s",
                    ex.route.prefix,
                    type(exc).__name__,
                    extra={"request_id": ex.request_id},
                )
                return await relay.fail(
                    self.holds, ex, send, "bad_gateway", "the backend is unreachable"
                )
            self.metrics.upstream_latency(ex.route.prefix).observe(time.perf_counter() - started)
            async with response:
                return await relay.respond(self.holds, ex, response, send, watch, method)
        finally:
            stop_keep_alive()
            if watch is not gone and not watch.done():
                watch.cancel()

    async def _request(
        self,
        watch: asyncio.Future[Any],
        method: str,
        url: str,
        target: str,
        headers: list[tuple[str, str]],
        data: bytes | AsyncIterator[bytes],
    ) -> Answer:
        """The backend's answer (its headers), or ``ClientGone`` when ``watch`` sees the client
        leave first: the wait is cancelled and the upstream connection closed. The client's
        read timeout (``upstream_timeout``) bounds the wait. Awaited in the
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
            upstream = self.upstream
            return await upstream.request(method, upstream.origin(url), target, headers, data)
        except asyncio.CancelledError:
            if left and task.uncancel() == 0:
                raise ClientGone from None
            raise  # this request itself is cancelled (the server is stopping)
        finally:
            waiting = False
            # The server's future outlives the request (it ends with the request's cycle):
            # it must not keep this task, or call back into it.
            watch.remove_done_callback(client_left)
