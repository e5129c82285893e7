"""TR 101 290 analysis of inputs, end to end: real streams made by ffmpeg (and castway's own
test source), mutated the way a faulty sender or link would (packets dropped, the PAT left out,
a PID the PMT does not list, garbage), paced into a UDP input at their constant mux rate. The
counters and conditions of each input must match what was injected, and a clean stream shows
none. Exact counts on synthetic packets with a fake clock are the Rust unit tests'
(rust/ts/analysis.rs)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import castway
from castway.v1 import analysis_pb2, route_pb2

from support import wait_until
from support.clips import make_clip
from support.control import Server, ep, spec
from support.net import free_port
from support.senders import UdpSender
from support.ts import TS

MUXRATE = 800_000
VIDEO, AUDIO, PMT = 0x100, 0x101, 0x1000
NULL = bytes([0x47, 0x1F, 0xFF, 0x10]) + b"\xff" * (TS - 4)
NO_ERRORS = {
    "ts_sync_loss": 0, "sync_byte_error": 0, "pat_error": 0, "continuity_count_error": 0,
    "pmt_error": 0, "pid_error": 0, "transport_error": 0, "crc_error": 0,
    "pcr_repetition_error": 0, "pcr_discontinuity_indicator_error": 0, "pts_error": 0,
    "unreferenced_pid": 0,
}


@pytest.fixture(scope="module")
def cbr(media_dir: Path) -> bytes:
    """6 s of H.264 + AAC at a constant 800 kb/s (null packets, a PCR every 20 ms): what a
    broadcast encoder sends. At a constant rate a packet's index tells its time."""
    return make_clip(media_dir / "cbr.ts", 6, "320x180", 300, muxrate_kbps=MUXRATE // 1000,
                     pcr_ms=20, audio_kbps=64).read_bytes()


def packets(data: bytes) -> list[bytearray]:
    return [bytearray(data[o:o + TS]) for o in range(0, len(data) - TS + 1, TS)]


def pid(p: bytes) -> int:
    return ((p[1] & 0x1F) << 8) | p[2]


def at(i: int) -> float:
    """The time of packet `i` of a constant-rate stream, in seconds from its start."""
    return i * TS * 8 / MUXRATE


def leave_out(ps: list[bytearray], which: int, start: float, end: float) -> int:
    """Replaces the packets of PID `which` from `start` to `end` s by null packets, as a sender
    that never made them would: the packets of the PID after them count on without a gap.
    Returns how many were left out."""
    left = 0
    for i, p in enumerate(ps):
        if pid(p) != which:
            continue
        if start <= at(i) < end:
            ps[i] = bytearray(NULL)
            left += 1
        elif left:
            p[3] = (p[3] & 0xF0) | ((p[3] - left) & 0x0F)
    return left


Route = Any


def send(gateway: castway.Gateway, data: bytes, name: str = "r") -> tuple[Route, UdpSender]:
    """A route with a UDP input (and a UDP output) and a sender pacing `data` into it at the
    mux rate."""
    port = free_port()
    route = gateway.add_route(name, f"udp://127.0.0.1:{port}", f"udp://127.0.0.1:{free_port()}")
    return route, UdpSender(data, port, bitrate=MUXRATE)


def analysis(route: Route, i: int = 0) -> dict[str, Any]:
    return dict(route.stats()["inputs"][i]["analysis"])


def received_all(route: Route, n: int, i: int = 0) -> Callable[[], bool]:
    return lambda: route.stats()["inputs"][i]["packets"] >= n


def active(route: Route) -> list[tuple[str, int | None]]:
    return [(c["check"], c["pid"]) for c in analysis(route)["active"]]


def changes(route: Route, check: str) -> list[tuple[float, str]]:
    return [(c["at"], c["change"]) for c in analysis(route)["history"] if c["check"] == check]


