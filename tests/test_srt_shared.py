"""The shared SRT port (``Gateway.listen_srt``, ``castway serve --srt-listen``): publishers and
readers of every route on one port, chosen by stream ID in each form encoders send, with access
per route, and refusals with SRT's reject reasons, counted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import castway
import castway.redact

from support import sha256, wait_until
from support.control import ADMIN
from support.net import free_port
from support.peers import Peers
from support.senders import PipeSender, live_sender
from support.ts import random_ts

CAM = "campassword1"
VIEWER = "viewerpassword"
OPEN = "openpassphrase"
# 1000 messages of 7 packets at 1 Mb/s: about 10 s of data.
MESSAGES = 1000


@pytest.fixture
def port(gateway: castway.Gateway) -> Iterator[int]:
    """The gateway's shared SRT port on loopback, with two routes: `news` (users: `cam` may
    publish, `viewer` may read) and `open` (a passphrase to publish; anyone may read)."""
    address = gateway.listen_srt("127.0.0.1:0")
    gateway.add_route(
        "news", f"srt-shared://?users=cam:{CAM}", ["srt-shared://?users=viewer:" + VIEWER]
    )
    gateway.add_route("open", f"srt-shared://?passphrase={OPEN}", ["srt-shared://"])
    yield int(address.rpartition(":")[2])


def slt_sender(peers: Peers, target: str, quiet: bool = True) -> subprocess.Popen[bytes]:
    q = ["-q"] if quiet else []
    return peers.start(
        ["srt-live-transmit", *q, "-c", "1316", "file://con", target], stdin=subprocess.PIPE
    )


def srt(port: int, stream_id: str, **keys: str) -> str:
    query = "&".join([f"streamid={stream_id}", *(f"{k}={v}" for k, v in keys.items())])
    return f"srt://127.0.0.1:{port}?{query}"


def callers(route: castway.Route) -> list[Any]:
    srt_stats = route.stats()["outputs"][0]["srt"]
    return list(srt_stats["callers"]) if srt_stats else []


def test_publishers_and_readers_of_each_stream_id_form_meet_on_one_port(
    gateway: castway.Gateway, port: int, peers: Peers, udp_capture: Any
) -> None:
    news, open_ = gateway.route("news"), gateway.route("open")
    # Readers first, one per form and peer: MediaMTX's (ffmpeg), SRT's Access Control with the
    # user's password as passphrase (srt-live-transmit), a bare route name (gst-launch-1.0).
    by_ffmpeg, by_slt, by_gst = udp_capture(), udp_capture(), udp_capture()
    peers.start([
        "ffmpeg", "-v", "error", "-i", srt(port, f"read:news:viewer:{VIEWER}"),
        "-c", "copy", "-f", "mpegts", f"udp://127.0.0.1:{by_ffmpeg.port}?pkt_size=1316",
    ])
    peers.start([
        "srt-live-transmit", "-q", srt(port, "#!::r=news,u=viewer", passphrase=VIEWER),
        f"udp://127.0.0.1:{by_slt.port}",
    ])
    peers.start([
        "gst-launch-1.0", "-q", "srtsrc", f"uri={srt(port, 'open')}", "!",
        "udpsink", "host=127.0.0.1", f"port={by_gst.port}",
    ])
    wait_until(lambda: len(callers(news)) == 2, 20, "two readers of news")
    wait_until(lambda: len(callers(open_)) == 1, 20, "a reader of open")
    # Publishers: SRT's form naming the user (srt-live-transmit), MediaMTX's (srt-live-transmit
    # again, with the route's passphrase).
    data = random_ts(7 * MESSAGES)
    cam = slt_sender(peers, srt(port, "#!::r=news,m=publish,u=cam", passphrase=CAM))
    other = slt_sender(peers, srt(port, "publish:open", passphrase=OPEN))
    wait_until(lambda: news.stats()["inputs"][0]["srt"]["latency_ms"] > 0, 20, "cam to connect")
    wait_until(lambda: open_.stats()["inputs"][0]["srt"]["latency_ms"] > 0, 20, "a publisher")
    senders = [PipeSender(cam, data, bitrate=1e6), PipeSender(other, data, bitrate=1e6)]
    for s in senders:
        s.join()
    wait_until(lambda: by_slt.size >= len(data), 20, "every byte at the srt-live-transmit reader")
    assert sha256(by_slt.data[: len(data)]) == sha256(data)
    wait_until(lambda: by_gst.size >= len(data), 20, "every byte at the gst-launch reader")
    assert sha256(by_gst.data[: len(data)]) == sha256(data)
    # ffmpeg remuxes (its own PSI), so it is counted, not compared.
    wait_until(lambda: by_ffmpeg.size > len(data) // 2, 20, "the stream at the ffmpeg reader")
    stats = gateway.srt_port_stats()
    assert stats is not None
    assert (stats["publishers_accepted"], stats["readers_accepted"]) == (2, 3)
    # The readers are the output's callers, with the stream ID each asked with.
    assert all(c["drops"] == 0 for c in callers(news))


def udp_sockets_on(port: int) -> int:
    """How many UDP sockets of this host are bound to `port` (IPv4 and IPv6)."""
    tables = [Path("/proc/net/udp"), Path("/proc/net/udp6")]
    return sum(
        int(line.split()[1].rpartition(":")[2], 16) == port
        for table in tables if table.exists()
        for line in table.read_text().splitlines()[1:]
    )


def test_the_shared_port_spreads_fifty_callers_knocking_at_once_over_its_sockets(
    gateway: castway.Gateway, port: int, peers: Peers
) -> None:
    """The port is bound several times (libsrt serves each UDP socket with one receiving
    thread; one thread for every caller of the gateway fell behind): 50 readers calling in the
    same second, from 50 addresses the kernel spreads over the sockets, all get in."""
    assert udp_sockets_on(port) > 1, "the shared port has one socket"
    open_ = gateway.route("open")
    readers = [
        peers.start(["srt-live-transmit", srt(port, "open"), "file://con"],
                    stdout_path=Path(os.devnull))
        for _ in range(50)
    ]
    wait_until(lambda: len(callers(open_)) == 50, 30, "all 50 readers on the shared port")
    assert all(p.poll() is None for p in readers)
    assert not [peers.log(p) for p in readers if "reject" in peers.log(p).lower()]
    stats = gateway.srt_port_stats()
    assert stats is not None and stats["readers_accepted"] == 50


@pytest.fixture
def peer_gateway() -> Iterator[castway.Gateway]:
    """A second gateway whose SRT callers are peers that report libsrt's reject reason."""
    with castway.Gateway() as gw:
        yield gw


