"""``castway serve``: the gRPC control server in the foreground until SIGINT/SIGTERM.

The server's modules are imported when it runs, not when the command line is read, so the
client commands (``castway route …``) never load them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from castway.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from castway.cli.relay import DEMO_PORT, STOP_SIGNALS, release_stop_signals
from castway.client import DEFAULT_ADDR

if TYPE_CHECKING:
    from castway.server import Tls
    from castway.server.config import Declared

DEFAULT_DATA_DIR = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "castway"


def add_command(sub: Any) -> None:
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
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (loopback unless --insecure)",
    )
    serve.add_argument(
        "--metrics-key",
        action="store_true",
        help="/metrics answers only a scrape with an API key (Authorization: Bearer KEY)",
    )
    serve.add_argument(
        "--srt-listen",
        metavar="[HOST]:PORT",
        help="the shared SRT port: publishers and readers of every route's srt-shared:// "
        "endpoints, chosen by stream ID (docs/uri.md)",
    )
    serve.add_argument(
        "--events-file",
        type=Path,
        metavar="FILE",
        help="append every event to FILE as one line of JSON (created 0600; for log shippers)",
    )
    serve.add_argument(
        "--audit-log",
        type=Path,
        metavar="FILE",
        help="also append the audit trail to FILE (created 0600); it always goes to stderr",
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one object per line, a route's name in its own field (default text)",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help=f"also declare the demo route (test pattern on srt://:{DEMO_PORT})",
    )
    serve.set_defaults(run=serve_command)


def _demo() -> Declared:
    """The demo route ``--demo`` declares: a test pattern on an SRT listener."""
    from castway.server.config import Declared
    from castway.server.specs import Endpoint, Spec

    return Declared(
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


def serve_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from castway.server import Tls
    from castway.server.logs import JsonLines, formatter

    stream = out or sys.stderr
    # What serve prints goes through `out`: under --log-format json, as JSON lines too.
    out = cast(TextIO, JsonLines(stream)) if args.log_format == "json" else stream
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
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    handlers[0].setFormatter(formatter(args.log_format, "castway: %(name)s: %(message)s"))
    if args.audit_log is not None:
        try:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            fd = os.open(args.audit_log, flags, 0o600)
        except OSError as e:
            print(f"castway: cannot open the audit log {args.audit_log}: {e.strerror}", file=out)
            return EXIT_FAILED
        audit_file = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
        audit_file.setFormatter(formatter(args.log_format, "%(asctime)s %(message)s"))
        handlers.append(audit_file)
        logging.getLogger("castway.audit").addHandler(audit_file)
    logging.getLogger("castway").addHandler(handlers[0])
    logging.getLogger("castway").setLevel(logging.INFO)
    # SIGINT and SIGTERM wait for the main thread's sigwait: blocked here, before the server
    # starts a thread, every thread inherits the mask. (A Python handler instead would run
    # only once the main thread wakes, and a signal taken by another thread does not wake it.)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    code = EXIT_FAILED
    try:
        code = _serve(args, tls, out)
        return code
    finally:
        # Only a stop signal ends _serve with EXIT_OK.
        release_stop_signals(old_mask, stopped=code == EXIT_OK)
        logging.getLogger("castway").removeHandler(handlers[0])
        if len(handlers) > 1:
            logging.getLogger("castway.audit").removeHandler(handlers[1])
            handlers[1].close()


def _serve(args: argparse.Namespace, tls: Tls | None, out: TextIO) -> int:
    from castway.server import ServeError, ServeUsageError, run_server
    from castway.server.config import ConfigError
    from castway.server.logs import JsonLines
    from castway.server.store import StoreError

    try:
        with run_server(
            args.data_dir,
            args.listen,
            tls=tls,
            config=args.config,
            extra_config=_demo() if args.demo else None,
            admin_key=os.environ.get("CASTWAY_ADMIN_KEY"),
            media_dir=args.media_dir,
            insecure=args.insecure,
            metrics_listen=args.metrics_listen,
            metrics_key=args.metrics_key,
            events_file=args.events_file,
            srt_listen=args.srt_listen,
            out=out,
        ) as running:
            host = args.listen.rpartition(":")[0]
            print(
                f"castway: serving gRPC on {host}:{running.port} (data in {args.data_dir})",
                file=out,
                flush=True,
            )
            if running.metrics_port is not None:
                metrics_host = args.metrics_listen.rpartition(":")[0] or "127.0.0.1"
                print(
                    f"castway: serving metrics on http://{metrics_host}:{running.metrics_port}"
                    "/metrics" + (" (an API key needed)" if args.metrics_key else ""),
                    file=out,
                    flush=True,
                )
            if running.srt_port is not None:
                print(f"castway: shared SRT port on {running.srt_port}", file=out, flush=True)
            if args.demo:
                print(
                    f"castway: demo route: ffplay srt://127.0.0.1:{DEMO_PORT}", file=out, flush=True
                )
            signal.sigwait(STOP_SIGNALS)
            print("castway: stopping", file=out, flush=True)
    except (ServeError, ConfigError, StoreError) as e:
        if isinstance(out, JsonLines):
            out.line(str(e), logging.ERROR)
        else:
            print(f"castway: {e}", file=out)
        return EXIT_USAGE if isinstance(e, ServeUsageError) else EXIT_FAILED
    return EXIT_OK
