"""OpenTelemetry tracing of proxied requests: the SDK set up from ``CREDITGATE_TRACING``.

This module imports ``opentelemetry`` and is itself imported only when tracing is on: the
app loads it lazily and the proxy names its types for the type checker alone. With
``CREDITGATE_TRACING=off`` (the default) no ``opentelemetry`` module is ever loaded, and a
request pays one skipped ``if`` per step for tracing.

The spans of one proxied request (the proxy makes them through ``Tracing``):

- ``proxy <METHOD> <route prefix>`` (server): the whole request, continuing the W3C
  ``traceparent`` the client sent, if any. It is the current span while the request runs, so
  whatever the request waits on nests under it.
- ``redis reserve``, ``redis refund`` (client): the credit scripts the request waits on. The
  settle of a 2xx answer is sent after the answer, not waited on: it has no span.
- ``upstream <METHOD>`` (client): the backend's call, until its answer's headers. The backend
  receives this span's ``traceparent`` (and ``tracestate``) in place of any the client sent, so
  its own spans join the trace.

creditgate's settings decide whether spans are made and how they leave (``console``: printed
to standard output, for trials; ``otlp``: OTLP over HTTP). Where they go is the SDK's own
interface, read by the SDK: ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``_HEADERS`` / ..., the sampler
(``OTEL_TRACES_SAMPLER``, default: follow the parent, else sample all) and the service's name
(``OTEL_SERVICE_NAME``, default ``creditgate``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import Token
from typing import Literal, TypeVar

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

T = TypeVar("T")
Attributes = Mapping[str, AttributeValue]

SERVICE = "creditgate"
PROPAGATED = frozenset({"traceparent", "tracestate"})
"""The W3C Trace Context headers, read from the client and written to the backend."""
W3C = TraceContextTextMapPropagator()


class RequestSpan:
    """A proxied request's span, current in its task until ``end``."""

    __slots__ = ("span", "_token")

    def __init__(self, span: Span, token: Token[Context]) -> None:
        self.span = span
        self._token = token

    def end(self, attributes: Attributes, *, error: bool) -> None:
        """Set the request's final ``attributes`` and end it; ``error``: the request failed
        on the gateway's or the backend's side (a 5xx), not the client's."""
        self.span.set_attributes(attributes)
        if error:
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()
        context.detach(self._token)


class Tracing:
    """The gateway's tracer, on its own provider (never the global one): built by the app's
    lifespan from the settings, or handed in (tests export to memory)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(SERVICE)

    @classmethod
    def exporting(cls, mode: Literal["console", "otlp"]) -> Tracing:
        """Spans batched in a background thread and exported as ``mode`` says."""
        provider = TracerProvider(resource=_resource())
        provider.add_span_processor(BatchSpanProcessor(exporter_for(mode)))
        return cls(provider)

    def shutdown(self) -> None:
        """Export what is left and stop (blocks: at shutdown, off the event loop)."""
        self.provider.shutdown()

    def start_request(
        self, name: str, headers: Iterable[tuple[bytes, bytes]], attributes: Attributes
    ) -> RequestSpan:
        """Start a request's span and make it current, continuing the client's trace context."""
        carrier: dict[str, str] = {}
        for raw_name, value in headers:
            header = raw_name.decode("latin-1").lower()
            if header in PROPAGATED:
                carrier[header] = value.decode("latin-1")
        parent = W3C.extract(carrier) if carrier else context.get_current()
        span = self.tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        return RequestSpan(span, context.attach(trace.set_span_in_context(span, parent)))

    async def run(self, name: str, call: Awaitable[T], attributes: Attributes) -> T:
        """Await ``call`` in a child span of the current one (an error marks the span)."""
        with self.tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
            return await call

    @contextmanager
    def upstream(self, method: str, headers: list[tuple[str, str]]) -> Iterator[Span]:
        """The span of a backend call, current inside the block; ``headers`` (the forwarded
        request's) carry its trace context instead of any the client sent."""
        with self.tracer.start_as_current_span(
            f"upstream {method}", kind=SpanKind.CLIENT, attributes={"http.request.method": method}
        ) as span:
            headers[:] = [(n, v) for n, v in headers if n.lower() not in PROPAGATED]
            carrier: dict[str, str] = {}
            W3C.inject(carrier)
            headers.extend(carrier.items())
            yield span


def _resource() -> Resource:
    """The SDK's resource (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``), named
    ``creditgate`` unless the environment names the service."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: SERVICE}))
    return resource


def exporter_for(mode: Literal["console", "otlp"]) -> SpanExporter:
    """Where ``mode`` sends spans; the OTLP exporter reads its ``OTEL_EXPORTER_OTLP_*``."""
    if mode == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()