def refusal(gw: castway.Gateway, name: str, role: str, uri: str) -> str:
    """The error of a castway caller `uri` (an input: a reader; an output: a publisher)."""
    if role == "input":
        r = gw.add_route(name, uri, ["udp://127.0.0.1:9"])
    else:
        r = gw.add_route(name, "test://?size=160x90&bitrate=200&audio=0", [uri])
    err: str = wait_until(lambda: r.stats()[role + "s"][0]["last_error"], 20, f"{name} refused")
    gw.remove_route(name)
    return err


def test_callers_are_refused_with_srts_reject_reasons_and_counted(
    gateway: castway.Gateway, port: int, peers: Peers, peer_gateway: castway.Gateway
) -> None:
    gw = peer_gateway
    assert "404 not found" in refusal(gw, "a", "input", srt(port, "read:nosuch"))
    assert "400 bad request" in refusal(gw, "b", "input", srt(port, "play:news"))
    # `cam` may publish, not read; a wrong password, no user at all: unauthorized.
    assert "403 forbidden" in refusal(gw, "c", "input", srt(port, f"read:news:cam:{CAM}"))
    assert "401 unauthorized" in refusal(gw, "d", "input", srt(port, "read:news:viewer:nope"))
    assert "401 unauthorized" in refusal(gw, "e", "input", srt(port, "read:news"))
    # A reader naming itself in SRT's form to publish has not proved who it is (its password
    # is the passphrase, checked later): refused as a user that does not exist is.
    for n, user in enumerate(("viewer", "nobody")):
        assert "401 unauthorized" in refusal(
            gw, f"u{n}", "output", srt(port, f"#!::r=news,m=publish,u={user}", passphrase=VIEWER)
        )
    # A second publisher while one is live.
    live = slt_sender(peers, srt(port, f"publish:news:cam:{CAM}"))
    sending = PipeSender(live, random_ts(7 * MESSAGES), bitrate=1e6)
    news = gateway.route("news")
    wait_until(lambda: news.stats()["inputs"][0]["bytes"] > 0, 20, "the first publisher")
    second = refusal(gw, "f", "output", srt(port, f"publish:news:cam:{CAM}"))
    assert "409 conflict" in second
    # srt-live-transmit is refused too (libsrt 1.5.1 names no application reason to it).
    other = peers.start([
        "srt-live-transmit", "-a", "no", srt(port, "read:nosuch"), "udp://127.0.0.1:9999",
    ])
    # (A refused srt-live-transmit does not always exit: Haivision/srt#2776.)
    wait_until(lambda: "REJECT" in peers.log(other), 20, "srt-live-transmit to be refused")
    other.kill()
    sending.stop.set()
    stats = gateway.srt_port_stats()
    assert stats is not None
    for reason in ("not_found", "bad_request", "forbidden", "unauthorized", "conflict"):
        assert stats[f"refused_{reason}"] >= 1, (reason, stats)
    # The port kept serving: the first publisher is still the route's sender.
    assert news.stats()["inputs"][0]["srt"]["latency_ms"] > 0
    # And Prometheus sees the refusals by reason.
    from castway.server.metrics import Metrics

    text = Metrics(gateway.stats, srt_port=gateway.srt_port_stats).render().decode()
    address = stats["address"]
    assert f'castway_srt_port_refused_total{{address="{address}",reason="conflict"}}' in text
    assert f'castway_srt_port_accepted_total{{address="{address}",mode="publish"}} 1' in text


