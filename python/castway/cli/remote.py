"""The client commands ``castway route|template|key|webhook|events|system``: one gRPC call (or
a few) to a castway server each, printed as a table or, with ``--json``, as the reply's JSON.
``castway events`` prints one line per event (with ``--json``, the event as one line of JSON).

Each command is one handler in ``HANDLERS``. Nothing here imports the server: specs go out as
the API's messages, and the roles are the API's enum.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from castway import _castway
from castway.cli import tables
from castway.cli.exits import EXIT_FAILED, EXIT_OK
from castway.client import (
    DEFAULT_ADDR,
    Client,
    KeyFileError,
    PlaintextError,
    event_dict,
    read_key_file,
)
from castway.errors import CastwayError
from castway.roles import ROLES, role_pb
from castway.v1 import event_pb2, key_pb2, route_pb2, spec_pb2, system_pb2, template_pb2

Reply = TypeVar("Reply")


def client_options() -> argparse.ArgumentParser:
    """The options every client command takes: where the server is, the key, TLS."""
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--addr", help=f"server address (default $CASTWAY_ADDR or {DEFAULT_ADDR})")
    client.add_argument(
        "--key", help="API key (default $CASTWAY_KEY); prefer --key-file, argv is visible to all"
    )
    client.add_argument(
        "--key-file", type=Path, metavar="FILE", help="a file holding the key ($CASTWAY_KEY_FILE)"
    )
    client.add_argument(
        "--tls-ca", type=Path, metavar="FILE", help="server CA (default $CASTWAY_TLS_CA)"
    )
    client.add_argument("--tls-cert", type=Path, metavar="FILE", help="client certificate for mTLS")
    client.add_argument("--tls-key", type=Path, metavar="FILE", help="client key for mTLS")
    client.add_argument(
        "--insecure",
        action="store_true",
        help="allow plaintext to an address that is not loopback (the key travels in clear)",
    )
    return client


def connect(args: argparse.Namespace, err: TextIO) -> Client | None:
    """A client as the options ask, or None after saying why not."""
    try:
        return Client(
            args.addr,
            args.key,
            key_file=args.key_file,
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            insecure=args.insecure,
        )
    except (KeyFileError, PlaintextError) as e:
        print(f"castway: {e}", file=err)
        return None


def add_commands(sub: Any) -> None:
    client = client_options()
    client.add_argument("--json", action="store_true", help="print JSON instead of tables")

    spec = argparse.ArgumentParser(add_help=False)
    spec.add_argument("-i", "--input", action="append", default=[], metavar="[ID=]URI")
    spec.add_argument("-o", "--output", action="append", default=[], metavar="[ID=]URI")
    spec.add_argument("--queue-bytes", type=_uint(64))
    spec.add_argument(
        "--gop-cache-bytes", type=_uint(64), metavar="N", help="instant start's GOP cache (0: off)"
    )
    spec.add_argument("--loss-timeout", type=_uint(32), metavar="MS")
    spec.add_argument("--failback-after", type=_uint(32), metavar="MS")
    spec.add_argument("--no-slate", action="store_true")
    spec.add_argument("--slate-size", metavar="WxH")
    spec.add_argument("--latency", type=_uint(32), metavar="MS", help="SRT latency default")
    spec.add_argument("--passphrase", help="SRT passphrase default")
    spec.add_argument("--pbkeylen", type=int, choices=_castway.limits()["pbkeylens"])
    spec.add_argument("--srt-option", action="append", default=[], type=_srt_option,
                      metavar="KEY=VALUE",
                      help="an SRT socket option default, by URI key (docs/uri.md; repeat)")
    # The recording policy (docs/recording.md).
    spec.add_argument("--record", action=argparse.BooleanOptionalAction, default=None,
                      help="record this route (by its schedule, if it has one)")
    spec.add_argument("--segment-ms", type=_uint(64, "recording.segment_ms"), metavar="MS",
                      help="recording segment target")
    spec.add_argument("--record-path", metavar="PATTERN", help="e.g. {route}/%%Y-%%m-%%d/%%H%%M%%S")
    spec.add_argument("--max-age", type=_uint(64, "recording.max_age_s"), metavar="S",
                      help="delete segments older than this")
    spec.add_argument("--max-bytes", type=_uint(64, "recording.max_bytes"),
                      help="keep at most this many bytes of segments")
    spec.add_argument("--min-free", type=_uint(64, "recording.min_free_bytes"), metavar="BYTES",
                      help="free space to keep")
    spec.add_argument("--record-format", choices=["ts", "mp4"],
                      help="what segments hold: ts (the outputs' bytes) or mp4 (remuxed)")
    spec.add_argument("--record-slate", action=argparse.BooleanOptionalAction, default=None,
                      help="record while the slate is on air (default: yes)")
    spec.add_argument("--schedule", help="weekly windows, e.g. 'mon-fri 18:00-19:00' "
                      "('' records at all times: no schedule)")
    spec.add_argument("--no-schedule", action="store_true",
                      help="record at all times (clears the schedule)")
    spec.add_argument("--timezone", help="the schedule's time zone (default UTC)")

    route = sub.add_parser("route", help="manage routes on a castway server").add_subparsers(
        dest="action", required=True
    )
    route.add_parser("list", parents=[client]).add_argument("--template", default="")
    for action in ("get", "delete", "start", "stop"):
        route.add_parser(action, parents=[client]).add_argument("name")
    for action in ("create", "update"):
        p = route.add_parser(action, parents=[client, spec])
        p.add_argument("name")
        if action == "create":
            p.add_argument("--template", default="")
            p.add_argument("--stopped", action="store_true", help="create it stopped")
        else:
            p.add_argument("--template", default=None, help="another template ('' for none)")
            _update_flags(p)
    p = route.add_parser("switch", parents=[client], help="hold on an input, or `auto`")
    p.add_argument("name")
    p.add_argument("input")
    p = route.add_parser("add-output", parents=[client])
    p.add_argument("name")
    p.add_argument("uri", metavar="[ID=]URI")
    p = route.add_parser("remove-output", parents=[client])
    p.add_argument("name")
    p.add_argument("id")
    p = route.add_parser("snapshot", parents=[client],
                         help="save the current picture (PNG for a .png file, else JPEG; "
                              ".jpg, .jpeg, .png or no suffix)")
    p.add_argument("name")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write it")
    p.add_argument("--input", default="", metavar="ID", help="an input's picture, on air or not")
    p.add_argument("--size", type=_picture_size, metavar="WxH", help="scale it (a thumbnail)")
    p.add_argument("--wait", type=_seconds, default=5.0, metavar="S",
                   help="how long to wait for a keyframe (default 5)")

    template = sub.add_parser("template", help="manage templates").add_subparsers(
        dest="action", required=True
    )
    template.add_parser("list", parents=[client])
    for action in ("get", "delete"):
        template.add_parser(action, parents=[client]).add_argument("name")
    for action in ("create", "update"):
        p = template.add_parser(action, parents=[client, spec])
        p.add_argument("name")
        if action == "update":
            _update_flags(p)

    key = sub.add_parser("key", help="manage API keys (admin)").add_subparsers(
        dest="action", required=True
    )
    key.add_parser("list", parents=[client])
    p = key.add_parser("create", parents=[client])
    p.add_argument("name")
    p.add_argument("--role", choices=ROLES, required=True)
    key.add_parser("revoke", parents=[client]).add_argument("id", metavar="ID|NAME")

    webhook = sub.add_parser(
        "webhook", help="manage webhooks (operator): events POSTed as signed JSON"
    ).add_subparsers(dest="action", required=True)
    webhook.add_parser("list", parents=[client])
    for action in ("get", "delete"):
        webhook.add_parser(action, parents=[client]).add_argument("name")
    for action in ("create", "update"):
        p = webhook.add_parser(action, parents=[client])
        p.add_argument("name")
        p.add_argument("--url", required=True, help="http:// or https://")
        p.add_argument("--kind", action="append", default=[], help="only this kind (repeat)")
        p.add_argument("--route", action="append", default=[], help="only this route (repeat)")
        p.add_argument(
            "--secret-file", type=Path, metavar="FILE", required=action == "create",
            help="a file whose first line is the signing secret (update: keep it if not given)",
        )

    events = sub.add_parser(
        "events", parents=[client], help="print the server's events (docs/events.md)"
    )
    events.add_argument("--route", action="append", default=[], help="only this route (repeat)")
    events.add_argument("--kind", action="append", default=[], help="only this kind (repeat)")
    events.add_argument(
        "--after", type=_position, default=("", 0), metavar="[RUN:]N",
        help="only events after number N (of the server run RUN, as events show it: a run "
        "that has ended is an error, not a silent restart from 1); default: every event kept",
    )
    events.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new events until Ctrl-C"
    )

    sub.add_parser("system", parents=[client], help="server version, endpoint kinds, your key")

    for command in ("route", "template", "key", "webhook", "events", "system"):
        sub.choices[command].set_defaults(run=run)


MAX_SEQ = 2**64 - 1


def _position(text: str) -> tuple[str, int]:
    """Where to go on from: ``N`` or ``RUN:N`` (an event's ``run`` and ``seq``)."""
    run, _, number = text.rpartition(":")
    try:
        n = int(number)
    except ValueError:
        n = -1
    if not 0 <= n <= MAX_SEQ:
        raise argparse.ArgumentTypeError(
            f"an event number is 0 to {MAX_SEQ}, optionally after RUN:, not {text!r}"
        )
    return run, n


def _seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"a wait is a positive number of seconds, not {text!r}")
    return value


