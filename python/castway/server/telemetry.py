"""OpenTelemetry tracing of the gRPC API: one server span per call, health checks left out.

The interceptor sits outermost, so refused calls (bad key, bad spec) are traced too, with their
status code. Spans go to the tracer provider given to the server; ``castway serve`` sets one up
from the standard ``OTEL_TRACES_EXPORTER`` variable (``console`` prints them; unset or ``none``
keeps them in process).
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from castway import __version__
from castway.server.auth import (
    HEALTH,
    Behavior,
    Continuation,
    Handler,
    Recorded,
    recorded,
    replace_behavior,
)


def provider_from_env() -> TracerProvider:
    provider = TracerProvider()
    if os.environ.get("OTEL_TRACES_EXPORTER", "none").lower() == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return provider


class TracingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, provider: TracerProvider) -> None:
        self.tracer = provider.get_tracer("castway.server", __version__)

    async def intercept_service(
        self,
        continuation: Continuation,
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH):
            return handler
        service, _, method = details.method.lstrip("/").rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        name = f"{service}/{method}"
        tracer = self.tracer

        def ended(span: Span, ctx: Recorded) -> None:
            span.set_attribute("rpc.grpc.status_code", ctx.code.value[0])
            if ctx.code != grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, ctx.code.name))

        def trace(behavior: Behavior) -> Behavior:
            if inspect.iscoroutinefunction(behavior):
                # Refusals: answered on the event loop.
                async def call_async(request: Any, context: Any) -> Any:
                    ctx = recorded(context)
                    with tracer.start_as_current_span(
                        name, kind=SpanKind.SERVER, attributes=attributes, record_exception=False
                    ) as span:
                        try:
                            return await behavior(request, ctx)
                        finally:
                            ended(span, ctx)

                return call_async

            if inspect.isasyncgenfunction(behavior):
                # Reflection: grpc's own async servicer.
                async def stream(request: Any, context: Any) -> Any:
                    ctx = recorded(context)
                    with tracer.start_as_current_span(
                        name, kind=SpanKind.SERVER, attributes=attributes, record_exception=False
                    ) as span:
                        try:
                            async for item in behavior(request, ctx):
                                yield item
                        finally:
                            ended(span, ctx)

                return stream

            def call(request: Any, context: Any) -> Any:
                ctx = recorded(context)
                with tracer.start_as_current_span(
                    name, kind=SpanKind.SERVER, attributes=attributes, record_exception=False
                ) as span:
                    try:
                        return behavior(request, ctx)
                    finally:
                        ended(span, ctx)

            return call

        return replace_behavior(handler, trace)
