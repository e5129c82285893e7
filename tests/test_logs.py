"""``castway serve --log-format json``: every line on stderr is one JSON object, and every line
about a route names it in its own field."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

from castway.client import Client
from castway.v1 import route_pb2

from support import wait_until
from support.control import ServeProcess, ep, spec, test_input
from support.net import free_port

ADMIN = "cw_logs-test-admin-key-0123456789abcdef01"


def records(srv: ServeProcess) -> list[dict[str, Any]]:
    lines = [line for line in srv.text().splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines]  # every line parses
    for d in docs:
        assert {"time", "level", "logger", "message"} <= d.keys(), d
    return docs


def test_serve_logs_json_lines_that_name_their_route(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"CASTWAY_ADMIN_KEY": ADMIN}
    port = free_port()
    srv = ServeProcess(data, env=env, args=("--log-format", "json"))
    with Client(f"127.0.0.1:{srv.port}", key=ADMIN) as c:
        for name, out in (("news", "udp://127.0.0.1:9"), ("blocked", f"srt://:{port}?mode=listener")):
            c.routes.CreateRoute(route_pb2.CreateRouteRequest(
                name=name, spec=spec([ep(test_input())], [ep(out)])), metadata=c.metadata,
                timeout=30)
    assert srv.stop(signal.SIGTERM) == 0
    first = records(srv)
    [serving] = [d for d in first if d["message"].startswith("serving gRPC on")]
    assert serving["logger"] == "castway.serve" and serving["level"] == "info"
    created = [d for d in first if d.get("call") == "RouteService/CreateRoute"]
    assert sorted(d["route"] for d in created) == ["blocked", "news"]
    assert all(d["status"] == "OK" and d["key"] and d["peer"] for d in created)

    # The stored route's port is taken when the server comes back: it says so, naming it.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("0.0.0.0", port))
        again = ServeProcess(data, env=env, args=("--log-format", "json"))
        wait_until(lambda: "cannot start" in again.text(), 30, "the route's start to fail")
        assert again.stop(signal.SIGTERM) == 0
    docs = records(again)
    [refused] = [d for d in docs if "cannot start" in d["message"]]
    assert refused["route"] == "blocked" and refused["level"] == "warning"
    started = [d for d in docs if d["message"] == "route news started"]
    assert [d["route"] for d in started] == ["news"]
