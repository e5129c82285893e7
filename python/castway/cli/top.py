"""``castway top``: a live terminal view of a castway server's routes, over gRPC.

One ``ListRoutes`` (every page) per refresh, each second by default. The overview has one line
per route; Enter opens a route's inputs, outputs, SRT callers and last switches. Keys: ↑/↓ or
j/k choose, Enter or → opens, Esc, ← or Backspace goes back, q quits. It fits an 80x24
terminal: the last column takes what is left and long names are cut with ``…``. It never
paints an SRT passphrase or stream ID, whatever the key may read: a screen is easily seen.

Inputs show what they carry and their TR 101 290 state: a ``TR`` column with the worst
priority in force (``P1``, ``P2``, ``P3`` or ``ok``), and in the detail view the conditions.

The screens are built by plain functions (``overview``, ``detail``) from the API's messages,
so what ``top`` shows is what ``castway route get`` would say; curses only paints them.
"""

from __future__ import annotations

import argparse
import curses
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import grpc

from castway.cli.exits import EXIT_FAILED, EXIT_OK
from castway.cli.remote import client_options, connect, fetch_routes, rpc_error
from castway.client import Client
from castway.redact import redact_text, redact_uri
from castway.v1 import analysis_pb2, route_pb2


def add_command(sub: Any) -> None:
    p = sub.add_parser(
        "top", parents=[client_options()], help="live view of a castway server's routes"
    )
    p.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between refreshes"
    )
    p.add_argument("--route", metavar="NAME", help="open this route's detail view")
    p.set_defaults(run=run)


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns, cut with ``…``."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def mbps(bps: int) -> str:
    return f"{bps / 1e6:.1f}"


def _srt(group: Sequence[route_pb2.EndpointStatus]) -> list[route_pb2.SrtStatus]:
    return [e.srt for e in group if e.HasField("srt")]


def rtt_ms(status: route_pb2.RouteStatus) -> str:
    """The worst round-trip time of the route's SRT links (a listener's is its worst
    caller's), or ``-`` when it has none."""
    links = _srt([*status.inputs, *status.outputs])
    return f"{max(s.rtt_ms for s in links):.0f}" if links else "-"


def srt_loss(status: route_pb2.RouteStatus) -> str:
    links = _srt([*status.inputs, *status.outputs])
    return str(sum(s.loss for s in links)) if links else "-"


def on_air_bitrate(status: route_pb2.RouteStatus) -> int:
    return sum(e.bitrate_bps for e in status.inputs if e.active)


def tr_state(status: route_pb2.RouteStatus) -> str:
    """The worst TR 101 290 priority in force over the route's inputs (``P1``, ``P2``, ``P3``),
    ``ok`` when none is, ``-`` before any input delivered."""
    analysed = [e.analysis for e in status.inputs if e.analysis.pids]
    if not analysed:
        return "-"
    worst = min((c.priority for a in analysed for c in a.active), default=0)
    return f"P{worst}" if worst else "ok"


def stream_info(a: analysis_pb2.TsAnalysis) -> str:
    """What an input carries: ``h264 640x360 25fps, aac``."""
    parts = []
    for v in a.video:
        size = f" {v.width}x{v.height}" if v.HasField("width") else ""
        rate = f" {v.frame_rate:g}fps" if v.HasField("frame_rate") else ""
        parts.append(f"{v.codec}{size}{rate}")
    parts += [x.codec or "audio" for x in a.audio]
    return ", ".join(parts)


def conditions(a: analysis_pb2.TsAnalysis) -> str:
    """The TR 101 290 conditions in force, worst first (``P1 pat_error, pid_error 0x101``), or
    ``ok``."""
    if not a.active:
        return "ok"
    ordered = sorted(a.active, key=lambda c: c.priority)
    named = [c.check + (f" 0x{c.pid:x}" if c.HasField("pid") else "") for c in ordered]
    return f"P{ordered[0].priority} " + ", ".join(named)


def last_switch(status: route_pb2.RouteStatus) -> str:
    """``TO REASON HH:MM:SS (from FROM)`` of the latest switch, in local time: what went on
    air and why first, as a narrow column shows only the start."""
    if not status.switch.history:
        return "-"
    ev = status.switch.history[-1]
    at = datetime.fromtimestamp(ev.at.ToSeconds()).strftime("%H:%M:%S")
    return f"{ev.to_source or '-'} {ev.reason} {at} (from {ev.from_source or '-'})"


