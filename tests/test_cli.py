"""`castway relay` and `castway demo` as a user runs them (real processes, real signals), and
what the client commands load."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support import wait_until
from support.clips import decode_errors
from support.net import free_port
from support.peers import Peers
from support.senders import PipeSender
from support.ts import random_ts, whole_gops

CASTWAY = str(Path(sys.executable).with_name("castway"))


def json_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The stats records (not the switch events) the relay printed."""
    return [r for r in json_records(path) if "event" not in r]


def json_relay(
    peers: Peers, port: int, out: Path, interval: float
) -> subprocess.Popen[bytes]:
    """`castway relay` of a test pattern to UDP `port`, its JSON stats every `interval` s to
    `out`."""
    return peers.start(
        [CASTWAY, "relay", "-i", "test://?size=160x90&bitrate=200",
         "-o", f"udp://127.0.0.1:{port}", "--json", "--stats-interval", str(interval)],
        stdout_path=out,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_relay_prints_json_stats_and_stops_cleanly_on_signal(
    peers: Peers, udp_capture: Any, tmp_path: Path, sig: signal.Signals
) -> None:
    cap = udp_capture()
    out = tmp_path / "stats.jsonl"
    relay = json_relay(peers, cap.port, out, 0.2)
    lines = wait_until(lambda: (lambda ls: ls if len(ls) >= 3 else None)(json_lines(out)),
                       15, "three stats lines")
    last = lines[-1]
    assert {"time", "name", "state", "inputs", "outputs"} <= set(last)
    assert last["outputs"][0]["uri"] == f"udp://127.0.0.1:{cap.port}"
    wait_until(lambda: cap.size > 0, 10, "data at the receiver")
    relay.send_signal(sig)
    assert relay.wait(timeout=15) == 0
    # Every stdout line is a whole JSON object.
    json_lines(out)


def _stop_twice(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Two stop signals a moment apart: an impatient double Ctrl-C, or the terminal's SIGINT and
    `timeout -s INT`'s both. (Sent with no gap, both could arrive before the process takes the
    first, and a pending signal is only one: the second must come once shutdown began.)"""
    proc.send_signal(sig)
    time.sleep(0.005)
    proc.send_signal(sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_relay_absorbs_a_second_stop_signal_during_shutdown(
    peers: Peers, udp_capture: Any, tmp_path: Path, sig: signal.Signals
) -> None:
    """The second signal used to arrive while shutdown had it blocked, and restoring the mask
    raised KeyboardInterrupt: a traceback and exit status 130 (-15 for SIGTERM)."""
    for _ in range(3):
        cap = udp_capture()
        relay = json_relay(peers, cap.port, tmp_path / "stats.jsonl", 0.2)
        wait_until(lambda c=cap: c.size > 0, 15, "data at the receiver")  # type: ignore[misc]
        _stop_twice(relay, sig)
        assert relay.wait(timeout=15) == 0, peers.log(relay)
        assert "Traceback" not in peers.log(relay), peers.log(relay)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_absorbs_a_second_stop_signal_during_shutdown(
    peers: Peers, tmp_path: Path, sig: signal.Signals
) -> None:
    for n in range(3):
        serve = peers.start([CASTWAY, "serve", "--data-dir", str(tmp_path / f"data{n}"),
                             "--listen", "127.0.0.1:0"])
        wait_until(lambda s=serve: "serving gRPC" in peers.log(s), 30,  # type: ignore[misc]
                   "the server to serve")
        _stop_twice(serve, sig)
        assert serve.wait(timeout=30) == 0, peers.log(serve)
        assert "Traceback" not in peers.log(serve), peers.log(serve)


def test_relay_paused_and_continued_keeps_running(
    peers: Peers, udp_capture: Any, tmp_path: Path
) -> None:
    """SIGSTOP / SIGCONT (a debugger, Ctrl-Z and `fg`) longer than the stats interval: the relay
    goes on, and only SIGTERM stops it."""
    cap = udp_capture()
    out = tmp_path / "stats.jsonl"
    relay = json_relay(peers, cap.port, out, 0.3)
    wait_until(lambda: cap.size > 0, 15, "data at the receiver")
    for _ in range(3):
        relay.send_signal(signal.SIGSTOP)
        # The pause itself is what is tested: longer than the stats interval.
        time.sleep(0.6)
        stopped = cap.size
        relay.send_signal(signal.SIGCONT)
        wait_until(lambda s=stopped: cap.size > s, 10, "the relay to go on")  # type: ignore[misc]
        assert relay.poll() is None, "the relay stopped by itself"
    relay.send_signal(signal.SIGTERM)
    assert relay.wait(timeout=15) == 0
    assert json_lines(out)[-1]["state"] == "stopped"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-i", "srt://:9000?latency=abc", "-o", "udp://127.0.0.1:5000"], "`latency=abc`"),
        (["-i", "test://", "-o", "test://"], "can only be an input"),
        (["-i", "srt://:9000?passphrase=short", "-o", "udp://127.0.0.1:5000"],
         "10 to 79 bytes"),
        (["-i", "udp://127.0.0.1:5000"], None),
        (["-i", "srt://:9000", "-o", "udp://239.1.1.1:5000?iface=nosuch0"],
         "`iface=nosuch0` does not exist"),
        (["-i", "srt://:9000?latency=+120", "-o", "udp://127.0.0.1:5000"], "`latency=+120`"),
        (["-i", "srt://:9000?pass%70hrase=SECRETAAAAAAAA1&pass%70hrase=SECRETBBBBBBBB2",
          "-o", "udp://127.0.0.1:5000"], "given twice"),
    ],
)
def test_relay_rejects_an_invalid_uri_with_status_2(args: list[str], needle: str | None) -> None:
    port = free_port()
    args = [a.replace("9000", str(port)) for a in args]
    if needle is None:  # no output at all is allowed (a monitor), so break the input instead
        args = ["-i", "udp://127.0.0.1:notaport"]
        needle = "port `notaport`"
    r = subprocess.run([CASTWAY, "relay", *args], capture_output=True, timeout=30, check=False)
    assert r.returncode == 2
    assert needle in r.stderr.decode()
    assert "SECRET" not in r.stderr.decode()
    # Nothing started: the listener port is still free.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", port))


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--slate-size", "641x360"], "slate_size: "),
        (["--slate-size", "big"], "slate_size: "),
        (["--loss-timeout", "10"], "loss_timeout_ms: "),
        (["--gop-cache-bytes", str(64 << 20 | 1)], "gop_cache_bytes: "),
        (["--name=-r"], "route name `-r` must be"),
    ],
)
def test_relay_rejects_a_setting_out_of_range_with_status_2(flags: list[str], needle: str) -> None:
    """A flag's value the route refuses is a usage error, named by its field (the data
    plane's checks; the relay keeps no copy of them)."""
    port = free_port()
    r = subprocess.run(
        [CASTWAY, "relay", "-i", f"udp://127.0.0.1:{port}", *flags],
        capture_output=True, timeout=30, check=False,
    )
    assert r.returncode == 2, r.stderr.decode()
    assert needle in r.stderr.decode()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-i", "srt-shared://?users=cam:SECRETSECRET1", "-o", "udp://127.0.0.1:23070"],
         "input `srt-shared://?users=***`: srt-shared:// is a place on a gateway's shared"),
        (["-i", "test://", "-o", "srt-shared://"], "castway serve --srt-listen"),
        (["-i", "test://", "-o", "srt-shared://", "-o", "srt-shared://?keys=1"],
         "Gateway.listen_srt"),
        (["-i", "test://", "-o", "file://TMP/rec.ts", "-o", "file://TMP/sub/../rec.ts"],
         "outputs[1].uri: invalid configuration: `file://TMP/sub/../rec.ts` writes its file "
         "like out0 of the same route"),
    ],
)
def test_relay_refuses_what_can_only_go_wrong_with_status_2(
    args: list[str], needle: str, tmp_path: Path
) -> None:
    """An srt-shared:// endpoint (a relay has no shared port: it would wait forever) and two
    outputs writing one file (they would interleave their streams in it)."""
    (tmp_path / "sub").mkdir()
    args = [a.replace("TMP", str(tmp_path)) for a in args]
    needle = needle.replace("TMP", str(tmp_path))
    r = subprocess.run([CASTWAY, "relay", *args], capture_output=True, timeout=30, check=False)
    assert r.returncode == 2, r.stderr.decode()
    assert needle in r.stderr.decode()
    assert "SECRET" not in r.stderr.decode()
    assert not (tmp_path / "rec.ts").exists()


