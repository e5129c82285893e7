"""Bearer-key authentication and role checks, as a gRPC server interceptor.

Every RPC except ``grpc.health.v1`` needs ``authorization: Bearer KEY``. Reading routes,
templates and system information needs ``viewer``; changing routes and templates needs
``operator``; keys need ``admin``. Reflection counts as reading.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import grpc

from castway.server.keys import Keys, allows
from castway.server.store import KeyRecord, Role

HEALTH = "/grpc.health.v1.Health/"
_current: ContextVar[KeyRecord | None] = ContextVar("castway_key", default=None)

Behavior = Callable[[Any, grpc.ServicerContext], Any]


def current_key() -> KeyRecord | None:
    """The key of the call being served (inside a servicer)."""
    return _current.get()


def required_role(method: str) -> Role | None:
    """The role ``/package.Service/Method`` needs; None for health checks."""
    if method.startswith(HEALTH):
        return None
    service, _, name = method.lstrip("/").rpartition("/")
    if service == "castway.v1.KeyService":
        return "admin"
    if service in ("castway.v1.RouteService", "castway.v1.TemplateService"):
        return "viewer" if name.startswith(("Get", "List")) else "operator"
    return "viewer"


def bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def replace_behavior(
    handler: grpc.RpcMethodHandler[Any, Any], wrap: Callable[[Behavior], Behavior]
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler (kind, (de)serializers) with its behavior wrapped."""
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for attr, make in kinds:
        behavior = getattr(handler, attr)
        if behavior is not None:
            return make(
                wrap(behavior),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        needed = required_role(details.method)
        handler = continuation(details)
        if needed is None or handler is None:
            return handler
        token = bearer(details.invocation_metadata)
        if token is None:
            return _deny(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                "missing `authorization: Bearer KEY` metadata",
            )
        key = self.keys.authenticate(token)
        if key is None:
            return _deny(handler, grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked API key")
        if not allows(key.role, needed):
            method = details.method.rpartition("/")[2]
            return _deny(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"key {key.id} ({key.role}) may not call {method}: it needs {needed}",
            )

        def bind(behavior: Behavior) -> Behavior:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                token = _current.set(key)
                try:
                    return behavior(request, context)
                finally:
                    _current.reset(token)

            return call

        return replace_behavior(handler, bind)


def _deny(
    handler: grpc.RpcMethodHandler[Any, Any], code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler[Any, Any]:
    def refuse(behavior: Behavior) -> Behavior:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(code, message)

        return call

    return replace_behavior(handler, refuse)
