"""The gRPC servicers: proto ⇄ specs, one call into :class:`Control` or :class:`Keys`, errors to
status codes. Nothing else lives here."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

import castway
from castway.errors import EventsLostError
from castway.gateway import Event
from castway.redact import REDACTED, redact_text, redact_uri
from castway.roles import ROLES, role_name, role_pb
from castway.server import auth
from castway.server.control import Changes, Control, RouteView, TemplateView
from castway.server.errors import ControlError, InvalidArgument
from castway.server.events import EventHub, check_kinds, check_routes
from castway.server.keys import Keys
from castway.server.specs import Endpoint, Failover, Recording, Spec, SrtDefaults
from castway.server.store import Desired, KeyRecord
from castway.server.webhooks import Webhooks, WebhookView
from castway.v1 import (
    event_pb2,
    event_pb2_grpc,
    key_pb2,
    key_pb2_grpc,
    route_pb2,
    route_pb2_grpc,
    spec_pb2,
    system_pb2,
    system_pb2_grpc,
    template_pb2,
    template_pb2_grpc,
)

log = logging.getLogger("castway.server")
# How long GetSnapshot waits for a keyframe by default, and at most.
SNAPSHOT_TIMEOUT_MS = 5_000
SNAPSHOT_MAX_TIMEOUT_MS = 30_000
R = TypeVar("R")

DESIRED = {
    "running": route_pb2.DESIRED_STATE_RUNNING,
    "stopped": route_pb2.DESIRED_STATE_STOPPED,
}
KINDS = (
    # SRT and UDP need no element: their sockets are castway's own (SRT on libsrt, linked in).
    ("srt", "SRT caller, listener or rendezvous, with passphrase and stream id", None),
    (
        "srt-shared",
        "publishers and readers on the shared SRT port, by stream ID, with access per route",
        None,
    ),
    ("udp", "UDP unicast or multicast MPEG-TS", None),
    (
        "file",
        "an MPEG-TS file in the media root (input: optionally looped; output: written)",
        "filesrc",
    ),
    ("test", "a generated test pattern with tone (input only)", "videotestsrc"),
)


def _rpc(method: Callable[..., R]) -> Callable[..., R]:
    """Maps refusals to their status code; anything else is logged and INTERNAL."""

    @functools.wraps(method)
    def call(self: Any, request: Any, context: grpc.ServicerContext) -> R:
        try:
            return method(self, request, context)
        except InvalidArgument as e:
            # The field path also as a google.rpc.BadRequest field violation, for clients that
            # point at the field (grpcurl, UIs).
            # The message already says it all: the detail stays short, so that an error about
            # a URI near the 4 KB limit still fits gRPC's 8 KB of metadata.
            text = str(e)
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=e.field, description=text if len(text) <= 256 else text[:253] + "..."
            )
            detail = any_pb2.Any()
            detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
            status = rpc_status.to_status(status_pb2.Status(
                code=code_pb2.INVALID_ARGUMENT, message=str(e), details=[detail]
            ))
            # (The aio server's context for a plain servicer has no abort_with_status.)
            context.set_trailing_metadata(status.trailing_metadata)
            context.abort(status.code, status.details)
        except ControlError as e:
            context.abort(getattr(grpc.StatusCode, e.code), str(e))
        except Exception:
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{method.__name__} failed; see the server log")
        raise AssertionError("abort returned")  # pragma: no cover

    return call


def _ts(t: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


def spec_from_pb(pb: spec_pb2.RouteSpec) -> Spec:
    f, s, r = pb.failover, pb.srt, pb.recording

    def opt(msg: Any, name: str) -> Any:
        return getattr(msg, name) if msg.HasField(name) else None

    return Spec(
        inputs=tuple(Endpoint(e.id, e.uri) for e in pb.inputs),
        outputs=tuple(Endpoint(e.id, e.uri) for e in pb.outputs),
        template=pb.template,
        queue_bytes=opt(pb, "queue_bytes"),
        failover=Failover(**{k: opt(f, k) for k in vars(Failover())}),
        srt=SrtDefaults(
            **{k: opt(s, k) for k in vars(SrtDefaults()) if k != "options"},
            options=dict(s.options) or None,
        ),
        gop_cache_bytes=opt(pb, "gop_cache_bytes"),
        recording=Recording(**{k: opt(r, k) for k in vars(Recording())}),
    )


PROC_FD = "file:///proc/self/fd/"


def _secrets_shown() -> bool:
    """Viewers read routes without their SRT passphrases; operators and admins see them."""
    key = auth.current_key()
    return key is None or key.role != "viewer"


def spec_to_pb(spec: Spec) -> spec_pb2.RouteSpec:
    shown = _secrets_shown()

    def uri(text: str) -> str:
        return text if shown else redact_uri(text)

    if not shown and spec.srt.passphrase is not None:
        spec = replace(spec, srt=replace(spec.srt, passphrase=REDACTED))
    pb = spec_pb2.RouteSpec(
        inputs=[spec_pb2.Endpoint(id=e.id, uri=uri(e.uri)) for e in spec.inputs],
        outputs=[spec_pb2.Endpoint(id=e.id, uri=uri(e.uri)) for e in spec.outputs],
        template=spec.template,
        queue_bytes=spec.queue_bytes,
        gop_cache_bytes=spec.gop_cache_bytes,
    )
    for k, v in vars(spec.failover).items():
        if v is not None:
            setattr(pb.failover, k, v)
    for k, v in vars(spec.srt).items():
        if k == "options":
            pb.srt.options.update(v or {})
        elif v is not None:
            setattr(pb.srt, k, v)
    for k, v in vars(spec.recording).items():
        if v is not None:
            setattr(pb.recording, k, v)
    return pb


# Proto field names that differ from the stats' keys (`from`/`to` are Python keywords).
STATS_NAMES = {"from_source": "from", "to_source": "to"}
# Stats keys carried by another message than the one filled: a route's `name` is `Route.name`.
STATS_ELSEWHERE = frozenset({"name"})


def fill(msg: Message, stats: Mapping[str, Any]) -> Message:
    """Copies a stats mapping into ``msg`` field by field, by name, recursively: the stats
    shape is defined once (in Rust, as ``Route.stats()`` returns it) and the gRPC messages
    carry it without a hand-written copy per field. Unset (None) figures stay unset; a float
    Unix time fills a ``Timestamp``."""
    for f in msg.DESCRIPTOR.fields:
        value = stats.get(STATS_NAMES.get(f.name, f.name))
        if value is None:
            continue
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            getattr(msg, f.name).update(value)
        elif f.message_type is None:
            if f.is_repeated:
                getattr(msg, f.name).extend(value)
            else:
                setattr(msg, f.name, value)
        elif f.message_type.full_name == "google.protobuf.Timestamp":
            getattr(msg, f.name).CopyFrom(_ts(value))
        elif f.is_repeated:
            for item in value:
                fill(getattr(msg, f.name).add(), item)
        else:
            fill(getattr(msg, f.name), value)
    return msg


def _shown(pb: route_pb2.EndpointStatus, resolved: dict[str, str]) -> None:
    """What the caller may see of an endpoint's status. ``resolved``: the resolved URI of each
    endpoint id. Viewers see it (redacted) instead of the data plane's spelling; a file
    endpoint shows it instead of its ``/proc/self/fd`` path."""
    if not _secrets_shown():
        pb.uri = redact_uri(resolved[pb.id]) if pb.id in resolved else redact_text(pb.uri)
        pb.last_error = redact_text(pb.last_error)
    elif pb.uri.startswith(PROC_FD) and pb.id in resolved:
        pb.uri = resolved[pb.id]


def route_to_pb(v: RouteView) -> route_pb2.Route:
    r = v.record
    status = route_pb2.RouteStatus()
    if v.stats is not None:
        fill(status, v.stats)
        for pbs, endpoints in (
            (status.inputs, v.resolved.inputs), (status.outputs, v.resolved.outputs)
        ):
            resolved = {e.id: e.uri for e in endpoints}
            for pb in pbs:
                _shown(pb, resolved)
        history = v.stats["switch"]["history"]
        status.switches = history[-1]["seq"] if history else 0
    status.state = v.state
    status.error = v.error if _secrets_shown() else redact_text(v.error)
    return route_pb2.Route(
        name=r.name,
        spec=spec_to_pb(r.spec),
        resolved=spec_to_pb(v.resolved),
        desired_state=DESIRED[r.desired],
        version=r.version,
        locked_input=r.locked_input,
        status=status,
        created=_ts(r.created),
        updated=_ts(r.updated),
    )


RECORDING_CHANGES = {
    "": route_pb2.RECORDING_CHANGE_UNSPECIFIED,
    "enabled": route_pb2.RECORDING_CHANGE_ENABLED,
    "disabled": route_pb2.RECORDING_CHANGE_DISABLED,
    "policy": route_pb2.RECORDING_CHANGE_POLICY,
}


def changes_to_pb(a: Changes) -> route_pb2.Changes:
    return route_pb2.Changes(
        inputs_added=a["inputs_added"], inputs_removed=a["inputs_removed"],
        outputs_added=a["outputs_added"], outputs_removed=a["outputs_removed"],
        reordered=a["reordered"], settings=a["settings"], restarted=a["restarted"],
        recording=RECORDING_CHANGES[a["recording"]],
    )


def template_to_pb(v: TemplateView) -> template_pb2.Template:
    t = v.record
    return template_pb2.Template(
        name=t.name,
        spec=spec_to_pb(t.spec),
        version=t.version,
        used_by=v.used_by,
        created=_ts(t.created),
        updated=_ts(t.updated),
    )


def key_to_pb(k: KeyRecord) -> key_pb2.ApiKey:
    return key_pb2.ApiKey(
        id=k.id,
        name=k.name,
        role=role_pb(k.role),
        created=_ts(k.created),
        revoked=k.revoked is not None,
    )


def _version(request: Any) -> int | None:
    return request.version if request.HasField("version") else None


class RouteService(route_pb2_grpc.RouteServiceServicer):
    def __init__(self, control: Control) -> None:
        self.control = control

    @_rpc
    def CreateRoute(self, request: route_pb2.CreateRouteRequest, context: Any) -> route_pb2.Route:
        stopped = request.desired_state == route_pb2.DESIRED_STATE_STOPPED
        desired: Desired = "stopped" if stopped else "running"
        view = self.control.create_route(request.name, spec_from_pb(request.spec), desired)
        return route_to_pb(view)

    @_rpc
    def GetRoute(self, request: route_pb2.GetRouteRequest, context: Any) -> route_pb2.Route:
        return route_to_pb(self.control.get_route(request.name))

    @_rpc
    def ListRoutes(
        self, request: route_pb2.ListRoutesRequest, context: Any
    ) -> route_pb2.ListRoutesResponse:
        views, token = self.control.list_routes(
            request.template, request.page_size, request.page_token
        )
        return route_pb2.ListRoutesResponse(
            routes=[route_to_pb(v) for v in views], next_page_token=token
        )

    @_rpc
    def UpdateRoute(
        self, request: route_pb2.UpdateRouteRequest, context: Any
    ) -> route_pb2.UpdateRouteResponse:
        view, changes = self.control.update_route(
            request.name, spec_from_pb(request.spec), _version(request)
        )
        return route_pb2.UpdateRouteResponse(
            route=route_to_pb(view), changes=changes_to_pb(changes)
        )

    @_rpc
    def DeleteRoute(
        self, request: route_pb2.DeleteRouteRequest, context: Any
    ) -> route_pb2.DeleteRouteResponse:
        self.control.delete_route(request.name, _version(request))
        return route_pb2.DeleteRouteResponse()

    @_rpc
    def StartRoute(self, request: route_pb2.StartRouteRequest, context: Any) -> route_pb2.Route:
        return route_to_pb(self.control.start_route(request.name))

    @_rpc
    def StopRoute(self, request: route_pb2.StopRouteRequest, context: Any) -> route_pb2.Route:
        return route_to_pb(self.control.stop_route(request.name))

    @_rpc
    def SwitchInput(self, request: route_pb2.SwitchInputRequest, context: Any) -> route_pb2.Route:
        return route_to_pb(self.control.switch_input(request.name, request.input_id))

    @_rpc
    def AddOutput(
        self, request: route_pb2.AddOutputRequest, context: Any
    ) -> route_pb2.UpdateRouteResponse:
        if not request.HasField("output"):
            raise InvalidArgument("output", "an output {id, uri} is required")
        output = Endpoint(request.output.id, request.output.uri)
        view, changes = self.control.add_output(request.name, output, _version(request))
        return route_pb2.UpdateRouteResponse(
            route=route_to_pb(view), changes=changes_to_pb(changes)
        )

    @_rpc
    def GetSnapshot(
        self, request: route_pb2.GetSnapshotRequest, context: Any
    ) -> route_pb2.Snapshot:
        if (request.width == 0) != (request.height == 0):
            raise InvalidArgument("width", "give both width and height, or neither")
        if request.timeout_ms > SNAPSHOT_MAX_TIMEOUT_MS:
            raise InvalidArgument(
                "timeout_ms", f"at most {SNAPSHOT_MAX_TIMEOUT_MS}, not {request.timeout_ms}"
            )
        if request.format not in route_pb2.ImageFormat.values():
            raise InvalidArgument(
                "format", f"must be IMAGE_FORMAT_JPEG or IMAGE_FORMAT_PNG, not {request.format}"
            )
        png = request.format == route_pb2.IMAGE_FORMAT_PNG
        image = self.control.snapshot(
            request.name,
            request.input_id,
            "png" if png else "jpeg",
            (request.width, request.height) if request.width else None,
            (request.timeout_ms or SNAPSHOT_TIMEOUT_MS) / 1000,
        )
        return route_pb2.Snapshot(
            data=image.data,
            format=route_pb2.IMAGE_FORMAT_PNG if png else route_pb2.IMAGE_FORMAT_JPEG,
            width=image.width,
            height=image.height,
            taken=_ts(image.at),
        )

    @_rpc
    def RemoveOutput(
        self, request: route_pb2.RemoveOutputRequest, context: Any
    ) -> route_pb2.UpdateRouteResponse:
        view, changes = self.control.remove_output(
            request.name, request.output_id, _version(request)
        )
        return route_pb2.UpdateRouteResponse(
            route=route_to_pb(view), changes=changes_to_pb(changes)
        )


class TemplateService(template_pb2_grpc.TemplateServiceServicer):
    def __init__(self, control: Control) -> None:
        self.control = control

    @_rpc
    def CreateTemplate(
        self, request: template_pb2.CreateTemplateRequest, context: Any
    ) -> template_pb2.Template:
        return template_to_pb(
            self.control.create_template(request.name, spec_from_pb(request.spec))
        )

    @_rpc
    def GetTemplate(
        self, request: template_pb2.GetTemplateRequest, context: Any
    ) -> template_pb2.Template:
        return template_to_pb(self.control.get_template(request.name))

    @_rpc
    def ListTemplates(
        self, request: template_pb2.ListTemplatesRequest, context: Any
    ) -> template_pb2.ListTemplatesResponse:
        views = self.control.list_templates()
        return template_pb2.ListTemplatesResponse(templates=[template_to_pb(v) for v in views])

    @_rpc
    def UpdateTemplate(
        self, request: template_pb2.UpdateTemplateRequest, context: Any
    ) -> template_pb2.UpdateTemplateResponse:
        view, applied = self.control.update_template(
            request.name, spec_from_pb(request.spec), _version(request)
        )
        return template_pb2.UpdateTemplateResponse(
            template=template_to_pb(view),
            routes=[
                template_pb2.RouteChanges(route=r, changes=changes_to_pb(a)) for r, a in applied
            ],
        )

    @_rpc
    def DeleteTemplate(
        self, request: template_pb2.DeleteTemplateRequest, context: Any
    ) -> template_pb2.DeleteTemplateResponse:
        self.control.delete_template(request.name)
        return template_pb2.DeleteTemplateResponse()


class KeyService(key_pb2_grpc.KeyServiceServicer):
    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    @_rpc
    def CreateKey(
        self, request: key_pb2.CreateKeyRequest, context: Any
    ) -> key_pb2.CreateKeyResponse:
        role = role_name(request.role) if request.role in key_pb2.Role.values() else ""
        if role not in ROLES:
            names = ", ".join(key_pb2.Role.Name(role_pb(r)) for r in ROLES)
            raise InvalidArgument("role", f"must be one of {names}")
        record, secret = self.keys.create(request.name, role)
        return key_pb2.CreateKeyResponse(key=key_to_pb(record), secret=secret)

    @_rpc
    def ListKeys(self, request: key_pb2.ListKeysRequest, context: Any) -> key_pb2.ListKeysResponse:
        return key_pb2.ListKeysResponse(keys=[key_to_pb(k) for k in self.keys.list()])

    @_rpc
    def RevokeKey(self, request: key_pb2.RevokeKeyRequest, context: Any) -> key_pb2.ApiKey:
        return key_to_pb(self.keys.revoke(request.id))


class SystemService(system_pb2_grpc.SystemServiceServicer):
    def __init__(self, srt_port: Callable[[], Any] | None = None) -> None:
        """``srt_port``: the shared SRT port's figures (``Gateway.srt_port_stats``)."""
        self._srt_port = srt_port or (lambda: None)

    @_rpc
    def GetSrtPort(self, request: system_pb2.GetSrtPortRequest, context: Any) -> system_pb2.SrtPort:
        stats = self._srt_port()
        if stats is None:
            return system_pb2.SrtPort(open=False)
        return system_pb2.SrtPort(open=True, **stats)

    @_rpc
    def GetVersion(
        self, request: system_pb2.GetVersionRequest, context: Any
    ) -> system_pb2.GetVersionResponse:
        return system_pb2.GetVersionResponse(
            castway_version=castway.__version__,
            gstreamer_version=castway.gstreamer_version(),
            api_version="v1",
        )

    @_rpc
    def ListEndpointKinds(
        self, request: system_pb2.ListEndpointKindsRequest, context: Any
    ) -> system_pb2.ListEndpointKindsResponse:
        kinds = [
            system_pb2.EndpointKind(
                scheme=scheme,
                input=True,
                output=scheme != "test",
                description=text,
                available=element is None or castway.element_available(element),
            )
            for scheme, text, element in KINDS
        ]
        return system_pb2.ListEndpointKindsResponse(kinds=kinds)

    @_rpc
    def WhoAmI(self, request: system_pb2.WhoAmIRequest, context: Any) -> system_pb2.WhoAmIResponse:
        key = auth.current_key()
        if key is None:
            return system_pb2.WhoAmIResponse()
        return system_pb2.WhoAmIResponse(key_id=key.id, name=key.name, role=role_pb(key.role))