def test_a_wrong_passphrase_is_refused_by_libsrt_and_counted(
    gateway: castway.Gateway, port: int, peers: Peers
) -> None:
    # It calls at once, data or not; a refused srt-live-transmit may stop reading its input,
    # or never exit (Haivision/srt#2776): nothing waits on it but its refusal.
    bad = slt_sender(peers, srt(port, "publish:open", passphrase="not-the-passphrase"), False)
    wait_until(lambda: "Incorrect passphrase" in peers.log(bad), 15,
               "the peer to be told its passphrase is wrong")
    assert gateway.route("open").stats()["inputs"][0]["bytes"] == 0

    def stats() -> Any:
        s = gateway.srt_port_stats()
        assert s is not None
        return s

    # libsrt refused it after the stream ID let it in: counted as a bad secret, nothing else.
    wait_until(lambda: stats()["refused_bad_secret"] >= 1, 15, "the bad secret to be counted")
    bad.kill()
    assert stats()["publishers_accepted"] == 0 and stats()["refused_unauthorized"] == 0
    # A reader with a wrong passphrase of a route whose reading has users (SRT's form: the
    # user's password is the passphrase) is counted the same way; the right one is let in.
    before = stats()["refused_bad_secret"]
    wrong = peers.start([
        "srt-live-transmit", "-a", "no", srt(port, "#!::r=news,u=viewer",
                                             passphrase="wrong-password"),
        "udp://127.0.0.1:9999",
    ])
    wait_until(lambda: stats()["refused_bad_secret"] > before, 15, "the second bad secret")
    wrong.kill()
    from castway.server.metrics import Metrics

    # srt-live-transmit tries again, each try counted, and a try under way when it was killed
    # may still be: the series shows a count between the ones read before and after.
    counted = stats()["refused_bad_secret"]
    text = Metrics(gateway.stats, srt_port=gateway.srt_port_stats).render().decode()
    series = f'castway_srt_port_refused_total{{address="{stats()["address"]}",reason="bad_secret"}}'
    [line] = [ln for ln in text.splitlines() if ln.startswith(series + " ")]
    assert counted <= float(line.rpartition(" ")[2]) <= stats()["refused_bad_secret"], line


def test_shared_endpoints_need_the_port_form_and_hide_their_secrets(
    gateway: castway.Gateway,
) -> None:
    with pytest.raises(castway.errors.InvalidUriError, match="takes no host"):
        gateway.add_route("r", "srt-shared://127.0.0.1:9000", ["udp://127.0.0.1:9"])
    with pytest.raises(castway.errors.InvalidUriError, match="NAME:PASSWORD"):
        gateway.add_route("r", "srt-shared://?users=cam", ["udp://127.0.0.1:9"])
    r = gateway.add_route(
        "r", f"srt-shared://?passphrase={OPEN}&users=cam:{CAM}", ["udp://127.0.0.1:9"]
    )
    uri = r.stats()["inputs"][0]["uri"]
    assert OPEN not in uri and CAM not in uri
    assert "cam:***" in uri
    assert castway.redact.redact_uri(f"srt-shared://?users=cam:{CAM}") == (
        "srt-shared://?users=***"
    )
    # A second port on the same gateway is refused.
    gateway.listen_srt("127.0.0.1:0")
    with pytest.raises(castway.errors.CastwayError, match="already"):
        gateway.listen_srt("127.0.0.1:0")
    with castway.Gateway() as other:
        with pytest.raises(castway.errors.CastwayError, match="from each route"):
            other.listen_srt("127.0.0.1:0?passphrase=0123456789ab")
        with pytest.raises(castway.errors.CastwayError, match="latency"):
            other.listen_srt("127.0.0.1:0?latency=-1")
        other.close()
        with pytest.raises(castway.errors.CastwayError, match="closed"):
            other.listen_srt("127.0.0.1:0")


def test_without_a_port_shared_endpoints_wait(gateway: castway.Gateway) -> None:
    """The notebook API may open the port after the routes: until then each srt-shared://
    endpoint waits, and its last_error says why nothing connects."""
    r = gateway.add_route("r", "srt-shared://", ["srt-shared://"])
    assert r.stats()["inputs"][0]["state"] == "listening"
    assert gateway.srt_port_stats() is None
    for side in ("inputs", "outputs"):
        why = r.stats()[side][0]["last_error"] or ""
        assert "no shared SRT port" in why and "Gateway.listen_srt" in why, why
    gateway.listen_srt("127.0.0.1:0")
    assert r.stats()["inputs"][0]["last_error"] is None
    assert r.stats()["outputs"][0]["last_error"] is None


def test_a_route_has_one_shared_output_at_most(gateway: castway.Gateway) -> None:
    """Refused at the spec, at the second one's field, not left retrying."""
    with pytest.raises(castway.errors.ConfigError, match="one srt-shared:// output at most") as e:
        gateway.add_route(
            "two", "test://?size=160x90&bitrate=100", ["srt-shared://", "srt-shared://?keys=1"]
        )
    assert castway.errors.field_of(e.value) == "outputs[1].uri"
    assert gateway.routes() == []
    r = gateway.add_route("one", "test://?size=160x90&bitrate=100", ["srt-shared://"])
    with pytest.raises(castway.errors.ConfigError, match="out0 of the same route"):
        r.add_output("srt-shared://?keys=1")
    assert [o["id"] for o in r.stats()["outputs"]] == ["out0"]


