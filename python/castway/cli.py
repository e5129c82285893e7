"""The ``castway`` command.

``castway relay -i URI … -o URI …`` runs one route in the foreground until SIGINT/SIGTERM; it
prints each switch between inputs and takes commands on stdin (``switch ID``, ``auto``,
``status``).
``castway demo`` serves a generated test pattern on an SRT listener (what ``make run`` starts).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from castway import __version__, check_uri, cli_remote, gstreamer_version
from castway.cli_remote import DEMO_PORT
from castway.errors import CastwayError, InvalidUriError
from castway.gateway import Gateway, Route, RouteStats

DEMO_INPUT = "test://?size=1280x720&fps=30&bitrate=3000"

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="castway", description="castway live-video gateway")
    p.add_argument("--version", action="version", version=f"castway {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    relay = sub.add_parser(
        "relay",
        help="run one route in the foreground",
        description="Relay inputs to outputs until SIGINT or SIGTERM.",
    )
    relay.add_argument(
        "-i", "--input", action="append", required=True, metavar="URI",
        help="input URI, in priority order (repeatable)",
    )
    relay.add_argument(
        "-o", "--output", action="append", default=[], metavar="URI",
        help="output URI (repeatable)",
    )
    relay.add_argument(
        "--stats-interval", type=float, default=5.0, metavar="SECONDS",
        help="print stats every SECONDS (0: never; default 5)",
    )
    relay.add_argument(
        "--json", action="store_true", help="print stats to stdout as one JSON object per line"
    )
    relay.add_argument("--name", default="relay", help="route name (default: relay)")
    relay.add_argument(
        "--queue-bytes", type=int, default=None, metavar="N",
        help="per-output queue bound before drops are counted, SRT and file outputs "
             "(default 2 MiB; UDP outputs send at once, bounded by their socket buffer)",
    )
    relay.add_argument(
        "--loss-timeout", type=int, default=None, metavar="MS",
        help="an input without data this long is lost (default 300, at least 50)",
    )
    relay.add_argument(
        "--failback-after", type=int, default=None, metavar="MS",
        help="a better input must be healthy this long before the route goes back to it "
        "(default 5000)",
    )
    relay.add_argument(
        "--no-slate", action="store_true",
        help="send nothing (instead of a generated slate) when every input is lost",
    )
    relay.add_argument(
        "--slate-size", type=_size, default=None, metavar="WxH",
        help="the slate's picture size (default: the input's, else 1280x720)",
    )

    demo = sub.add_parser(
        "demo", help="serve a test pattern on an SRT listener (what `make run` starts)"
    )
    demo.add_argument("--port", type=int, default=DEMO_PORT, help=f"SRT port (default {DEMO_PORT})")
    demo.add_argument("--input", default=DEMO_INPUT, metavar="URI", help="the signal to serve")
    demo.add_argument("--stats-interval", type=float, default=10.0, metavar="SECONDS")
    demo.add_argument("--json", action="store_true")

    sub.add_parser("version", help="print castway's and GStreamer's versions")
    cli_remote.add_commands(sub)
    return p


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}

COMMANDS_HELP = (
    "commands: `switch ID` (switch to input ID and hold it), `auto` (back to automatic), "
    "`status`, `help`"
)


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT")
    return int(w), int(h)


@dataclass
class SwitchOptions:
    loss_timeout_ms: int | None = None
    failback_after_ms: int | None = None
    slate: bool | None = None
    slate_size: tuple[int, int] | None = None


def run_command(route: Route, line: str, out: TextIO) -> None:
    """Applies one stdin command to the route; answers on ``out``."""
    words = line.split()
    if not words:
        return
    try:
        match words:
            case ["switch" | "lock", input_id]:
                route.switch_to(input_id)
                out.write(f"castway: locked to {input_id}\n")
            case ["auto" | "unlock"]:
                route.auto()
                out.write("castway: automatic input choice\n")
            case ["status"]:
                out.write(format_stats(route.stats()) + "\n")
            case ["help"]:
                out.write(COMMANDS_HELP + "\n")
            case _:
                out.write(f"castway: unknown command {line.strip()!r}; {COMMANDS_HELP}\n")
    except CastwayError as e:
        out.write(f"castway: {e}\n")
    out.flush()


def _read_commands(route: Route, stdin: TextIO, out: TextIO) -> None:
    """Runs stdin commands until EOF (a daemon thread of the relay)."""
    for line in stdin:
        run_command(route, line, out)


def _print_switches(route: Route, as_json: bool, out: TextIO) -> None:
    """Prints each switch as it happens (a daemon thread of the relay)."""
    for ev in route.switches():
        if as_json:
            record = {"event": "switch", **ev}
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
        else:
            out.write(
                f"castway: switch {ev['from'] or 'nothing'} -> {ev['to'] or 'nothing'} "
                f"({ev['reason']})\n"
            )
        out.flush()


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


def _report(stats: RouteStats, as_json: bool, out: TextIO) -> None:
    if as_json:
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **stats}
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
    else:
        out.write(format_stats(stats) + "\n")
    out.flush()


def _check_uris(inputs: Sequence[str], outputs: Sequence[str]) -> str | None:
    """The first invalid URI's message, or None."""
    for uri in inputs:
        try:
            check_uri(uri, "input")
        except InvalidUriError as e:
            return f"input {e}"
    for uri in outputs:
        try:
            check_uri(uri, "output")
        except InvalidUriError as e:
            return f"output {e}"
    return None


