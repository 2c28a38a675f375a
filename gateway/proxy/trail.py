"""One proxied request as an operator sees it afterwards: its access line and its span.

A ``Trail`` exists only while the access line (``CREDITGATE_ACCESS_LOG``) or tracing
(``CREDITGATE_TRACING``) is on: otherwise the flow holds None, and each step's note of a fact
is one skipped ``if``: no object, no wrapped ``send``, no extra await. The flow makes it
with the request, notes the facts as they are known (the caller, the request id, the
exchange, the backend's time) and ends it where every proxied request ends, whatever the
outcome (``Proxy.handle``). The status is what went out: ``send`` passes through the trail.

The access line (logger ``creditgate.access``, INFO) carries, as the record's fields (JSON
fields with ``CREDITGATE_LOG_FORMAT=json``): ``request_id``, ``account``, ``key_id``, ``route``
(the prefix), ``method``, ``status``, ``outcome`` (``exchange.Outcome``), ``credits``,
``tokens``, ``upstream_ms``, ``total_ms``. ``credits`` and ``tokens`` are what the request is
charged: the route's cost and the backend's tokens once the answer went out whole (or its
client left mid-stream), else 0. The settle that books them is sent after the answer and may
still be in flight when the line is written; if it fails for good, that is logged (``settle
failed``, with the request id) and the reaper refunds the hold at its deadline. Never a key, a
token or a secret: no header value is logged.

With tracing, the request's span (``gateway.tracing``) is started with the trail and ended
with it, the line's fields as its attributes; the backend's call gets a child span whose trace
context the forwarded headers carry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from starlette.types import Message, Scope, Send

from gateway.accounts.keycache import Caller
from gateway.logs import ACCESS_LOGGER
from gateway.proxy.exchange import Exchange, Outcome
from gateway.settings import Route

if TYPE_CHECKING:
    from gateway.proxy.connection import Answer
    from gateway.tracing import RequestSpan, Tracing

access = logging.getLogger(ACCESS_LOGGER)

CHARGED: frozenset[Outcome] = frozenset({"charged", "charged_client_gone"})
LINE = "%s %s %s %s account=%s key_id=%s credits=%d tokens=%d upstream_ms=%s total_ms=%s"
"""The text format's message: compact, every field of the record in a fixed order."""


class Trail:
    """A request's facts for its access line and its span, noted by the flow as they come."""

    __slots__ = (
        "route",
        "method",
        "request_id",
        "caller",
        "exchange",
        "status",
        "upstream_s",
        "_started",
        "_send",
        "_log",
        "_tracing",
        "_span",
    )

    def __init__(
        self,
        route: Route,
        scope: Scope,
        request_id: str,
        send: Send,
        *,
        log: bool,
        tracing: Tracing | None,
    ) -> None:
        self._started = time.perf_counter()
        self.route = route
        self.method: str = scope["method"]
        self.request_id = request_id
        self.caller: Caller | None = None
        self.exchange: Exchange | None = None
        self.status: int | None = None
        self.upstream_s: float | None = None
        self._send = send
        self._log = log
        self._tracing = tracing
        self._span: RequestSpan | None = None
        if tracing is not None:
            self._span = tracing.start_request(
                f"proxy {self.method} {route.prefix}",
                scope["headers"],
                {"http.request.method": self.method, "http.route": route.prefix},
            )

    async def send(self, message: Message) -> None:
        """The client's ``send``, noting the status that goes out."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)

    async def upstream(self, call: Awaitable[Answer], headers: list[tuple[str, str]]) -> Answer:
        """Await the backend's answer (``call``), timed, in its span when tracing: then
        ``headers``, the forwarded ones, carry the span's trace context."""
        started = time.perf_counter()
        try:
            if self._tracing is None:
                return await call
            with self._tracing.upstream(self.method, headers) as span:
                response = await call
                span.set_attribute("http.response.status_code", response.status)
                return response
        finally:
            self.upstream_s = time.perf_counter() - started

    def end(self, outcome: Outcome) -> None:
        """The request is over: write its access line, end its span."""
        fields = self.fields(outcome)
        if self._log:
            access.info(
                LINE,
                self.method,
                self.route.prefix,
                "-" if self.status is None else self.status,
                outcome,
                fields["account"] or "-",
                fields["key_id"] or "-",
                fields["credits"],
                fields["tokens"],
                "-" if fields["upstream_ms"] is None else fields["upstream_ms"],
                fields["total_ms"],
                extra=fields,
            )
        if self._span is not None:
            self._span.end(
                span_attributes(fields),
                error=outcome == "error" or (self.status is not None and self.status >= 500),
            )

    def fields(self, outcome: Outcome) -> dict[str, Any]:
        """The access line's fields (see the module docstring); None where not known."""
        ex = self.exchange if outcome in CHARGED else None
        return {
            "request_id": self.request_id,
            "account": None if self.caller is None else self.caller.account_id,
            "key_id": None if self.caller is None else self.caller.key_id,
            "route": self.route.prefix,
            "method": self.method,
            "status": self.status,
            "outcome": outcome,
            "credits": 0 if ex is None else ex.charged,
            "tokens": 0 if ex is None else ex.tokens,
            "upstream_ms": None if self.upstream_s is None else _ms(self.upstream_s),
            "total_ms": _ms(time.perf_counter() - self._started),
        }


def span_attributes(fields: dict[str, Any]) -> dict[str, str | int | float]:
    """The access line's fields as the request span's attributes (OpenTelemetry's HTTP
    names where there is one, ``creditgate.*`` for the rest); unknown ones are left out."""
    names = {
        "method": "http.request.method",
        "route": "http.route",
        "status": "http.response.status_code",
    }
    return {
        names.get(name, f"creditgate.{name}"): value
        for name, value in fields.items()
        if value is not None and name != "total_ms"
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