def test_serve_without_a_shared_port_refuses_new_shared_endpoints_and_keeps_stored_ones(
    tmp_path: Path,
) -> None:
    """Without --srt-listen, a new srt-shared:// endpoint is refused (FAILED_PRECONDITION); a
    route stored while the server had the port still loads and can be changed, its shared
    endpoint saying why nothing connects."""
    import grpc

    from castway.client import Client
    from castway.server import run_server
    from castway.v1 import route_pb2, spec_pb2

    def create(client: Client, name: str, inputs: list[str], outputs: list[str]) -> Any:
        return client.routes.CreateRoute(route_pb2.CreateRouteRequest(
            name=name, spec=spec_pb2.RouteSpec(
                inputs=[spec_pb2.Endpoint(uri=u) for u in inputs],
                outputs=[spec_pb2.Endpoint(uri=u) for u in outputs],
            )), metadata=client.metadata)

    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1,
                    srt_listen="127.0.0.1:0") as running:
        client = Client(f"127.0.0.1:{running.port}", key=ADMIN)
        create(client, "kept", ["srt-shared://"], ["udp://127.0.0.1:9"])
        client.close()
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1) as running:
        client = Client(f"127.0.0.1:{running.port}", key=ADMIN)
        for name, inputs, outputs in (
            ("sh", ["srt-shared://"], ["udp://127.0.0.1:9"]),
            ("out", ["test://?size=160x90&bitrate=100"], ["srt-shared://"]),
        ):
            with pytest.raises(grpc.RpcError) as info:
                create(client, name, inputs, outputs)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "--srt-listen" in (info.value.details() or "")
        # The stored route loads and runs; its shared input says why it waits.
        kept = client.routes.GetRoute(route_pb2.GetRouteRequest(name="kept"),
                                      metadata=client.metadata)
        assert kept.status.inputs[0].last_error.startswith("no shared SRT port"), kept.status
        # It takes a change that adds no shared endpoint, and refuses one that does.
        client.routes.AddOutput(route_pb2.AddOutputRequest(
            name="kept", output=spec_pb2.Endpoint(uri="udp://127.0.0.1:8")),
            metadata=client.metadata)
        with pytest.raises(grpc.RpcError) as info:
            client.routes.AddOutput(route_pb2.AddOutputRequest(
                name="kept", output=spec_pb2.Endpoint(uri="srt-shared://")),
                metadata=client.metadata)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert [r.record.name for r in running.control.list_routes()[0]] == ["kept"]
        client.close()


def test_serve_opens_the_port_from_its_config_and_templates_carry_access(
    tmp_path: Path, peers: Peers, udp_capture: Any
) -> None:
    from castway.server import run_server
    from castway.server.specs import spec_from_dict

    config = tmp_path / "castway.toml"
    config.write_text(f"""
srt_listen = "127.0.0.1:{free_port()}"

[templates.shared]
outputs = [{{ id = "viewers", uri = "srt-shared://?users=viewer:{VIEWER}" }}]
""")
    with run_server(tmp_path / "data", config=config, admin_key=ADMIN, grace_s=1) as running:
        assert running.srt_port is not None
        port = int(running.srt_port.rpartition(":")[2])
        running.control.create_route("news", spec_from_dict({
            "template": "shared", "inputs": [{"id": "cam", "uri": f"srt-shared://?users=cam:{CAM}"}],
        }))
        reader = udp_capture()
        peers.start([
            "srt-live-transmit", "-q", srt(port, f"read:news:viewer:{VIEWER}"),
            f"udp://127.0.0.1:{reader.port}",
        ])
        data = random_ts(7 * 200)
        cam = slt_sender(peers, srt(port, f"publish:news:cam:{CAM}"))
        stats = lambda: running.control.stats()  # noqa: E731
        wait_until(lambda: any(
            r["name"] == "news" and r["inputs"][0]["srt"]["latency_ms"] > 0 for r in stats()
        ), 20, "the publisher")
        PipeSender(cam, data, bitrate=1e6).join()
        wait_until(lambda: reader.size >= len(data), 20, "every byte at the reader")
        assert sha256(reader.data[: len(data)]) == sha256(data)
        # Viewers of the API see no password.
        uri = running.control.get_route("news").resolved.outputs[0].uri
        assert castway.redact.redact_uri(uri) == "srt-shared://?users=***"
        # The gRPC API shows the port.
        from castway.client import Client
        from castway.v1 import system_pb2

        client = Client(f"127.0.0.1:{running.port}", key=ADMIN)
        got = client.system.GetSrtPort(system_pb2.GetSrtPortRequest(), metadata=client.metadata)
        assert got.open and got.address == running.srt_port
        assert (got.publishers_accepted, got.readers_accepted) == (1, 1)
        # castway API keys as users (keys=1): an operator's key publishes, a viewer's may not,
        # a revoked one is unknown.
        out = udp_capture()
        running.control.create_route("keyed", spec_from_dict({
            "inputs": ["srt-shared://?keys=1"], "outputs": [f"udp://127.0.0.1:{out.port}"],
        }))
        operator, op_secret = running.keys.create("encoder", "operator")
        _, viewer_secret = running.keys.create("watcher", "viewer")
        port_stats = lambda: client.system.GetSrtPort(  # noqa: E731
            system_pb2.GetSrtPortRequest(), metadata=client.metadata)
        # srt-live-transmit does not always exit once refused (Haivision/srt#2776): the refusal
        # is waited for at the port, and the refused peer ended.
        refused = peers.start([
            "srt-live-transmit", "-a", "no", srt(port, f"publish:keyed:w:{viewer_secret}"),
            "udp://127.0.0.1:9999",
        ])
        wait_until(lambda: port_stats().refused_forbidden >= 1, 20, "the viewer's key refused")
        refused.kill()
        by_key = slt_sender(peers, srt(port, f"publish:keyed:enc:{op_secret}"))
        PipeSender(by_key, data, bitrate=1e6).join()
        wait_until(lambda: out.size >= len(data), 20, "every byte of the key's publisher")
        running.keys.revoke(operator.id)
        gone = peers.start([
            "srt-live-transmit", "-a", "no", srt(port, f"publish:keyed:enc:{op_secret}"),
            "udp://127.0.0.1:9999",
        ])
        wait_until(lambda: port_stats().refused_unauthorized >= 1, 20, "the revoked key refused")
        gone.kill()
        got = port_stats()
        assert got.refused_forbidden >= 1 and got.refused_unauthorized >= 1
        client.close()


