"""`castway probe`: measures an SRT path against a real listener (srt-live-transmit) through
the impairment proxy, and recommends the SRT Deployment Guide's latency and overhead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import castway
from castway.v1 import spec_pb2, template_pb2

from support import wait_until
from support.control import ADMIN, Server, ep, spec, test_input
from support.impair import Impairment, ImpairProxy
from support.net import free_port
from support.peers import Peers

CASTWAY = str(Path(sys.executable).with_name("castway"))


def probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CASTWAY, "probe", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


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
    assert "URI keys    latency=60&maxbw=0&inputbw=0&oheadbw=33" in done.stdout, done.stdout


def test_probe_of_nothing_says_it_cannot_connect() -> None:
    done = probe(f"srt://127.0.0.1:{free_port()}?conntimeo=500", "--seconds", "1")
    assert done.returncode == 1
    assert "cannot connect" in done.stderr and done.stdout == "", done.stdout + done.stderr
    # A network failure, not GStreamer's: no `pipeline error:` in front.
    assert done.stderr.startswith("castway probe: SRT probe of srt://127.0.0.1:"), done.stderr
    assert "pipeline error" not in done.stderr, done.stderr


def test_srt_probe_raises_a_network_error_when_it_cannot_connect() -> None:
    with pytest.raises(castway.errors.NetworkError, match=r"^SRT probe of .*cannot connect"):
        castway.srt_probe(f"srt://127.0.0.1:{free_port()}?conntimeo=500", 1, 1_000_000)


def test_probe_errors_show_a_stream_ids_password_as_stars() -> None:
    done = probe(f"srt://127.0.0.1:{free_port()}?conntimeo=500"
                 "&streamid=publish:news:cam:campassword1", "--seconds", "1")
    assert done.returncode == 1
    assert "campassword1" not in done.stdout + done.stderr
    assert "streamid=publish:news:cam:***" in done.stderr, done.stderr


def test_probe_refuses_a_bad_bitrate_naming_it() -> None:
    done = probe("srt://127.0.0.1:9", "--bitrate", "fast")
    assert done.returncode == 2
    assert "`fast` is not a bitrate" in done.stderr


def test_probe_refuses_what_it_cannot_probe_on_stderr_as_a_usage_error() -> None:
    """A URI that does not call a listener is a usage error (exit status 2, as `relay`'s bad
    URIs), said on stderr with `--json` too: stdout is the report's."""
    for uri, says in (
        ("srt://:9000", "the probe calls a listener: give its address"),
        ("srt://127.0.0.1:9?mode=rendezvous", "not `mode=rendezvous`"),
        ("srt-shared://", "probe it as srt://HOST:PORT"),
        ("udp://127.0.0.1:9", "the probe takes an srt:// URI"),
        ("srt://127.0.0.1:9?latency=abc", "`latency=abc`"),
    ):
        done = probe(uri, "--seconds", "1", "--json")
        assert done.returncode == 2, (uri, done.stdout, done.stderr)
        assert says in done.stderr and done.stdout == "", (uri, done.stdout, done.stderr)


def test_the_python_probe_refuses_a_time_or_bitrate_out_of_bounds_naming_it(
    peers: Peers,
) -> None:
    """`castway.srt_probe` takes the bounds `castway probe` does; a time that is no duration
    (negative, NaN, endless) is an error naming it, not a panic, before anything connects."""
    port = free_port()
    peers.start(["srt-live-transmit", "-q", f"srt://127.0.0.1:{port}?mode=listener",
                 f"udp://127.0.0.1:{free_port()}"])
    for seconds, bitrate, says in (
        (-1.0, 2_000_000, "probe for 1 to 600 seconds, not -1"),
        (float("nan"), 2_000_000, "probe for 1 to 600 seconds, not NaN"),
        (float("inf"), 2_000_000, "probe for 1 to 600 seconds, not inf"),
        (1e300, 2_000_000, "probe for 1 to 600 seconds"),
        (1.0, 0, "the bitrate must be 8k to 1G bit/s, not 0"),
    ):
        with pytest.raises(castway.errors.ConfigError) as info:
            castway.srt_probe(f"srt://127.0.0.1:{port}", seconds, bitrate)
        field = "bitrate" if bitrate == 0 else "seconds"
        assert str(info.value).startswith(f"{field}:") and says in str(info.value), info.value


