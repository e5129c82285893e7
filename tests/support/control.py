"""A castway control server for tests: the admin key, spec builders, a server in this process
(`Server`, what the `server` fixture yields) and one as a process (`ServeProcess`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from castway.client import Client
from castway.server import Running
from castway.v1 import key_pb2, route_pb2, spec_pb2

from support import wait_until

ADMIN = "test-admin-key-0123456789"
CODE = grpc.StatusCode


def ep(uri: str, ep_id: str = "") -> spec_pb2.Endpoint:
    return spec_pb2.Endpoint(id=ep_id, uri=uri)


def spec(inputs: list[Any], outputs: list[Any] = (), **kw: Any) -> spec_pb2.RouteSpec:  # type: ignore[assignment]
    as_ep = lambda e: e if isinstance(e, spec_pb2.Endpoint) else ep(e)  # noqa: E731
    return spec_pb2.RouteSpec(
        inputs=[as_ep(e) for e in inputs], outputs=[as_ep(e) for e in outputs], **kw
    )


def test_input() -> str:
    return "test://?size=320x240&bitrate=1000"


test_input.__test__ = False  # type: ignore[attr-defined]


def expect(code: grpc.StatusCode, call: Callable[[], Any]) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err: Any = info.value
    assert err.code() == code, err.details()
    return str(err.details())


@dataclass
class Server:
    running: Running
    client: Client
    data_dir: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def client_with(self, key: str) -> Client:
        return Client(self.addr, key=key)

    def key(self, role: str) -> str:
        roles = {"viewer": key_pb2.ROLE_VIEWER, "operator": key_pb2.ROLE_OPERATOR}
        return str(
            self.client.keys.CreateKey(
                key_pb2.CreateKeyRequest(name=role, role=roles[role]), metadata=self.client.metadata
            ).secret
        )

    def create(self, name: str, s: spec_pb2.RouteSpec, **kw: Any) -> route_pb2.Route:
        req = route_pb2.CreateRouteRequest(name=name, spec=s, **kw)
        return self.client.routes.CreateRoute(req, metadata=self.client.metadata, timeout=30)

    def get(self, name: str) -> route_pb2.Route:
        req = route_pb2.GetRouteRequest(name=name)
        return self.client.routes.GetRoute(req, metadata=self.client.metadata, timeout=30)

    def update(self, name: str, s: spec_pb2.RouteSpec, **kw: Any) -> route_pb2.UpdateRouteResponse:
        req = route_pb2.UpdateRouteRequest(name=name, spec=s, **kw)
        return self.client.routes.UpdateRoute(req, metadata=self.client.metadata, timeout=30)

class ServeProcess:
    def __init__(
        self, data: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.log = data.parent / f"serve-{time.monotonic_ns()}.log"
        self.log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "castway",
                "serve",
                "--data-dir",
                str(data),
                "--listen",
                "127.0.0.1:0",
                *args,
            ],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        wait_until(
            lambda: "serving gRPC on" in self.text() or self.proc.poll() is not None,
            60,
            "the server to listen",
        )
        assert self.proc.poll() is None, self.text()
        line = next(x for x in self.text().splitlines() if "serving gRPC on" in x)
        self.port = int(line.split("serving gRPC on ")[1].split()[0].rpartition(":")[2])

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int) -> int:
        """Sends ``sig`` and returns the exit status; a server still running 30 s later is
        killed (and the test fails on the timeout), never left behind."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise
        finally:
            self.log_file.close()
