"""Bearer-key authentication, role checks, the audit log and the throttle on failing peers, as a
``grpc.aio`` server interceptor.

Every RPC except ``grpc.health.v1`` needs ``authorization: Bearer KEY``. Reading routes,
templates and system information needs ``viewer``; changing routes and templates needs
``operator``; keys need ``admin``. Reflection counts as reading.

The key is checked on the server's event loop as soon as the headers arrive, before the request
body is read and before any worker thread is taken: a refused call is answered at once (as a
streaming handler, which gRPC runs without waiting for a message), so clients that send headers
and nothing else hold no worker. A peer (IP address) that presented more than ``THROTTLE_AFTER``
wrong keys within ``THROTTLE_WINDOW_S`` gets its further refusals one at a time, each
delayed a little longer (up to ``THROTTLE_MAX_DELAY_S``).

Every mutation and every refused call is written to the ``castway.audit`` logger: the call, the
key id (``-`` when none), the peer address, the status and the target's name.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias
from urllib.parse import unquote

import grpc
from opentelemetry import trace

from castway.roles import allows
from castway.server.keys import Keys, acting_key
from castway.server.keys import current_key as current_key  # the servicers read it here
from castway.server.store import KeyRecord, Role

HEALTH = "/grpc.health.v1.Health/"
THROTTLE_AFTER = 10
THROTTLE_WINDOW_S = 60.0
THROTTLE_STEP_S = 0.1
THROTTLE_MAX_DELAY_S = 5.0
KEY_ID_ATTRIBUTE = "castway.key.id"

audit = logging.getLogger("castway.audit")

Behavior = Callable[[Any, Any], Any]
# What a `grpc.aio` server interceptor is handed and returns (this one and telemetry's).
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any] | None"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]"


def required_role(method: str) -> Role | None:
    """The role ``/package.Service/Method`` needs; None for health checks."""
    if method.startswith(HEALTH):
        return None
    service, _, name = method.lstrip("/").rpartition("/")
    if service == "castway.v1.KeyService":
        return "admin"
    if service in (
        "castway.v1.RouteService", "castway.v1.TemplateService", "castway.v1.RecordingService"
    ):
        return "viewer" if name.startswith(("Get", "List")) else "operator"
    if service == "castway.v1.EventService":
        # Webhook URLs may carry tokens: listing them is an operator's business too.
        return "viewer" if name == "WatchEvents" else "operator"
    return "viewer"


def is_mutation(method: str) -> bool:
    """Calls that change something (and are audited even when they succeed)."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service.startswith("castway.v1.") and not name.startswith(
        ("Get", "List", "WhoAmI", "Watch")
    )


def bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:5000`` → ``127.0.0.1``; ``ipv6:[::1]:5000`` (or ``%5B::1%5D``) →
    ``::1``."""
    _, _, address = unquote(peer).partition(":")
    host = address.rpartition(":")[0] if address.count(":") and not address.startswith("/") else ""
    return host.strip("[]") or address or peer


ROUTE_SERVICE = "/castway.v1.RouteService/"


def short_method(method: str) -> str:
    """``/castway.v1.RouteService/CreateRoute`` → ``RouteService/CreateRoute``."""
    service, _, name = method.lstrip("/").rpartition("/")
    return f"{service.rpartition('.')[2]}/{name}"


class Recorded:
    """A servicer context that remembers the status code its call ends with (the sync context
    of ``grpc.aio`` cannot tell). Made by the outermost interceptor; wraps sync and async
    contexts alike."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.code: grpc.StatusCode = grpc.StatusCode.OK
        self.details = ""

    def abort(self, code: grpc.StatusCode, details: str = "") -> Any:
        self.code, self.details = code, details
        return self.context.abort(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code
        self.context.set_code(code)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.context, name)


def recorded(context: Any) -> Recorded:
    return context if isinstance(context, Recorded) else Recorded(context)


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


def _target(request: Any) -> str:
    """The name (or id) a call is about, as given."""
    for field in ("name", "id"):
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return value
    return ""


