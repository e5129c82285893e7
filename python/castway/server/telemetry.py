"""OpenTelemetry tracing of the gRPC API: one server span per call, health checks left out.

The interceptor sits outermost, so refused calls (bad key, bad spec) are traced too, with their
status code. Spans go to the tracer provider given to the server; ``castway serve`` sets one up
from the standard ``OTEL_TRACES_EXPORTER`` variable (``console`` prints them; unset or ``none``
keeps them in process).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from castway import __version__
from castway.server.auth import HEALTH, Behavior, replace_behavior


def provider_from_env() -> TracerProvider:
    provider = TracerProvider()
    if os.environ.get("OTEL_TRACES_EXPORTER", "none").lower() == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return provider


class TracingInterceptor(grpc.ServerInterceptor):
    def __init__(self, provider: TracerProvider) -> None:
        self.tracer = provider.get_tracer("castway.server", __version__)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        if handler is None or details.method.startswith(HEALTH):
            return handler
        service, _, method = details.method.lstrip("/").rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}

        def trace(behavior: Behavior) -> Behavior:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                name = f"{service}/{method}"
                with self.tracer.start_as_current_span(
                    name, kind=SpanKind.SERVER, attributes=attributes, record_exception=False
                ) as span:
                    try:
                        return behavior(request, context)
                    finally:
                        code = context.code() or grpc.StatusCode.OK  # type: ignore[attr-defined]
                        span.set_attribute("rpc.grpc.status_code", code.value[0])
                        if code != grpc.StatusCode.OK:
                            span.set_status(Status(StatusCode.ERROR, code.name))

            return call

        return replace_behavior(handler, trace)