def test_a_clean_stream_shows_no_error_and_what_it_carries(
    gateway: castway.Gateway, cbr: bytes
) -> None:
    route, sender = send(gateway, cbr)
    sender.join()
    wait_until(received_all(route, len(cbr) // TS), 10, "every packet")
    a = analysis(route)
    assert a["errors"] == NO_ERRORS, a["history"]
    assert a["active"] == [] and a["history"] == []
    assert a["sync"]
    [program] = a["programs"]
    assert (program["number"], program["pmt_pid"], program["pcr_pid"]) == (1, PMT, VIDEO)
    assert [(s["pid"], s["kind"], s["codec"]) for s in program["streams"]] == [
        (VIDEO, "video", "h264"), (AUDIO, "audio", "aac")]
    kinds = {p["pid"]: p["kind"] for p in a["pids"]}
    assert kinds == {0: "pat", 0x11: "si", VIDEO: "video", AUDIO: "audio", PMT: "pmt",
                     0x1FFF: "null"}
    assert sum(p["packets"] for p in a["pids"]) == len(cbr) // TS
    [video] = a["video"]
    assert (video["codec"], video["width"], video["height"], video["frame_rate"]) == (
        "h264", 320, 180, 25.0)
    assert [(x["pid"], x["codec"]) for x in a["audio"]] == [(AUDIO, "aac")]


def test_each_dropped_packet_is_one_continuity_count_error(
    gateway: castway.Gateway, cbr: bytes
) -> None:
    ps = packets(cbr)
    # Video packets with a payload and no adaptation field (no PCR), at five times.
    plain = [i for i, p in enumerate(ps) if pid(p) == VIDEO and p[3] & 0x30 == 0x10]
    dropped = {plain[len(plain) * k // 10] for k in (2, 3, 5, 6, 8)}
    data = b"".join(p for i, p in enumerate(ps) if i not in dropped)
    route, sender = send(gateway, data)
    wait_until(lambda: ("continuity_count_error", VIDEO) in active(route), 15,
               "the continuity condition while packets are being lost")
    sender.join()
    wait_until(received_all(route, len(ps) - len(dropped)), 10, "every packet sent")
    a = analysis(route)
    assert a["errors"] == {**NO_ERRORS, "continuity_count_error": len(dropped)}, a["history"]
    [video] = [p for p in a["pids"] if p["pid"] == VIDEO]
    assert video["cc_errors"] == len(dropped)
    # The condition clears once a second passes without another.
    wait_until(lambda: not active(route), 10, "the continuity condition to clear")
    assert changes(route, "continuity_count_error")[-1][1] == "cleared"
    # The event log says when it started and cleared, naming the input and the PID.
    def reported() -> list[tuple[bool, str]]:
        return [(bool(e["active"]), str(e["error"])) for e in gateway.event_batch(0, 0).events
                if e["kind"] == "analysis" and e.get("condition") == "continuity_count_error"
                and e["route"] == route.name and e.get("input") == "in0"]

    seen = wait_until(lambda: (r := reported()) and not r[-1][0] and r, 5, "the events")
    assert seen[0] == (True, f"priority 1, PID 0x{VIDEO:04x}")


def test_metrics_carry_the_error_counts_and_the_conditions_in_force(
    gateway: castway.Gateway, cbr: bytes
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from castway.server.metrics import Metrics

    ps = packets(cbr)
    plain = [i for i, p in enumerate(ps) if pid(p) == VIDEO and p[3] & 0x30 == 0x10]
    dropped = {plain[len(plain) * k // 10] for k in (3, 4, 5)}
    route, sender = send(gateway, b"".join(p for i, p in enumerate(ps) if i not in dropped))
    metrics = Metrics(gateway.stats)
    try:
        def series(name: str) -> dict[str, float]:
            metrics.snapshot._at = 0.0  # read the gateway again
            text = metrics.render().decode()
            return {s.labels["check"]: s.value
                    for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == name and s.labels["endpoint"] == "in0"}

        wait_until(lambda: series("castway_input_ts_conditions").get("continuity_count_error"),
                   15, "the continuity condition in force in the metrics")
        sender.join()
        wait_until(received_all(route, len(ps) - len(dropped)), 10, "every packet sent")
        errors = series("castway_input_ts_errors_total")
        assert errors == {**{k: 0.0 for k in NO_ERRORS}, "continuity_count_error": 3.0}
        wait_until(lambda: not series("castway_input_ts_conditions"), 10,
                   "no condition series once they cleared")
    finally:
        metrics.close()


def test_a_pat_left_out_for_a_second_is_one_pat_error_while_it_is_missing(
    gateway: castway.Gateway, cbr: bytes
) -> None:
    ps = packets(cbr)
    assert leave_out(ps, 0, 2.0, 3.0) >= 9
    sent_from = time.time()
    route, sender = send(gateway, b"".join(ps))
    wait_until(lambda: ("pat_error", None) in active(route), 15, "the PAT error while it is out")
    wait_until(lambda: ("pat_error", None) not in active(route), 5, "the PAT error to clear")
    sender.join()
    wait_until(received_all(route, len(ps)), 10, "every packet")
    a = analysis(route)
    assert a["errors"] == {**NO_ERRORS, "pat_error": 1}, a["history"]
    [(start, started), (end, cleared)] = changes(route, "pat_error")
    assert (started, cleared) == ("started", "cleared")
    # Dated by arrival: out from 2.0 s into the stream (the last PAT ~1.9 s, due ~2.4 s) until
    # the next at 3.0 s. The sender never sends early, so a busy machine can only delay (and
    # bunch) these times: bounded below, never above.
    assert sent_from + 2.0 <= start < end, (sent_from, start, end)
    assert end >= sent_from + 3.0 - 0.05, (sent_from, end)


def test_a_pid_the_pmt_does_not_list_is_reported_as_unreferenced_not_as_an_error(
    gateway: castway.Gateway, cbr: bytes
) -> None:
    stray = 0x0ABC
    ps = packets(cbr)
    cc = 0
    for i, p in enumerate(ps):
        if pid(p) == 0x1FFF and 1.5 <= at(i) < 4.0:
            ps[i] = bytearray([0x47, stray >> 8, stray & 0xFF, 0x10 | cc]) + p[4:]
            cc = (cc + 1) & 0x0F
    route, sender = send(gateway, b"".join(ps))
    wait_until(lambda: ("unreferenced_pid", stray) in active(route), 15,
               "the stray PID reported while it is there")
    [condition] = analysis(route)["active"]
    assert condition["priority"] == 3
    sender.join()
    wait_until(received_all(route, len(ps)), 10, "every packet")
    a = analysis(route)
    assert a["errors"] == {**NO_ERRORS, "unreferenced_pid": 1}, a["history"]
    [p] = [p for p in a["pids"] if p["pid"] == stray]
    assert (p["kind"], p["program"], p["cc_errors"]) == ("unreferenced", None, 0)
    # Gone for a second while the rest flows: cleared.
    assert changes(route, "unreferenced_pid")[-1][1] == "cleared"


def test_garbage_is_a_loss_of_sync_and_two_sync_byte_errors_each_time(
    gateway: castway.Gateway, cbr: bytes
) -> None:
    junk = bytes((i * 7 + 3) & 0x3F for i in range(500))  # never 0x47
    third = len(cbr) // TS // 4 * TS
    data = cbr[:third] + junk + cbr[third:2 * third] + junk + cbr[2 * third:3 * third] + junk \
        + cbr[3 * third:]
    route, sender = send(gateway, data)
    wait_until(lambda: ("ts_sync_loss", None) in active(route) or
               analysis(route)["errors"]["ts_sync_loss"], 15, "the loss of sync")
    sender.join()
    wait_until(received_all(route, len(cbr) // TS), 10, "every TS packet")
    a = analysis(route)
    assert a["errors"] == {**NO_ERRORS, "ts_sync_loss": 3, "sync_byte_error": 6}, a["history"]
    assert a["sync"]
    s = route.stats()["inputs"][0]
    assert s["drops"] >= 3 * 3  # 500 bytes a time, counted as the packets they would fill
    assert "not MPEG-TS" in (s["last_error"] or "")


def test_hevc_stream_info(gateway: castway.Gateway, tmp_path: Path) -> None:
    clip = tmp_path / "hevc.ts"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         "testsrc2=size=480x270:rate=50", "-t", "3", "-c:v", "libx265", "-preset",
         "ultrafast", "-x265-params", "log-level=error", "-b:v", "300k", "-f", "mpegts",
         "-muxrate", "800k", str(clip)],
        check=True, timeout=120,
    )
    data = clip.read_bytes()
    route, sender = send(gateway, data)
    sender.join()
    wait_until(received_all(route, len(data) // TS), 10, "every packet")
    a = analysis(route)
    [video] = a["video"]
    assert (video["codec"], video["width"], video["height"], video["profile"]) == (
        "hevc", 480, 270, "Main")
    # HEVC's timing is not read from its SPS: the rate comes from the PES timestamps.
    assert video["frame_rate"] == 50.0
    assert a["audio"] == []


def test_switches_between_inputs_cause_no_error_in_either_inputs_analysis(
    gateway: castway.Gateway, cbr: bytes, udp_capture: Any
) -> None:
    ports = [free_port(), free_port()]
    cap = udp_capture()
    route = gateway.add_route("r", [f"udp://127.0.0.1:{p}" for p in ports],
                              f"udp://127.0.0.1:{cap.port}")
    senders = [UdpSender(cbr, p, bitrate=MUXRATE) for p in ports]
    # Each cut happens at the next keyframe (a GOP is 1 s): four within the 6 s.
    for target in ("in1", "in0", "in1", "in0"):
        route.switch_to(target)
        wait_until(lambda t=target: route.stats()["active_input"] == t, 3, f"the cut to {target}")
    for s in senders:
        s.join()
    for i in (0, 1):
        wait_until(received_all(route, len(cbr) // TS, i), 10, f"every packet of in{i}")
        a = analysis(route, i)
        assert a["errors"] == NO_ERRORS, (i, a["history"])
        # Every packet of each input was checked, on air or not.
        assert sum(p["packets"] for p in a["pids"]) == len(cbr) // TS
    assert cap.size > 0


def test_grpc_get_route_carries_the_analysis_of_a_test_source(server: Server) -> None:
    """castway's own test signal: what it was made with, and clean by TR 101 290."""
    server.create("t", spec([ep("test://?size=640x360&fps=25", "cam")],
                            [ep(f"udp://127.0.0.1:{free_port()}")]))

    def info() -> route_pb2.Route | None:
        r = server.get("t")
        ins = r.status.inputs
        return r if ins and ins[0].analysis.video and ins[0].analysis.video[0].width else None

    wait_until(info, 20, "the video's parameters in GetRoute")
    # A second and more of its stream: every PID has a bitrate.
    r = wait_until(lambda: (r := info()) and all(p.bitrate_bps for p in
                                                 r.status.inputs[0].analysis.pids) and r,
                   10, "a second of the stream")
    a = r.status.inputs[0].analysis
    v = a.video[0]
    assert (v.codec, v.width, v.height, v.frame_rate) == ("h264", 640, 360, 25.0)
    assert [x.codec for x in a.audio] == ["aac"]
    assert a.sync and not a.active
    assert a.errors == analysis_pb2.TsErrors(), a.history


@pytest.mark.parametrize("uri", [
    "test://?size=320x180&fps=15&bitrate=300",
    "test://?size=320x180&fps=10&bitrate=300",
    "test://?size=320x180&fps=10&bitrate=300&audio=0",
])
def test_a_test_source_at_a_low_frame_rate_carries_a_pcr_every_40_ms(
    gateway: castway.Gateway, uri: str
) -> None:
    """A PCR once per frame is 67 ms apart at 15 fps, 100 ms at 10: over TR 101 290's 40 ms.
    castway's own test signal (and slate) must pass castway's own analysis: the PCR rides the
    audio PID, or without audio the mux pads to a constant rate with PCR-only packets."""
    route = gateway.add_route("r", uri, f"udp://127.0.0.1:{free_port()}")
    wait_until(lambda: analysis(route)["pids"], 20, "the test source's first packets")
    time.sleep(3)
    a = analysis(route)
    assert a["errors"] == NO_ERRORS, a["history"]
    assert a["active"] == [], a["active"]
    nulls = [p["packets"] for p in a["pids"] if p["pid"] == 0x1FFF]
    assert bool(nulls) == uri.endswith("audio=0"), a["pids"]
