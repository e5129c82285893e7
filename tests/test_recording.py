"""Recording: keyframe-clean TS segments that are exact slices of what the outputs carry,
written as `.part` and renamed, without disturbing the outputs (docs/recording.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import castway

from support import wait_until
from support.clips import decode_errors, make_clip
from support.net import free_port
from support.peers import Peers, srt_receiver
from support.senders import UdpSender
from support.ts import ts_continuity

PACKET = 188


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """12 s at 25 fps with a keyframe every second (ffmpeg puts PAT/PMT before each)."""
    path = tmp_path_factory.mktemp("rec") / "gop1s.ts"
    return make_clip(path, 12, "320x180", 500, gop=25).read_bytes()


def segments_closed(gateway: castway.Gateway, route: str) -> list[dict[str, Any]]:
    """The records of the segments `route` closed, in order."""
    return [
        json.loads(e["segment"])
        for e in gateway.wait_events(0, 0.0, 100_000)
        if e["kind"] == "segment_closed" and e.get("route") == route
    ]


def srt_output_with_receiver(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any, name: str = "r"
) -> tuple[castway.Route, int, Any]:
    """A route from a UDP input to an SRT listener output, with srt-live-transmit connected
    to it (forwarding to a UDP capture)."""
    in_port, out_port = free_port(), free_port()
    route = gateway.add_route(
        name, f"udp://127.0.0.1:{in_port}", f"srt://127.0.0.1:{out_port}?mode=listener"
    )
    cap = udp_capture()
    srt_receiver(peers, out_port, cap)
    wait_until(
        lambda: route.stats()["outputs"][0]["srt"]["callers"], 10, "the receiver connected"
    )
    return route, in_port, cap


def test_ts_segments_start_clean_and_join_into_what_an_srt_receiver_got(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any, tmp_path: Path, gop_clip: bytes
) -> None:
    route, in_port, cap = srt_output_with_receiver(gateway, peers, udp_capture)
    rec = tmp_path / "rec"
    route.recording.start(rec, segment_ms=2500, path="{route}/%Y%m%d/%H%M%S")
    assert route.recording.stats()["state"] == "recording"
    UdpSender(gop_clip, in_port, bitrate=4e6).join()
    out_bytes = len(gop_clip)
    wait_until(lambda: route.stats()["outputs"][0]["bytes"] >= out_bytes, 10, "all sent out")
    wait_until(lambda: cap.size >= out_bytes, 10, "all at the receiver")
    route.recording.stop()

    segs = segments_closed(gateway, "r")
    assert len(segs) >= 3, segs
    assert not list(rec.rglob("*.part"))
    stats = route.recording.stats()
    assert stats["state"] == "stopped"
    assert stats["drops"] == 0 and stats["errors"] == 0
    assert stats["segments"] == len(segs)
    assert stats["bytes"] == sum(s["bytes"] for s in segs)
    joined = b""
    for s in segs:
        data = (rec / s["path"]).read_bytes()
        assert len(data) == s["bytes"]
        assert s["psi"] and data[1:3] == b"\x40\x00", "a segment starts with the PAT"
        assert decode_errors(rec / s["path"]) == "", s["path"]
        assert s["keyframes"] and s["keyframes"][0] == 0
        assert not s["switch"] and not s["gap"]
        joined += data
    # Cut at the first keyframe at or after 2.5 s: within one GOP (1 s) of the target.
    for s in segs[:-1]:
        assert 2.5 <= s["duration"] < 3.5 + 0.05, s
    # Exact slices of the output: together they are a run of the receiver's bytes, and the
    # recording misses nothing from its first PAT to the end.
    assert cap.data.find(joined) >= 0
    assert gop_clip.endswith(joined)
    assert stats["skipped"] * PACKET == len(gop_clip) - len(joined)
    assert ts_continuity(joined)["cc_errors"] == 0