def test_a_main_and_a_backup_publisher_on_the_shared_port_fail_over(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any, ts_file: Path
) -> None:
    address = gateway.listen_srt("127.0.0.1:0")
    port = int(address.rpartition(":")[2])
    cap = udp_capture()
    route = gateway.add_route(
        "two",
        {"main": f"srt-shared://?users=cam:{CAM}", "backup": "srt-shared://"},
        [f"udp://127.0.0.1:{cap.port}"],
    )
    # Each names its input: MediaMTX's form and SRT's Access Control form.
    main = live_sender(peers, ts_file, srt(port, f"publish:two/main:cam:{CAM}", pkt_size="1316"))
    live_sender(peers, ts_file, srt(port, "#!::r=two/backup,m=publish", pkt_size="1316"))
    wait_until(lambda: all(i["healthy"] for i in route.stats()["inputs"]), 20, "both inputs")
    assert route.stats()["switch"]["active"] == "main"
    wait_until(lambda: cap.size > 300_000, 20, "the receiver to get data")
    # A third publisher finds both taken, by name or not. (The refused srt-live-transmit does
    # not always exit: Haivision/srt#2776. The port's count is what tells.)
    for n, stream_id in enumerate(("publish:two/backup", "publish:two"), 1):
        third = peers.start(["srt-live-transmit", "-a", "no", srt(port, stream_id),
                             "udp://127.0.0.1:9999"], stdin=subprocess.PIPE)
        wait_until(lambda n=n: (gateway.srt_port_stats() or {}).get("refused_conflict", 0) >= n,
                   20, f"{stream_id} refused as a conflict")
        third.kill()
    stats = gateway.srt_port_stats()
    assert stats is not None
    assert stats["publishers_accepted"] == 2

    os.killpg(main.pid, signal.SIGKILL)
    main.wait(timeout=10)
    ev = route.wait_switch(0, 15)
    assert ev is not None and (ev["from"], ev["to"]) == ("main", "backup"), ev
    size = cap.size
    wait_until(lambda: cap.size > size + 300_000, 15, "the backup to reach the receiver")


def test_a_publisher_naming_no_input_gets_the_first_free_one(
    gateway: castway.Gateway, peers: Peers
) -> None:
    address = gateway.listen_srt("127.0.0.1:0")
    port = int(address.rpartition(":")[2])
    route = gateway.add_route(
        "two", {"main": "srt-shared://", "backup": "srt-shared://"}, ["udp://127.0.0.1:9"]
    )
    senders = []
    for n, expected in enumerate(("main", "backup")):
        p = slt_sender(peers, srt(port, "publish:two"))
        senders.append(PipeSender(p, random_ts(7 * MESSAGES), bitrate=1e6))
        wait_until(lambda i=n: route.stats()["inputs"][i]["bytes"] > 0, 20, f"{expected} fed")
        assert route.stats()["inputs"][n]["id"] == expected
    # An input the route does not have is not found.
    gone = peers.start(["srt-live-transmit", "-a", "no", srt(port, "publish:two/spare"),
                        "udp://127.0.0.1:9999"])
    wait_until(lambda: (gateway.srt_port_stats() or {}).get("refused_not_found", 0) >= 1, 20,
               "the publisher of an input the route does not have to be refused")
    gone.kill()
    for s in senders:
        s.stop.set()


