"""``castway probe srt://HOST:PORT``: measures an SRT path (round trip, loss, jitter) against a
listener for a few seconds at a given bitrate, and prints the latency and bandwidth overhead
the SRT Deployment Guide recommends for it, as the URI keys to use.

With ``--apply ROUTE`` it then writes them into the ``srt://`` endpoints of that route on a
castway server (``latency``, and ``oheadbw`` with ``maxbw=0&inputbw=0``: libsrt paces by the
overhead only then, in each URI); with ``--apply-template NAME`` into the template's SRT
defaults (``srt.latency_ms``; ``maxbw``, ``inputbw`` and ``oheadbw`` in ``srt.options``),
which its routes' ``srt://`` endpoints inherit where they do not set the key. The server is
reached as the client commands reach it (``--addr``, ``--key-file``, TLS); the route or
template is checked before the probe starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import unquote

import grpc

from castway import errors, srt_probe
from castway.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from castway.cli.remote import client_options, connect, rpc_error
from castway.client import Client
from castway.v1 import route_pb2, spec_pb2, template_pb2

__all__ = ["add_command"]


def _bitrate(text: str) -> int:
    """``2M``, ``500k`` or a number of bit/s."""
    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a bitrate (e.g. 2M, 500k)") from None
    if not 8_000 <= value <= 1_000_000_000:
        raise argparse.ArgumentTypeError(f"`{text}`: the bitrate must be 8k to 1G")
    return int(value)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a number of seconds") from None
    if not 1 <= value <= 600:
        raise argparse.ArgumentTypeError(f"`{text}`: probe for 1 to 600 seconds")
    return value


def add_command(sub: Any) -> None:
    p = sub.add_parser("probe", help="measure an SRT path and recommend latency and overhead",
                       description=__doc__, parents=[client_options()])
    p.add_argument("uri", help="the listener to probe: srt://HOST:PORT (passphrase etc. as keys)")
    p.add_argument("--seconds", type=_seconds, default=5.0, help="how long (default 5)")
    p.add_argument("--bitrate", type=_bitrate, default=2_000_000,
                   help="what to send, e.g. 2M (default), 500k")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    to = p.add_mutually_exclusive_group()
    to.add_argument("--apply", metavar="ROUTE",
                    help="write the recommendation into the route's srt:// endpoints")
    to.add_argument("--apply-template", metavar="NAME",
                    help="write the recommendation into the template's SRT defaults")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    client = None
    if args.apply or args.apply_template:
        client = connect(args, sys.stderr)
        if client is None:
            return EXIT_FAILED
    try:
        return _probe(args, client)
    except _Refused as e:
        print(f"castway probe: {e}", file=sys.stderr)
        return EXIT_FAILED
    except grpc.RpcError as e:
        said = rpc_error(e, client) if client is not None else f"{e.code().name}: {e.details()}"
        print(f"castway probe: {said}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if client is not None:
            client.close()


class _Refused(Exception):
    """What cannot be applied, and why."""


# The URI key the recommended latency goes in; it sets both sides of the link.
LATENCY = "latency"
# Set after `latency`, these would override the recommendation for one side: removed.
ONE_SIDE = ("rcvlatency", "peerlatency")
OVERHEAD_KEYS = ("oheadbw",)
# libsrt (1.5) paces by SRTO_OHEADBW only when SRTO_MAXBW is 0 (relative to the input rate),
# the input rate being its own estimate when SRTO_INPUTBW is 0; castway's default maxbw is -1
# (unlimited), which ignores the overhead. So the overhead goes with these.
RELATIVE = {"maxbw": "0", "inputbw": "0"}


def _keys(overhead: int) -> dict[str, str]:
    """The bandwidth keys the recommended overhead needs, in the order they are written."""
    return {**RELATIVE, "oheadbw": str(overhead)}


def _uri_keys(latency_ms: int, overhead: int) -> str:
    return "&".join([f"latency={latency_ms}",
                     *(f"{k}={v}" for k, v in _keys(overhead).items())])


def _with_keys(uri: str, latency_ms: int, overhead: int) -> tuple[str, dict[str, str]]:
    """``uri`` with its latency and bandwidth keys (in any spelling) replaced by these, and its
    ``rcvlatency`` and ``peerlatency`` removed (``latency`` sets both sides); and the values
    it had, by key (``-``: unset; those two only if it had them)."""
    head, _, query = uri.partition("?")
    kept: list[str] = []
    before = dict.fromkeys((LATENCY, *_keys(overhead)), "-")
    for part in (p for p in query.split("&") if p):
        key = unquote(part.partition("=")[0]).lower()
        if key in before or key in ONE_SIDE:
            before[key] = part.partition("=")[2]
        else:
            kept.append(part)
    kept.append(_uri_keys(latency_ms, overhead))
    return f"{head}?{'&'.join(kept)}", before


def _changes(before: dict[str, str], after: dict[str, str], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{k} {before[k]} -> {v}" for k, v in after.items())


def _is_srt(uri: str) -> bool:
    return uri.partition("://")[0].lower() == "srt"


def _route(client: Client, name: str) -> route_pb2.Route:
    """The route, refused when it has no srt:// endpoint of its own."""
    try:
        r = client.routes.GetRoute(
            route_pb2.GetRouteRequest(name=name), metadata=client.metadata,
            timeout=client.timeout_s,
        )
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            raise _Refused(f"--apply: there is no route `{name}`") from None
        raise
    own = [e for e in (*r.spec.inputs, *r.spec.outputs) if _is_srt(e.uri)]
    if not own:
        inherited = r.spec.template and any(
            _is_srt(e.uri) for e in (*r.resolved.inputs, *r.resolved.outputs)
        )
        hint = (f"; its template `{r.spec.template}` has some: use --apply-template "
                f"{r.spec.template}" if inherited else "")
        raise _Refused(f"--apply: route `{name}` has no srt:// endpoint of its own{hint}")
    return r


