"""File and test-pattern inputs, and file outputs, checked with ffmpeg/ffprobe."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

import castway

from support import sha256, wait_until
from support.clips import decode_errors
from support.net import free_port
from support.senders import UdpSender
from support.ts import random_ts, ts_continuity, whole_gops


def probe_streams(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries",
         "stream=codec_name,width,height,pix_fmt,profile", "-of", "json", str(path)],
        capture_output=True, check=True, timeout=30,
    ).stdout
    streams: list[dict[str, Any]] = json.loads(out)["streams"]
    return streams


def packet_pts(path: Path, stream: str) -> list[int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", stream,
         "-show_entries", "packet=pts", "-of", "csv=p=0", str(path)],
        capture_output=True, check=True, timeout=30,
    ).stdout.decode()
    fields = (line.split(",")[0].strip() for line in out.splitlines())
    return [int(f) for f in fields if f.isdigit()]


def test_file_input_is_paced_by_its_pcr_and_decodes_cleanly(
    gateway: castway.Gateway, udp_capture: Any, ts_file: Path, tmp_path: Path
) -> None:
    cap = udp_capture()
    # Without a slate, so the capture holds the file and nothing after it.
    route = gateway.add_route(
        "r", f"file://{ts_file}", [f"udp://127.0.0.1:{cap.port}"], slate=False
    )
    size = ts_file.stat().st_size
    nominal_bps = size * 8 / 8.0  # the clip lasts 8 s
    wait_until(lambda: cap.size > size // 3, 20, "a third of the file")
    # Real-time pace: the input's rate is the file's, not the disk's.
    assert route.stats()["inputs"][0]["bitrate_bps"] < 2 * nominal_bps
    assert cap.size < size
    wait_until(lambda: route.stats()["inputs"][0]["state"] == "ended", 20, "the file to end")
    assert cap.data == ts_file.read_bytes()
    clip = tmp_path / "capture.ts"
    clip.write_bytes(cap.data)
    assert decode_errors(clip) == ""
    # An ended input leaves the outputs up; without a slate the route waits.
    s = route.stats()
    assert s["outputs"][0]["state"] == "live"
    assert s["state"] == "waiting"


def test_looped_file_keeps_timestamps_and_counters_continuous(
    gateway: castway.Gateway, udp_capture: Any, short_clip: Path, tmp_path: Path
) -> None:
    cap = udp_capture()
    route = gateway.add_route(
        "r", f"file://{short_clip}?loop=1", [f"udp://127.0.0.1:{cap.port}"]
    )
    size = short_clip.stat().st_size
    wait_until(lambda: cap.size > int(2.6 * size), 30, "the file to play two and a half times")
    data = cap.data
    assert data[:size] == short_clip.read_bytes()  # the first run is passed through as is
    cont = ts_continuity(data)
    assert cont["cc_errors"] == 0
    assert cont["pcr_backwards"] == 0
    gops = whole_gops(data, tmp_path / "loops.ts")
    assert decode_errors(gops) == ""
    for stream in ("v:0", "a:0"):
        pts = packet_pts(gops, stream)
        assert len(pts) > 10
        assert all(b > a for a, b in itertools.pairwise(pts)), f"{stream} went back"
    assert route.stats()["inputs"][0]["reconnects"] == 0


def test_test_pattern_input_decodes_cleanly(
    gateway: castway.Gateway, udp_capture: Any, tmp_path: Path
) -> None:
    cap = udp_capture()
    gateway.add_route(
        "r", "test://?size=320x180&fps=25&bitrate=500", [f"udp://127.0.0.1:{cap.port}"]
    )
    wait_until(lambda: cap.size > 250_000, 20, "three seconds of test signal")
    clip = whole_gops(cap.data, tmp_path / "test.ts")
    assert decode_errors(clip) == ""
    streams = {s["codec_name"]: s for s in probe_streams(clip)}
    assert set(streams) == {"h264", "aac"}
    assert (streams["h264"]["width"], streams["h264"]["height"]) == (320, 180)
    # What any decoder plays: 8-bit 4:2:0 (not High 4:4:4, which x264 picks if left to choose).
    assert streams["h264"]["pix_fmt"] == "yuv420p", streams["h264"]
    assert "4:4:4" not in streams["h264"]["profile"] and "10" not in streams["h264"]["profile"]
    assert ts_continuity(cap.data)["cc_errors"] == 0


def test_file_output_writes_the_stream_as_received(
    gateway: castway.Gateway, tmp_path: Path
) -> None:
    in_port = free_port()
    out = tmp_path / "recorded.ts"
    route = gateway.add_route("r", f"udp://127.0.0.1:{in_port}", [f"file://{out}"])
    data = random_ts(7 * 1000, seed=21)
    UdpSender(data, in_port, bitrate=8e6).join()
    wait_until(lambda: route.stats()["outputs"][0]["bytes"] == len(data), 10, "all bytes out")
    gateway.remove_route("r")  # flushes and closes the file
    assert sha256(out.read_bytes()[: len(data)]) == sha256(data)
