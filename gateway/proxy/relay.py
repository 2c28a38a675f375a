"""The backend's answer, relayed to the client, and what becomes of the reservation. Plain ASGI.

- 2xx: charged after the last byte, with the tokens the backend reported (``gateway.proxy.tokens``).
  A JSON-object body is buffered (up to ``JSON_LIMIT``, whatever its framing: a chunked one
  past it streams on untouched) to read its ``usage`` and gain ``creditInfo``; its figures
  are the reservation's plus this request's tokens, and the settle runs right after the
  answer is sent (one Redis round trip less on the path). Any
  other body (SSE included) is streamed as it arrives, so its headers are sent before the
  tokens are known: they carry the reservation's figures (``X-Credits-Charged`` = the cost,
  ``X-Tokens-Used`` = the backend's ``X-Tokens-Used`` header or the estimate ``cost x 2000``);
  the charge itself uses the final SSE event's ``usage.total_tokens`` when there is one.
- any other status: refunded before the headers are sent (``X-Credits-Charged: 0``); an
  informational one as the final answer (a ``101`` nobody asked for): 502 ``bad_gateway``.
- a client gone in the middle of a 2xx stream: charged (the backend did the work), with the
  tokens seen so far or the estimate; noticed at the backend's next chunk, when the upstream
  stream is closed.
- a backend that breaks in the middle of a 2xx stream: refunded, the client's stream cut (the
  ASGI answer left incomplete: the server closes the connection without a clean end);
  a JSON answer that breaks off before it was read: 502 ``bad_gateway``, refunded (``fail``).

The charge and the refunds themselves, and their retries, are ``gateway.proxy.holds``'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import Any, Literal

from starlette.types import Send

from gateway.accounts.usage import credit_info
from gateway.proxy import answers, pricing
from gateway.proxy import headers as hdr
from gateway.proxy import tokens as tok
from gateway.proxy.bodies import is_json, splice_credit_info
from gateway.proxy.connection import Answer
from gateway.proxy.exchange import Exchange, Failure, Outcome
from gateway.proxy.holds import Holds
from gateway.proxy.replays import FirstAnswer

log = logging.getLogger("creditgate.proxy")

JSON_LIMIT = 1_048_576
"""2xx JSON bodies up to this size gain ``creditInfo``; larger ones stream untouched. A
completion's JSON is far smaller (1 MiB is some 250,000 tokens of text); the buffer is what a
gateway's memory grows by, per answer in flight, whatever the answer's size (was 8 MiB: +22 MB
of RSS at the peak of one 50 MB chunked answer)."""

ANSWER_FACTS = frozenset({b"x-tokens-used", b"content-length", b"content-encoding"})
"""The backend's response headers that decide how its answer is read and charged."""

StreamEnd = Literal["complete", "client_gone", "broken"]
"""How the backend's body ended: read to its end, the client gone, or broken off."""


async def respond(
    holds: Holds,
    ex: Exchange,
    response: Answer,
    send: Send,
    watch: asyncio.Future[Any] | None,
    method: str,
) -> Outcome:
    """Relay ``response`` to the client, then charge or refund; ``watch`` is done once the
    client is gone."""
    raw = response.raw_headers
    status = response.status
    if status < 200:
        # A 101 the client never asked for (the gateway forwards no Upgrade): relayed, it would
        # hand the client's connection to another protocol. The backend's connection is closed.
        response.close()
        return await fail(holds, ex, send, "bad_gateway", "the backend switched protocols")
    if not 200 <= status < 300:
        state = (
            await holds.refund(ex.caller.account_id, ex.request_id, f"upstream {status}")
            or ex.state
        )
        fields = answers.credit_headers(
            hdr.client_headers(raw, keep_length=True),
            state,
            ex.reservation,
            charged=0,
            tokens=0,
            request_id=ex.request_id,
        )
        await send({"type": "http.response.start", "status": status, "headers": fields})
        await _pipe(response, send, watch, None)
        return "refunded"

    facts = hdr.pick(raw, ANSWER_FACTS)
    header_tokens = tok.from_header(facts.get(b"x-tokens-used"))
    length = facts.get(b"content-length")
    if (
        method != "HEAD"
        and status not in (204, 205, 304)
        and is_json(response.content_type)
        and b"content-encoding" not in facts
        and (length is None or (length.isdigit() and int(length) <= JSON_LIMIT))
    ):
        return await _respond_json(holds, ex, response, send, watch, header_tokens, length)
    return await _stream(holds, ex, response, send, watch, header_tokens)