def _template(client: Client, name: str) -> template_pb2.Template:
    try:
        return client.templates.GetTemplate(
            template_pb2.GetTemplateRequest(name=name), metadata=client.metadata,
            timeout=client.timeout_s,
        )
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            raise _Refused(f"--apply-template: there is no template `{name}`") from None
        raise


def _apply_route(client: Client, name: str, latency_ms: int, overhead: int) -> list[str]:
    r = _route(client, name)
    spec = spec_pb2.RouteSpec()
    spec.CopyFrom(r.spec)
    changed = []
    for group in (spec.inputs, spec.outputs):
        for e in group:
            if _is_srt(e.uri):
                e.uri, before = _with_keys(e.uri, latency_ms, overhead)
                after = {LATENCY: str(latency_ms), **_keys(overhead)}
                after.update((k, "-") for k in ONE_SIDE if k in before)
                changed.append(f"route {name} {e.id}: {_changes(before, after)}")
    client.routes.UpdateRoute(
        route_pb2.UpdateRouteRequest(name=name, spec=spec, version=r.version),
        metadata=client.metadata, timeout=client.timeout_s,
    )
    return changed


def _apply_template(client: Client, name: str, latency_ms: int, overhead: int) -> list[str]:
    t = _template(client, name)
    spec = spec_pb2.RouteSpec()
    spec.CopyFrom(t.spec)
    lat = str(spec.srt.latency_ms) if spec.srt.HasField("latency_ms") else "-"
    keys = _keys(overhead)
    before = {k: spec.srt.options.get(k, "-") for k in keys}
    after = dict(keys)
    for k in (k for k in ONE_SIDE if k in spec.srt.options):
        before[k], after[k] = spec.srt.options[k], "-"
        del spec.srt.options[k]
    spec.srt.latency_ms = latency_ms
    spec.srt.options.update(keys)
    client.templates.UpdateTemplate(
        template_pb2.UpdateTemplateRequest(name=name, spec=spec, version=t.version),
        metadata=client.metadata, timeout=client.timeout_s,
    )
    return [f"template {name}: srt.latency_ms {lat} -> {latency_ms}, "
            f"{_changes(before, after, 'srt.options.')}"]


def _probe(args: argparse.Namespace, client: Client | None) -> int:
    # What is to be changed is checked first: a probe takes seconds.
    if client is not None and args.apply:
        _route(client, args.apply)
    elif client is not None:
        _template(client, args.apply_template)
    try:
        r = srt_probe(args.uri, args.seconds, args.bitrate)
    except errors.CastwayError as e:
        # On stderr: stdout is the report's (`--json | jq`).
        print(f"castway probe: {e}", file=sys.stderr)
        usage = isinstance(e, (errors.InvalidUriError, errors.ConfigError))
        return EXIT_USAGE if usage else EXIT_FAILED
    changed: list[str] = []
    if client is not None and args.apply:
        changed = _apply_route(client, args.apply, r["latency_ms"], r["overhead_percent"])
    elif client is not None:
        changed = _apply_template(
            client, args.apply_template, r["latency_ms"], r["overhead_percent"]
        )
    if args.json:
        print(json.dumps({**r, "applied": changed} if client is not None else r))
        return EXIT_OK
    print(f"round trip  {r['rtt_ms']:.1f} ms (min {r['rtt_min_ms']:.1f}, max "
          f"{r['rtt_max_ms']:.1f}), jitter {r['jitter_ms']:.1f} ms")
    print(f"loss        {r['loss_percent']:.2f} % ({r['lost']} of {r['packets']} packets, "
          f"{r['retransmitted']} retransmitted) over {r['seconds']:.1f} s")
    print(f"bandwidth   {r['bandwidth_mbps']:.1f} Mb/s (libsrt's estimate)")
    beyond = " (loss beyond the guide's table: fix the link first)" if r["beyond_guide"] else ""
    print(f"recommended latency {r['latency_ms']} ms ({r['rtt_multiplier']} x RTT), overhead "
          f"{r['overhead_percent']} %{beyond}")
    print(f"URI keys    {_uri_keys(r['latency_ms'], r['overhead_percent'])}")
    for line in changed:
        print(f"applied     {line}")
    return EXIT_OK