def run_route(
    name: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    stats_interval: float,
    as_json: bool,
    queue_bytes: int | None = None,
    banner: str | None = None,
    switch: SwitchOptions | None = None,
    commands: TextIO | None = None,
) -> int:
    """Runs one route until SIGINT/SIGTERM; prints stats every ``stats_interval`` seconds and
    each switch as it happens, and takes commands from ``commands`` (stdin) if given."""
    bad = _check_uris(inputs, outputs)
    if bad:
        print(f"castway: {bad}", file=sys.stderr)
        return EXIT_USAGE
    # SIGINT/SIGTERM are blocked and taken with sigwait: no Python handler runs at an arbitrary
    # point, and every thread the gateway starts inherits the mask, so the signal waits for
    # the main thread.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    printer: threading.Thread | None = None
    try:
        with Gateway() as gw:
            sw = switch or SwitchOptions()
            route = gw.add_route(
                name, list(inputs), list(outputs), queue_bytes=queue_bytes,
                loss_timeout_ms=sw.loss_timeout_ms, failback_after_ms=sw.failback_after_ms,
                slate=sw.slate, slate_size=sw.slate_size,
            )
            if banner:
                print(banner, file=sys.stderr, flush=True)
            # Human-readable stats go to stderr so stdout stays clean for --json consumers.
            out = sys.stdout if as_json else sys.stderr
            printer = threading.Thread(
                target=_print_switches, args=(route, as_json, out), daemon=True
            )
            printer.start()
            if commands is not None:
                threading.Thread(
                    target=_read_commands, args=(route, commands, sys.stderr), daemon=True
                ).start()
            if stats_interval <= 0:
                signal.sigwait(STOP_SIGNALS)
            else:
                next_report = time.monotonic() + stats_interval
                while signal.sigtimedwait(
                    STOP_SIGNALS, max(0.0, next_report - time.monotonic())
                ) is None:
                    _report(route.stats(), as_json, out)
                    next_report += stats_interval
        # The route has stopped: its counters are final. One last line with the totals.
        if stats_interval > 0:
            _report(route.stats(), as_json, out)
    except CastwayError as e:
        print(f"castway: {e}", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    # The gateway is closed, which ends the printer's wait: let it finish before the
    # interpreter does (a thread still inside the native module at exit would be torn down).
    if printer is not None:
        printer.join(timeout=5)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return cli_remote.serve(args)
    if args.command in ("route", "template", "key", "system"):
        return cli_remote.remote(args)
    if args.command == "version":
        print(f"castway {__version__} (GStreamer {gstreamer_version()})")
        return EXIT_OK
    if args.command == "demo":
        port = args.port
        banner = (
            f"castway: serving {args.input} on srt://:{port} (SRT listener)\n"
            f"castway: watch it with: ffplay srt://127.0.0.1:{port}\n"
            "castway: stop with Ctrl-C"
        )
        return run_route(
            "demo", [args.input], [f"srt://:{port}?mode=listener"],
            args.stats_interval, args.json, banner=banner,
        )
    switch = SwitchOptions(
        loss_timeout_ms=args.loss_timeout,
        failback_after_ms=args.failback_after,
        slate=False if args.no_slate else None,
        slate_size=args.slate_size,
    )
    return run_route(
        args.name, args.input, args.output, args.stats_interval, args.json, args.queue_bytes,
        switch=switch, commands=sys.stdin,
    )
