"""``castway top`` in a real terminal: tmux runs it at 80x24 against a served gateway, keys go
in with send-keys and the screen comes back with capture-pane."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import wait_until
from support.control import Server, ep, spec, test_input
from support.net import free_port
from support.peers import Peers, srt_receiver


class Tmux:
    """One tmux server of its own (``-L``), so the test never touches a user's sessions."""

    def __init__(self, tmp_path: Path) -> None:
        self.socket = f"castway-top-{os.getpid()}-{tmp_path.name}"

    def __call__(self, *args: str) -> str:
        r = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                           timeout=10, check=True)
        return r.stdout

    def screen(self) -> list[str]:
        return self("capture-pane", "-p", "-t", "top").splitlines()

    def wait_for(self, what: str, check: Any, timeout: float = 30) -> list[str]:
        """Polls the screen until ``check(lines)`` holds; fails showing the last screen."""
        last: list[str] = []

        def holds() -> bool:
            nonlocal last
            last = self.screen()
            return bool(check(last))

        try:
            wait_until(holds, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}; the screen was:\n" + "\n".join(last)) from None
        return last


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(tmp_path)
    yield t
    subprocess.run(["tmux", "-L", t.socket, "kill-server"], capture_output=True, timeout=10,
                   check=False)


def test_top_shows_routes_and_a_routes_detail_and_quits_cleanly(
    server: Server, peers: Peers, udp_capture: Any, tmux: Tmux, tmp_path: Path
) -> None:
    port = free_port()
    server.create("news-with-a-long-name", spec(
        [ep(test_input(), "studio")], [ep(f"srt://:{port}?mode=listener", "cdn")]))
    # An admin's key reads stream IDs (they often carry a token); top paints none.
    secret = f"srt://127.0.0.1:{free_port()}?mode=caller&streamid=top-secret-words"
    server.create("spare", spec([ep(test_input(), "cam")], [ep(secret, "vault")]))
    callers = [srt_receiver(peers, port, udp_capture()) for _ in range(2)]
    exit_file = tmp_path / "exit"
    command = (f"{sys.executable} -m castway top --addr {server.addr}; "
               f"echo $? > {exit_file}; sleep 30")
    tmux("new-session", "-d", "-s", "top", "-x", "80", "-y", "24", "-e",
         f"CASTWAY_KEY={server.client.key}", command)

    def overview(lines: list[str]) -> bool:
        row = next((line for line in lines if line.startswith(">news-with-a")), "")
        spare = next((line for line in lines if line.startswith(" spare")), "")
        # The chosen route is live, on air from `studio`, with a bitrate and an RTT.
        cells = row.split()
        return (len(cells) > 6 and cells[1] == "live" and cells[2] == "studio"
                and float(cells[3]) > 0 and cells[5] != "-" and "live" in spare)

    lines = tmux.wait_for("the overview with both routes live", overview)
    assert lines[0].startswith("castway top — 2 routes, 2 live")
    assert all(len(line) <= 80 for line in lines)
    assert "ROUTE" in lines[1] and "LAST SWITCH" in lines[1]
    # The long name is cut to its column.
    assert any(line.startswith(">news-with-a…") for line in lines)

    tmux("send-keys", "-t", "top", "Enter")

    def detail(lines: list[str]) -> bool:
        shown = "\n".join(lines)
        return (lines[0].startswith("news-with-a-long-name: live")
                and shown.count("caller 127.0.0.1:") == 2 and "*studio" in shown)

    lines = tmux.wait_for("the detail view with both callers", detail)
    assert "inputs" in lines and "outputs" in lines
    assert any(line.startswith(" cdn ") and "callers 2" in line for line in lines)

    tmux("send-keys", "-t", "top", "Escape")
    tmux.wait_for("the overview again", lambda lines: lines and lines[0].startswith("castway top"))
    tmux("send-keys", "-t", "top", "j")
    tmux.wait_for("the cursor on the second route",
                  lambda lines: any(line.startswith(">spare") for line in lines))
    tmux("send-keys", "-t", "top", "Enter")
    lines = tmux.wait_for("the second route's detail",
                          lambda lines: any(line.startswith(" vault") for line in lines))
    shown = "\n".join(lines)
    assert "streamid=***" in shown and "top-secret" not in shown

    tmux("send-keys", "-t", "top", "q")
    wait_until(exit_file.exists, 10, "top to quit")
    assert exit_file.read_text().strip() == "0"
    for c in callers:
        assert c.poll() is None, "a caller fell off while top watched"


def test_top_without_a_terminal_says_so() -> None:
    r = subprocess.run([sys.executable, "-m", "castway", "top"], capture_output=True, text=True,
                       timeout=30, check=False)
    assert r.returncode == 1
    assert "top needs a terminal" in r.stderr


def test_top_shows_each_inputs_stream_and_tr_101_290_state() -> None:
    """The screens are plain functions of the API's messages: the TR column has the worst
    priority in force over a route's inputs, the detail view each input's stream and
    conditions."""
    from castway.cli.top import detail, overview
    from castway.v1 import analysis_pb2, route_pb2

    def tr_input(ep_id: str, active: list[tuple[str, int, int | None]]) -> Any:
        a = analysis_pb2.TsAnalysis(
            sync=True,
            pids=[analysis_pb2.TsPid(pid=0x100, kind="video", packets=100)],
            video=[analysis_pb2.VideoStream(pid=0x100, codec="h264", width=640, height=360,
                                            frame_rate=25.0)],
            audio=[analysis_pb2.AudioStream(pid=0x101, codec="aac")],
            active=[analysis_pb2.TsCondition(check=c, priority=p, pid=pid)
                    for c, p, pid in active],
        )
        return route_pb2.EndpointStatus(id=ep_id, state="live", analysis=a)

    clean = route_pb2.Route(name="clean", status=route_pb2.RouteStatus(
        state="live", inputs=[tr_input("main", [])]))
    faulty = route_pb2.Route(name="faulty", status=route_pb2.RouteStatus(state="live", inputs=[
        tr_input("main", [("pcr_repetition_error", 2, 0x100)]),
        tr_input("backup", [("pcr_repetition_error", 2, 0x100), ("pat_error", 1, None)]),
    ]))
    waiting = route_pb2.Route(name="waiting", status=route_pb2.RouteStatus(
        state="waiting", inputs=[route_pb2.EndpointStatus(id="main", state="listening")]))
    lines = overview([clean, faulty, waiting], 0, 80, 24, "")
    tr = lines[1].index("TR")
    assert [line[tr:tr + 2] for line in lines[2:5]] == ["ok", "P1", "- "]
    assert all(len(line) <= 80 for line in lines)
    shown = detail(faulty, 120, 24, "")
    assert "    h264 640x360 25fps, aac · TR 101 290 P2 pcr_repetition_error 0x100" in shown
    assert "    h264 640x360 25fps, aac · TR 101 290 P1 pat_error, pcr_repetition_error 0x100" \
        in shown
    assert all(len(line) <= 80 for line in detail(faulty, 80, 24, ""))