def _picture_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` as two numbers (the server checks their limits)."""
    w, x, h = text.lower().partition("x")
    if not (x and w.isdigit() and h.isdigit()):
        raise argparse.ArgumentTypeError(f"a picture size is WIDTHxHEIGHT, not {text!r}")
    return int(w), int(h)


def _srt_option(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the server checks the key and the value)."""
    key, eq, value = text.partition("=")
    if not (eq and key):
        raise argparse.ArgumentTypeError(f"an SRT option is KEY=VALUE (oheadbw=25), not {text!r}")
    return key, value


def _update_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--version", type=int,
        help="fail if it is no longer at this version (default: the version this update read)",
    )
    p.add_argument(
        "--replace", action="store_true",
        help="send exactly the flags given, as the whole spec; without it only what the flags "
        "name changes (-i replaces the inputs, -o the outputs, each setting itself)",
    )


def _patched(current: spec_pb2.RouteSpec, args: argparse.Namespace) -> spec_pb2.RouteSpec:
    """What ``update`` sends: the stored spec with what the flags name changed, so a setting
    not on the command line (a passphrase, say) is kept; with ``--replace``, the flags alone."""
    given = _spec(args)
    if args.replace:
        return given
    spec = spec_pb2.RouteSpec()
    spec.CopyFrom(current)
    if args.input:
        del spec.inputs[:]
        spec.inputs.extend(given.inputs)
    if args.output:
        del spec.outputs[:]
        spec.outputs.extend(given.outputs)
    if getattr(args, "template", None) is not None:
        spec.template = args.template
    if given.HasField("queue_bytes"):
        spec.queue_bytes = given.queue_bytes
    if given.HasField("gop_cache_bytes"):
        spec.gop_cache_bytes = given.gop_cache_bytes
    # Only the settings given are set in `given`: merging copies exactly those.
    spec.failover.MergeFrom(given.failover)
    spec.srt.MergeFrom(given.srt)
    spec.recording.MergeFrom(given.recording)
    if _no_schedule(args):
        spec.recording.ClearField("schedule")
    return spec


def _no_schedule(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "no_schedule", False)) or getattr(args, "schedule", None) == ""


def _uint(bits: int, field: str | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from 0 to the largest its proto field holds or, for a
    spec's ``field`` with a rule (``limits()["ranges"]``, the rule the server checks), within
    that rule's bounds."""
    low, top = _castway.limits()["ranges"][field] if field else (0, 2**bits - 1)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not low <= value <= top:
            raise argparse.ArgumentTypeError(f"a whole number from {low} to {top}, not {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def _endpoint(text: str) -> spec_pb2.Endpoint:
    """``ID=URI`` or a plain URI, the way ``relay`` takes them: what stands before the first
    ``=`` is an id if it is a name by the data plane's rule (the server checks it again; this
    only tells an id from a URI with ``=`` in it)."""
    ep_id, sep, uri = text.partition("=")
    if sep and "://" not in ep_id:
        try:
            _castway.check_name("output", ep_id)
        except CastwayError:
            pass
        else:
            return spec_pb2.Endpoint(id=ep_id, uri=uri)
    return spec_pb2.Endpoint(id="", uri=text)


def _spec(args: argparse.Namespace) -> spec_pb2.RouteSpec:
    spec = spec_pb2.RouteSpec(
        inputs=[_endpoint(u) for u in args.input],
        outputs=[_endpoint(u) for u in args.output],
        template=getattr(args, "template", None) or "",
        queue_bytes=args.queue_bytes,
        gop_cache_bytes=getattr(args, "gop_cache_bytes", None),
    )
    failover = {
        "loss_timeout_ms": args.loss_timeout,
        "failback_after_ms": args.failback_after,
        "slate": False if args.no_slate else None,
        "slate_size": args.slate_size,
    }
    srt = {"latency_ms": args.latency, "passphrase": args.passphrase, "pbkeylen": args.pbkeylen}
    recording = {
        "enabled": args.record, "segment_ms": args.segment_ms, "path": args.record_path,
        "format": args.record_format, "slate": args.record_slate,
        "max_age_s": args.max_age, "max_bytes": args.max_bytes, "min_free_bytes": args.min_free,
        # No schedule ('' or --no-schedule): left unset, and `update` clears it.
        "schedule": None if _no_schedule(args) else args.schedule, "timezone": args.timezone,
    }
    spec.srt.options.update(dict(getattr(args, "srt_option", [])))
    # Only what is given is set: the rest comes from the template or the defaults.
    for part, values in (
        (spec.failover, failover), (spec.srt, srt), (spec.recording, recording)
    ):
        for k, v in values.items():
            if v is not None:
                setattr(part, k, v)
    return spec


def _version(args: argparse.Namespace) -> dict[str, int]:
    return {"version": args.version} if getattr(args, "version", None) is not None else {}


@dataclass
class Call:
    """One client command: its arguments, the client, and where the answer goes."""

    args: argparse.Namespace
    client: Client
    out: TextIO

    def rpc(self, method: Callable[..., Reply], request: Message) -> Reply:
        return method(request, metadata=self.client.metadata, timeout=self.client.timeout_s)

    def show(self, reply: Message, table: Callable[[], object]) -> None:
        """The reply as JSON with ``--json``, else what ``table`` prints."""
        if self.args.json:
            # Every field, zeros and empty ones too: scripts need not guess a key is missing.
            doc = MessageToDict(
                reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            print(json.dumps(doc, indent=2), file=self.out)
        else:
            table()

    def say(self, text: str) -> None:
        print(text, file=self.out)


def fetch_routes(client: Client, template: str = "") -> list[route_pb2.Route]:
    """Every route (with its status), every page, in name order."""
    routes: list[route_pb2.Route] = []
    token = ""
    for _ in range(100_000):
        page = client.routes.ListRoutes(
            route_pb2.ListRoutesRequest(template=template, page_token=token),
            metadata=client.metadata,
            timeout=client.timeout_s,
        )
        routes.extend(page.routes)
        token = page.next_page_token
        if not token:
            break
    return routes


def route_list(c: Call) -> None:
    resp = route_pb2.ListRoutesResponse(routes=fetch_routes(c.client, c.args.template))
    c.show(resp, lambda: tables.routes_table(resp.routes, c.out))


def route_get(c: Call) -> None:
    r = c.rpc(c.client.routes.GetRoute, route_pb2.GetRouteRequest(name=c.args.name))
    c.show(r, lambda: tables.route_detail(r, c.out))


def route_start(c: Call) -> None:
    r = c.rpc(c.client.routes.StartRoute, route_pb2.StartRouteRequest(name=c.args.name))
    c.show(r, lambda: tables.route_detail(r, c.out))


def route_stop(c: Call) -> None:
    r = c.rpc(c.client.routes.StopRoute, route_pb2.StopRouteRequest(name=c.args.name))
    c.show(r, lambda: tables.route_detail(r, c.out))


def route_create(c: Call) -> None:
    desired = (
        route_pb2.DESIRED_STATE_STOPPED if c.args.stopped else route_pb2.DESIRED_STATE_RUNNING
    )
    req = route_pb2.CreateRouteRequest(name=c.args.name, spec=_spec(c.args), desired_state=desired)
    r = c.rpc(c.client.routes.CreateRoute, req)
    c.show(r, lambda: tables.route_detail(r, c.out))


def route_update(c: Call) -> None:
    current = c.rpc(c.client.routes.GetRoute, route_pb2.GetRouteRequest(name=c.args.name))
    version = c.args.version if c.args.version is not None else current.version
    req = route_pb2.UpdateRouteRequest(
        name=c.args.name, spec=_patched(current.spec, c.args), version=version
    )
    u = c.rpc(c.client.routes.UpdateRoute, req)
    c.show(u, lambda: tables.update_detail(u, c.out))


def route_delete(c: Call) -> None:
    c.rpc(c.client.routes.DeleteRoute, route_pb2.DeleteRouteRequest(name=c.args.name))
    c.show(route_pb2.DeleteRouteResponse(), lambda: c.say(f"deleted route {c.args.name}"))


def route_switch(c: Call) -> None:
    target = "" if c.args.input == "auto" else c.args.input
    req = route_pb2.SwitchInputRequest(name=c.args.name, input_id=target)
    r = c.rpc(c.client.routes.SwitchInput, req)
    c.show(r, lambda: tables.route_detail(r, c.out))


def route_add_output(c: Call) -> None:
    req = route_pb2.AddOutputRequest(name=c.args.name, output=_endpoint(c.args.uri))
    u = c.rpc(c.client.routes.AddOutput, req)
    c.show(u, lambda: c.say(tables.changes(u.changes)))


def route_snapshot(c: Call) -> None:
    width, height = c.args.size or (0, 0)
    out = Path(c.args.output)
    # Before the picture is taken: a file that cannot be written is said in one line.
    if not out.parent.is_dir():
        raise Ended(f"cannot write {out}: {out.parent} is not a directory")
    # The file's suffix says the format; none (a device, a pipe) takes JPEG.
    suffix = out.suffix.lower()
    if suffix not in ("", ".jpg", ".jpeg", ".png"):
        raise Ended(f"cannot write {out}: a snapshot is JPEG (.jpg, .jpeg) or PNG (.png), "
                    f"not {out.suffix}")
    png = suffix == ".png"
    req = route_pb2.GetSnapshotRequest(
        name=c.args.name,
        input_id=c.args.input,
        format=route_pb2.IMAGE_FORMAT_PNG if png else route_pb2.IMAGE_FORMAT_JPEG,
        width=width,
        height=height,
        timeout_ms=max(1, int(c.args.wait * 1000)),
    )
    # The call may wait for a keyframe on top of the usual time a call takes.
    snap = c.client.routes.GetSnapshot(req, metadata=c.client.metadata,
                                       timeout=c.client.timeout_s + c.args.wait)
    try:
        out.write_bytes(snap.data)
    except OSError as e:
        raise Ended(f"cannot write {out}: {e.strerror or e}") from None
    what = f"input {c.args.input}" if c.args.input else "output"
    c.show(route_pb2.Snapshot(format=snap.format, width=snap.width, height=snap.height,
                              taken=snap.taken),
           lambda: c.say(f"{out}: {snap.width}x{snap.height} {'PNG' if png else 'JPEG'} of "
                         f"route {c.args.name}'s {what}, {len(snap.data)} bytes"))


def route_remove_output(c: Call) -> None:
    req = route_pb2.RemoveOutputRequest(name=c.args.name, output_id=c.args.id)
    u = c.rpc(c.client.routes.RemoveOutput, req)
    c.show(u, lambda: c.say(tables.changes(u.changes)))


def template_list(c: Call) -> None:
    tl = c.rpc(c.client.templates.ListTemplates, template_pb2.ListTemplatesRequest())
    c.show(tl, lambda: tables.templates_table(tl.templates, c.out))


def template_get(c: Call) -> None:
    t = c.rpc(c.client.templates.GetTemplate, template_pb2.GetTemplateRequest(name=c.args.name))
    c.show(t, lambda: tables.templates_table([t], c.out))


def template_create(c: Call) -> None:
    req = template_pb2.CreateTemplateRequest(name=c.args.name, spec=_spec(c.args))
    t = c.rpc(c.client.templates.CreateTemplate, req)
    c.show(t, lambda: tables.templates_table([t], c.out))


def template_update(c: Call) -> None:
    current = c.rpc(
        c.client.templates.GetTemplate, template_pb2.GetTemplateRequest(name=c.args.name)
    )
    version = c.args.version if c.args.version is not None else current.version
    req = template_pb2.UpdateTemplateRequest(
        name=c.args.name, spec=_patched(current.spec, c.args), version=version
    )
    u = c.rpc(c.client.templates.UpdateTemplate, req)

    def each_route() -> None:
        for r in u.routes:
            c.say(f"{r.route}: {tables.changes(r.changes)}")

    c.show(u, each_route)


def template_delete(c: Call) -> None:
    c.rpc(c.client.templates.DeleteTemplate, template_pb2.DeleteTemplateRequest(name=c.args.name))
    c.show(template_pb2.DeleteTemplateResponse(), lambda: c.say(f"deleted template {c.args.name}"))


def key_list(c: Call) -> None:
    kl = c.rpc(c.client.keys.ListKeys, key_pb2.ListKeysRequest())
    c.show(kl, lambda: tables.keys_table(kl.keys, c.out))


def key_create(c: Call) -> None:
    req = key_pb2.CreateKeyRequest(name=c.args.name, role=role_pb(c.args.role))
    kc = c.rpc(c.client.keys.CreateKey, req)
    c.show(kc, lambda: c.say(f"key {kc.key.id} ({c.args.role}); shown this once:\n{kc.secret}"))


def key_revoke(c: Call) -> None:
    """By id, or by the name of the one live key that has it (the name is what people see)."""
    key_id = c.args.id
    keys = c.rpc(c.client.keys.ListKeys, key_pb2.ListKeysRequest()).keys
    if not any(k.id == key_id for k in keys):
        named = [k.id for k in keys if k.name == key_id and not k.revoked]
        if len(named) > 1:
            raise Ended(f"{len(named)} live keys are named {key_id!r} "
                        f"({', '.join(named)}): give the id")
        key_id = named[0] if named else key_id
    k = c.rpc(c.client.keys.RevokeKey, key_pb2.RevokeKeyRequest(id=key_id))
    c.show(k, lambda: tables.keys_table([k], c.out))


def _secret(path: Path | None) -> str | None:
    return None if path is None else read_key_file(path)


def webhook_list(c: Call) -> None:
    wl = c.rpc(c.client.events.ListWebhooks, event_pb2.ListWebhooksRequest())
    c.show(wl, lambda: tables.webhooks_table(wl.webhooks, c.out))


def webhook_get(c: Call) -> None:
    w = c.rpc(c.client.events.GetWebhook, event_pb2.GetWebhookRequest(name=c.args.name))
    c.show(w, lambda: tables.webhooks_table([w], c.out))


def webhook_create(c: Call) -> None:
    req = event_pb2.CreateWebhookRequest(
        name=c.args.name, url=c.args.url, kinds=c.args.kind, routes=c.args.route,
        secret=_secret(c.args.secret_file) or "",
    )
    w = c.rpc(c.client.events.CreateWebhook, req)
    c.show(w, lambda: tables.webhooks_table([w], c.out))


def webhook_update(c: Call) -> None:
    req = event_pb2.UpdateWebhookRequest(
        name=c.args.name, url=c.args.url, kinds=c.args.kind, routes=c.args.route,
        secret=_secret(c.args.secret_file),
    )
    w = c.rpc(c.client.events.UpdateWebhook, req)
    c.show(w, lambda: tables.webhooks_table([w], c.out))


def webhook_delete(c: Call) -> None:
    c.rpc(c.client.events.DeleteWebhook, event_pb2.DeleteWebhookRequest(name=c.args.name))
    c.show(event_pb2.DeleteWebhookResponse(), lambda: c.say(f"deleted webhook {c.args.name}"))


def events(c: Call) -> None:
    """Every event kept (numbered above ``--after``) that passes the filters; with
    ``--follow``, then each new one as it happens (no deadline) until interrupted."""
    run, after = c.args.after
    req = event_pb2.WatchEventsRequest(
        after_seq=after, routes=c.args.route, kinds=c.args.kind, follow=c.args.follow, run=run
    )
    stream = c.client.events.WatchEvents(
        req, metadata=c.client.metadata, timeout=None if c.args.follow else c.client.timeout_s
    )
    last = f"{run}:{after}" if run else str(after)
    try:
        for pb in stream:
            event = event_dict(pb)
            last = f"{event.get('run', '')}:{event['seq']}"
            c.say(json.dumps(event) if c.args.json else tables.event_line(event))
            c.out.flush()
    except KeyboardInterrupt:
        stream.cancel()
        return
    if c.args.follow:
        raise Ended(f"the server ended the stream (stopped?); go on with --after {last}")


class Ended(Exception):
    """A command that cannot go on (a stream that should have gone on ended, a name that is
    not one key's): said on stderr, exit status 1."""


def system(c: Call) -> None:
    v = c.rpc(c.client.system.GetVersion, system_pb2.GetVersionRequest())
    kinds = c.rpc(c.client.system.ListEndpointKinds, system_pb2.ListEndpointKindsRequest())
    me = c.rpc(c.client.system.WhoAmI, system_pb2.WhoAmIRequest())
    if c.args.json:
        both = system_pb2.ListEndpointKindsResponse(kinds=kinds.kinds)
        doc = {
            "version": MessageToDict(v, preserving_proto_field_name=True),
            "kinds": MessageToDict(both, preserving_proto_field_name=True).get("kinds", []),
            "key": MessageToDict(me, preserving_proto_field_name=True),
        }
        c.say(json.dumps(doc, indent=2))
    else:
        tables.system(v, me, kinds, c.out)


# (command, action) -> handler; `system` has no action.
HANDLERS: dict[tuple[str, str], Callable[[Call], None]] = {
    ("route", "list"): route_list,
    ("route", "get"): route_get,
    ("route", "start"): route_start,
    ("route", "stop"): route_stop,
    ("route", "create"): route_create,
    ("route", "update"): route_update,
    ("route", "delete"): route_delete,
    ("route", "switch"): route_switch,
    ("route", "add-output"): route_add_output,
    ("route", "remove-output"): route_remove_output,
    ("route", "snapshot"): route_snapshot,
    ("template", "list"): template_list,
    ("template", "get"): template_get,
    ("template", "create"): template_create,
    ("template", "update"): template_update,
    ("template", "delete"): template_delete,
    ("key", "list"): key_list,
    ("key", "create"): key_create,
    ("key", "revoke"): key_revoke,
    ("webhook", "list"): webhook_list,
    ("webhook", "get"): webhook_get,
    ("webhook", "create"): webhook_create,
    ("webhook", "update"): webhook_update,
    ("webhook", "delete"): webhook_delete,
    ("events", ""): events,
    ("system", ""): system,
}


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    client = connect(args, err)
    if client is None:
        return EXIT_FAILED
    try:
        HANDLERS[(args.command, getattr(args, "action", ""))](Call(args, client, out))
    except (KeyFileError, Ended) as e:
        print(f"castway: {e}", file=err)
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and nothing went wrong here.
        sys.stdout = open(os.devnull, "w")
        return EXIT_OK
    except grpc.RpcError as e:
        code = e.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            print(
                f"castway: cannot reach a castway server at {client.addr}: {e.details()}", file=err
            )
        else:
            print(f"castway: {rpc_error(e, client)}", file=err)
        return EXIT_FAILED
    finally:
        client.close()
    return EXIT_OK


# What a refusal for want of a key adds when none was given.
NO_KEY_HINT = "no API key was given: --key-file FILE or CASTWAY_KEY_FILE (or --key, CASTWAY_KEY)"


def rpc_error(e: grpc.RpcError, client: Client) -> str:
    """A call's error as the CLI says it: ``CODE: details``, and for UNAUTHENTICATED with no
    key given, where a key goes."""
    text = f"{e.code().name}: {e.details()}"
    if e.code() == grpc.StatusCode.UNAUTHENTICATED and not client.key:
        text += f" ({NO_KEY_HINT})"
    return text
