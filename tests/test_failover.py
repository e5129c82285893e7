"""Failover, failback, manual switching, the slate, cold standby and live input changes, with
real senders (ffmpeg, gst-launch-1.0, srt-live-transmit) and a real SRT receiver
(srt-live-transmit) on the route's output.

Each capture is checked the way a receiver would notice a switch: continuity counters, PCR and
every PES's timestamps only move forward; every whole GOP decodes with `ffmpeg -v error`,
except at most the one cut short at each switch (an abruptly killed sender leaves a truncated
frame; the first keyframe after the switch starts a clean GOP); and the receiver's connection
is never dropped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import castway

from support import wait_until
from support.capture import UdpCapture
from support.clips import bad_gops
from support.net import free_port
from support.peers import Peers, srt_receiver
from support.senders import gst_encoder, gst_udp_encoder, live_sender
from support.ts import gop_chunks, pes_backwards, ts_continuity


def kill(p: subprocess.Popen[bytes]) -> None:
    """An abrupt end: SIGKILL to the sender's process group."""
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)


def next_switch(route: castway.Route, after: int, timeout: float = 15) -> castway.SwitchEvent:
    ev = route.wait_switch(after, timeout)
    assert ev is not None, f"no switch after #{after} within {timeout}s: {route.stats()['switch']}"
    return ev


def caller_of(route: castway.Route) -> list[str]:
    srt = route.stats()["outputs"][0].get("srt") or {}
    return [c["address"] for c in srt.get("callers", [])]


def on_air_at_the_receiver(route: castway.Route, input_id: str, cap: UdpCapture) -> None:
    """Waits until `input_id` is on air (the cut made, at a keyframe) and 300 kB more of the
    stream reached the receiver."""
    wait_until(lambda: route.stats()["switch"]["active"] == input_id, 10, f"{input_id} on air")
    size = cap.size
    wait_until(lambda: cap.size > size + 300_000, 15, f"{input_id} at the receiver")


def check_capture(data: bytes, switches: int, tmp: Path) -> None:
    """What a receiver sees across `switches` switches: nothing moving backwards, clean GOPs."""
    cont = ts_continuity(data)
    assert cont["packets"] > 1000
    assert cont["cc_errors"] == 0, cont
    assert cont["pcr_backwards"] == 0, cont
    assert pes_backwards(data) == {}
    gops, bad = bad_gops(data, tmp)
    assert gops >= 4
    assert len(bad) <= switches, "\n".join(bad)


@pytest.fixture
def receiver(peers: Peers, udp_capture: Any) -> Any:
    def start(port: int) -> UdpCapture:
        cap = udp_capture()
        srt_receiver(peers, port, cap)
        return cap

    return start


def test_srt_main_fails_over_to_udp_backup_and_fails_back(
    gateway: castway.Gateway, peers: Peers, receiver: Any, ts_file: Path, tmp_path: Path
) -> None:
    main_port, backup_port, out_port = free_port(), free_port(), free_port()
    route = gateway.add_route(
        "r",
        {"main": f"srt://:{main_port}?mode=listener", "backup": f"udp://127.0.0.1:{backup_port}"},
        [f"srt://:{out_port}?mode=listener"],
        failback_after_ms=1500,
    )
    main_url = f"srt://127.0.0.1:{main_port}?mode=caller&pkt_size=1316"
    main = live_sender(peers, ts_file, main_url)
    # The backup sends once the main delivers: a main that connects after the 2 s start grace
    # (ffmpeg starting on a loaded machine) is passed over for a delivering backup, and the
    # route would begin with a failover and a failback of its own.
    wait_until(lambda: route.stats()["inputs"][0]["healthy"], 20, "the main to deliver")
    live_sender(peers, ts_file, f"udp://127.0.0.1:{backup_port}?pkt_size=1316")
    cap = receiver(out_port)
    wait_until(lambda: all(i["healthy"] for i in route.stats()["inputs"]), 20, "both inputs")
    wait_until(lambda: cap.size > 500_000, 20, "the receiver to play")
    callers = caller_of(route)
    assert len(callers) == 1
    assert route.stats()["switch"]["active"] == "main"

    kill(main)
    ev = next_switch(route, 0)
    assert (ev["from"], ev["to"], ev["reason"]) == ("main", "backup", "lost")
    size = cap.size
    wait_until(lambda: cap.size > size + 300_000, 15, "the backup to reach the receiver")

    # The main input comes back: the route returns to it after 1.5 s of health.
    wait_until(
        lambda: route.stats()["inputs"][0]["state"] == "listening", 15, "main to listen again"
    )
    live_sender(peers, ts_file, main_url)
    ev2 = next_switch(route, ev["seq"])
    assert (ev2["from"], ev2["to"], ev2["reason"]) == ("backup", "main", "failback")
    assert ev2["at"] - ev["at"] >= 1.5
    wait_until(lambda: route.stats()["switch"]["pending"] is None, 10, "the keyframe cut")
    size = cap.size
    wait_until(lambda: cap.size > size + 300_000, 15, "main again at the receiver")

    s = route.stats()
    assert [h["reason"] for h in s["switch"]["history"]] == ["lost", "failback"], s
    assert s["switch"]["active"] == "main"
    assert caller_of(route) == callers, "the receiver was reconnected"
    check_capture(cap.data, 2, tmp_path)


