"""The hub's isolation: a blocked output, outputs added and removed live, routes that fail —
none of them costs the other outputs a byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import castway

from support import sha256, wait_until
from support.net import free_port
from support.senders import UdpSender
from support.ts import random_ts


def test_blocked_output_does_not_stall_others(
    gateway: castway.Gateway, udp_capture: Any, tmp_path: Path
) -> None:
    fifo = tmp_path / "nobody-reads.ts"
    os.mkfifo(fifo)
    # A reader that never reads: the writer's open succeeds, then its writes block.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        in_port = free_port()
        live = udp_capture()
        route = gateway.add_route(
            "r", f"udp://127.0.0.1:{in_port}",
            {"blocked": f"file://{fifo}", "live": f"udp://127.0.0.1:{live.port}"},
            queue_bytes=128 * 1024,
        )
        data = random_ts(7 * 2500, seed=11)
        UdpSender(data, in_port, bitrate=8e6).join()
        wait_until(lambda: live.size >= len(data), 10, "every byte at the live receiver")
        assert sha256(live.data[: len(data)]) == sha256(data)
        outs = {o["id"]: o for o in route.stats()["outputs"]}
        assert outs["live"]["drops"] == 0
        assert outs["blocked"]["drops"] > 0
        # The pipe holds 64 KiB and the queue 128 KiB; everything else was dropped, counted.
        assert outs["blocked"]["packets"] + outs["blocked"]["drops"] == 7 * 2500
        assert route.stats()["inputs"][0]["drops"] == 0
        # Removing the stuck output returns even though its sink is blocked in write().
        route.remove_output("blocked")
        assert [o["id"] for o in route.stats()["outputs"]] == ["live"]
    finally:
        os.close(reader)


def test_outputs_added_and_removed_live_without_gap_on_the_others(
    gateway: castway.Gateway, udp_capture: Any
) -> None:
    in_port = free_port()
    steady = udp_capture()
    route = gateway.add_route(
        "r", f"udp://127.0.0.1:{in_port}", {"steady": f"udp://127.0.0.1:{steady.port}"}
    )
    data = random_ts(7 * 4000, seed=12)
    sender = UdpSender(data, in_port, bitrate=6e6)
    extra: dict[str, Any] = {}
    for i in range(4):
        cap = udp_capture()
        oid = route.add_output(f"udp://127.0.0.1:{cap.port}")
        extra[oid] = cap
        srt_id = route.add_output(f"srt://:{free_port()}?mode=listener", id=f"srt{i}")
        wait_until(lambda c=cap: c.size > 0, 10, f"data at the added output {oid}")
        route.remove_output(srt_id)
        if i % 2:
            route.remove_output(oid)
    sender.join()
    wait_until(lambda: steady.size >= len(data), 10, "every byte at the steady receiver")
    assert sha256(steady.data[: len(data)]) == sha256(data)
    outs = {o["id"]: o for o in route.stats()["outputs"]}
    assert outs["steady"]["drops"] == 0
    assert set(outs) == {"steady", "out0", "out2"}
    # An output added live starts on a packet boundary: whole 7-packet datagrams only.
    assert all(len(c) % 188 == 0 for c in extra["out0"].chunks)


def test_a_failing_route_does_not_touch_another(
    gateway: castway.Gateway, udp_capture: Any
) -> None:
    in_port = free_port()
    cap = udp_capture()
    healthy = gateway.add_route(
        "healthy", f"udp://127.0.0.1:{in_port}", [f"udp://127.0.0.1:{cap.port}"]
    )
    dead = free_port()
    failing = gateway.add_route(
        "failing", f"srt://127.0.0.1:{dead}?mode=caller",
        [f"srt://127.0.0.1:{free_port()}?mode=caller"],
    )
    data = random_ts(7 * 2000, seed=13)
    sender = UdpSender(data, in_port, bitrate=6e6)
    wait_until(
        lambda: failing.stats()["inputs"][0]["reconnects"] >= 2, 20, "the failing route to retry"
    )
    gateway.remove_route("failing")
    sender.join()
    wait_until(lambda: cap.size >= len(data), 10, "every byte of the healthy route")
    assert sha256(cap.data[: len(data)]) == sha256(data)
    assert gateway.routes() == ["healthy"]
    assert healthy.stats()["outputs"][0]["drops"] == 0


def test_a_gateway_lifts_its_open_file_limit_to_the_hard_limit() -> None:
    """Hundreds of routes need more descriptors than the usual soft limit of 1024."""
    code = (
        "import resource, castway\n"
        "castway.Gateway().close()\n"
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    out = subprocess.run(
        ["bash", "-c", f'ulimit -Sn 256 && exec "{sys.executable}" -c "$0"', code],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()
    soft, hard = int(out[0]), int(out[1])
    assert soft == hard and soft > 256