def test_relay_reports_a_port_in_use_and_exits_1(peers: Peers) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("0.0.0.0", 0))
        port = holder.getsockname()[1]
        r = subprocess.run(
            [CASTWAY, "relay", "-i", f"srt://:{port}", "-o", "udp://127.0.0.1:5000"],
            capture_output=True, timeout=30, check=False,
        )
    assert r.returncode == 1
    assert "already in use" in r.stderr.decode()


def test_caller_input_reconnects_after_losing_its_peer(
    peers: Peers, udp_capture: Any, tmp_path: Path
) -> None:
    port = free_port()
    cap = udp_capture()
    out = tmp_path / "stats.jsonl"
    peers.start(
        [CASTWAY, "relay", "-i", f"srt://127.0.0.1:{port}", "-o", f"udp://127.0.0.1:{cap.port}",
         "--json", "--stats-interval", "0.2"],
        stdout_path=out,
    )

    def sender() -> subprocess.Popen[bytes]:
        return peers.start(
            ["srt-live-transmit", "-q", "-c", "1316", "file://con", f"srt://:{port}?mode=listener"],
            stdin=subprocess.PIPE,
        )

    def input_connected() -> bool:
        ls = json_lines(out)
        return bool(ls) and ls[-1]["inputs"][0]["srt"]["latency_ms"] > 0

    first = sender()
    wait_until(input_connected, 20, "castway to call in")
    PipeSender(first, random_ts(7 * 300, seed=41), bitrate=2e6).join()
    wait_until(lambda: cap.size >= 7 * 300 * 188, 10, "the first sender's data")
    first.kill()
    first.wait()
    second = sender()
    wait_until(lambda: json_lines(out)[-1]["inputs"][0]["reconnects"] >= 1, 20,
               "castway to notice the lost peer")
    wait_until(input_connected, 30, "castway to call in again (with backoff)")
    PipeSender(second, random_ts(7 * 300, seed=42), bitrate=2e6).join()
    wait_until(lambda: cap.size >= 2 * 7 * 300 * 188, 10, "the second sender's data")