def test_manual_switch_between_gst_launch_and_srt_live_transmit_senders(
    gateway: castway.Gateway, peers: Peers, receiver: Any, ts_file: Path, tmp_path: Path
) -> None:
    a_port, b_port, relay_port, out_port = free_port(), free_port(), free_port(), free_port()
    route = gateway.add_route(
        "r",
        [f"srt://:{a_port}?mode=listener", f"srt://:{b_port}?mode=listener"],
        [f"srt://:{out_port}?mode=listener"],
        failback_after_ms=1000,
    )
    peers.start(gst_encoder(a_port))
    # srt-live-transmit relays ffmpeg's UDP into castway's second SRT listener.
    peers.start([
        "srt-live-transmit", "-q", f"udp://127.0.0.1:{relay_port}",
        f"srt://127.0.0.1:{b_port}?mode=caller",
    ])
    live_sender(peers, ts_file, f"udp://127.0.0.1:{relay_port}?pkt_size=1316")
    cap = receiver(out_port)
    wait_until(lambda: all(i["healthy"] for i in route.stats()["inputs"]), 30, "both inputs")
    wait_until(lambda: cap.size > 300_000, 20, "the receiver to play")
    callers = caller_of(route)

    route.switch_to("in1")
    ev = next_switch(route, 0)
    assert (ev["from"], ev["to"], ev["reason"]) == ("in0", "in1", "manual")
    on_air_at_the_receiver(route, "in1", cap)
    assert route.stats()["switch"]["locked"] == "in1"
    # Locked: the healthier, higher-priority in0 does not win the route back.
    assert route.wait_switch(ev["seq"], 1.5) is None

    route.auto()
    ev2 = next_switch(route, ev["seq"])
    assert (ev2["to"], ev2["reason"]) == ("in0", "failback")
    on_air_at_the_receiver(route, "in0", cap)
    assert caller_of(route) == callers
    # Counted by reason: the history's reasons since the start, every other reason at zero.
    sw = route.stats()["switch"]
    seen = Counter(e["reason"] for e in sw["history"])
    assert sw["history"][0]["seq"] == 1 and seen["manual"] == 1 and seen["failback"] >= 1
    assert sw["by_reason"] == {r: seen.get(r, 0) for r in sw["by_reason"]}
    assert len(sw["by_reason"]) == 9
    check_capture(cap.data, 2, tmp_path)


def test_slate_covers_until_the_input_returns(
    gateway: castway.Gateway, peers: Peers, receiver: Any, ts_file: Path, tmp_path: Path
) -> None:
    in_port, out_port = free_port(), free_port()
    route = gateway.add_route(
        "r", f"udp://127.0.0.1:{in_port}", [f"srt://:{out_port}?mode=listener"]
    )
    url = f"udp://127.0.0.1:{in_port}?pkt_size=1316"
    sender = live_sender(peers, ts_file, url)
    cap = receiver(out_port)
    wait_until(lambda: cap.size > 300_000, 20, "the receiver to play")
    callers = caller_of(route)

    kill(sender)
    ev = next_switch(route, 0)
    assert (ev["from"], ev["to"], ev["reason"]) == ("in0", "slate", "slate")
    wait_until(lambda: route.stats()["state"] == "slate", 10, "the slate on air")
    size = cap.size
    wait_until(lambda: cap.size > size + 200_000, 15, "the slate at the receiver")
    # The slate has the input's picture size (read from its H.264 SPS).
    slate = wait_until(lambda: gop_chunks(cap.data[size:]), 15, "a whole slate GOP")
    (tmp_path / "slate.ts").write_bytes(slate[-1])
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=width,height", "-of", "csv=p=0", str(tmp_path / "slate.ts")],
        capture_output=True, check=True, timeout=30,
    )
    sizes = {line for line in probe.stdout.decode().split() if line}
    assert sizes == {"640,360"}

    live_sender(peers, ts_file, url)
    ev2 = next_switch(route, ev["seq"])
    assert (ev2["from"], ev2["to"], ev2["reason"]) == ("slate", "in0", "recovered")
    on_air_at_the_receiver(route, "in0", cap)
    assert caller_of(route) == callers
    check_capture(cap.data, 2, tmp_path)