# Proto field names of an event that differ from its keys (`from`/`to` are Python keywords).
_EVENT_NAMES = {"from": "from_source", "to": "to_source"}
OLDEST_SEQ_METADATA = "castway-oldest-seq"
RUN_METADATA = "castway-run"


def event_to_pb(e: Event) -> event_pb2.Event:
    pb = event_pb2.Event()
    for key, value in e.items():
        name = _EVENT_NAMES.get(key, key)
        if name == "at":
            pb.at.CopyFrom(_ts(float(cast(float, value))))
        else:
            setattr(pb, name, value)
    return pb


def webhook_to_pb(v: WebhookView) -> event_pb2.Webhook:
    r = v.record
    return event_pb2.Webhook(
        name=r.name,
        url=r.url,
        kinds=r.kinds,
        routes=r.routes,
        has_secret=bool(r.secret),
        version=r.version,
        created=_ts(r.created),
        updated=_ts(r.updated),
        status=event_pb2.WebhookStatus(**v.status),
    )


class EventService(event_pb2_grpc.EventServiceServicer):
    """``WatchEvents`` runs on the server's event loop (it never blocks it: see
    ``EventHub.watch``); the webhook calls are plain servicers on the worker threads."""

    def __init__(self, hub: EventHub, webhooks: Webhooks, keys: Keys) -> None:
        self.hub, self.webhooks, self.keys = hub, webhooks, keys

    async def WatchEvents(
        self, request: event_pb2.WatchEventsRequest, context: Any
    ) -> AsyncIterator[event_pb2.Event]:
        try:
            kinds = check_kinds(request.kinds)
            routes = check_routes(request.routes)
        except InvalidArgument as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            return
        key = auth.current_key()
        stream = self.hub.watch(
            request.after_seq, kinds, routes, request.follow, _secrets_shown(), request.run,
            still_allowed=lambda: key is None or self.keys.authenticated(key.id),
        )
        try:
            async for event in stream:
                yield event_to_pb(event)
        except EventsLostError as e:
            context.set_trailing_metadata(
                ((OLDEST_SEQ_METADATA, str(e.oldest)), (RUN_METADATA, self.hub.run))
            )
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(e))
        except PermissionError as e:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        finally:
            await stream.aclose()

    @_rpc
    def CreateWebhook(
        self, request: event_pb2.CreateWebhookRequest, context: Any
    ) -> event_pb2.Webhook:
        view = self.webhooks.create(
            request.name, request.url, tuple(request.kinds), tuple(request.routes),
            request.secret,
        )
        return webhook_to_pb(view)

    @_rpc
    def GetWebhook(self, request: event_pb2.GetWebhookRequest, context: Any) -> event_pb2.Webhook:
        return webhook_to_pb(self.webhooks.get(request.name))

    @_rpc
    def ListWebhooks(
        self, request: event_pb2.ListWebhooksRequest, context: Any
    ) -> event_pb2.ListWebhooksResponse:
        return event_pb2.ListWebhooksResponse(
            webhooks=[webhook_to_pb(v) for v in self.webhooks.all()]
        )

    @_rpc
    def UpdateWebhook(
        self, request: event_pb2.UpdateWebhookRequest, context: Any
    ) -> event_pb2.Webhook:
        view = self.webhooks.update(
            request.name, request.url, tuple(request.kinds), tuple(request.routes),
            request.secret if request.HasField("secret") else None, _version(request),
        )
        return webhook_to_pb(view)

    @_rpc
    def DeleteWebhook(
        self, request: event_pb2.DeleteWebhookRequest, context: Any
    ) -> event_pb2.DeleteWebhookResponse:
        self.webhooks.delete(request.name)
        return event_pb2.DeleteWebhookResponse()