# (title, width, value): the overview's columns; the last takes the rest of the line.
COLUMNS: tuple[tuple[str, int], ...] = (
    ("ROUTE", 12),
    ("STATE", 7),
    ("ON AIR", 7),
    ("IN Mb/s", 7),
    ("OUT Mb/s", 8),
    ("RTT ms", 6),
    ("LOSS", 5),
    ("DROPS", 5),
    ("TR", 2),
    ("LAST SWITCH", 0),
)


def _row(cells: Sequence[str], width: int, mark: str = " ") -> str:
    """One line of the overview: ``mark`` (``>`` for the chosen route) then the cells."""
    parts = [mark]
    used = 1
    for (title, w), cell in zip(COLUMNS, cells, strict=True):
        if w == 0:
            parts.append(cut(cell, width - used))
            break
        right = title.endswith(("Mb/s", "ms")) or title in ("LOSS", "DROPS")
        text = cut(cell, w)
        parts.append(text.rjust(w) if right else text.ljust(w))
        used += w + 1
    return cut(parts[0] + " ".join(parts[1:]), width).rstrip()


def route_cells(r: route_pb2.Route) -> list[str]:
    s = r.status
    drops = sum(e.drops for e in [*s.inputs, *s.outputs])
    return [
        r.name,
        s.state or "-",
        s.active_input or "-",
        mbps(on_air_bitrate(s)),
        mbps(sum(e.bitrate_bps for e in s.outputs)),
        rtt_ms(s),
        srt_loss(s),
        str(drops),
        tr_state(s),
        last_switch(s),
    ]


def overview(
    routes: Sequence[route_pb2.Route], selected: int, width: int, height: int, footer: str
) -> list[str]:
    """The overview screen as ``height`` lines at most: a header, one line per route (the
    window scrolled so the selected one shows; it is marked ``>``), and ``footer``."""
    live = sum(1 for r in routes if r.status.state == "live")
    count = f"{len(routes)} route" + ("" if len(routes) == 1 else "s")
    head = cut(f"castway top — {count}, {live} live — {_now()}", width)
    lines = [head, _row([t for t, _ in COLUMNS], width)]
    rows = max(1, height - 3)
    first = min(max(0, selected - rows + 1), max(0, len(routes) - rows))
    for i, r in enumerate(routes[first : first + rows], start=first):
        lines.append(_row(route_cells(r), width, ">" if i == selected else " "))
    if not routes:
        lines.append("(no routes)")
    lines += [""] * (height - 1 - len(lines))
    lines.append(cut(footer, width))
    return lines[:height]


def _endpoint_lines(e: route_pb2.EndpointStatus, width: int) -> list[str]:
    """An endpoint's figures (``*`` when on air), then its URI and its last error, indented."""
    mark = "*" if e.active else " "
    extra = ""
    if e.HasField("srt"):
        extra = f" rtt {e.srt.rtt_ms:.0f}ms loss {e.srt.loss}"
        if e.srt.callers:
            extra += f" callers {len(e.srt.callers)}"
    if e.HasField("idle_ms") and e.idle_ms >= 1000:
        extra += f" idle {e.idle_ms / 1000:.0f}s"
    lines = [
        f"{mark}{cut(e.id, 10):<10} {cut(e.state, 9):<9} {mbps(e.bitrate_bps):>7} Mb/s "
        f"{e.drops:>6} drops{extra}",
        f"    {redact_uri(e.uri)}",
    ]
    if e.last_error:
        lines.append(f"    ! {redact_text(e.last_error)}")
    if e.HasField("analysis") and e.analysis.pids:
        info = stream_info(e.analysis)
        lines.append(f"    {info + ' · ' if info else ''}TR 101 290 {conditions(e.analysis)}")
    return [cut(line, width) for line in lines]