def test_demo_serves_a_watchable_test_pattern(peers: Peers, tmp_path: Path) -> None:
    port = free_port()
    demo = peers.start([CASTWAY, "demo", "--port", str(port),
                        "--input", "test://?size=320x180&fps=25&bitrate=500"])
    log = lambda: peers.log(demo)  # noqa: E731
    wait_until(lambda: f"ffplay srt://127.0.0.1:{port}" in log(), 15, "the watch hint")
    clip = tmp_path / "watched.ts"
    viewer = peers.start(["ffmpeg", "-v", "error", "-y", "-i", f"srt://127.0.0.1:{port}",
                          "-c", "copy", "-t", "4", "-f", "mpegts", str(clip)])
    assert viewer.wait(timeout=30) == 0
    assert decode_errors(whole_gops(clip.read_bytes(), tmp_path / "gops.ts")) == ""
    demo.send_signal(signal.SIGINT)
    assert demo.wait(timeout=15) == 0


def test_relay_switches_on_stdin_commands_and_prints_each_switch(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    t = "test://?size=320x180&fps=25&bitrate=300"
    with open(out, "wb") as stdout:
        proc = subprocess.Popen(
            [CASTWAY, "relay", "-i", t, "-i", t,
             "-o", "udp://127.0.0.1:9", "--json", "--stats-interval", "0.5",
             "--loss-timeout", "300", "--failback-after", "200"],
            stdin=subprocess.PIPE, stdout=stdout, stderr=subprocess.PIPE,
        )
    try:
        def events() -> list[dict[str, Any]]:
            return [r for r in json_records(out) if r.get("event") == "switch"]

        def both_healthy() -> bool:
            stats = json_lines(out)
            return bool(stats) and all(i["healthy"] for i in stats[-1]["inputs"])

        wait_until(both_healthy, 20, "the relay to run with both inputs healthy")
        assert proc.stdin is not None
        proc.stdin.write(b"switch in1\n")
        proc.stdin.flush()
        wait_until(events, 10, "a switch event on stdout")
        assert (events()[0]["to"], events()[0]["reason"]) == ("in1", "manual")
        proc.stdin.write(b"auto\n")
        proc.stdin.flush()
        wait_until(lambda: len(events()) >= 2, 10, "the failback")
        assert (events()[1]["to"], events()[1]["reason"]) == ("in0", "failback")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert b"locked to in1" in err


@pytest.mark.parametrize("command", [["route", "list"], ["events", "--json", "--after", "3"]])
def test_client_commands_load_no_server_module(command: list[str]) -> None:
    """`castway route …` and `castway events` are gRPC clients: they run without importing
    `castway.server`."""
    code = (
        "import sys\n"
        "from castway.cli import main\n"
        f"rc = main({command!r} + ['--addr', '127.0.0.1:{free_port()}'])\n"
        "print(rc, sorted(m for m in sys.modules if m.startswith('castway.server')))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.stdout.strip() == "1 []", (r.stdout, r.stderr)
    assert "cannot reach a castway server" in r.stderr


def test_the_cli_tells_endpoint_ids_by_the_servers_name_rule() -> None:
    from castway.cli.remote import _endpoint
    from castway.server.errors import InvalidArgument
    from castway.server.specs import check_name

    for name in ["main", "9news", "a.b-c_d", "x" * 64, "-x", ".x", "_x", "a b", "x" * 65, "é"]:
        try:
            check_name("output", name)
            named = True
        except InvalidArgument:
            named = False
        ep = _endpoint(f"{name}=udp://127.0.0.1:5000")
        assert (ep.id, ep.uri) == ((name, "udp://127.0.0.1:5000") if named else
                                   ("", f"{name}=udp://127.0.0.1:5000")), name