def test_without_slate_the_outputs_wait_for_an_input(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any, ts_file: Path
) -> None:
    in_port = free_port()
    cap = udp_capture()
    route = gateway.add_route(
        "r", f"udp://127.0.0.1:{in_port}", [f"udp://127.0.0.1:{cap.port}"], slate=False,
    )
    sender = live_sender(peers, ts_file, f"udp://127.0.0.1:{in_port}?pkt_size=1316")
    wait_until(lambda: cap.size > 100_000, 20, "data")
    kill(sender)
    ev = next_switch(route, 0)
    assert (ev["to"], ev["reason"]) == (None, "lost")
    size = cap.size
    assert route.wait_switch(ev["seq"], 1.0) is None
    assert cap.size == size
    assert route.stats()["state"] == "waiting"


def test_cold_standby_connects_only_when_needed(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any, ts_file: Path
) -> None:
    a_port, b_port = free_port(), free_port()
    cap = udp_capture()
    route = gateway.add_route(
        "r",
        [f"udp://127.0.0.1:{a_port}", f"udp://127.0.0.1:{b_port}?standby=cold"],
        [f"udp://127.0.0.1:{cap.port}"],
    )
    main = live_sender(peers, ts_file, f"udp://127.0.0.1:{a_port}?pkt_size=1316")
    live_sender(peers, ts_file, f"udp://127.0.0.1:{b_port}?pkt_size=1316")
    wait_until(lambda: cap.size > 100_000, 20, "data")
    wait_until(lambda: route.stats()["uptime_s"] > 2.5, 10, "the start grace to pass")
    backup = route.stats()["inputs"][1]
    assert (backup["state"], backup["standby"], backup["bytes"]) == ("standby", "cold", 0)

    kill(main)
    # Nothing warm is left: the slate covers while the cold input connects, then it takes over.
    ev = next_switch(route, 0)
    assert ev["reason"] in ("slate", "lost")
    wait_until(lambda: route.stats()["switch"]["active"] == "in1", 15, "the cold input on air")
    assert route.stats()["inputs"][1]["bytes"] > 0
    assert route.stats()["switch"]["history"][-1]["to"] == "in1"


def test_inputs_added_and_removed_live_leave_the_output_untouched(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any, ts_file: Path
) -> None:
    a_port, b_port = free_port(), free_port()
    cap = udp_capture()
    route = gateway.add_route("r", f"udp://127.0.0.1:{a_port}", [f"udp://127.0.0.1:{cap.port}"])
    live_sender(peers, ts_file, f"udp://127.0.0.1:{a_port}?pkt_size=1316")
    live_sender(peers, ts_file, f"udp://127.0.0.1:{b_port}?pkt_size=1316")
    wait_until(lambda: cap.size > 100_000, 20, "data")
    assert route.add_input(f"udp://127.0.0.1:{b_port}", "backup") == "backup"
    wait_until(lambda: route.stats()["inputs"][1]["healthy"], 10, "the new input")
    route.remove_input("backup")
    assert [i["id"] for i in route.stats()["inputs"]] == ["in0"]
    size = cap.size
    wait_until(lambda: cap.size > size + 100_000, 10, "more data")
    s = route.stats()
    # No switch and no cut: what went out was passed through untouched all along.
    assert s["switch"]["history"] == []
    assert s["switch"]["cuts"] == 0
    # Not a packet lost on the way: every PID's continuity counter ran on.
    assert ts_continuity(cap.data)["cc_errors"] == 0