async def _stream(
    holds: Holds,
    ex: Exchange,
    response: Answer,
    send: Send,
    watch: asyncio.Future[Any] | None,
    header_tokens: int | None,
    first: Sequence[bytes] = (),
) -> Outcome:
    """A 2xx answer streamed as it arrives (``first``: what was read of it already), charged
    after its last byte with the reservation's figures in its headers."""
    status = response.status
    sse = response.content_type == "text/event-stream"
    held = ex.held
    shown_tokens = header_tokens if header_tokens is not None else tok.estimate(held)
    fields = answers.credit_headers(
        hdr.client_headers(response.raw_headers, keep_length=True),
        ex.state,
        ex.reservation,
        charged=held,
        tokens=shown_tokens,
        request_id=ex.request_id,
    )
    await send({"type": "http.response.start", "status": status, "headers": fields})
    usage = tok.SseUsage() if sse else None
    for part in first:
        await send({"type": "http.response.body", "body": part, "more_body": True})
    end = await _pipe(response, send, watch, usage)
    if end == "broken":
        await holds.refund(ex.caller.account_id, ex.request_id, "upstream broke mid-stream")
        return "refunded"
    reported = usage.tokens if usage is not None and usage.tokens is not None else header_tokens
    tokens = reported if reported is not None else shown_tokens
    _settle(holds, ex, tokens, pricing.charge_of(ex.route, reported, held))
    return "charged" if end == "complete" else "charged_client_gone"


def _settle(holds: Holds, ex: Exchange, tokens: int, charge: int) -> None:
    """Charge ``charge`` credits of the hold for ``tokens``, once the answer has gone out (a
    flat route's charge is its hold: the settle script takes all of it, as it always has)."""
    ex.tokens, ex.charged = tokens, charge
    metered = pricing.metered(ex.route)
    holds.settle(ex.caller.account_id, ex.request_id, tokens, charge if metered else None)


async def _read_bounded(response: Answer) -> tuple[list[bytes], bool]:
    """The body of an answer without a ``Content-Length`` (chunked, or to the close), read up
    to just past ``JSON_LIMIT``: ``(parts, True)`` when that is all of it, else the parts read
    and False (sent on as they are, never joined). Never more than ``JSON_LIMIT`` plus one
    chunk in memory, whatever the framing."""
    parts: list[bytes] = []
    size = 0
    async for chunk in response.chunks():
        parts.append(chunk)
        size += len(chunk)
        if size > JSON_LIMIT:
            return parts, False
    return parts, True


async def _respond_json(
    holds: Holds,
    ex: Exchange,
    response: Answer,
    send: Send,
    watch: asyncio.Future[Any] | None,
    header_tokens: int | None,
    length: str | None,
) -> Outcome:
    try:
        if length is not None:
            body = await response.read()  # bounded by the Content-Length check
        else:
            parts, whole = await _read_bounded(response)
            if not whole:  # too large to buffer: on untouched, as any other streamed answer
                return await _stream(holds, ex, response, send, watch, header_tokens, parts)
            body = b"".join(parts)
    except (OSError, TimeoutError):
        return await fail(holds, ex, send, "bad_gateway", "the backend's answer broke off")
    document: object = None
    if body:
        try:
            document = json.loads(body)
        except ValueError:
            document = None
    reported = tok.from_document(document)
    if reported is None:
        reported = header_tokens
    held = ex.held
    charge = pricing.charge_of(ex.route, reported, held)
    tokens = reported if reported is not None else tok.estimate(charge)
    # The figures are the reservation's (credits were taken when it was held, a metered
    # route's unused part given back by the settle) plus this request's tokens, so the answer
    # goes out before the settle: one Redis round trip less on the response path. Concurrent
    # requests of the account are not reflected.
    state = ex.state
    if charge < held:
        state = dataclasses.replace(state, plan_credits=state.plan_credits + held - charge)
    if isinstance(document, dict):
        body = splice_credit_info(body, credit_info(state, tokens, unsettled=True))
    head = hdr.client_headers(response.raw_headers, keep_length=False)
    head.append((b"content-length", str(len(body)).encode()))
    fields = answers.credit_headers(
        head, state, ex.reservation, charged=charge, tokens=tokens, request_id=ex.request_id
    )
    if ex.keep is not None:  # kept before it goes out: a retry right after it finds it
        await ex.keep(FirstAnswer(response.status, fields, body))
    await send({"type": "http.response.start", "status": response.status, "headers": fields})
    await send({"type": "http.response.body", "body": body, "more_body": False})
    _settle(holds, ex, tokens, charge)
    return "charged"


async def fail(holds: Holds, ex: Exchange, send: Send, failure: Failure, message: str) -> Failure:
    """The backend failed before its answer could be relayed: refund, then answer 502 / 504
    with the account's figures after the refund."""
    state = await holds.refund(ex.caller.account_id, ex.request_id, failure) or ex.state
    await answers.upstream_failed(
        send, failure, message, state, ex.reservation, ex.request_id, ex.route.errors
    )
    return failure


async def _pipe(
    response: Answer,
    send: Send,
    watch: asyncio.Future[Any] | None,
    usage: tok.SseUsage | None,
) -> StreamEnd:
    """Stream the backend's body to the client: ``complete``, ``client_gone`` or ``broken``
    (the client's answer then left unfinished)."""
    try:
        async for chunk in response.chunks():
            if usage is not None:
                usage.feed(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if watch is not None and watch.done():
                response.close()
                return "client_gone"
    except (OSError, TimeoutError) as exc:
        # The client's answer is left incomplete on purpose: the ASGI server then closes the
        # connection (no final empty chunk), so the client sees the stream broke instead of
        # taking a truncated body for the whole answer.
        log.warning("upstream stream broke: %s", type(exc).__name__)
        return "broken"
    if usage is not None:
        usage.close()
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return "complete"
