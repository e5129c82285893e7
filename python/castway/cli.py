"""The ``castway`` command.

``castway relay -i URI … -o URI …`` runs one route in the foreground until SIGINT/SIGTERM.
``castway demo`` serves a generated test pattern on an SRT listener (what ``make run`` starts).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from castway import __version__, check_uri, gstreamer_version
from castway.errors import CastwayError, InvalidUriError
from castway.gateway import Gateway, RouteStats

DEMO_PORT = 9710
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
        help="per-output queue bound before drops are counted (default 2 MiB)",
    )

    demo = sub.add_parser(
        "demo", help="serve a test pattern on an SRT listener (what `make run` starts)"
    )
    demo.add_argument("--port", type=int, default=DEMO_PORT, help=f"SRT port (default {DEMO_PORT})")
    demo.add_argument("--input", default=DEMO_INPUT, metavar="URI", help="the signal to serve")
    demo.add_argument("--stats-interval", type=float, default=10.0, metavar="SECONDS")
    demo.add_argument("--json", action="store_true")

    sub.add_parser("version", help="print castway's and GStreamer's versions")
    return p


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _mbps(bps: int) -> str:
    return f"{bps / 1e6:.2f} Mb/s"


def format_stats(s: RouteStats) -> str:
    """One human line per route, then one per endpoint."""
    lines = [f"{s['name']}: {s['state']}, up {s['uptime_s']:.0f}s"]
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
) -> int:
    """Runs one route until SIGINT/SIGTERM; prints stats every ``stats_interval`` seconds."""
    bad = _check_uris(inputs, outputs)
    if bad:
        print(f"castway: {bad}", file=sys.stderr)
        return EXIT_USAGE
    # SIGINT/SIGTERM are blocked and taken with sigwait: no Python handler runs at an arbitrary
    # point, and every thread the gateway starts inherits the mask, so the signal waits for
    # the main thread.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        with Gateway() as gw:
            route = gw.add_route(name, list(inputs), list(outputs), queue_bytes=queue_bytes)
            if banner:
                print(banner, file=sys.stderr, flush=True)
            # Human-readable stats go to stderr so stdout stays clean for --json consumers.
            out = sys.stdout if as_json else sys.stderr
            if stats_interval <= 0:
                signal.sigwait(STOP_SIGNALS)
            else:
                next_report = time.monotonic() + stats_interval
                while signal.sigtimedwait(
                    STOP_SIGNALS, max(0.0, next_report - time.monotonic())
                ) is None:
                    _report(route.stats(), as_json, out)
                    next_report += stats_interval
    except CastwayError as e:
        print(f"castway: {e}", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    return run_route(
        args.name, args.input, args.output, args.stats_interval, args.json, args.queue_bytes
    )
