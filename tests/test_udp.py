"""UDP in and out: bit-exact unicast passthrough, and multicast (both directions) inside a
network namespace the test makes, so no packet can leave the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import castway

from support import sha256, udp_tool, wait_until
from support.net import free_port
from support.peers import Peers
from support.senders import UdpSender
from support.ts import random_ts

CASTWAY = str(Path(sys.executable).with_name("castway"))


def test_bit_exact_udp_passthrough(gateway: castway.Gateway, udp_capture: Any) -> None:
    in_port = free_port()
    caps = [udp_capture(), udp_capture()]
    route = gateway.add_route(
        "r", f"udp://127.0.0.1:{in_port}", [f"udp://127.0.0.1:{c.port}" for c in caps]
    )
    data = random_ts(7 * 2000, seed=3)
    UdpSender(data, in_port, bitrate=8e6).join()
    for c in caps:
        wait_until(lambda c=c: c.size >= len(data), 10, "every byte at each receiver")
        assert sha256(c.data[: len(data)]) == sha256(data)
    s = route.stats()
    assert s["inputs"][0]["packets"] == 7 * 2000
    assert all(o["packets"] == 7 * 2000 and o["drops"] == 0 for o in s["outputs"])


def relay_ready(stats: Path) -> bool:
    """Whether a `castway relay --json` has reported its input waiting and its output live."""
    lines = stats.read_text().splitlines() if stats.exists() else []
    if not lines:
        return False
    last = json.loads(lines[-1])
    return bool(last["inputs"][0]["state"] == "waiting" and last["outputs"][0]["state"] == "live")


def test_multicast_output_and_input_on_loopback(
    netns: str, peers: Peers, tmp_path: Path
) -> None:
    """castway A sends to a multicast group; castway B and a plain socket join it."""
    group, port = "239.7.7.7", 5004
    data = random_ts(7 * 1500, seed=5)
    src = tmp_path / "sent.ts"
    src.write_bytes(data)
    ns = ["ip", "netns", "exec", netns]
    relay = [*ns, CASTWAY, "relay", "--json", "--stats-interval", "0.2"]
    stats_a, stats_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    peers.start([*relay, "-i", "udp://127.0.0.1:6000",
                 "-o", f"udp://{group}:{port}?iface=lo&ttl=1"], stdout_path=stats_a)
    peers.start([*relay, "-i", f"udp://@{group}:{port}?iface=lo",
                 "-o", "udp://127.0.0.1:7000"], stdout_path=stats_b)
    via_castway = tmp_path / "via-castway.ts"
    direct = tmp_path / "direct.ts"
    receivers = [
        peers.start([*ns, *udp_tool.argv("capture", "127.0.0.1", "7000",
                                         str(via_castway), str(len(data)))]),
        peers.start([*ns, *udp_tool.argv("capture", group, str(port),
                                         str(direct), str(len(data)), "127.0.0.1")]),
    ]
    wait_until(lambda: via_castway.exists() and direct.exists(), 15, "the receivers")
    for stats in (stats_a, stats_b):
        wait_until(lambda st=stats: relay_ready(st), 15, f"{stats.stem} to be up")
    subprocess.run([*ns, *udp_tool.argv("send", "127.0.0.1", "6000", str(src), "8e6")],
                   check=True, timeout=60)
    for r in receivers:
        assert r.wait(timeout=30) == 0
    last_b = json.loads(stats_b.read_text().splitlines()[-1])
    assert last_b["inputs"][0]["drops"] == 0
    assert sha256(direct.read_bytes()[: len(data)]) == sha256(data)
    assert sha256(via_castway.read_bytes()[: len(data)]) == sha256(data)


def test_500_udp_routes_fit_in_1024_descriptors_and_deliver() -> None:
    """A UDP input costs one socket on the shared I/O threads, no pipeline: 500 routes fit the
    usual default limit of 1024 descriptors even where castway cannot raise it (hard limit
    1024), and each of them delivers."""
    code = """
import resource, socket, sys, castway
from support import wait_until
from support.net import free_ports
n = 500
ports = free_ports(2 * n)
rx = []
with castway.Gateway() as gw:
    for k in range(n):
        gw.add_route(f"r{k}", f"udp://127.0.0.1:{ports[k]}", [f"udp://127.0.0.1:{ports[n + k]}"])
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for k in range(n):
        tx.sendto(bytes([0x47] + [0] * 187) * 7, ("127.0.0.1", ports[k]))
    wait_until(lambda: all(s["outputs"][0]["packets"] == 7 for s in gw.stats()), 30,
               "every route to deliver")
print("ok")
"""
    r = subprocess.run(
        ["bash", "-c", f'ulimit -n 1024 && exec "{sys.executable}" -c "$0"', code],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent,
    )
    assert r.stdout.strip() == "ok", r.stderr[-2000:]
