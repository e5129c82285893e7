"""``castway relay`` and ``castway demo``: one route in the foreground until SIGINT/SIGTERM,
its stats printed every few seconds, each switch as it happens, and commands taken on stdin
(``switch ID``, ``auto``, ``status``)."""

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
from typing import Any, TextIO

from castway import check_uri
from castway.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from castway.cli.tables import format_stats
from castway.errors import CastwayError, InvalidUriError, field_of
from castway.gateway import Gateway, Route, RouteStats, is_shared_uri
from castway.redact import redact_uri

DEMO_INPUT = "test://?size=1280x720&fps=30&bitrate=3000"
# The demo's SRT port, for `castway demo` and `castway serve --demo` alike.
DEMO_PORT = 9710

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}

COMMANDS_HELP = (
    "commands: `switch ID` (switch to input ID and hold it), `auto` (back to automatic), "
    "`status`, `help`"
)


def add_commands(sub: Any) -> None:
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
        "--gop-cache-bytes", type=int, default=None, metavar="N",
        help="the last GOP kept for outputs that start late, instant start (default 1 MiB; "
             "0: off)",
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
        "--slate-size", default=None, metavar="WxH",
        help="the slate's picture size (default: the input's, else 1280x720)",
    )
    relay.set_defaults(run=_relay)

    demo = sub.add_parser("demo", help="serve a test pattern on an SRT listener")
    demo.add_argument("--port", type=int, default=DEMO_PORT, help=f"SRT port (default {DEMO_PORT})")
    demo.add_argument("--input", default=DEMO_INPUT, metavar="URI", help="the signal to serve")
    demo.add_argument("--stats-interval", type=float, default=10.0, metavar="SECONDS")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(run=_demo)


def _relay(args: argparse.Namespace) -> int:
    switch = SwitchOptions(
        loss_timeout_ms=args.loss_timeout,
        failback_after_ms=args.failback_after,
        slate=False if args.no_slate else None,
        slate_size=args.slate_size,
    )
    return run_route(
        args.name, args.input, args.output, args.stats_interval, args.json, args.queue_bytes,
        switch=switch, commands=sys.stdin, gop_cache_bytes=args.gop_cache_bytes,
    )


def _demo(args: argparse.Namespace) -> int:
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


@dataclass
class SwitchOptions:
    loss_timeout_ms: int | None = None
    failback_after_ms: int | None = None
    slate: bool | None = None
    slate_size: str | None = None


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


# The switch printer and the stats reports write whole lines one at a time: a text stream's
# write is not atomic across threads, and two lines interleaved are neither valid JSON.
_LINES = threading.Lock()


def _print_switches(route: Route, as_json: bool, out: TextIO) -> None:
    """Prints each switch as it happens (a daemon thread of the relay)."""
    for ev in route.switches():
        if as_json:
            record = {"event": "switch", **ev}
            line = json.dumps(record, separators=(",", ":")) + "\n"
        else:
            line = (
                f"castway: switch {ev['from'] or 'nothing'} -> {ev['to'] or 'nothing'} "
                f"({ev['reason']})\n"
            )
        with _LINES:
            out.write(line)
            out.flush()


def _report(stats: RouteStats, as_json: bool, out: TextIO) -> None:
    if as_json:
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **stats}
        line = json.dumps(record, separators=(",", ":")) + "\n"
    else:
        line = format_stats(stats) + "\n"
    with _LINES:
        out.write(line)
        out.flush()


def _check_uris(inputs: Sequence[str], outputs: Sequence[str]) -> str | None:
    """The first invalid URI's message, or None. An ``srt-shared://`` endpoint is one: a relay
    has no shared SRT port, so nothing could ever reach it."""
    for role, uris in (("input", inputs), ("output", outputs)):
        for uri in uris:
            try:
                check_uri(uri, role)
            except InvalidUriError as e:
                return f"{role} {e}"
            if is_shared_uri(uri):
                return (
                    f"{role} `{redact_uri(uri)}`: srt-shared:// is a place on a gateway's "
                    "shared SRT port, and castway relay has none (the shared port is "
                    "`castway serve --srt-listen`, or `Gateway.listen_srt` in Python); "
                    "for a port of its own use srt://:PORT?mode=listener"
                )
    return None


def _stop_signal(timeout: float) -> bool:
    """Waits up to ``timeout`` for SIGINT or SIGTERM. A process stopped and continued
    (SIGSTOP, Ctrl-Z) past the deadline makes CPython's sigtimedwait return an empty siginfo
    (``si_signo`` 0) instead of None: only a signal of the set counts."""
    got = signal.sigtimedwait(STOP_SIGNALS, timeout)
    return got is not None and got.si_signo in STOP_SIGNALS


def release_stop_signals(old_mask: set[int | signal.Signals], stopped: bool) -> None:
    """Ends a command's hold on SIGINT/SIGTERM (blocked for its sigwait). Any still pending
    is taken first: restoring the mask with one pending would run Python's default handler,
    a KeyboardInterrupt (a traceback, and a death by signal instead of the exit status). Once
    one has ``stopped`` the command the process is on its way out, and they stay blocked: a
    second stop signal during shutdown or after (an impatient double Ctrl-C, the terminal's
    SIGINT and `timeout -s INT`'s both) is absorbed. Otherwise the mask is restored."""
    while True:
        got = signal.sigtimedwait(STOP_SIGNALS, 0)
        if got is None or got.si_signo not in STOP_SIGNALS:
            break
    if not stopped:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


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
    gop_cache_bytes: int | None = None,
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
    stopped = False
    try:
        with Gateway() as gw:
            sw = switch or SwitchOptions()
            route = gw.add_route(
                name, list(inputs), list(outputs), queue_bytes=queue_bytes,
                loss_timeout_ms=sw.loss_timeout_ms, failback_after_ms=sw.failback_after_ms,
                slate=sw.slate, slate_size=sw.slate_size, gop_cache_bytes=gop_cache_bytes,
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
                while not _stop_signal(max(0.0, next_report - time.monotonic())):
                    if time.monotonic() >= next_report:
                        _report(route.stats(), as_json, out)
                        next_report += stats_interval
            stopped = True
        # The route has stopped: its counters are final. One last line with the totals.
        if stats_interval > 0:
            _report(route.stats(), as_json, out)
    except CastwayError as e:
        print(f"castway: {e}", file=sys.stderr)
        # A URI only this host can refuse (an interface it does not have), or a flag's value a
        # setting does not take (`--slate-size 641x360`): usage errors too.
        usage = isinstance(e, InvalidUriError) or field_of(e) is not None
        return EXIT_USAGE if usage else EXIT_FAILED
    finally:
        if not stopped:
            release_stop_signals(old_mask, stopped)
    # The gateway is closed, which ends the printer's wait: let it finish before the
    # interpreter does (a thread still inside the native module at exit would be torn down).
    if printer is not None:
        printer.join(timeout=5)
    release_stop_signals(old_mask, stopped)
    return EXIT_OK
