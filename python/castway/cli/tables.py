"""How the ``castway`` command prints: a relay's stats, and a server's replies as tables."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TextIO

from castway.gateway import Event, RouteStats
from castway.roles import role_name
from castway.v1 import event_pb2, key_pb2, route_pb2, system_pb2, template_pb2


def _mbps(bps: int) -> str:
    return f"{bps / 1e6:.2f} Mb/s"


def format_stats(s: RouteStats) -> str:
    """One human line per route, then one per endpoint."""
    sw = s["switch"]
    head = f"{s['name']}: {s['state']}, up {s['uptime_s']:.0f}s, on air {sw['active'] or '-'}"
    if sw["pending"]:
        head += f" (next: {sw['pending']} at its keyframe)"
    if sw["locked"]:
        head += f", locked to {sw['locked']}"
    lines = [head]
    for kind, eps in (("in", s["inputs"]), ("out", s["outputs"])):
        for e in eps:
            line = (
                f"  {kind} {e['id']:<6} {e['state']:<8} {_mbps(e['bitrate_bps']):>12} "
                f"{e['packets']:>10} pkts {e['drops']:>6} drops  {e['uri']}"
            )
            srt = e.get("srt")
            if srt:
                line += f"  rtt {srt['rtt_ms']:.1f}ms loss {srt['loss']}"
                if srt["callers"]:
                    line += " callers " + ",".join(c["address"] for c in srt["callers"])
            if e.get("last_error"):
                line += f"  [{e['last_error']}]"
            lines.append(line)
    return "\n".join(lines)


def table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def routes_table(routes: Sequence[route_pb2.Route], out: TextIO) -> None:
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
    table(rows, out)


def route_detail(r: route_pb2.Route, out: TextIO) -> None:
    routes_table([r], out)
    if r.status.error:
        print(f"error: {r.status.error}", file=out)
    if r.status.switch.pending:
        print(f"next on air: {r.status.switch.pending} (at its next keyframe)", file=out)
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
    table(rows, out)


def update_detail(u: route_pb2.UpdateRouteResponse, out: TextIO) -> None:
    route_detail(u.route, out)
    print(changes(u.changes), file=out)


def changes(c: route_pb2.Changes) -> str:
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
    recording = RECORDING_CHANGES.get(c.recording)
    if recording:
        parts.append(recording)
    return "; ".join(parts) or "nothing changed on air"


# What an update did to the recording policy (the recorder follows it: by its schedule, if any).
RECORDING_CHANGES = {
    route_pb2.RECORDING_CHANGE_ENABLED: "recording enabled",
    route_pb2.RECORDING_CHANGE_DISABLED: "recording disabled",
    route_pb2.RECORDING_CHANGE_POLICY: "recording policy changed",
}


def templates_table(templates: Sequence[template_pb2.Template], out: TextIO) -> None:
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
    table(rows, out)


def keys_table(keys: Sequence[key_pb2.ApiKey], out: TextIO) -> None:
    rows = [("ID", "NAME", "ROLE", "REVOKED")]
    for k in keys:
        rows.append(
            (
                k.id,
                k.name,
                role_name(k.role),
                "yes" if k.revoked else "no",
            )
        )
    table(rows, out)


def system(
    v: system_pb2.GetVersionResponse,
    me: system_pb2.WhoAmIResponse,
    kinds: system_pb2.ListEndpointKindsResponse,
    out: TextIO,
) -> None:
    gst = f"GStreamer {v.gstreamer_version}, API {v.api_version}"
    print(f"castway {v.castway_version} ({gst})", file=out)
    print(f"key {me.key_id} ({me.name}, {role_name(me.role)})", file=out)
    table(
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


# What an event line shows after its kind and route, in this order.
_EVENT_DETAILS = (
    "input", "output", "from", "to", "reason", "address", "stream_id", "user", "condition",
    "active", "name", "key", "key_id", "error",
)


def event_line(e: Event) -> str:
    """One event on one line: number, local time, kind, route, then its other fields."""
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
    at += f".{int(e['at'] * 1000) % 1000:03d}"
    details = " ".join(
        f"{k}={e[k]!r}" if k == "error" else f"{k}={e[k]}"  # type: ignore[literal-required]
        for k in _EVENT_DETAILS
        if k in e
    )
    return f"#{e['seq']} {at} {e['kind']} {e.get('route', '-')} {details}".rstrip()


def webhooks_table(hooks: Sequence[event_pb2.Webhook], out: TextIO) -> None:
    rows = [("NAME", "URL", "KINDS", "ROUTES", "DELIVERED", "FAILED", "RETRIES", "DROPPED",
             "LAST ERROR")]
    for w in hooks:
        st = w.status
        rows.append((
            w.name, w.url, ",".join(w.kinds) or "*", ",".join(w.routes) or "*",
            str(st.delivered), str(st.failed), str(st.retries), str(st.dropped),
            st.last_error or "-",
        ))
    table(rows, out)
