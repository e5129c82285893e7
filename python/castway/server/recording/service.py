"""``castway.v1.RecordingService``: the catalog and each route's recorder, over gRPC. Thin:
proto in, one call into :class:`Recordings`, proto out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from castway.server.errors import ControlError, InvalidArgument
from castway.server.recording.catalog import Segment
from castway.server.recording.clips import CHUNK, Job, make
from castway.server.recording.manager import Recordings
from castway.server.servicers import _rpc, _ts, fill
from castway.v1 import recording_pb2, recording_pb2_grpc, route_pb2

# The range a `google.protobuf.Timestamp` may hold (0001-01-01 to 9999-12-31, UTC).
_MIN_S, _MAX_S = -62_135_596_800, 253_402_300_799


def _seconds(ts: Timestamp, field: str) -> float:
    """``ts`` in seconds since the epoch; a value out of a Timestamp's range is
    ``INVALID_ARGUMENT`` naming ``field``."""
    if not _MIN_S <= ts.seconds <= _MAX_S:
        raise InvalidArgument(
            f"{field}.seconds", f"{ts.seconds} is out of range ({_MIN_S}..{_MAX_S})"
        )
    if not 0 <= ts.nanos <= 999_999_999:
        raise InvalidArgument(f"{field}.nanos", f"{ts.nanos} is out of range (0..999999999)")
    return ts.seconds + ts.nanos / 1e9


def segment_to_pb(s: Segment) -> recording_pb2.Segment:
    return recording_pb2.Segment(
        route=s.route, path=s.path, format=s.format, start=_ts(s.start), end=_ts(s.end),
        duration_s=s.duration, bytes=s.bytes, psi=s.psi, switch=s.switch, gap=s.gap,
        repaired=s.repaired, keyframes=list(s.keyframes),
    )


class RecordingService(recording_pb2_grpc.RecordingServiceServicer):
    def __init__(self, recordings: Recordings) -> None:
        self.recordings = recordings

    def _status(self, route: str) -> route_pb2.RecordingStatus:
        stats = self.recordings.status(route)
        return fill(route_pb2.RecordingStatus(), stats)  # type: ignore[return-value]

    @_rpc
    def ListSegments(
        self, request: recording_pb2.ListSegmentsRequest, context: Any
    ) -> recording_pb2.ListSegmentsResponse:
        start: float | None = None
        if request.HasField("from"):
            start = _seconds(getattr(request, "from"), "from")
        end = _seconds(request.to, "to") if request.HasField("to") else None
        segs, token = self.recordings.segments(
            request.route, start, end, request.page_size, request.page_token
        )
        return recording_pb2.ListSegmentsResponse(
            segments=[segment_to_pb(s) for s in segs], next_page_token=token
        )

    @_rpc
    def StartRecording(
        self, request: recording_pb2.RecordingRequest, context: Any
    ) -> route_pb2.RecordingStatus:
        self.recordings.start_recording(request.route)
        return self._status(request.route)

    @_rpc
    def StopRecording(
        self, request: recording_pb2.RecordingRequest, context: Any
    ) -> route_pb2.RecordingStatus:
        self.recordings.stop_recording(request.route)
        return self._status(request.route)

    @_rpc
    def PauseRecording(
        self, request: recording_pb2.RecordingRequest, context: Any
    ) -> route_pb2.RecordingStatus:
        self.recordings.pause_recording(request.route, True)
        return self._status(request.route)

    @_rpc
    def ResumeRecording(
        self, request: recording_pb2.RecordingRequest, context: Any
    ) -> route_pb2.RecordingStatus:
        self.recordings.pause_recording(request.route, False)
        return self._status(request.route)

    @_rpc
    def GetRecordingsStats(
        self, request: recording_pb2.GetRecordingsStatsRequest, context: Any
    ) -> recording_pb2.RecordingsStats:
        return recording_pb2.RecordingsStats(**self.recordings.stats())

    async def ExportClip(
        self, request: recording_pb2.ExportClipRequest, context: Any
    ) -> AsyncIterator[recording_pb2.ClipChunk]:
        """On the server's event loop (like ``WatchEvents``): the clip is made by ffmpeg on a
        thread, then streamed from its temporary file; a refusal ends the call with its
        status before any chunk."""
        r = self.recordings
        try:
            start = _seconds(getattr(request, "from"), "from")
            end = _seconds(request.to, "to")
            # The place among the clips being made, and the clip's files (in the recordings
            # volume's own `.castway-clips` directory), are let go only when the work on them
            # is over: a cancelled call kills its ffmpeg and waits for the thread first.
            with r.clip(), r.clip_dir() as tmp:
                job = Job()
                work = asyncio.ensure_future(asyncio.to_thread(
                    make, r.catalog, r.root, request.route, start, end, request.format,
                    tmp, float(r.control.limits.max_clip_s), r.clip_floor(), job,
                ))
                try:
                    out = await asyncio.shield(work)
                except asyncio.CancelledError:
                    job.cancel()
                    # Bounded: its ffmpeg is killed, and the call may be cancelled again.
                    while not work.done():
                        with contextlib.suppress(asyncio.CancelledError):
                            await asyncio.wait({work})
                    work.exception()  # the `Aborted` that ends it, or the refusal
                    raise
                with open(out, "rb") as f:
                    while chunk := await asyncio.to_thread(f.read, CHUNK):
                        yield recording_pb2.ClipChunk(data=chunk)
        except ControlError as e:
            await context.abort(getattr(grpc.StatusCode, e.code), str(e))