def test_probe_apply_writes_the_recommendation_into_the_routes_srt_endpoints(
    peers: Peers, server: Server
) -> None:
    server.create("news", spec(
        [test_input()],
        [f"udp://127.0.0.1:{free_port()}",
         # rcvlatency and peerlatency, set after latency, would override the recommendation
         # for one side: they go.
         ep(f"srt://:{free_port()}?mode=listener&Latency=90&RcvLatency=80&maxbw=-1"
            "&peerlatency=50", "cdn")],
    ))
    port = free_port()
    peers.start(["srt-live-transmit", "-q", f"srt://:{port}?mode=listener", "file://con"],
                stdout_path=Path(os.devnull))
    with ImpairProxy(port, Impairment(loss=0.05, delay_ms=20, seed=5), seconds=60) as proxy:
        done = probe(f"srt://127.0.0.1:{proxy.port}", "--seconds", "3", "--apply", "news",
                     "--addr", server.addr, env={"CASTWAY_KEY": ADMIN})
    assert done.returncode == 0, done.stdout + done.stderr
    keys = next(x for x in done.stdout.splitlines() if x.startswith("URI keys"))
    values = dict(v.split("=") for v in keys.split()[-1].split("&"))
    latency, overhead = int(values["latency"]), int(values["oheadbw"])
    assert overhead in (25, 20, 17) and latency >= 4 * 35, keys
    # libsrt paces by the overhead only with maxbw=0 (relative to the estimated input rate).
    assert (values["maxbw"], values["inputbw"]) == ("0", "0"), keys
    assert (f"applied     route news cdn: latency 90 -> {latency}, maxbw -1 -> 0, "
            f"inputbw - -> 0, oheadbw - -> {overhead}, rcvlatency 80 -> -, "
            "peerlatency 50 -> -" in done.stdout), done.stdout
    route = server.get("news")
    assert route.spec.outputs[0].uri.startswith("udp://")  # not SRT: as it was
    assert route.spec.outputs[1].uri.endswith(
        f"?mode=listener&latency={latency}&maxbw=0&inputbw=0&oheadbw={overhead}"
    ), route.spec.outputs[1].uri
    # The running endpoint has them (its URI as the data plane reads it).
    status = next(o for o in route.status.outputs if o.id == "cdn")
    for key in (f"latency={latency}", "maxbw=0", "inputbw=0", f"oheadbw={overhead}"):
        assert key in status.uri, status.uri


def test_probe_apply_template_sets_its_srt_defaults(peers: Peers, server: Server) -> None:
    server.client.templates.CreateTemplate(
        template_pb2.CreateTemplateRequest(
            name="contrib",
            spec=spec([], srt=spec_pb2.SrtDefaults(options={"peerlatency": "50"})),
        ),
        metadata=server.client.metadata,
    )
    server.create("news", spec([test_input()], [f"srt://:{free_port()}?mode=listener"],
                               template="contrib"))
    port = free_port()
    peers.start(["srt-live-transmit", "-q", f"srt://:{port}?mode=listener", "file://con"],
                stdout_path=Path(os.devnull))
    done = probe(f"srt://127.0.0.1:{port}", "--seconds", "2", "--apply-template", "contrib",
                 "--addr", server.addr, env={"CASTWAY_KEY": ADMIN})
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("applied     template contrib: srt.latency_ms - -> 60, srt.options.maxbw - -> 0, "
            "srt.options.inputbw - -> 0, srt.options.oheadbw - -> 33, "
            "srt.options.peerlatency 50 -> -" in done.stdout), done.stdout
    t = server.client.templates.GetTemplate(
        template_pb2.GetTemplateRequest(name="contrib"), metadata=server.client.metadata
    )
    assert t.spec.srt.latency_ms == 60
    assert dict(t.spec.srt.options) == {"maxbw": "0", "inputbw": "0", "oheadbw": "33"}
    uri = server.get("news").resolved.outputs[0].uri
    for key in ("latency=60", "maxbw=0", "inputbw=0", "oheadbw=33"):
        assert key in uri, uri


def test_probe_apply_refuses_a_route_without_srt_endpoints_or_none_at_all(
    server: Server,
) -> None:
    server.client.templates.CreateTemplate(
        template_pb2.CreateTemplateRequest(
            name="contrib", spec=spec([], [f"srt://:{free_port()}?mode=listener"])
        ),
        metadata=server.client.metadata,
    )
    server.create("news", spec([test_input()], [f"udp://127.0.0.1:{free_port()}"],
                               template="contrib"))
    # Checked before the probe: nothing listens on port 9, and that is never reached.
    for args, says in (
        (("--apply", "news"), "route `news` has no srt:// endpoint of its own; its template "
                              "`contrib` has some: use --apply-template contrib"),
        (("--apply", "nosuch"), "there is no route `nosuch`"),
        (("--apply-template", "nosuch"), "there is no template `nosuch`"),
    ):
        done = probe("srt://127.0.0.1:9", "--seconds", "1", *args, "--addr", server.addr,
                     env={"CASTWAY_KEY": ADMIN})
        assert done.returncode == 1 and says in done.stderr, done.stdout + done.stderr


