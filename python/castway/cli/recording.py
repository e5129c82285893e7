"""``castway recording list|export|start|stop|pause|resume ROUTE``: a route's recordings on a
castway server (``RecordingService``). ``list`` takes a time range (``--from``/``--to``: ISO
8601, or Unix seconds) and prints one segment per line (with ``--json``, the reply);
``export`` writes a clip of one (``-o clip.ts`` or ``clip.mp4``)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from castway.cli import remote
from castway.v1 import recording_pb2, route_pb2

# The range a `google.protobuf.Timestamp` may hold (0001-01-01 to 9999-12-31, UTC).
_MIN_S, _MAX_S = -62_135_596_800, 253_402_300_799


def _when(text: str) -> Timestamp:
    """ISO 8601 (a time without an offset is UTC) or Unix seconds."""
    try:
        t = float(text)
    except ValueError:
        try:
            d = datetime.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a time: give ISO 8601 (2026-11-23T18:00:00Z) or Unix seconds"
            ) from None
        t = (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()
    if not (math.isfinite(t) and _MIN_S <= t <= _MAX_S):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time between the years 1 and 9999 (Unix seconds "
            f"{_MIN_S}..{_MAX_S})"
        )
    ts = Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


def add_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    client = remote.client_options()
    client.add_argument("--json", action="store_true", help="print JSON instead of tables")
    rec = sub.add_parser("recording", help="a route's recordings on a castway server")
    actions = rec.add_subparsers(dest="action", required=True)
    p = actions.add_parser("list", parents=[client], help="the segments of a time range")
    p.add_argument("route")
    p.add_argument("--from", dest="start", type=_when, metavar="TIME")
    p.add_argument("--to", dest="end", type=_when, metavar="TIME")
    p = actions.add_parser("export", parents=[client], help="a clip of a time range to a file")
    p.add_argument("route")
    p.add_argument("--from", dest="start", type=_when, metavar="TIME", required=True)
    p.add_argument("--to", dest="end", type=_when, metavar="TIME", required=True)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.ts|FILE.mp4")
    for action in ("start", "stop", "pause", "resume"):
        actions.add_parser(action, parents=[client]).add_argument("route")
    rec.set_defaults(run=remote.run)
    remote.HANDLERS.update(HANDLERS)


def _iso(ts: Timestamp) -> str:
    return datetime.fromtimestamp(ts.ToNanoseconds() / 1e9, UTC).isoformat(
        timespec="milliseconds"
    )


def recording_list(c: remote.Call) -> None:
    req = recording_pb2.ListSegmentsRequest(route=c.args.route)
    if c.args.start is not None:
        getattr(req, "from").CopyFrom(c.args.start)
    if c.args.end is not None:
        req.to.CopyFrom(c.args.end)
    # Every page, oldest first.
    reply = recording_pb2.ListSegmentsResponse()
    for _ in range(1_000_000):
        page = c.rpc(c.client.recordings.ListSegments, req)
        reply.segments.extend(page.segments)
        req.page_token = page.next_page_token
        if not req.page_token:
            break

    def table() -> None:
        c.say(f"{'START':29} {'DURATION':>8} {'BYTES':>11}  FLAGS  PATH")
        for s in reply.segments:
            flags = "".join(
                f for f, on in (("s", s.switch), ("g", s.gap), ("r", s.repaired),
                                ("p", not s.psi)) if on
            )
            c.say(f"{_iso(s.start):29} {s.duration_s:8.3f} {s.bytes:11d}  {flags:5}  {s.path}")

    c.show(reply, table)


def recording_export(c: remote.Call) -> None:
    out: Path = c.args.output
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("ts", "mp4"):
        raise remote.Ended(f"{out}: a clip is written as .ts or .mp4, not {out.suffix!r}")
    if not out.parent.is_dir():
        raise remote.Ended(f"{out}: the directory {str(out.parent)!r} does not exist")
    if out.is_dir():
        raise remote.Ended(f"-o {out}: is a directory; give the clip's file name")
    req = recording_pb2.ExportClipRequest(route=c.args.route, format=fmt)
    getattr(req, "from").CopyFrom(c.args.start)
    req.to.CopyFrom(c.args.end)
    part = out.with_name(out.name + ".part")
    size = 0
    try:
        # Opened before the clip is asked for: an output that cannot be written is said at once.
        try:
            f = open(part, "wb")
        except OSError as e:
            raise remote.Ended(f"-o {out}: cannot write {str(part)!r}: {e.strerror}") from None
        with f:
            for chunk in c.client.recordings.ExportClip(
                req, metadata=c.client.metadata, timeout=max(c.client.timeout_s or 0, 900)
            ):
                f.write(chunk.data)
                size += len(chunk.data)
        try:
            part.replace(out)
        except OSError as e:
            raise remote.Ended(f"-o {out}: cannot put the clip there: {e.strerror}") from None
    finally:
        part.unlink(missing_ok=True)
    c.say(f"{out}: {size} bytes ({fmt})")


def _control(method: str) -> Callable[[remote.Call], None]:
    def handler(c: remote.Call) -> None:
        status: route_pb2.RecordingStatus = c.rpc(
            getattr(c.client.recordings, method),
            recording_pb2.RecordingRequest(route=c.args.route),
        )
        c.show(status, lambda: c.say(
            f"{c.args.route}: {status.state}" + (f" ({status.segment})" if status.segment else "")
        ))

    return handler


HANDLERS: dict[tuple[str, str], Callable[[remote.Call], None]] = {
    ("recording", "list"): recording_list,
    ("recording", "export"): recording_export,
    ("recording", "start"): _control("StartRecording"),
    ("recording", "stop"): _control("StopRecording"),
    ("recording", "pause"): _control("PauseRecording"),
    ("recording", "resume"): _control("ResumeRecording"),
}
