"""SRT in every mode pairing against real peers (ffmpeg, srt-live-transmit), passphrases, a
listener output serving several callers, and bit-exact passthrough."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import castway

from support import sha256, wait_until
from support.capture import UdpCapture
from support.clips import decode_errors
from support.impair import Impairment, ImpairProcess, ImpairProxy
from support.net import free_port
from support.peers import Peers
from support.senders import PipeSender, UdpSender
from support.ts import CHUNK, from_first_keyframe, random_ts, whole_gops

PASS = "correct-horse-battery"


def input_state(route: castway.Route) -> str:
    return route.stats()["inputs"][0]["state"]


def listening(gateway: castway.Gateway, uri: str, cap: UdpCapture, **options: Any) -> castway.Route:
    """A route from SRT listener `uri` to `cap` (with `add_route`'s `options`), once the
    listener is up."""
    route = gateway.add_route("r", uri, [f"udp://127.0.0.1:{cap.port}"], **options)
    wait_until(lambda: input_state(route) == "listening", what="the listener to be up")
    return route


def connected(ep: Any) -> bool:
    return bool(ep["srt"] and ep["srt"]["latency_ms"] > 0)


def slt_sender(peers: Peers, target: str, quiet: bool = True) -> subprocess.Popen[bytes]:
    """srt-live-transmit reading TS from stdin (1316-byte reads) and sending it to `target`."""
    q = ["-q"] if quiet else []
    return peers.start(
        ["srt-live-transmit", *q, "-c", "1316", "file://con", target], stdin=subprocess.PIPE
    )


def slt_receiver(
    peers: Peers, source: str, cap: UdpCapture, quiet: bool = True
) -> subprocess.Popen[bytes]:
    """srt-live-transmit relaying what it receives from `source`, message by message, to a UDP
    capture (its stdout would hold back a partly filled buffer until it exits)."""
    q = ["-q"] if quiet else []
    return peers.start(["srt-live-transmit", *q, source, f"udp://127.0.0.1:{cap.port}"])


def test_listener_input_receives_from_ffmpeg_caller(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any, ts_file: Path, tmp_path: Path
) -> None:
    port = free_port()
    cap = udp_capture()
    route = listening(gateway, f"srt://:{port}?mode=listener", cap)
    peers.start([
        "ffmpeg", "-v", "error", "-re", "-i", str(ts_file), "-c", "copy",
        "-f", "mpegts", f"srt://127.0.0.1:{port}?mode=caller&pkt_size=1316",
    ])
    wait_until(lambda: cap.size > 400_000, 30, "the relayed stream at the UDP receiver")
    stats = route.stats()["inputs"][0]
    assert stats["state"] == "live"
    assert connected(stats)
    assert stats["drops"] == 0
    clip = from_first_keyframe(cap.data, tmp_path / "capture.ts")
    assert decode_errors(clip) == ""


def test_caller_input_to_srt_live_transmit_listener_is_bit_exact(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    port = free_port()
    data = random_ts(7 * 1500)
    sender = slt_sender(peers, f"srt://:{port}?mode=listener")
    cap = udp_capture()
    route = gateway.add_route("r", f"srt://127.0.0.1:{port}", [f"udp://127.0.0.1:{cap.port}"])
    wait_until(lambda: connected(route.stats()["inputs"][0]), 15, "castway to connect")
    PipeSender(sender, data).join()
    wait_until(lambda: cap.size >= len(data), 15, "every byte at the receiver")
    assert sha256(cap.data[: len(data)]) == sha256(data)


def test_rendezvous_input_and_output(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    # srt-live-transmit sends to castway by rendezvous; castway relays to another
    # srt-live-transmit by rendezvous. Each pair binds distinct local ports on loopback.
    a, b, c, d = (free_port() for _ in range(4))
    data = random_ts(7 * 1000)
    out = udp_capture()
    receiver = slt_receiver(peers, f"srt://127.0.0.1:{c}?mode=rendezvous&port={d}", out)
    route = gateway.add_route(
        "r",
        f"srt://127.0.0.1:{a}?mode=rendezvous&port={b}",
        [f"srt://127.0.0.1:{d}?mode=rendezvous&port={c}"],
    )
    sender = slt_sender(peers, f"srt://127.0.0.1:{b}?mode=rendezvous&port={a}")
    wait_until(lambda: connected(route.stats()["inputs"][0]), 15, "the input rendezvous")
    wait_until(lambda: connected(route.stats()["outputs"][0]), 15, "the output rendezvous")
    PipeSender(sender, data).join()
    wait_until(lambda: out.size >= len(data), 15, "every byte at the receiver")
    assert sha256(out.data[: len(data)]) == sha256(data)
    assert receiver.poll() is None


def test_caller_output_to_srt_live_transmit_listener(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    in_port, out_port = free_port(), free_port()
    out = udp_capture()
    slt_receiver(peers, f"srt://:{out_port}?mode=listener", out)
    route = gateway.add_route(
        "r", f"udp://127.0.0.1:{in_port}", [f"srt://127.0.0.1:{out_port}?mode=caller"]
    )
    # Until srt-live-transmit listens, castway retries with backoff; then it connects.
    wait_until(lambda: connected(route.stats()["outputs"][0]), 20, "the caller output to connect")
    data = random_ts(7 * 1000)
    sender = UdpSender(data, in_port)
    sender.join()
    wait_until(lambda: out.size >= len(data), 15, "every byte at the receiver")
    assert sha256(out.data[: len(data)]) == sha256(data)


def test_listener_output_serves_three_ffmpeg_callers_at_once(
    gateway: castway.Gateway, peers: Peers, tmp_path: Path
) -> None:
    port = free_port()
    route = gateway.add_route(
        "r", "test://?size=320x180&fps=25&bitrate=400", [f"srt://:{port}?mode=listener"]
    )
    captures = [tmp_path / f"caller{i}.ts" for i in range(3)]
    procs = []
    # GStreamer 1.22's srtsink listens with a backlog of 1, so callers that knock in the same
    # instant can be turned away ("backlog exceeded"); they connect one after the other here
    # and then are all served at once.
    for n, c in enumerate(captures, start=1):
        procs.append(peers.start([
            "ffmpeg", "-v", "error", "-y", "-i", f"srt://127.0.0.1:{port}?mode=caller",
            "-c", "copy", "-t", "4", "-f", "mpegts", str(c),
        ]))
        callers = wait_until(
            lambda n=n: (lambda cs: cs if len(cs) == n else None)(
                route.stats()["outputs"][0]["srt"]["callers"]
            ),
            15, f"{n} caller(s) on the listener",
        )
    assert all(c["address"].startswith("127.0.0.1:") for c in callers)
    assert len({c["address"] for c in callers}) == 3
    for p in procs:
        assert p.wait(timeout=30) == 0
    for c in captures:
        assert c.stat().st_size > 50_000
        assert decode_errors(from_first_keyframe(c.read_bytes(), c.with_suffix(".cut.ts"))) == ""
    wait_until(
        lambda: route.stats()["outputs"][0]["srt"]["callers"] == [], 10, "callers to leave"
    )


def test_bit_exact_srt_to_srt_passthrough(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    in_port, out_port = free_port(), free_port()
    route = gateway.add_route(
        "r",
        f"srt://:{in_port}?mode=listener&passphrase={PASS}",
        [f"srt://:{out_port}?mode=listener&passphrase={PASS}"],
    )
    out = udp_capture()
    slt_receiver(peers, f"srt://127.0.0.1:{out_port}?passphrase={PASS}", out)
    wait_until(lambda: route.stats()["outputs"][0]["srt"]["callers"], 15, "the receiver")
    sender = slt_sender(peers, f"srt://127.0.0.1:{in_port}?passphrase={PASS}")
    wait_until(lambda: connected(route.stats()["inputs"][0]), 15, "the sender")
    data = random_ts(7 * 3000, seed=7)
    PipeSender(sender, data, bitrate=6e6).join()
    wait_until(lambda: out.size >= len(data), 20, "every byte at the receiver")
    assert sha256(out.data[: len(data)]) == sha256(data)
    s = route.stats()
    assert s["inputs"][0]["bytes"] == len(data)
    assert s["outputs"][0]["drops"] == 0


def test_a_listener_output_without_callers_counts_its_data_as_unheard_then_as_sent(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    port = free_port()
    route = gateway.add_route(
        "r", "test://?size=160x90&bitrate=200&audio=0", [f"srt://:{port}?mode=listener"]
    )
    out = lambda: route.stats()["outputs"][0]  # noqa: E731
    # Nobody to hand it to: discarded, counted as unheard, not as sent.
    wait_until(lambda: out()["unheard_packets"] > 100, 15, "unheard packets")
    o = out()
    assert (o["packets"], o["bytes"], o["drops"]) == (0, 0, 0), o
    cap = udp_capture()
    slt_receiver(peers, f"srt://127.0.0.1:{port}", cap)
    wait_until(lambda: out()["srt"]["callers"], 15, "the caller")
    unheard = out()["unheard_packets"]
    wait_until(lambda: out()["packets"] > 100 and cap.size > 0, 15, "data sent to the caller")
    # Once a caller is there, what goes out is sent, not unheard.
    assert out()["unheard_packets"] == unheard


def passphrase_listener_route(gateway: castway.Gateway, side: str, port: int) -> castway.Route:
    """A route whose input or output (`side`) is a listener on `port` with the passphrase."""
    listener = f"srt://:{port}?mode=listener&passphrase={PASS}"
    if side == "input":
        return gateway.add_route("r", listener, ["udp://127.0.0.1:9"])
    return gateway.add_route("r", "test://?size=160x90&bitrate=200&audio=0", [listener])


@pytest.mark.parametrize("side", ["input", "output"])
def test_wrong_passphrase_is_refused_and_the_listener_keeps_listening(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any, side: str
) -> None:
    port = free_port()
    route = passphrase_listener_route(gateway, side, port)
    ep = lambda: route.stats()[side + "s"][0]  # noqa: E731
    # A peer with the wrong passphrase is rejected by libsrt.
    bad_out = udp_capture()
    if side == "input":
        # It calls at once, data or not; a refused srt-live-transmit may stop reading its
        # input, or never exit (Haivision/srt#2776): nothing waits on it but its refusal.
        bad = slt_sender(peers, f"srt://127.0.0.1:{port}?passphrase=wrong-passphrase", False)
    else:
        bad = slt_receiver(
            peers, f"srt://127.0.0.1:{port}?passphrase=wrong-passphrase", bad_out, False
        )
    wait_until(lambda: "Incorrect passphrase" in peers.log(bad), 15,
               "the peer to be told its passphrase is wrong")
    assert not connected(ep())
    assert bad_out.size == 0
    bad.kill()
    # The right passphrase still gets through: the listener kept listening.
    if side == "input":
        good = slt_sender(peers, f"srt://127.0.0.1:{port}?passphrase={PASS}")
        wait_until(lambda: connected(ep()), 15, "the right passphrase to connect")
        PipeSender(good, random_ts(7 * 100), bitrate=1e6).join()
        wait_until(lambda: ep()["bytes"] >= 7 * 100 * 188, 10, "data from the good sender")
    else:
        good_out = udp_capture()
        slt_receiver(peers, f"srt://127.0.0.1:{port}?passphrase={PASS}", good_out)
        wait_until(lambda: good_out.size > 10 * CHUNK, 15,
                   "data at the receiver with the right passphrase")


def refused_caller(peers: Peers, peer: str, side: str, target: str) -> subprocess.Popen[bytes]:
    """`peer` (srt-live-transmit or ffmpeg) calling `target`: sending to a listener input,
    receiving from a listener output."""
    if peer == "srt-live-transmit":
        # It calls at once, data or not; a refused one may never exit (Haivision/srt#2776).
        return peers.start(["srt-live-transmit", "-a", "no", *(
            ["file://con", target] if side == "input" else [target, "udp://127.0.0.1:9999"]
        )], stdin=subprocess.PIPE)
    if side == "input":
        return peers.start([
            "ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=160x90:rate=5",
            "-c:v", "mpeg2video", "-t", "30", "-f", "mpegts", target,
        ])
    return peers.start(["ffmpeg", "-v", "error", "-i", target, "-t", "30", "-f", "null", "-"])


@pytest.mark.parametrize("peer", ["srt-live-transmit", "ffmpeg"])
@pytest.mark.parametrize("side", ["input", "output"])
def test_a_plain_listener_counts_and_reports_callers_refused_for_their_passphrase(
    gateway: castway.Gateway, peers: Peers, side: str, peer: str
) -> None:
    port = free_port()
    route = passphrase_listener_route(gateway, side, port)
    srt = lambda: route.stats()[side + "s"][0]["srt"]  # noqa: E731
    ep_id = route.stats()[side + "s"][0]["id"]

    def refusals() -> list[Any]:
        return [e for e in gateway.events(timeout=0) if e["kind"] == "srt_refused"]

    # A wrong passphrase, then none: libsrt refuses both, after its listen callback.
    for reason, query in (("bad_secret", "&passphrase=wrong-passphrase"), ("unsecure", "")):
        caller = refused_caller(peers, peer, side, f"srt://127.0.0.1:{port}?mode=caller{query}")
        wait_until(lambda r=reason: srt()[f"refused_{r}"] >= 1, 20, f"{reason} counted")
        event = wait_until(
            lambda r=reason: next((e for e in refusals() if e["reason"] == r), None), 20,
            f"{reason} reported as an event",
        )
        caller.kill()
        assert event["route"] == "r" and event[side] == ep_id, event
        assert event["address"].startswith("127.0.0.1:"), event
    # Each refusal (a caller retries: each try is one) is an event or counted as missed.
    wait_until(
        lambda: len(refusals()) + srt()["refusal_events_missed"]
        == srt()["refused_bad_secret"] + srt()["refused_unsecure"],
        10, "every refusal reported or counted as missed",
    )
    # None of them got through.
    assert not connected(route.stats()[side + "s"][0])
    # Prometheus sees them by reason.
    from castway.server.metrics import Metrics

    text = Metrics(gateway.stats).render().decode()
    assert re.search(r'castway_srt_refused_total\{[^}]*reason="bad_secret"[^}]*\} [1-9]', text), (
        [ln for ln in text.splitlines() if "refused" in ln])


def test_caller_with_wrong_passphrase_reports_the_rejection(
    gateway: castway.Gateway, peers: Peers
) -> None:
    port = free_port()
    slt_sender(peers, f"srt://:{port}?mode=listener&passphrase={PASS}")
    route = gateway.add_route(
        "r", f"srt://127.0.0.1:{port}?passphrase=not-the-passphrase", ["udp://127.0.0.1:9"]
    )
    err = wait_until(lambda: route.stats()["inputs"][0]["last_error"], 20, "an error")
    s = route.stats()["inputs"][0]
    assert s["reconnects"] >= 1
    assert s["bytes"] == 0
    # libsrt's reject reason, as the listener sent it.
    assert "passphrase" in err.lower(), err


def test_passphrase_length_is_checked_before_anything_starts(
    gateway: castway.Gateway,
) -> None:
    with pytest.raises(castway.errors.InvalidUriError, match="10 to 79 bytes"):
        gateway.add_route("r", "srt://:9000?passphrase=short", ["udp://127.0.0.1:9"])
    # libsrt counts bytes: 40 characters of two bytes each are one too many.
    with pytest.raises(castway.errors.InvalidUriError, match=r"got 80 in UTF-8, 40 characters"):
        gateway.add_route("r", "srt://:9000?passphrase=" + "é" * 40, ["udp://127.0.0.1:9"])
    assert gateway.routes() == []


def test_listener_input_survives_its_caller_leaving(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    port = free_port()
    cap = udp_capture()
    route = gateway.add_route("r", f"srt://:{port}", [f"udp://127.0.0.1:{cap.port}"])
    for round_ in range(2):
        s = slt_sender(peers, f"srt://127.0.0.1:{port}")
        wait_until(lambda: connected(route.stats()["inputs"][0]), 15, "the caller")
        before = cap.size
        PipeSender(s, random_ts(7 * 200, seed=round_), bitrate=2e6).join()
        wait_until(lambda b=before: cap.size >= b + 7 * 200 * 188, 10, "data of this caller")
        s.kill()
        s.wait()
        # libsrt would notice the vanished caller only after 5 s; castway reopens the
        # listener once the input stalls, so the next caller is taken at once.
        wait_until(lambda: input_state(route) == "listening", 10, "the listener to reopen")
    s = route.stats()["inputs"][0]
    assert s["bytes"] == 2 * 7 * 200 * 188
    assert s["reconnects"] >= 1


def test_gst_launch_caller_with_passphrase_feeds_a_listener_input(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any, tmp_path: Path
) -> None:
    port = free_port()
    cap = udp_capture()
    # No slate: on a loaded machine the encoder can pause longer than the loss timeout, and
    # each return from the slate would cut into a GOP of the sender's (a decode error that is
    # the cut's, not the link's); nor would a slate keyframe at the end keep a last picture
    # the sender left unfinished out of the GOPs decoded.
    route = listening(gateway, f"srt://:{port}?passphrase={PASS}&pbkeylen=32", cap, slate=False)
    sender = peers.start([
        "gst-launch-1.0", "-q", "videotestsrc", "is-live=true", "num-buffers=150", "!",
        "video/x-raw,width=320,height=180,framerate=25/1", "!",
        "x264enc", "tune=zerolatency", "key-int-max=25", "bitrate=500", "!", "h264parse", "!",
        "mpegtsmux", "alignment=7", "!",
        "srtsink", f"uri=srt://127.0.0.1:{port}?mode=caller&passphrase={PASS}&pbkeylen=32",
    ])
    wait_until(lambda: connected(route.stats()["inputs"][0]), 15, "gst-launch to connect")
    assert sender.wait(timeout=30) == 0
    wait_until(lambda: cap.size > 100_000, 10, "the stream at the receiver")
    assert route.stats()["inputs"][0]["drops"] == 0
    assert decode_errors(whole_gops(cap.data, tmp_path / "gst.ts")) == ""


def test_an_srt_outputs_losses_on_a_lossy_link_are_counted_per_caller(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    """5 % of what castway sends its caller is lost on the way (the impairment proxy): the
    output's link shows the loss, the NAKs that reported it and the retransmissions, for the
    caller and for the endpoint (a sender's side of libsrt's statistics)."""
    out = free_port()
    route = gateway.add_route("lossy", "test://?size=320x240&bitrate=1000",
                              [f"srt://:{out}?mode=listener"])
    with ImpairProxy(out, Impairment(loss=0.05, seed=3), seconds=60) as proxy:
        cap = udp_capture()
        peers.start(["srt-live-transmit", "-q", f"srt://127.0.0.1:{proxy.port}?mode=caller",
                     f"udp://127.0.0.1:{cap.port}"])

        def lossy() -> Any:
            srt = route.stats()["outputs"][0].get("srt")
            ok = srt and srt["callers"] and all(
                c["loss"] > 0 and c["naks"] > 0 and c["retransmissions"] > 0
                for c in srt["callers"])
            return srt if ok else None

        srt = wait_until(lossy, 30, "losses, NAKs and retransmissions on the link")
        [caller] = srt["callers"]
        assert srt["loss"] >= caller["loss"] > 0 and srt["packets"] >= caller["packets"] > 0
        assert proxy.counts.dropped > 0
        # libsrt's own figures, as srt-live-transmit -s names them: the same losses on the
        # sending side, and the state of the send buffer and window.
        sent = caller["libsrt"]["send"]
        assert sent["packetsLost"] > 0
        assert sent["packetsRetransmitted"] > 0 and sent["bytes"] > 0
        assert caller["libsrt"]["window"]["flow"] > 0 and sent["byteAvailBuf"] > 0
        assert srt["libsrt"]["send"]["packets"] >= sent["packets"]


def test_listener_output_accepts_fifty_callers_knocking_in_the_same_second(
    gateway: castway.Gateway, peers: Peers
) -> None:
    """castway accepts in a loop from a deep backlog (srtsink listened with a backlog of one and
    turned callers away with "backlog exceeded")."""
    port = free_port()
    route = gateway.add_route(
        "many", "test://?size=160x90&bitrate=200&audio=0", [f"srt://:{port}?mode=listener"]
    )
    wait_until(lambda: route.stats()["outputs"][0]["state"] == "listening", 10, "the listener")
    callers = [
        peers.start(["srt-live-transmit", f"srt://127.0.0.1:{port}?mode=caller", "file://con"],
                    stdout_path=Path(os.devnull))
        for _ in range(50)
    ]
    wait_until(lambda: len(route.stats()["outputs"][0]["srt"]["callers"]) == 50, 30,
               "all 50 callers on the listener")
    assert all(p.poll() is None for p in callers)
    assert not [peers.log(p) for p in callers if "reject" in peers.log(p).lower()]


def test_a_vanished_caller_is_noticed_within_the_peer_idle_timeout(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    """A caller killed without a word is dropped after castway's 2 s peer idle timeout, well
    before libsrt's default 5 s; the other caller keeps receiving."""
    port = free_port()
    route = gateway.add_route(
        "idle", "test://?size=160x90&bitrate=200&audio=0", [f"srt://:{port}?mode=listener"]
    )
    caps = [udp_capture(), udp_capture()]
    receivers = [slt_receiver(peers, f"srt://127.0.0.1:{port}", cap) for cap in caps]
    srt = lambda: route.stats()["outputs"][0]["srt"]  # noqa: E731
    wait_until(lambda: len(srt()["callers"]) == 2, 15, "both callers")
    receivers[0].kill()
    receivers[0].wait()
    wait_until(lambda: len(srt()["callers"]) == 1, 4.5, "the vanished caller to be dropped")
    before = caps[1].size
    wait_until(lambda: caps[1].size > before + 10 * CHUNK, 10, "data at the other caller")


def test_caller_output_connects_at_start_and_stays_connected_while_idle(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    """A caller output connects before any data flows and keeps its connection while the
    route has nothing to send, for longer than the peer idle timeout."""
    out_port = free_port()
    out = udp_capture()
    slt_receiver(peers, f"srt://:{out_port}?mode=listener", out)
    route = gateway.add_route(
        "r", f"udp://127.0.0.1:{free_port()}", [f"srt://127.0.0.1:{out_port}?mode=caller"]
    )
    ep = lambda: route.stats()["outputs"][0]  # noqa: E731
    wait_until(lambda: connected(ep()), 20, "the caller output to connect with no data")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        s = ep()
        assert connected(s) and s["reconnects"] == 0, s
        time.sleep(0.2)
    assert ep()["bytes"] == 0


@pytest.mark.parametrize("keylen", [16, 24, 32])
def test_encrypted_relay_between_srt_live_transmit_peers_at_every_key_length(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any, keylen: int
) -> None:
    """srt-live-transmit sends to castway's listener input and receives from its caller
    output, both with a passphrase at `keylen`: bit-exact."""
    in_port, out_port = free_port(), free_port()
    key = f"passphrase={PASS}&pbkeylen={keylen}"
    out = udp_capture()
    slt_receiver(peers, f"srt://:{out_port}?mode=listener&{key}", out)
    route = gateway.add_route(
        "r", f"srt://:{in_port}?mode=listener&{key}",
        [f"srt://127.0.0.1:{out_port}?mode=caller&{key}"],
    )
    wait_until(lambda: connected(route.stats()["outputs"][0]), 15, "the caller output")
    sender = slt_sender(peers, f"srt://127.0.0.1:{in_port}?{key}")
    wait_until(lambda: connected(route.stats()["inputs"][0]), 15, "the sender")
    data = random_ts(7 * 500, seed=keylen)
    PipeSender(sender, data, bitrate=4e6).join()
    wait_until(lambda: out.size >= len(data), 15, "every byte at the receiver")
    assert sha256(out.data[: len(data)]) == sha256(data)


def test_socket_options_reach_libsrt(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    """`peerlatency` on castway's caller output sets the latency its receiver plays at: the
    link negotiates it, and the output's stats show it."""
    out_port = free_port()
    out = udp_capture()
    slt_receiver(peers, f"srt://:{out_port}?mode=listener&latency=80", out)
    route = gateway.add_route(
        "r", "test://?size=160x90&bitrate=200&audio=0",
        [f"srt://127.0.0.1:{out_port}?mode=caller&peerlatency=450&oheadbw=50&tlpktdrop=on"],
    )
    ep = wait_until(lambda: (lambda o: o if connected(o) else None)(route.stats()["outputs"][0]),
                    15, "the caller output")
    assert ep["srt"]["latency_ms"] == 450
    assert "peerlatency=450&oheadbw=50&tlpktdrop=true" in ep["uri"]


def test_rcvlatency_is_the_receiving_sides_alone_as_in_srt_live_transmit(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    """A sender's `rcvlatency` does not reach its receiver, as with srt-live-transmit (it
    was an alias of `latency`, which sets both sides: the receiver played at 300 ms)."""
    out_port = free_port()
    slt_receiver(peers, f"srt://:{out_port}?mode=listener&latency=80", udp_capture())
    route = gateway.add_route(
        "r", "test://?size=160x90&bitrate=200&audio=0",
        [f"srt://127.0.0.1:{out_port}?mode=caller&rcvlatency=300"],
    )
    ep = wait_until(lambda: (lambda o: o if connected(o) else None)(route.stats()["outputs"][0]),
                    15, "the caller output")
    assert ep["srt"]["latency_ms"] == 120  # castway's own latency (its default), not 300
    assert ep["uri"].endswith("&latency=120&rcvlatency=300"), ep["uri"]


def test_live_mode_keys_and_bindtodevice_are_taken_and_reach_the_socket(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    """srt-live-transmit's `tsbpdmode`, `messageapi` and `bindtodevice` keys, on both ends of a
    link over loopback (`lo`); an interface that does not exist fails the output naming the
    key."""
    keys = "tsbpdmode=true&messageapi=1&bindtodevice=lo"
    in_port, out_port = free_port(), free_port()
    out = udp_capture()
    route = gateway.add_route(
        "r", f"udp://127.0.0.1:{in_port}",
        {"lo": f"srt://127.0.0.1:{out_port}?mode=listener&{keys}",
         "bad": f"srt://127.0.0.1:{free_port()}?mode=listener&bindtodevice=nosuchdev0"},
    )
    assert f"&{keys.replace('=1', '=true')}" in route.stats()["outputs"][0]["uri"]
    slt_receiver(peers, f"srt://127.0.0.1:{out_port}?mode=caller&{keys}", out)
    wait_until(lambda: connected(route.stats()["outputs"][0]), 15, "the caller")
    data = random_ts(7 * 300)
    UdpSender(data, in_port).join()
    wait_until(lambda: out.size >= len(data), 15, "every byte at the receiver")
    assert sha256(out.data[: len(data)]) == sha256(data)
    bad = wait_until(lambda: route.stats()["outputs"][1]["last_error"], 15, "the bad output")
    assert "`bindtodevice=nosuchdev0`: No such device" in bad, bad


@pytest.mark.parametrize(("query", "says"), [
    ("oheadbw=1", "`oheadbw=1` must be a whole number from 5 to 100"),
    ("transtype=file", "live streams"),
    ("payloadsize=188", "`payloadsize=188`"),
    ("tlpktdrop=sometimes", "`tlpktdrop=sometimes` must be true or false"),
    ("tsbpdmode=false", "`tsbpdmode=false` is not supported: castway delivers live streams"),
    ("messageapi=0", "`messageapi=0` is not supported: castway sends and receives whole"),
    ("bindtodevice=a-name-too-long-1", "`bindtodevice=a-name-too-long-1` must be a network"),
    ("groupconnect=1", "`groupconnect`: connection bonding (socket groups) is not available"),
    ("groupminstabletimeo=100", "`groupminstabletimeo`: connection bonding"),
    # libsrt 1.5.1 crashes on an empty filter; the others it refused only when the output
    # opened, retrying for ever.
    ("packetfilter=", "`packetfilter=` is not a packet filter libsrt takes"),
    ("packetfilter=fec,cols:0", "`packetfilter=fec,cols:0` is not a packet filter"),
    ("packetfilter=rs,cols:10", "TYPE is `fec`"),
    ("passphrase=kmpassphrase&kmrefreshrate=100&kmpreannounce=80",
     "`kmpreannounce=80` must be at most half of `kmrefreshrate` (100)"),
])
def test_a_bad_socket_option_is_refused_naming_the_key(
    gateway: castway.Gateway, query: str, says: str
) -> None:
    with pytest.raises(castway.errors.InvalidUriError, match=re.escape(says)):
        gateway.add_route("r", f"srt://:{free_port()}?{query}", ["udp://127.0.0.1:9"])
    assert gateway.routes() == []


def test_a_stalled_caller_loses_messages_alone_and_the_others_get_everything(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    """One caller of a listener output stops reading (SIGSTOP: no more ACKs). Its small send
    buffer fills and what it cannot take is dropped and counted for it alone; the other caller
    keeps receiving. (A long peer idle timeout keeps the stalled caller connected, and no
    sender-side drop of late packets empties its buffer.)"""
    port = free_port()
    route = gateway.add_route(
        "iso", "test://?size=320x180&bitrate=2000&audio=0",
        [f"srt://:{port}?mode=listener&sndbuf=65536&tlpktdrop=false&peeridletimeo=60000"],
    )
    caps = [udp_capture(), udp_capture()]
    receivers = [slt_receiver(peers, f"srt://127.0.0.1:{port}", cap) for cap in caps]
    callers = lambda: route.stats()["outputs"][0]["srt"]["callers"]  # noqa: E731
    wait_until(lambda: len(callers()) == 2, 15, "both callers")
    wait_until(lambda: all(c.size > 10 * CHUNK for c in caps), 15, "data at both callers")
    os.kill(receivers[0].pid, signal.SIGSTOP)
    try:
        stalled = wait_until(
            lambda: [c for c in callers() if c["drops"] > 0], 20, "drops for the stalled caller"
        )
        assert len(stalled) == 1
        before = caps[1].size
        wait_until(lambda: caps[1].size > before + 50 * CHUNK, 15, "the other caller's data")
        [other] = [c for c in callers() if c["address"] != stalled[0]["address"]]
        assert other["drops"] == 0
        assert route.stats()["outputs"][0]["drops"] >= stalled[0]["drops"] > 0
    finally:
        os.kill(receivers[0].pid, signal.SIGCONT)


def test_a_lossy_link_to_a_listener_input_loses_nothing_after_srt(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    """srt-live-transmit sends to castway's listener input through 5 % loss and 20 ± 5 ms of
    delay each way: SRT retransmits what was lost and the receiver behind castway gets every
    byte, in order. The latency (1 s) is well above 4 x RTT and leaves room for the pauses of
    a loaded machine: the sender, the relay and castway are processes that wait for a CPU, and
    a retransmission that a pause makes later than the latency is lost for good."""
    port = free_port()
    out = udp_capture()
    # No slate: a pause of this test's own feeder longer than the loss timeout would put the
    # slate on air and splice it into what is compared (a one-input route without a slate
    # carries its input on, untouched).
    route = gateway.add_route("lossy", f"srt://:{port}?mode=listener&latency=1000",
                              [f"udp://127.0.0.1:{out.port}"], slate=False)
    loss = Impairment(loss=0.05, delay_ms=20, jitter_ms=5, seed=11)
    # The relay in a process of its own: it does not wait for this interpreter's GIL.
    with ImpairProcess(port, loss, seconds=60) as proxy:
        sender = slt_sender(peers, f"srt://127.0.0.1:{proxy.port}?latency=1000")
        wait_until(lambda: connected(route.stats()["inputs"][0]), 15, "the sender")
        data = random_ts(7 * 1500, seed=5)
        # A live sender goes on after the part compared: a receiver learns that a message was
        # lost only from one that comes after it, so the last messages need followers.
        PipeSender(sender, data + random_ts(7 * 300, seed=6), bitrate=2e6).join()
        wait_until(lambda: out.size >= len(data), 20, "every byte at the receiver")
        link = route.stats()["inputs"][0]["srt"]
        assert proxy.counts.dropped > 0
    assert sha256(out.data[: len(data)]) == sha256(data)
    assert link["loss"] > 0 and link["libsrt"]["recv"]["packetsDropped"] == 0


def test_a_relay_of_one_stream_serves_its_srt_sockets_from_one_io_thread(
    peers: Peers, udp_capture: Any
) -> None:
    # libsrt wakes one of the threads waiting in any srt_epoll of the process per event,
    # whichever it is: a second I/O thread with nothing to do would be woken as often as the
    # one that works. A process of its own, so that no other test's sockets count.
    a, b = free_port(), free_port()
    relay = peers.start([str(Path(sys.executable).with_name("castway")), "relay",
                         "--stats-interval", "0", "-i", f"srt://:{a}?mode=listener",
                         "-o", f"srt://:{b}?mode=listener"])
    bound = lambda port: any(  # noqa: E731
        f":{port:04X} " in Path(table).read_text() for table in ("/proc/net/udp", "/proc/net/udp6")
    )
    wait_until(lambda: bound(a) and bound(b), 20, "the relay's listeners")
    cap = udp_capture()
    slt_receiver(peers, f"srt://127.0.0.1:{b}", cap)
    sender = slt_sender(peers, f"srt://127.0.0.1:{a}")
    PipeSender(sender, random_ts(7 * 300), bitrate=2e6).join()
    wait_until(lambda: cap.size >= 10 * CHUNK, 20, "the stream through the relay")
    tasks = Path(f"/proc/{relay.pid}/task")
    names = [(t / "comm").read_text().strip() for t in tasks.iterdir()]
    assert [n for n in names if n.startswith("castway-srt-io")] == ["castway-srt-io0"]