def test_probe_of_castways_own_shared_port_recommends_values(gateway: castway.Gateway) -> None:
    """The shared SRT port takes stream ID `probe` as a probe peer: its data counted and
    discarded, two at once at most, unless the port's address says `probe=off`."""
    port = int(gateway.listen_srt("127.0.0.1:0").rpartition(":")[2])
    with ImpairProxy(port, Impairment(loss=0.05, delay_ms=20, seed=5), seconds=60) as proxy:
        done = probe(f"srt://127.0.0.1:{proxy.port}", "--seconds", "3", "--bitrate", "2M",
                     "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    r = json.loads(done.stdout)
    assert r["rtt_ms"] >= 35 and 1 < r["loss_percent"] <= 10, r
    assert (r["rtt_multiplier"], r["overhead_percent"]) in [(4, 25), (5, 20), (6, 17)], r
    stats = gateway.srt_port_stats()
    assert stats is not None and stats["probes_accepted"] == 1, stats
    assert stats["probe_bytes"] > 0 and stats["refused_not_found"] == 0, stats
    # The first probe's slot is freed when the port hears it leave, or, when its last word was
    # lost on the lossy path (SRT sends it once), when it is closed for sending nothing.
    wait_until(lambda: (gateway.srt_port_stats() or {}).get("probes_active") == 0, 20,
               "the first probe's slot freed")
    # A third probe while two run is refused as unavailable.
    running = [subprocess.Popen([CASTWAY, "probe", f"srt://127.0.0.1:{port}", "--seconds", "8"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    try:
        wait_until(lambda: (gateway.srt_port_stats() or {}).get("probes_accepted") == 3, 20,
                   "two more probes")
        assert (gateway.srt_port_stats() or {}).get("probes_active") == 2
        third = probe(f"srt://127.0.0.1:{port}", "--seconds", "1")
        assert third.returncode == 1 and "503" in third.stderr, third.stderr
        assert (gateway.srt_port_stats() or {}).get("refused_unavailable") == 1
    finally:
        for p in running:
            p.kill()
            p.wait(timeout=10)


def test_a_probe_that_ends_frees_its_slot_when_the_port_hears_it_leave(
    gateway: castway.Gateway,
) -> None:
    """A probe that ends says so (on loopback nothing loses its last word): the port frees its
    slot then, not after the 2 s a silent probe is given."""
    port = int(gateway.listen_srt("127.0.0.1:0").rpartition(":")[2])
    done = probe(f"srt://127.0.0.1:{port}", "--seconds", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: (gateway.srt_port_stats() or {}).get("probes_active") == 0, 10,
               "the probe's slot freed")
    stats = gateway.srt_port_stats()
    assert stats is not None and stats["probes_accepted"] == 1, stats
    assert stats["probes_idle_closed"] == 0, stats


def test_probe_of_a_shared_port_without_probes_is_not_found() -> None:
    with castway.Gateway() as gw:
        port = int(gw.listen_srt("127.0.0.1:0?probe=off").rpartition(":")[2])
        done = probe(f"srt://127.0.0.1:{port}", "--seconds", "1")
        assert done.returncode == 1 and "404 not found" in done.stderr, done.stderr


def test_a_probe_caller_that_sends_nothing_gives_its_slot_up(
    gateway: castway.Gateway, peers: Peers
) -> None:
    """Two callers with stream ID `probe` that send nothing hold both of the port's probe
    slots only until the port closes them (2 s idle): then a real probe gets in."""
    port = int(gateway.listen_srt("127.0.0.1:0").rpartition(":")[2])
    uri = f"srt://127.0.0.1:{port}?streamid=probe"
    # srt-live-transmit connects at once and sends what its stdin brings: nothing.
    for _ in range(2):
        peers.start(["srt-live-transmit", "-q", "-a", "no", "file://con", uri],
                    stdin=subprocess.PIPE)
    wait_until(lambda: (gateway.srt_port_stats() or {}).get("probes_accepted") == 2, 20,
               "two silent probe callers")
    done: list[subprocess.CompletedProcess[str]] = []

    def probed() -> bool:
        done.append(probe(f"srt://127.0.0.1:{port}", "--seconds", "1"))
        return done[-1].returncode == 0

    wait_until(probed, 30, "a probe to get in")
    stats = gateway.srt_port_stats()
    assert stats is not None
    assert stats["probes_idle_closed"] == 2, stats
    assert stats["probes_accepted"] == 3, stats
    # The tries before were refused as unavailable, each counted.
    assert stats["refused_unavailable"] == len(done) - 1, (stats, [d.stderr for d in done])