def test_a_publisher_naming_no_input_gets_the_highest_priority_free_one(
    gateway: castway.Gateway, peers: Peers
) -> None:
    """The inputs come on the port lowest priority first (the route is then reordered): a
    publisher naming only the route follows the route's priority, not the port's order."""
    address = gateway.listen_srt("127.0.0.1:0")
    port = int(address.rpartition(":")[2])
    shared = "srt-shared://"
    gateway.add_route("two", {"low": shared, "high": shared}, ["udp://127.0.0.1:9"])
    applied = gateway.update_route("two", {"high": shared, "low": shared}, ["udp://127.0.0.1:9"])
    assert applied["reordered"] and not applied["inputs_added"], applied
    route = gateway.route("two")
    assert [i["id"] for i in route.stats()["inputs"]] == ["high", "low"]
    senders = []
    for n, expected in enumerate(("high", "low")):
        p = slt_sender(peers, srt(port, "publish:two"))
        senders.append(PipeSender(p, random_ts(7 * MESSAGES), bitrate=1e6))
        wait_until(lambda n=n: port_stats(gateway)["publishers_accepted"] == n + 1, 20,
                   f"publisher {n + 1} taken")
        wait_until(lambda i=n: route.stats()["inputs"][i]["bytes"] > 0, 20, f"{expected} fed")
        assert route.stats()["inputs"][n]["id"] == expected
    # Each input has its own publisher: the low one got the second, not the first.
    assert all(i["bytes"] > 0 for i in route.stats()["inputs"])
    for s in senders:
        s.stop.set()


def port_stats(gateway: castway.Gateway) -> Any:
    s = gateway.srt_port_stats()
    assert s is not None
    return s


def test_a_passphrase_on_one_side_only_is_refused_by_libsrt_and_counted(
    gateway: castway.Gateway, port: int, peers: Peers
) -> None:
    # A publisher without the passphrase of `open`, and a reader with one of its output, which
    # has none: libsrt refuses both as UNSECURE after the stream ID let them in.
    for target in (srt(port, "publish:open"), srt(port, "open", passphrase=OPEN)):
        refused = peers.start(["srt-live-transmit", "-a", "no", target, "udp://127.0.0.1:9999"])
        n = port_stats(gateway)["refused_unsecure"]
        wait_until(lambda n=n: port_stats(gateway)["refused_unsecure"] > n, 20,
                   f"{target} refused as unsecure")
        refused.kill()
    stats = port_stats(gateway)
    assert stats["publishers_accepted"] == stats["readers_accepted"] == 0, stats
    assert stats["refused_bad_secret"] == 0, stats
    from castway.server.metrics import Metrics

    text = Metrics(gateway.stats, srt_port=gateway.srt_port_stats).render().decode()
    assert (f'castway_srt_port_refused_total{{address="{stats["address"]}",'
            f'reason="unsecure"}}') in text


def test_a_templates_passphrase_and_latency_reach_the_shared_endpoints_of_its_routes(
    tmp_path: Path, peers: Peers, udp_capture: Any
) -> None:
    from castway.client import Client
    from castway.server import run_server
    from castway.v1 import route_pb2, spec_pb2, template_pb2

    secret = "templatepassphrase1"
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1,
                    srt_listen="127.0.0.1:0") as running:
        assert running.srt_port is not None
        port = int(running.srt_port.rpartition(":")[2])
        client = Client(f"127.0.0.1:{running.port}", key=ADMIN)
        client.templates.CreateTemplate(template_pb2.CreateTemplateRequest(
            name="enc", spec=spec_pb2.RouteSpec(
                srt=spec_pb2.SrtDefaults(passphrase=secret, latency_ms=400)
            ),
        ), metadata=client.metadata)
        client.routes.CreateRoute(route_pb2.CreateRouteRequest(name="r", spec=spec_pb2.RouteSpec(
            inputs=[spec_pb2.Endpoint(id="a", uri="srt-shared://")],
            outputs=[spec_pb2.Endpoint(id="o", uri="srt-shared://")], template="enc",
        )), metadata=client.metadata)
        from castway.v1 import system_pb2

        stats = lambda: client.system.GetSrtPort(  # noqa: E731
            system_pb2.GetSrtPortRequest(), metadata=client.metadata)
        # Without the passphrase, a reader and a publisher are refused.
        for n, target in enumerate((srt(port, "r"), srt(port, "publish:r")), 1):
            refused = peers.start(["srt-live-transmit", "-a", "no", target,
                                   "udp://127.0.0.1:9999"])
            wait_until(lambda n=n: stats().refused_unsecure >= n, 20, f"{target} refused")
            refused.kill()
        assert stats().readers_accepted == stats().publishers_accepted == 0
        # With it, the stream goes through.
        reader = udp_capture()
        peers.start(["srt-live-transmit", "-q", srt(port, "r", passphrase=secret),
                     f"udp://127.0.0.1:{reader.port}"])
        wait_until(lambda: stats().readers_accepted == 1, 20, "the reader")
        data = random_ts(7 * 200)
        cam = slt_sender(peers, srt(port, "publish:r", passphrase=secret))
        wait_until(lambda: stats().publishers_accepted == 1, 20, "the publisher")
        # The template's latency is set on each caller's socket (the greater of the two wins).
        routes = lambda: running.control.stats()  # noqa: E731
        wait_until(lambda: routes()[0]["inputs"][0]["srt"]["latency_ms"] == 400, 20,
                   "the publisher's connection at the template's latency")
        PipeSender(cam, data, bitrate=1e6).join()
        wait_until(lambda: reader.size >= len(data), 20, "every byte at the reader")
        assert sha256(reader.data[: len(data)]) == sha256(data)
        assert "latency=400" in running.control.get_route("r").resolved.inputs[0].uri
        client.close()


