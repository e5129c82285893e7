"""`castway probe`: measures an SRT path against a real listener (srt-live-transmit) through
the impairment proxy, and recommends the SRT Deployment Guide's latency and overhead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support.impair import Impairment, ImpairProxy
from support.net import free_port
from support.peers import Peers

CASTWAY = str(Path(sys.executable).with_name("castway"))


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CASTWAY, "probe", *args], capture_output=True, text=True, timeout=60)


def test_probe_through_a_lossy_path_recommends_values_inside_the_guides_bands(
    peers: Peers,
) -> None:
    port = free_port()
    peers.start(["srt-live-transmit", "-q", f"srt://:{port}?mode=listener", "file://con"],
                stdout_path=Path(os.devnull))
    # 5 % of the datagrams each way lost, 20 ms added each way.
    with ImpairProxy(port, Impairment(loss=0.05, delay_ms=20, seed=5), seconds=60) as proxy:
        done = probe(f"srt://127.0.0.1:{proxy.port}", "--seconds", "4", "--bitrate", "2M",
                     "--json")
        assert proxy.counts.dropped > 0
    assert done.returncode == 0, done.stdout + done.stderr
    r = json.loads(done.stdout)
    assert r["rtt_ms"] >= 35  # the proxy's 2 x 20 ms is the floor
    assert 1 < r["loss_percent"] <= 10, r
    # The guide's rows for 1 to 10 % loss: 4 to 6 x RTT, 25 to 17 % overhead.
    assert (r["rtt_multiplier"], r["overhead_percent"]) in [(4, 25), (5, 20), (6, 17)], r
    assert r["latency_ms"] >= r["rtt_multiplier"] * r["rtt_ms"]
    assert not r["beyond_guide"]


def test_probe_prints_the_uri_keys_to_use_on_a_clean_path(peers: Peers) -> None:
    port = free_port()
    peers.start(["srt-live-transmit", "-q", f"srt://:{port}?mode=listener", "file://con"],
                stdout_path=Path(os.devnull))
    done = probe(f"srt://127.0.0.1:{port}", "--seconds", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    # No loss on loopback: the first row, at its least latency.
    assert "URI keys    latency=60&oheadbw=33" in done.stdout, done.stdout


def test_probe_of_nothing_says_it_cannot_connect() -> None:
    done = probe(f"srt://127.0.0.1:{free_port()}?conntimeo=500", "--seconds", "1")
    assert done.returncode == 1
    assert "cannot connect" in done.stdout, done.stdout


def test_probe_refuses_a_bad_bitrate_naming_it() -> None:
    done = probe("srt://127.0.0.1:9", "--bitrate", "fast")
    assert done.returncode == 2
    assert "`fast` is not a bitrate" in done.stderr
