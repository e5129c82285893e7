"""The test support's UDP impairment proxy loses, delays and reorders what it relays as its
seed says, and stops at its bounds."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from support import wait_until
from support.impair import Impairment, ImpairProcess, ImpairProxy


def numbered(i: int) -> bytes:
    return struct.pack("!I", i) + bytes(60)


def send_burst(port: int, n: int) -> dict[int, float]:
    """Sends datagrams 0 to n-1 to `port` at once; returns when each was sent."""
    sent: dict[int, float] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(n):
            sent[i] = time.monotonic()
            s.sendto(numbered(i), ("127.0.0.1", port))
    return sent


def arrivals(cap: Any) -> list[tuple[int, float]]:
    return [(struct.unpack("!I", c[:4])[0], t)
            for c, t in zip(list(cap.chunks), list(cap.times), strict=True)]


def test_a_seed_fixes_every_datagrams_fate() -> None:
    imp = Impairment(loss=0.2, delay_ms=10, jitter_ms=5, reorder=0.1, seed=3)
    assert imp.plan(500) == Impairment(loss=0.2, delay_ms=10, jitter_ms=5, reorder=0.1,
                                       seed=3).plan(500)
    assert imp.plan(500) != Impairment(loss=0.2, delay_ms=10, jitter_ms=5, reorder=0.1,
                                       seed=4).plan(500)
    plan = imp.plan(2000)
    assert 0.15 < sum(f.dropped for f in plan) / 2000 < 0.25
    assert 0.07 < sum(f.reordered for f in plan) / 2000 < 0.13
    kept = [f.delay_s for f in plan if not f.reordered]
    assert min(kept) >= 0.005 and max(kept) <= 0.015


def test_the_proxy_loses_and_delays_as_planned(udp_capture: Any) -> None:
    n, imp = 300, Impairment(loss=0.25, delay_ms=30, jitter_ms=10, seed=7)
    plan = imp.plan(n)
    cap = udp_capture()
    with ImpairProxy(cap.port, imp, seconds=30) as proxy:
        sent = send_burst(proxy.port, n)
        kept = {i for i, f in enumerate(plan) if not f.dropped}
        wait_until(lambda: len(cap.chunks) >= len(kept), 10, "every datagram the plan keeps")
        time.sleep(0.1)  # nothing more comes
        got = arrivals(cap)
        assert proxy.counts.received == n and proxy.counts.dropped == n - len(kept)
    # Exactly the datagrams the seed keeps, each no earlier than its planned delay.
    assert sorted(i for i, _ in got) == sorted(kept)
    for i, at in got:
        assert at - sent[i] >= plan[i].delay_s, (i, at - sent[i], plan[i])


def test_the_proxy_reorders_as_planned(udp_capture: Any) -> None:
    n, imp = 200, Impairment(reorder=0.1, reorder_ms=400, seed=11)
    plan = imp.plan(n)
    held = {i for i, f in enumerate(plan) if f.reordered}
    cap = udp_capture()
    with ImpairProxy(cap.port, imp, seconds=30) as proxy:
        send_burst(proxy.port, n)
        wait_until(lambda: len(cap.chunks) >= n, 10, "every datagram")
        order = [i for i, _ in arrivals(cap)]
        assert proxy.counts.reordered == len(held) > 0
    assert sorted(order) == list(range(n))
    # The others keep their order; a held-back datagram comes after later ones overtook it.
    assert [i for i in order if i not in held] == sorted(set(range(n)) - held)
    overtaken = {i for pos, i in enumerate(order) if any(j > i for j in order[:pos])}
    assert overtaken <= held
    # The burst takes far less than 400 ms, so each one held back with a later one not held
    # back is overtaken.
    assert overtaken == {i for i in held if any(j > i and j not in held for j in range(n))}


def test_the_proxy_stops_at_its_packet_and_time_bounds(udp_capture: Any) -> None:
    cap = udp_capture()
    with ImpairProxy(cap.port, Impairment(), max_packets=50, seconds=30) as proxy:
        send_burst(proxy.port, 100)
        wait_until(proxy.done.is_set, 10, "the proxy to stop after 50 datagrams")
        assert proxy.counts.received == proxy.counts.sent == 50
    wait_until(lambda: len(cap.chunks) == 50, 5, "the 50 datagrams")
    with ImpairProxy(cap.port, Impairment(), seconds=0.3) as proxy:
        wait_until(proxy.done.is_set, 5, "the proxy to stop after 0.3 s")


def test_the_proxy_in_a_process_of_its_own_loses_as_planned_and_counts(
    udp_capture: Any,
) -> None:
    n, imp = 300, Impairment(loss=0.25, delay_ms=10, seed=7)
    kept = {i for i, f in enumerate(imp.plan(n)) if not f.dropped}
    cap = udp_capture()
    with ImpairProcess(cap.port, imp, seconds=30) as proxy:
        send_burst(proxy.port, n)
        wait_until(lambda: len(cap.chunks) >= len(kept), 10, "every datagram the plan keeps")
        counts = wait_until(lambda: (c := proxy.counts).sent == len(kept) and c, 5, "counts")
        assert counts.received == n and counts.dropped == n - len(kept)
    assert sorted(i for i, _ in arrivals(cap)) == sorted(kept)


def test_replies_go_back_to_the_sender() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        target.bind(("127.0.0.1", 0))
        target.settimeout(5)
        client.settimeout(5)
        with ImpairProxy(target.getsockname()[1], Impairment(delay_ms=5)) as proxy:
            client.sendto(b"ping", ("127.0.0.1", proxy.port))
            data, via = target.recvfrom(100)
            assert data == b"ping"
            target.sendto(b"pong", via)
            assert client.recvfrom(100) == (b"pong", ("127.0.0.1", proxy.port))