def printable(text: str, limit: int = 128) -> str:
    """Caller-chosen text as one log field: control characters (a newline would forge a line)
    and spaces escaped, and cut at ``limit`` characters."""
    def escaped(c: str) -> str:
        if c == " ":
            return "\\x20"
        return c if c.isprintable() else c.encode("unicode_escape").decode("ascii")

    shown = "".join(escaped(c) for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def audit_line(
    method: str, key: KeyRecord | None, peer: str, code: grpc.StatusCode, target: str = ""
) -> None:
    """One line per mutation or refusal: ``CALL key=ID peer=ADDR status=CODE [name=NAME]``.
    The record carries each as an attribute too (and ``route`` for a route's calls), for
    ``--log-format json``."""
    level = logging.INFO if code == grpc.StatusCode.OK else logging.WARNING
    call = short_method(method)
    fields: dict[str, Any] = {
        "call": call, "key": key.id if key else None, "peer": peer, "status": code.name,
    }
    if target:
        fields["target"] = target[:128]
        if method.startswith(ROUTE_SERVICE):
            fields["route"] = target[:128]
    audit.log(
        level,
        "%s key=%s peer=%s status=%s%s",
        call,
        key.id if key else "-",
        printable(peer),
        code.name,
        f" name={printable(target)}" if target else "",
        extra=fields,
    )


class Throttle:
    """Failed authentications per peer host; only touched from the server's event loop."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def failed(self, host: str) -> int:
        """Counts a failure; returns the failures within the window, this one included."""
        t = time.monotonic()
        seen = self._failures.setdefault(host, deque())
        seen.append(t)
        while seen and seen[0] < t - THROTTLE_WINDOW_S:
            seen.popleft()
        if len(self._failures) > 10_000:  # forget the quietest peers
            for h in [h for h, q in self._failures.items() if not q or q[-1] < t - 60][:5000]:
                self._failures.pop(h, None)
                self._locks.pop(h, None)
        return len(seen)

    async def hold(self, host: str, failures: int) -> None:
        """Delays a refusal to a peer over the threshold, one refusal at a time."""
        if failures <= THROTTLE_AFTER:
            return
        delay = min(THROTTLE_STEP_S * (failures - THROTTLE_AFTER), THROTTLE_MAX_DELAY_S)
        if failures == THROTTLE_AFTER + 1:
            audit.warning(
                "peer %s throttled: %d failed authentications within %.0f s",
                host,
                failures,
                THROTTLE_WINDOW_S,
            )
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
            await asyncio.sleep(delay)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.throttle = Throttle()

    async def intercept_service(
        self,
        continuation: Continuation,
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = details.method
        needed = required_role(method)
        handler = await continuation(details)
        if needed is None or handler is None:
            return handler
        token = bearer(details.invocation_metadata)
        if token is None:
            return self._deny(
                handler,
                method,
                None,
                grpc.StatusCode.UNAUTHENTICATED,
                "missing `authorization: Bearer KEY` metadata",
            )
        key = self.keys.authenticate(token)
        if key is None:
            return self._deny(
                handler,
                method,
                None,
                grpc.StatusCode.UNAUTHENTICATED,
                "unknown or revoked API key",
                guess=True,
            )
        if not allows(key.role, needed):
            return self._deny(
                handler,
                method,
                key,
                grpc.StatusCode.PERMISSION_DENIED,
                f"key {key.id} ({key.role}) may not call {method.rpartition('/')[2]}: "
                f"it needs {needed}",
            )
        mutation = is_mutation(method)

        def bind(behavior: Behavior) -> Behavior:
            if inspect.isasyncgenfunction(behavior):
                # Streams served on the event loop: reflection, WatchEvents.
                async def stream(request: Any, context: Any) -> Any:
                    ctx = recorded(context)
                    token = acting_key.set(key)
                    trace.get_current_span().set_attribute(KEY_ID_ATTRIBUTE, key.id)
                    try:
                        async for item in behavior(request, ctx):
                            yield item
                    finally:
                        try:
                            acting_key.reset(token)
                        except ValueError:  # closed by the loop's finalizer, in another context
                            pass
                        if ctx.code != grpc.StatusCode.OK:
                            audit_line(method, key, ctx.peer(), ctx.code)

                return stream

            def call(request: Any, context: Any) -> Any:
                ctx = recorded(context)
                token = acting_key.set(key)
                trace.get_current_span().set_attribute(KEY_ID_ATTRIBUTE, key.id)
                try:
                    return behavior(request, ctx)
                finally:
                    acting_key.reset(token)
                    if mutation or ctx.code != grpc.StatusCode.OK:
                        audit_line(method, key, ctx.peer(), ctx.code, _target(request))

            return call

        return replace_behavior(handler, bind)

    def _deny(
        self,
        handler: grpc.RpcMethodHandler[Any, Any],
        method: str,
        key: KeyRecord | None,
        code: grpc.StatusCode,
        message: str,
        guess: bool = False,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """A handler that refuses at once, without reading the request: streaming handlers get
        their request iterator unread, so a client that never sends a body holds nothing. A
        wrong key (``guess``) counts towards the peer's throttle; a missing one costs nothing."""
        throttle = self.throttle

        async def refuse(requests: Any, context: Any) -> None:
            ctx = recorded(context)
            peer = ctx.peer()
            if key is not None:
                trace.get_current_span().set_attribute(KEY_ID_ATTRIBUTE, key.id)
            audit_line(method, key, peer, code)
            if guess:
                host = peer_host(peer)
                await throttle.hold(host, throttle.failed(host))
            await ctx.abort(code, message)

        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                refuse,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_unary_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
