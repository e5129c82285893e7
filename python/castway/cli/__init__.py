"""The ``castway`` command, one module per command group:

- ``relay``: ``castway relay -i URI … -o URI …`` runs one route in the foreground until
  SIGINT/SIGTERM; it prints each switch between inputs and takes commands on stdin
  (``switch ID``, ``auto``, ``status``). ``castway demo`` serves a generated test pattern on an
  SRT listener.
- ``serve``: ``castway serve`` runs the gRPC control server (``make run`` starts
  ``castway serve --demo``).
- ``remote``: ``castway route|template|key|system``, a client of that server. Client commands
  import no server module: ``serve`` loads the server only when it runs.
- ``recording``: ``castway recording list|start|stop|pause|resume ROUTE`` (a client).
- ``top``: ``castway top``, a live terminal view of a server's routes (a client too).
- ``probe``: ``castway probe srt://HOST:PORT`` measures an SRT path and recommends latency and
  overhead.
- ``tables``: how stats and replies are printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from castway import __version__, gstreamer_version
from castway.cli import probe, recording, relay, remote, serve, top
from castway.cli.exits import EXIT_OK

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="castway", description="castway live-video gateway")
    p.add_argument("--version", action="version", version=f"castway {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    relay.add_commands(sub)
    sub.add_parser("version", help="print castway's and GStreamer's versions").set_defaults(
        run=_version
    )
    serve.add_command(sub)
    remote.add_commands(sub)
    recording.add_command(sub)
    top.add_command(sub)
    probe.add_command(sub)
    return p


def _version(args: argparse.Namespace) -> int:
    print(f"castway {__version__} (GStreamer {gstreamer_version()})")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    code: int = args.run(args)
    return code
