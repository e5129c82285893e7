"""``castway serve`` and the client commands ``castway route|template|key|system``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from castway.client import DEFAULT_ADDR, Client, KeyFileError, PlaintextError
from castway.server import ServeError, Tls, run_server
from castway.server.config import ConfigError, Declared
from castway.server.servicers import spec_to_pb
from castway.server.specs import NAME, Endpoint, Failover, Spec, SrtDefaults
from castway.server.store import StoreError
from castway.v1 import key_pb2, route_pb2, spec_pb2, system_pb2, template_pb2

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_DATA_DIR = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "castway"
DEMO_PORT = 9710
DEMO = Declared(
    templates={},
    routes={
        "demo": (
            Spec(
                inputs=(Endpoint("pattern", "test://?size=640x360"),),
                outputs=(Endpoint("srt", f"srt://:{DEMO_PORT}?mode=listener"),),
            ),
            None,
        )
    },
)
ROLES = {
    "viewer": key_pb2.ROLE_VIEWER,
    "operator": key_pb2.ROLE_OPERATOR,
    "admin": key_pb2.ROLE_ADMIN,
}


def add_commands(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the gRPC control server")
    serve.add_argument(
        "--config", type=Path, metavar="FILE", help="routes and templates (TOML or YAML)"
    )
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("CASTWAY_DATA_DIR", DEFAULT_DATA_DIR)),
        metavar="DIR",
        help=f"where the store lives (default $CASTWAY_DATA_DIR or {DEFAULT_DATA_DIR})",
    )
    serve.add_argument(
        "--media-dir",
        type=Path,
        metavar="DIR",
        help="the only tree file:// endpoints read and write (default DATA_DIR/media)",
    )
    serve.add_argument(
        "--listen", default=DEFAULT_ADDR, metavar="HOST:PORT", help=f"default {DEFAULT_ADDR}"
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="serve plaintext on an address that is not loopback (a TLS proxy in front, say)",
    )
    serve.add_argument("--tls-cert", type=Path, metavar="FILE")
    serve.add_argument("--tls-key", type=Path, metavar="FILE")
    serve.add_argument(
        "--tls-client-ca", type=Path, metavar="FILE", help="require client certificates (mTLS)"
    )
    serve.add_argument(
        "--audit-log",
        type=Path,
        metavar="FILE",
        help="also append the audit trail to FILE (created 0600); it always goes to stderr",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help=f"also declare the demo route (test pattern on srt://:{DEMO_PORT})",
    )

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
    client.add_argument("--json", action="store_true", help="print JSON instead of tables")

    spec = argparse.ArgumentParser(add_help=False)
    spec.add_argument("-i", "--input", action="append", default=[], metavar="[ID=]URI")
    spec.add_argument("-o", "--output", action="append", default=[], metavar="[ID=]URI")
    spec.add_argument("--queue-bytes", type=int)
    spec.add_argument("--loss-timeout", type=int, metavar="MS")
    spec.add_argument("--failback-after", type=int, metavar="MS")
    spec.add_argument("--no-slate", action="store_true")
    spec.add_argument("--slate-size", metavar="WxH")
    spec.add_argument("--latency", type=int, metavar="MS", help="SRT latency default")
    spec.add_argument("--passphrase", help="SRT passphrase default")
    spec.add_argument("--pbkeylen", type=int, choices=(16, 24, 32))

    route = sub.add_parser("route", help="manage routes on a castway server").add_subparsers(
        dest="action", required=True
    )
    route.add_parser("list", parents=[client]).add_argument("--template", default="")
    for action in ("get", "delete", "start", "stop"):
        route.add_parser(action, parents=[client]).add_argument("name")
    for action in ("create", "update"):
        p = route.add_parser(action, parents=[client, spec])
        p.add_argument("name")
        p.add_argument("--template", default="")
        if action == "create":
            p.add_argument("--stopped", action="store_true", help="create it stopped")
        else:
            p.add_argument("--version", type=int, help="fail if the route is no longer at it")
    p = route.add_parser("switch", parents=[client], help="hold on an input, or `auto`")
    p.add_argument("name")
    p.add_argument("input")
    p = route.add_parser("add-output", parents=[client])
    p.add_argument("name")
    p.add_argument("uri", metavar="[ID=]URI")
    p = route.add_parser("remove-output", parents=[client])
    p.add_argument("name")
    p.add_argument("id")

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
            p.add_argument("--version", type=int)

    key = sub.add_parser("key", help="manage API keys (admin)").add_subparsers(
        dest="action", required=True
    )
    key.add_parser("list", parents=[client])
    p = key.add_parser("create", parents=[client])
    p.add_argument("name")
    p.add_argument("--role", choices=tuple(ROLES), required=True)
    key.add_parser("revoke", parents=[client]).add_argument("id")

    sub.add_parser("system", parents=[client], help="server version, endpoint kinds, your key")


def serve(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stderr
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            print("castway: --tls-cert and --tls-key go together", file=out)
            return EXIT_USAGE
        tls = Tls(args.tls_cert, args.tls_key, args.tls_client_ca)
    elif args.tls_client_ca:
        print("castway: --tls-client-ca needs --tls-cert and --tls-key", file=out)
        return EXIT_USAGE
    # The audit trail (castway.audit) and the control plane's warnings go to stderr, and the
    # audit trail also to --audit-log.
    handlers: list[logging.Handler] = [logging.StreamHandler(out)]
    handlers[0].setFormatter(logging.Formatter("castway: %(name)s: %(message)s"))
    if args.audit_log is not None:
        try:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            fd = os.open(args.audit_log, flags, 0o600)
        except OSError as e:
            print(f"castway: cannot open the audit log {args.audit_log}: {e.strerror}", file=out)
            return EXIT_FAILED
        audit_file = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
        audit_file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        handlers.append(audit_file)
        logging.getLogger("castway.audit").addHandler(audit_file)
    logging.getLogger("castway").addHandler(handlers[0])
    logging.getLogger("castway").setLevel(logging.INFO)
    try:
        return _serve(args, tls, out)
    finally:
        logging.getLogger("castway").removeHandler(handlers[0])
        if len(handlers) > 1:
            logging.getLogger("castway.audit").removeHandler(handlers[1])
            handlers[1].close()


def _serve(args: argparse.Namespace, tls: Tls | None, out: TextIO) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with run_server(
            args.data_dir,
            args.listen,
            tls=tls,
            config=args.config,
            extra_config=DEMO if args.demo else None,
            admin_key=os.environ.get("CASTWAY_ADMIN_KEY"),
            media_dir=args.media_dir,
            insecure=args.insecure,
            out=out,
        ) as running:
            host = args.listen.rpartition(":")[0]
            print(
                f"castway: serving gRPC on {host}:{running.port} (data in {args.data_dir})",
                file=out,
                flush=True,
            )
            if args.demo:
                print(
                    f"castway: demo route: ffplay srt://127.0.0.1:{DEMO_PORT}", file=out, flush=True
                )
            stop.wait()
            print("castway: stopping", file=out, flush=True)
    except (ServeError, ConfigError, StoreError) as e:
        print(f"castway: {e}", file=out)
        return EXIT_FAILED
    return EXIT_OK


def _endpoint(text: str) -> Endpoint:
    """``ID=URI`` or a plain URI, the way ``relay`` takes them."""
    ep_id, sep, uri = text.partition("=")
    if sep and NAME.match(ep_id) and "://" not in ep_id:
        return Endpoint(ep_id, uri)
    return Endpoint("", text)


def _spec(args: argparse.Namespace) -> spec_pb2.RouteSpec:
    return spec_to_pb(
        Spec(
            inputs=tuple(_endpoint(u) for u in args.input),
            outputs=tuple(_endpoint(u) for u in args.output),
            template=getattr(args, "template", ""),
            queue_bytes=args.queue_bytes,
            failover=Failover(
                loss_timeout_ms=args.loss_timeout,
                failback_after_ms=args.failback_after,
                slate=False if args.no_slate else None,
                slate_size=args.slate_size,
            ),
            srt=SrtDefaults(
                latency_ms=args.latency, passphrase=args.passphrase, pbkeylen=args.pbkeylen
            ),
        )
    )


def _version(args: argparse.Namespace) -> dict[str, int]:
    return {"version": args.version} if getattr(args, "version", None) is not None else {}


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def _routes_table(routes: Sequence[route_pb2.Route], out: TextIO) -> None:
    rows = [("NAME", "STATE", "DESIRED", "VERSION", "ACTIVE", "INPUTS", "OUTPUTS", "TEMPLATE")]
    for r in routes:
        desired = (
            route_pb2.DesiredState.Name(r.desired_state).removeprefix("DESIRED_STATE_").lower()
        )
        rows.append(
            (
                r.name,
                r.status.state,
                desired,
                str(r.version),
                r.status.active_input or "-",
                str(len(r.resolved.inputs)),
                str(len(r.resolved.outputs)),
                r.spec.template or "-",
            )
        )
    _table(rows, out)


def _route_detail(r: route_pb2.Route, out: TextIO) -> None:
    _routes_table([r], out)
    if r.status.error:
        print(f"error: {r.status.error}", file=out)
    status = {e.id: e for e in [*r.status.inputs, *r.status.outputs]}
    rows = [("", "ID", "URI", "STATE", "BITRATE", "DROPS")]
    for kind, group in (("input", r.resolved.inputs), ("output", r.resolved.outputs)):
        for e in group:
            s = status.get(e.id)
            mark = "*" if s is not None and s.active else ""
            rows.append(
                (
                    f"{kind}{mark}",
                    e.id,
                    s.uri if s is not None else e.uri,
                    s.state if s is not None else "-",
                    f"{s.bitrate_bps / 1e6:.2f} Mb/s" if s is not None else "-",
                    str(s.drops) if s is not None else "-",
                )
            )
    _table(rows, out)


def _update_detail(u: route_pb2.UpdateRouteResponse, out: TextIO) -> None:
    _route_detail(u.route, out)
    print(_changes(u.changes), file=out)


def _changes(c: route_pb2.Changes) -> str:
    parts = [
        f"{what} {', '.join(ids)}"
        for what, ids in (
            ("inputs added:", c.inputs_added),
            ("inputs removed:", c.inputs_removed),
            ("outputs added:", c.outputs_added),
            ("outputs removed:", c.outputs_removed),
        )
        if ids
    ]
    parts += [
        text
        for flag, text in (
            (c.reordered, "inputs reordered"),
            (c.settings, "settings"),
            (c.restarted, "restarted"),
        )
        if flag
    ]
    return "; ".join(parts) or "nothing changed on air"


def _templates_table(templates: Sequence[template_pb2.Template], out: TextIO) -> None:
    rows = [("NAME", "VERSION", "INPUTS", "OUTPUTS", "USED BY")]
    for t in templates:
        rows.append(
            (
                t.name,
                str(t.version),
                str(len(t.spec.inputs)),
                str(len(t.spec.outputs)),
                ", ".join(t.used_by) or "-",
            )
        )
    _table(rows, out)


def _keys_table(keys: Sequence[key_pb2.ApiKey], out: TextIO) -> None:
    rows = [("ID", "NAME", "ROLE", "REVOKED")]
    for k in keys:
        rows.append(
            (
                k.id,
                k.name,
                key_pb2.Role.Name(k.role).removeprefix("ROLE_").lower(),
                "yes" if k.revoked else "no",
            )
        )
    _table(rows, out)


def remote(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        client = Client(
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
        return EXIT_FAILED
    md, t = client.metadata, client.timeout_s

    def show(msg: Message, table: Callable[[], object]) -> None:
        if args.json:
            print(
                json.dumps(MessageToDict(msg, preserving_proto_field_name=True), indent=2), file=out
            )
        else:
            table()

    try:
        cmd, action = args.command, getattr(args, "action", "")
        if cmd == "route":
            rs = client.routes
            if action == "list":
                # Every page, in name order.
                resp = route_pb2.ListRoutesResponse()
                token = ""
                for _ in range(100_000):
                    page = rs.ListRoutes(
                        route_pb2.ListRoutesRequest(template=args.template, page_token=token),
                        metadata=md,
                        timeout=t,
                    )
                    resp.routes.extend(page.routes)
                    token = page.next_page_token
                    if not token:
                        break
                show(resp, lambda: _routes_table(resp.routes, out))
            elif action in ("get", "start", "stop"):
                if action == "get":
                    r = rs.GetRoute(
                        route_pb2.GetRouteRequest(name=args.name), metadata=md, timeout=t
                    )
                elif action == "start":
                    r = rs.StartRoute(
                        route_pb2.StartRouteRequest(name=args.name), metadata=md, timeout=t
                    )
                else:
                    r = rs.StopRoute(
                        route_pb2.StopRouteRequest(name=args.name), metadata=md, timeout=t
                    )
                show(r, lambda: _route_detail(r, out))
            elif action == "create":
                desired = (
                    route_pb2.DESIRED_STATE_STOPPED
                    if args.stopped
                    else route_pb2.DESIRED_STATE_RUNNING
                )
                r = rs.CreateRoute(
                    route_pb2.CreateRouteRequest(
                        name=args.name, spec=_spec(args), desired_state=desired
                    ),
                    metadata=md,
                    timeout=t,
                )
                show(r, lambda: _route_detail(r, out))
            elif action == "update":
                req_u = route_pb2.UpdateRouteRequest(
                    name=args.name, spec=_spec(args), **_version(args)
                )
                u = rs.UpdateRoute(req_u, metadata=md, timeout=t)
                show(u, lambda: _update_detail(u, out))
            elif action == "delete":
                rs.DeleteRoute(route_pb2.DeleteRouteRequest(name=args.name), metadata=md, timeout=t)
                show(
                    route_pb2.DeleteRouteResponse(),
                    lambda: print(f"deleted route {args.name}", file=out),
                )
            elif action == "switch":
                target = "" if args.input == "auto" else args.input
                r = rs.SwitchInput(
                    route_pb2.SwitchInputRequest(name=args.name, input_id=target),
                    metadata=md,
                    timeout=t,
                )
                show(r, lambda: _route_detail(r, out))
            elif action == "add-output":
                u = rs.AddOutput(
                    route_pb2.AddOutputRequest(
                        name=args.name, output=spec_pb2.Endpoint(**vars(_endpoint(args.uri)))
                    ),
                    metadata=md,
                    timeout=t,
                )
                show(u, lambda: print(_changes(u.changes), file=out))
            elif action == "remove-output":
                u = rs.RemoveOutput(
                    route_pb2.RemoveOutputRequest(name=args.name, output_id=args.id),
                    metadata=md,
                    timeout=t,
                )
                show(u, lambda: print(_changes(u.changes), file=out))
        elif cmd == "template":
            ts = client.templates
            if action == "list":
                tl = ts.ListTemplates(template_pb2.ListTemplatesRequest(), metadata=md, timeout=t)
                show(tl, lambda: _templates_table(tl.templates, out))
            elif action in ("get", "create"):
                if action == "get":
                    tp = ts.GetTemplate(
                        template_pb2.GetTemplateRequest(name=args.name), metadata=md, timeout=t
                    )
                else:
                    req_c = template_pb2.CreateTemplateRequest(name=args.name, spec=_spec(args))
                    tp = ts.CreateTemplate(req_c, metadata=md, timeout=t)
                show(tp, lambda: _templates_table([tp], out))
            elif action == "update":
                req_t = template_pb2.UpdateTemplateRequest(
                    name=args.name, spec=_spec(args), **_version(args)
                )
                ut = ts.UpdateTemplate(req_t, metadata=md, timeout=t)
                show(
                    ut,
                    lambda: [
                        print(f"{c.route}: {_changes(c.changes)}", file=out) for c in ut.routes
                    ],
                )
            elif action == "delete":
                ts.DeleteTemplate(
                    template_pb2.DeleteTemplateRequest(name=args.name), metadata=md, timeout=t
                )
                show(
                    template_pb2.DeleteTemplateResponse(),
                    lambda: print(f"deleted template {args.name}", file=out),
                )
        elif cmd == "key":
            ks = client.keys
            if action == "list":
                kl = ks.ListKeys(key_pb2.ListKeysRequest(), metadata=md, timeout=t)
                show(kl, lambda: _keys_table(kl.keys, out))
            elif action == "create":
                kc = ks.CreateKey(
                    key_pb2.CreateKeyRequest(name=args.name, role=ROLES[args.role]),
                    metadata=md,
                    timeout=t,
                )
                show(
                    kc,
                    lambda: print(
                        f"key {kc.key.id} ({args.role}); shown this once:\n{kc.secret}", file=out
                    ),
                )
            elif action == "revoke":
                k = ks.RevokeKey(key_pb2.RevokeKeyRequest(id=args.id), metadata=md, timeout=t)
                show(k, lambda: _keys_table([k], out))
        elif cmd == "system":
            v = client.system.GetVersion(system_pb2.GetVersionRequest(), metadata=md, timeout=t)
            kinds = client.system.ListEndpointKinds(
                system_pb2.ListEndpointKindsRequest(), metadata=md, timeout=t
            )
            me = client.system.WhoAmI(system_pb2.WhoAmIRequest(), metadata=md, timeout=t)
            both = system_pb2.ListEndpointKindsResponse(kinds=kinds.kinds)
            if args.json:
                doc = {
                    "version": MessageToDict(v, preserving_proto_field_name=True),
                    "kinds": MessageToDict(both, preserving_proto_field_name=True).get("kinds", []),
                    "key": MessageToDict(me, preserving_proto_field_name=True),
                }
                print(json.dumps(doc, indent=2), file=out)
            else:
                role = key_pb2.Role.Name(me.role).removeprefix("ROLE_").lower()
                gst = f"GStreamer {v.gstreamer_version}, API {v.api_version}"
                print(f"castway {v.castway_version} ({gst})", file=out)
                print(f"key {me.key_id} ({me.name}, {role})", file=out)
                _table(
                    [("SCHEME", "IN", "OUT", "AVAILABLE", "WHAT")]
                    + [
                        (
                            k.scheme,
                            "yes" if k.input else "no",
                            "yes" if k.output else "no",
                            "yes" if k.available else "no",
                            k.description,
                        )
                        for k in kinds.kinds
                    ],
                    out,
                )
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
            print(f"castway: {code.name}: {e.details()}", file=err)
        return EXIT_FAILED
    finally:
        client.close()
    return EXIT_OK
