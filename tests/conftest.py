"""pytest fixtures. What they are built from (TS analysis, peers, senders, captures, clips,
ports, namespaces) is in `support/`, shared with the benchmarks.

Every wait is a polled condition with a deadline; every peer is killed at teardown.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# A GLib/GStreamer critical warning (a refcount bug, a misuse of an element) aborts the process
# that hits it, so the tests cannot pass over one. Set before castway loads GLib.
os.environ.setdefault("G_DEBUG", "fatal-criticals")


import castway
from castway.client import Client
from castway.server import run_server

from support import closing_all, net
from support.capture import UdpCapture
from support.clips import make_clip
from support.control import ADMIN, Server
from support.peers import Peers


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    ps = Peers(tmp_path)
    yield ps
    ps.stop_all()


@pytest.fixture
def gateway() -> Iterator[castway.Gateway]:
    with castway.Gateway() as gw:
        yield gw


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def ts_file(media_dir: Path) -> Path:
    """An 8 s clip at about 1.5 Mb/s."""
    return make_clip(media_dir / "clip.ts", 8, "640x360", 1200)


@pytest.fixture(scope="session")
def short_clip(media_dir: Path) -> Path:
    """A 2 s clip, for loops."""
    return make_clip(media_dir / "short.ts", 2, "320x180", 600)


@pytest.fixture
def udp_capture() -> Iterator[Callable[..., UdpCapture]]:
    """``udp_capture(port=None, host="127.0.0.1")``: a capture, closed after the test."""
    with closing_all(UdpCapture) as make:
        yield make


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace with only a loopback that carries multicast."""
    if not net.can_make_namespaces():
        pytest.skip("creating a network namespace needs root")
    with net.namespace() as name:
        yield name


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A castway control server in this process on 127.0.0.1:0, its store in `tmp_path`, and an
    admin client of it."""
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1) as running:
        client = Client(f"127.0.0.1:{running.port}", key=ADMIN)
        yield Server(running, client, tmp_path / "data")
        client.close()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, another CA, and server, client and stranger certificates (127.0.0.1, localhost)."""
    d = tmp_path_factory.mktemp("certs")

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "other-ca"):
        ssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={ca}",
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.pem",
        )
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ca in (("server", "ca"), ("client", "ca"), ("stranger", "other-ca")):
        ssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        ssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            f"{ca}.pem",
            "-CAkey",
            f"{ca}.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            "-out",
            f"{name}.pem",
        )
    return d


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "small"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