def test_publishers_knocking_at_once_get_one_winner_and_the_others_a_conflict(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any, tmp_path: Path
) -> None:
    """Sixteen publishers of one route pass the listen callback together: one is taken, every
    other is refused as a conflict at its handshake (none let in, then dropped), and what the
    route sends is the winner's data."""
    address = gateway.listen_srt("127.0.0.1:0")
    port = int(address.rpartition(":")[2])
    cap = udp_capture()
    route = gateway.add_route("race", "srt-shared://", [f"udp://127.0.0.1:{cap.port}"])
    # Each publisher reads its own FIFO, held open here (read-write, so neither side's open
    # waits for the other); started by one shell, they knock within a few milliseconds of
    # each other, before any data is written.
    count = 16
    fifos = [tmp_path / f"in{i}" for i in range(count)]
    for f in fifos:
        os.mkfifo(f)
    fds = [os.open(f, os.O_RDWR | os.O_NONBLOCK) for f in fifos]
    one = f"srt-live-transmit -q -a no -c 1316 file://con '{srt(port, 'publish:race')}'"
    starts = " ".join(f"{one} < {f} &" for f in fifos)
    publishers = peers.start(["sh", "-c", f"{starts} wait"])
    try:
        wait_until(lambda: port_stats(gateway)["refused_conflict"] >= count - 1, 30,
                   f"{count - 1} publishers refused as a conflict")
        stats = port_stats(gateway)
        # The losers were refused at their handshake: none was let in and then dropped.
        assert stats["publishers_accepted"] == 1, stats
        assert stats["publishers_dropped"] == 0, stats
        assert stats["refused_conflict"] == count - 1, stats
        assert route.stats()["inputs"][0]["srt"]["latency_ms"] > 0
        # Each writes its own data (40 messages: within a pipe's buffer, so no write waits).
        sent = [random_ts(7 * 40, seed=i) for i in range(count)]
        for fd, data in zip(fds, sent, strict=True):
            assert os.write(fd, data) == len(data)
        size = len(sent[0])
        wait_until(lambda: cap.size >= size, 20, "the winner's data at the receiver")
        got = cap.data[:size]
        winners = [i for i, data in enumerate(sent) if data == got]
        assert len(winners) == 1, "the receiver got no publisher's data whole"
        assert route.stats()["inputs"][0]["bytes"] == size
    finally:
        os.killpg(publishers.pid, signal.SIGKILL)
        for fd in fds:
            os.close(fd)