def test_switch_events_wait_without_holding_the_gil(gateway: castway.Gateway) -> None:
    route = gateway.add_route(
        "r", ["test://?size=320x180&fps=25&bitrate=300", "test://?size=320x180&fps=25&bitrate=300"],
        ["udp://127.0.0.1:9"],
    )
    wait_until(lambda: all(i["healthy"] for i in route.stats()["inputs"]), 20, "both inputs")
    got: list[castway.SwitchEvent] = []
    waiter = threading.Thread(target=lambda: got.extend(route.switches(timeout=10)))
    waiter.start()
    # Python keeps running while the waiter blocks in Rust.
    spins = 0
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        spins += 1
    assert spins > 10_000
    route.switch_to("in1")
    wait_until(lambda: got, 10, "the event")
    assert (got[0]["to"], got[0]["reason"]) == ("in1", "manual")
    gateway.remove_route("r")
    waiter.join(15)
    assert not waiter.is_alive(), "the iterator did not end when the route stopped"


def test_bad_switch_settings_and_calls_are_named(gateway: castway.Gateway) -> None:
    t = "test://?size=320x180&bitrate=300"
    with pytest.raises(castway.errors.ConfigError, match=r"loss_timeout_ms: .*10 is outside"):
        gateway.add_route("a", t, loss_timeout_ms=10)
    with pytest.raises(castway.errors.ConfigError, match="slate size 15x16"):
        gateway.add_route("a", t, slate_size=(15, 16))
    with pytest.raises(castway.errors.ConfigError, match="`slate` is reserved"):
        gateway.add_route("a", {"slate": t})
    with pytest.raises(castway.errors.InvalidUriError, match="standby=hot"):
        gateway.add_route("a", f"{t}&standby=hot")
    route = gateway.add_route("a", t)
    with pytest.raises(castway.errors.NotFoundError, match="input `nope`"):
        route.switch_to("nope")
    with pytest.raises(castway.errors.ConfigError, match="last input"):
        route.remove_input("in0")
    with pytest.raises(castway.errors.AlreadyExistsError, match="input `in0`"):
        route.add_input(t, "in0")
    with pytest.raises(ValueError, match="timeout"):
        route.wait_switch(0, -1)
    assert gateway.routes() == ["a"]


def decoded_sizes(log: str) -> list[str]:
    """The picture size of each frame a `playbin` receiver (`decoding_receiver`) decoded, in
    order, from its `gst-launch-1.0 -v` log: the size of the caps last set on its video sink."""
    sizes, size = [], "?"
    for line in log.splitlines():
        if "vsink.GstPad:sink: caps = video/x-raw" in line:
            size = line.split("width=(int)")[1].split(",")[0] + "x" + \
                line.split("height=(int)")[1].split(",")[0]
        elif "vsink: last-message = chain" in line:
            sizes.append(size)
    return sizes


def test_a_receiver_decodes_both_inputs_across_switches_between_program_layouts(
    gateway: castway.Gateway, peers: Peers, ts_file: Path
) -> None:
    # ffmpeg (PMT 0x1000, video 0x100, 640x360) and mpegtsmux (PMT 0x20, video 65, 320x180)
    # both send version 0 of their tables: the receiver follows the switch only if the tables
    # it gets say they changed.
    ff_port, gst_port, out_port = free_port(), free_port(), free_port()
    route = gateway.add_route(
        "r",
        {"ffmpeg": f"udp://127.0.0.1:{ff_port}", "gst": f"udp://127.0.0.1:{gst_port}"},
        [f"udp://127.0.0.1:{out_port}"],
        slate=False,
    )
    live_sender(peers, ts_file, f"udp://127.0.0.1:{ff_port}?pkt_size=1316")
    peers.start(gst_udp_encoder(gst_port))
    # GStreamer's tsdemux behind playbin, printing each decoded frame's arrival at its sink.
    receiver = peers.start([
        "gst-launch-1.0", "-v", "playbin", f"uri=udp://127.0.0.1:{out_port}",
        "video-sink=fakesink name=vsink sync=false silent=false",
        "audio-sink=fakesink sync=false",
    ])
    wait_until(lambda: all(i["healthy"] for i in route.stats()["inputs"]), 30, "both inputs")

    def frames_of(size: str, after: int) -> bool:
        return decoded_sizes(peers.log(receiver))[after:].count(size) >= 10

    wait_until(lambda: frames_of("640x360", 0), 20, "ffmpeg's frames decoded")
    for target, size in [("gst", "320x180"), ("ffmpeg", "640x360")]:
        before = len(decoded_sizes(peers.log(receiver)))
        route.switch_to(target)
        wait_until(lambda t=target: route.stats()["switch"]["active"] == t, 15, f"{target} on air")
        wait_until(lambda s=size, n=before: frames_of(s, n), 20, f"{target}'s frames decoded")
    assert route.stats()["switch"]["psi_versions_bumped"] >= 4