def detail(r: route_pb2.Route, width: int, height: int, footer: str) -> list[str]:
    """One route's screen: its state, inputs (``*`` on air), outputs with their SRT figures,
    each caller of a listener output, and the last switches, newest first."""
    s = r.status
    sw = s.switch
    head = f"{r.name}: {s.state or '-'}, up {s.uptime_s:.0f}s, on air {sw.active or '-'}"
    if sw.pending:
        head += f", next {sw.pending}"
    if sw.locked:
        head += f", locked to {sw.locked}"
    lines = [cut(head, width)]
    if s.error:
        lines.append(cut(f"error: {redact_text(s.error)}", width))
    lines.append("inputs")
    for e in s.inputs:
        lines += _endpoint_lines(e, width)
    lines.append("outputs")
    for e in s.outputs:
        lines += _endpoint_lines(e, width)
        for c in e.srt.callers:
            lines.append(cut(
                f"    caller {c.address} rtt {c.rtt_ms:.0f}ms loss {c.loss} "
                f"retrans {c.retransmissions} dropped {c.dropped}", width))
    lines.append(cut(f"switches ({sw.cuts} cuts)", width))
    for ev in reversed(sw.history):
        at = datetime.fromtimestamp(ev.at.ToSeconds()).strftime("%H:%M:%S")
        lines.append(cut(
            f"  {at} {ev.from_source or '-'} → {ev.to_source or '-'} ({ev.reason})", width))
    lines = lines[: height - 1]
    lines += [""] * (height - 1 - len(lines))
    lines.append(cut(footer, width))
    return lines


def _now() -> str:
    return datetime.now().strftime("%H:%M:%S")


class Top:
    """What the screen shows and where the cursor is; ``key`` moves it."""

    def __init__(self, client: Client, route: str | None) -> None:
        self.client = client
        self.routes: list[route_pb2.Route] = []
        self.selected = 0
        self.open: str | None = route
        self.error = ""

    def refresh(self) -> None:
        try:
            self.routes = fetch_routes(self.client)
            self.error = ""
        except grpc.RpcError as e:
            self.error = rpc_error(e, self.client)
        self.selected = min(self.selected, max(0, len(self.routes) - 1))

    def key(self, k: int) -> bool:
        """Acts on a key; False when it says quit."""
        if k in (ord("q"), ord("Q")):
            return False
        if self.open is None:
            if k in (curses.KEY_DOWN, ord("j")):
                self.selected = min(self.selected + 1, max(0, len(self.routes) - 1))
            elif k in (curses.KEY_UP, ord("k")):
                self.selected = max(self.selected - 1, 0)
            elif k in (curses.KEY_ENTER, 10, 13, curses.KEY_RIGHT, ord("l")) and self.routes:
                self.open = self.routes[self.selected].name
        elif k in (27, curses.KEY_LEFT, curses.KEY_BACKSPACE, 127, 8, ord("h")):
            self.open = None
        return True

    def lines(self, width: int, height: int) -> list[str]:
        footer = f"{self.client.addr}  " + (
            f"[{self.error}]" if self.error else "↑↓ choose  Enter open  Esc back  q quit"
        )
        if self.open is not None:
            for r in self.routes:
                if r.name == self.open:
                    return detail(r, width, height, footer)
            footer = f"{self.client.addr}  [no route {self.open}]  Esc back  q quit"
            return [""] * (height - 1) + [cut(footer, width)]
        return overview(self.routes, self.selected, width, height, footer)


def _paint(screen: Any, lines: list[str]) -> None:
    height, width = screen.getmaxyx()
    screen.erase()
    for y, line in enumerate(lines[:height]):
        # The bottom-right cell cannot be written without curses raising.
        text = line[: width - 1] if y == height - 1 else line[:width]
        try:
            screen.addstr(y, 0, text, curses.A_REVERSE if y in (1, height - 1) else 0)
        except curses.error:
            pass
    screen.refresh()


def _loop(screen: Any, top: Top, interval: float) -> None:
    curses.curs_set(0)
    curses.set_escdelay(25)
    screen.keypad(True)
    screen.timeout(100)
    next_refresh = 0.0
    while True:
        now = time.monotonic()
        if now >= next_refresh:
            top.refresh()
            next_refresh = now + interval
        height, width = screen.getmaxyx()
        _paint(screen, top.lines(width, height))
        k = screen.getch()
        if k != -1 and not top.key(k):
            return


def run(args: argparse.Namespace) -> int:
    if args.interval < 0.1:
        print("castway: --interval must be at least 0.1 s", file=sys.stderr)
        return EXIT_FAILED
    if not sys.stdout.isatty():
        print("castway: top needs a terminal (try `castway route list`)", file=sys.stderr)
        return EXIT_FAILED
    client = connect(args, sys.stderr)
    if client is None:
        return EXIT_FAILED
    client.timeout_s = min(client.timeout_s, max(2.0, 2 * args.interval))
    try:
        curses.wrapper(_loop, Top(client, args.route), args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return EXIT_OK