def test_a_publisher_coming_back_is_taken_at_once(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    """A publisher leaving is no failure of its shared input: the input stays on the port (no
    backoff, no refusal meanwhile) and takes the next publisher."""
    address = gateway.listen_srt("127.0.0.1:0")
    port = int(address.rpartition(":")[2])
    cap = udp_capture()
    route = gateway.add_route("back", "srt-shared://", [f"udp://127.0.0.1:{cap.port}"])
    data = random_ts(7 * 100)
    for n in range(1, 4):
        # -a no: a refused publisher gives up (no retry after the backoff).
        p = peers.start(["srt-live-transmit", "-q", "-a", "no", "-c", "1316", "file://con",
                         srt(port, "publish:back")], stdin=subprocess.PIPE)
        wait_until(lambda n=n: port_stats(gateway)["publishers_accepted"] == n, 20,
                   f"publisher {n} taken")
        PipeSender(p, data, bitrate=2e6).join()
        assert p.stdin is not None
        p.stdin.close()  # srt-live-transmit leaves at the end of its input
        p.wait(timeout=20)
        wait_until(lambda n=n: route.stats()["inputs"][0]["reconnects"] >= n, 20,
                   f"publisher {n} gone")
    stats = port_stats(gateway)
    refused = {k: v for k, v in stats.items() if k.startswith("refused_") and v}
    assert refused == {}, stats
    assert cap.size >= len(data)


@pytest.mark.parametrize("address", ["127.0.0.1:0?latency=999999", "127.0.0.1:8890?latency=999999",
                                     ":abc", "127.0.0.1:8890?probe=maybe"])
def test_a_bad_port_address_is_named_as_written(gateway: castway.Gateway, address: str) -> None:
    """With port 0 or a port of its own (which the port claims first, as routes do)."""
    with pytest.raises(castway.errors.CastwayError) as info:
        gateway.listen_srt(address)
    assert f"`{address}`" in str(info.value), info.value
    assert "srt://" not in str(info.value), info.value


@pytest.mark.parametrize(("query", "says"), [
    ("mode=caller", "the shared SRT port is a listener: its address takes no `mode`"),
    ("streamid=news", "each caller's stream ID chooses its route on the shared SRT port"),
    ("passphrase=portpassphrase", "takes its passphrase from each route"),
])
def test_what_the_port_takes_from_elsewhere_is_refused_on_its_address_saying_so(
    gateway: castway.Gateway, query: str, says: str
) -> None:
    with pytest.raises(castway.errors.ConfigError, match=re.escape(says)):
        gateway.listen_srt(f"127.0.0.1:{free_port()}?{query}")
    assert gateway.srt_port_stats() is None


def test_accepting_callers_logs_no_libsrt_error(tmp_path: Path) -> None:
    """Each accept pass ends when libsrt has no caller waiting, which libsrt logs as an error:
    castway logs that at debug level, not as an error."""
    script = tmp_path / "run.py"
    script.write_text("""
import castway
from support import wait_until
with castway.Gateway() as gw:
    port = gw.listen_srt("127.0.0.1:0").rpartition(":")[2]
    gw.add_route("r", "test://?size=160x90&bitrate=200&audio=0", ["srt-shared://"])
    gw.add_route("reader", f"srt://127.0.0.1:{port}?streamid=r", ["udp://127.0.0.1:9"])
    wait_until(lambda: gw.srt_port_stats()["readers_accepted"] >= 1, 20, "the reader")
    wait_until(lambda: gw.route("reader").stats()["inputs"][0]["bytes"] > 0, 20, "data")
""")
    tests = Path(__file__).parent
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "GST_DEBUG": "castway-libsrt:4", "GST_DEBUG_NO_COLOR": "1",
             "PYTHONPATH": str(tests)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no pending connection" not in done.stderr, done.stderr[-2000:]


def test_a_users_password_that_cannot_be_a_passphrase_is_refused_naming_the_user(
    gateway: castway.Gateway,
) -> None:
    with pytest.raises(castway.errors.CastwayError) as info:
        gateway.add_route("short", "srt-shared://?users=cam:short", ["udp://127.0.0.1:9"])
    assert "`cam`" in str(info.value) and "10 to 79 bytes" in str(info.value), info.value


def test_an_empty_users_list_is_refused_not_read_as_anyone(gateway: castway.Gateway) -> None:
    """`users=` (a variable that came out empty, say) would otherwise let anyone publish."""
    with pytest.raises(castway.errors.InvalidUriError, match="`users` is empty"):
        gateway.add_route("empty", "srt-shared://?users=", ["udp://127.0.0.1:9"])
    assert gateway.routes() == []


def refusal_events(gateway: castway.Gateway) -> list[Any]:
    return [e for e in gateway.events(timeout=0) if e["kind"] == "srt_refused"]


def refused_total(stats: Any) -> int:
    return sum(v for k, v in stats.items() if k.startswith("refused_"))


def test_refusals_are_events_naming_the_reason_peer_route_and_user(
    gateway: castway.Gateway, port: int, peers: Peers
) -> None:
    # A reader of a route the port does not have, naming a user and a password.
    gone = peers.start(["srt-live-transmit", "-a", "no", srt(port, "read:nosuch:alice:secret1"),
                        "udp://127.0.0.1:9999"])
    wait_until(lambda: refusal_events(gateway), 20, "the refusal as an event")
    gone.kill()
    (event,) = refusal_events(gateway)
    assert (event["reason"], event["route"], event["user"]) == ("not_found", "nosuch", "alice")
    # The password is not in it.
    assert event["stream_id"] == "read:nosuch:alice:***", event
    assert event["address"].startswith("127.0.0.1:"), event
    # libsrt's own refusal of a wrong passphrase, after the stream ID let the caller in.
    bad = peers.start(["srt-live-transmit", "-a", "no",
                       srt(port, "#!::r=news,u=viewer", passphrase="wrong-password"),
                       "udp://127.0.0.1:9999"])
    wait_until(lambda: any(e["reason"] == "bad_secret" for e in refusal_events(gateway)), 20,
               "the wrong passphrase as an event")
    bad.kill()
    secret = next(e for e in refusal_events(gateway) if e["reason"] == "bad_secret")
    assert (secret["route"], secret["user"]) == ("news", "viewer"), secret


def test_each_refusal_of_a_flood_is_an_event_or_counted_as_missed(
    gateway: castway.Gateway, port: int, peers: Peers
) -> None:
    # Thirty readers of a route the port does not have, started by one shell at once.
    one = f"srt-live-transmit -q -a no '{srt(port, 'read:nosuch')}' udp://127.0.0.1:9999"
    flood = peers.start(["sh", "-c", f"for i in $(seq 30); do {one} & done; wait"])
    wait_until(lambda: port_stats(gateway)["refused_not_found"] >= 30, 30, "thirty refusals")
    os.killpg(flood.pid, signal.SIGKILL)
    stats = port_stats(gateway)
    reported = refusal_events(gateway)
    # Every refusal is either an event or counted as missed (the port reports 10 a second at
    # most: how many of these came within one second depends on the machine, so the budget
    # itself is checked by the Rust unit test `refusals_past_a_seconds_budget_…`).
    assert len(reported) + stats["refusal_events_missed"] == refused_total(stats), stats
    assert all(e["reason"] == "not_found" for e in reported)
