"""Instant start: a route keeps the last GOP it sent, and an output that starts on a running
route gets a PAT, a PMT and that GOP first, so its receiver decodes from its first packets
(docs/stats.md, `gop_cache`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import castway

from support import wait_until
from support.capture import UdpCapture
from support.clips import decode_errors, make_clip
from support.impair import Impairment, ImpairProxy
from support.net import free_port
from support.peers import Peers, srt_receiver
from support.senders import LiveSender, chunks_of
from support.ts import is_random_access

# A 2 s GOP: an output added at a random moment almost always starts mid-GOP.
GOP_FRAMES = 50
FPS = 25


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("instant") / "gop.ts", 8, "320x180", 600,
                     gop=GOP_FRAMES, fps=FPS, maxrate_kbps=600, bufsize_kbps=600)


@pytest.fixture(scope="module")
def live(clip: Path) -> Iterator[tuple[castway.Gateway, castway.Route, int]]:
    """One route fed by a live sender for the whole module; each test sets its own
    `gop_cache_bytes` (it changes live) and adds its own outputs."""
    port = free_port()
    data = clip.read_bytes()
    with castway.Gateway() as gw:
        route = gw.add_route("live", f"udp://127.0.0.1:{port}")
        sender = LiveSender(data, port, bitrate=len(data) * 8 / 8)
        try:
            wait_until(lambda: route.stats()["state"] == "live", 10, "the route to go live")
            yield gw, route, port
        finally:
            sender.close()


def set_gop_cache(live: tuple[castway.Gateway, castway.Route, int], limit: int) -> None:
    gw, _, port = live
    gw.update_route("live", f"udp://127.0.0.1:{port}", gop_cache_bytes=limit)


def join(route: castway.Route, peers: Peers, udp_capture: Callable[..., UdpCapture],
         seconds: float = 1.5) -> tuple[str, UdpCapture]:
    """Adds an SRT listener output while the route runs and calls it (a UDP output gets no
    burst); returns it once `seconds` of live data (at the clip's rate) arrived at the caller
    on top of what came at once."""
    cap = udp_capture()
    port = free_port()
    oid = route.add_output(f"srt://127.0.0.1:{port}?mode=listener")
    srt_receiver(peers, port, cap)
    rate = route.stats()["inputs"][0]["bitrate_bps"] / 8
    wait_until(lambda: cap.size > 0, 10, "the first datagram")
    first = cap.size
    wait_until(lambda: cap.size >= first + seconds * rate, 10, "live data after the join")
    return oid, cap


# ffmpeg's first stream, the video (its audio packets carry the random access flag too).
VIDEO_PID = 0x100


def keyframes(data: bytes) -> list[int]:
    """Where the video's keyframes start."""
    return [
        o for o in range(0, len(data) - 187, 188)
        if ((data[o + 1] & 0x1F) << 8 | data[o + 2]) == VIDEO_PID
        and is_random_access(data[o:o + 188])
    ]


def until_last_keyframe(cap: UdpCapture, path: Path) -> bytes:
    """What the output got from its first packet to its last keyframe (not a frame cut off by
    the end of the capture), once it got a keyframe of the live data too, written to `path`.
    An audio frame may still be cut there: the checks decode the video."""
    wait_until(lambda: len(keyframes(cap.data)) >= 2, 10, "a keyframe of the live data")
    data = cap.data
    path.write_bytes(data[: keyframes(data)[-1]])
    return data


def output(route: castway.Route, oid: str) -> Any:
    return next(o for o in route.stats()["outputs"] if o["id"] == oid)


def test_an_output_joining_mid_gop_decodes_from_its_first_packets(
    live: tuple[castway.Gateway, castway.Route, int], peers: Peers,
    udp_capture: Callable[..., UdpCapture], tmp_path: Path,
) -> None:
    _, route, _ = live
    set_gop_cache(live, 1 << 20)
    # A GOP started and more of it went out since: joining now is mid-GOP.
    wait_until(lambda: route.stats()["gop_cache"]["bytes"] > 20 * 1316, 10, "a GOP under way")
    oid, cap = join(route, peers, udp_capture)
    path = tmp_path / "joined.ts"
    data = until_last_keyframe(cap, path)
    # The PAT, the PMT it names, then the keyframe.
    pid = [((data[o + 1] & 0x1F) << 8) | data[o + 2] for o in range(0, 3 * 188, 188)]
    assert pid[:2] == [0, ((data[15] & 0x1F) << 8) | data[16]]
    assert keyframes(data)[0] == 376
    assert decode_errors(path, video_only=True) == ""
    out = output(route, oid)
    assert out["drops"] == 0
    assert out["burst_packets"] > 20 * 7
    assert out["burst_packets"] <= out["packets"]
    assert route.stats()["gop_cache"]["bursts"] >= 1
    route.remove_output(oid)


def test_an_srt_caller_joining_a_listener_output_mid_gop_decodes_from_its_first_packets(
    live: tuple[castway.Gateway, castway.Route, int], peers: Peers,
    udp_capture: Callable[..., UdpCapture], tmp_path: Path,
) -> None:
    """Each caller of a listener output gets its own burst when it is accepted, not the
    output when it starts: a caller connecting later starts at the last keyframe too."""
    _, route, _ = live
    set_gop_cache(live, 1 << 20)
    port = free_port()
    oid = route.add_output(f"srt://:{port}?mode=listener")
    for n in range(2):
        # Each caller joins once a GOP is under way: mid-GOP.
        wait_until(lambda: route.stats()["gop_cache"]["bytes"] > 20 * 1316, 10,
                   "a GOP under way")
        bursts = route.stats()["gop_cache"]["bursts"]
        cap = udp_capture()
        receiver = srt_receiver(peers, port, cap)
        path = tmp_path / f"caller{n}.ts"
        data = until_last_keyframe(cap, path)
        assert keyframes(data)[0] == 376
        assert decode_errors(path, video_only=True) == ""
        assert route.stats()["gop_cache"]["bursts"] == bursts + 1
        receiver.kill()
    out = output(route, oid)
    assert out["burst_packets"] > 2 * 20 * 7 and out["drops"] == 0
    route.remove_output(oid)


def test_a_burst_larger_than_the_send_buffer_reaches_an_srt_caller_whole(
    live: tuple[castway.Gateway, castway.Route, int], peers: Peers,
    udp_capture: Callable[..., UdpCapture], tmp_path: Path,
) -> None:
    """libsrt's send buffer takes what it has room for; the rest of the burst waits for the
    socket to be writable, ahead of live data, instead of being dropped."""
    _, route, _ = live
    set_gop_cache(live, 1 << 20)
    path = tmp_path / "caller.ts"
    # The caller joins when the GOP is larger than the send buffer; on a loaded machine a new
    # GOP may start before its handshake ends, and its burst is then small: such a join is
    # tried again (a few times at most), with a new output and caller.
    for _ in range(5):
        wait_until(lambda: route.stats()["gop_cache"]["bytes"] > 80 * 1316, 20,
                   "a GOP larger than the send buffer")
        port = free_port()
        # libsrt's least send buffer: 65536 bytes, 44 messages. A latency of 1 s: on a loaded
        # machine the receiving srt-live-transmit may run late, and at 120 ms libsrt drops what
        # it plays too late (a gap in the capture that castway did not make).
        oid = route.add_output(f"srt://:{port}?mode=listener&sndbuf=65536&latency=1000")
        cap = udp_capture()
        receiver = srt_receiver(peers, port, cap)
        data = until_last_keyframe(cap, path)
        out = output(route, oid)
        if out["burst_packets"] > 80 * 7:
            break
        receiver.kill()
        route.remove_output(oid)
    else:
        pytest.fail("every caller joined early in a GOP: no burst larger than the send buffer")
    assert keyframes(data)[0] == 376
    # A message dropped for want of room in the send buffer breaks a frame: its counts say so.
    assert decode_errors(path, video_only=True) == "", out
    assert out["drops"] == 0 and out["srt"]["callers"][0]["drops"] == 0, out
    route.remove_output(oid)


def test_live_data_queued_behind_a_burst_counts_as_dropped_when_the_caller_vanishes(
    live: tuple[castway.Gateway, castway.Route, int], peers: Peers,
    udp_capture: Callable[..., UdpCapture],
) -> None:
    """A caller whose link goes dark mid-burst: the rest of its burst and the live data behind
    it wait in its backlog until the peer idle timeout drops it; that live data was counted as
    sent when queued, so it counts as the caller's drop then."""
    _, route, _ = live
    set_gop_cache(live, 1 << 20)
    port = free_port()
    oid = route.add_output(f"srt://:{port}?mode=listener&sndbuf=65536&peeridletimeo=1000")
    wait_until(lambda: route.stats()["gop_cache"]["bytes"] > 80 * 1316, 20,
               "a GOP larger than the send buffer")
    # The proxy relays the handshake and a few packets, then nothing: no ACK comes back.
    with ImpairProxy(port, Impairment(), max_packets=12) as proxy:
        cap = udp_capture()
        srt_receiver(peers, proxy.port, cap)
        wait_until(lambda: output(route, oid)["srt"]["callers"], 20, "the caller to join")
        wait_until(lambda: not output(route, oid)["srt"]["callers"], 20,
                   "the caller dropped after the peer idle timeout")
    out = output(route, oid)
    assert out["drops"] > 0, out
    route.remove_output(oid)


def test_a_file_output_added_live_starts_with_a_whole_gop(
    live: tuple[castway.Gateway, castway.Route, int], tmp_path: Path,
) -> None:
    """An output with a pipeline (its appsrc) gets the burst once it takes data, not while it
    is still starting."""
    _, route, _ = live
    set_gop_cache(live, 1 << 20)
    wait_until(lambda: route.stats()["gop_cache"]["bytes"] > 20 * 1316, 10, "a GOP under way")
    path = tmp_path / "late.ts"
    oid = route.add_output(f"file://{path}")
    wait_until(lambda: path.exists() and len(keyframes(path.read_bytes())) >= 2, 10,
               "a keyframe of the live data in the file")
    route.remove_output(oid)
    data = path.read_bytes()
    assert keyframes(data)[0] == 376
    whole = tmp_path / "whole.ts"
    whole.write_bytes(data[: keyframes(data)[-1]])
    assert decode_errors(whole, video_only=True) == ""


def test_a_udp_output_added_live_gets_no_burst_and_starts_at_the_live_data(
    live: tuple[castway.Gateway, castway.Route, int],
    udp_capture: Callable[..., UdpCapture],
) -> None:
    """A burst sent at once as datagrams would overrun a receiver's socket buffer, a loss
    castway cannot count (docs/architecture.md#instant-start)."""
    _, route, _ = live
    set_gop_cache(live, 1 << 20)
    wait_until(lambda: route.stats()["gop_cache"]["bytes"] > 20 * 1316, 10, "a GOP under way")
    bursts = route.stats()["gop_cache"]["bursts"]
    cap = udp_capture()
    oid = route.add_output(f"udp://127.0.0.1:{cap.port}")
    wait_until(lambda: output(route, oid)["packets"] > 50 * 7, 10, "live data to the output")
    out = output(route, oid)
    assert out["burst_packets"] == 0 and out["drops"] == 0
    assert route.stats()["gop_cache"]["bursts"] == bursts
    route.remove_output(oid)


def test_without_instant_start_an_output_joining_mid_gop_starts_with_undecodable_frames(
    live: tuple[castway.Gateway, castway.Route, int], peers: Peers,
    udp_capture: Callable[..., UdpCapture], tmp_path: Path,
) -> None:
    _, route, _ = live
    set_gop_cache(live, 0)
    assert route.stats()["gop_cache"] == {**route.stats()["gop_cache"], "limit_bytes": 0,
                                          "bytes": 0}
    oid, cap = join(route, peers, udp_capture)
    path = tmp_path / "joined.ts"
    until_last_keyframe(cap, path)
    # The decoder meets slices before any parameter set (or skips to the next keyframe).
    assert "PPS" in decode_errors(path, video_only=True)
    assert output(route, oid)["burst_packets"] == 0
    route.remove_output(oid)


def test_a_gop_larger_than_the_bound_is_not_kept_and_counted(
    live: tuple[castway.Gateway, castway.Route, int], peers: Peers,
    udp_capture: Callable[..., UdpCapture],
) -> None:
    _, route, _ = live
    limit = 1500  # less than any keyframe: no GOP fits
    set_gop_cache(live, limit)
    before = route.stats()["gop_cache"]["too_large"]
    wait_until(lambda: route.stats()["gop_cache"]["too_large"] >= before + 2, 10,
               "two GOPs too large")
    cache = route.stats()["gop_cache"]
    assert cache["limit_bytes"] == limit and cache["bytes"] <= limit
    oid, _ = join(route, peers, udp_capture, seconds=0.2)
    # At most the start of a GOP that was about to outgrow the bound.
    assert output(route, oid)["burst_packets"] <= limit // 188
    route.remove_output(oid)


def test_single_input_passthrough_stays_bit_exact_with_instant_start_off(
    live: tuple[castway.Gateway, castway.Route, int], peers: Peers,
    udp_capture: Callable[..., UdpCapture], clip: Path,
) -> None:
    """An output added live gets a contiguous run of the input's bytes, nothing inserted."""
    _, route, _ = live
    set_gop_cache(live, 0)
    oid, cap = join(route, peers, udp_capture, seconds=1.0)
    route.remove_output(oid)
    got = cap.data
    looped = b"".join(chunks_of(clip.read_bytes(), whole=True)) * 2
    assert len(got) % 188 == 0
    # Looped: the capture may run over the clip's end into its start again.
    assert looped.find(got[: 188 * 700]) >= 0
