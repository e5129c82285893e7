"""Ports and network namespaces. Every address used is loopback, or inside a namespace made
here (no packet can leave the machine)."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

# Where the kernel's ephemeral ports start (net.ipv4.ip_local_port_range).
EPHEMERAL = 32_768


def free_port() -> int:
    """A UDP port nothing is bound to right now (SRT runs over UDP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int, first: int = 10_000, taken: set[int] | None = None) -> list[int]:
    """`n` UDP ports on loopback from `first` up that nothing is bound to now, below the
    ephemeral range, so that sockets the relays open for sending (ephemeral ports) never take
    one of them meanwhile. Ports in `taken` are skipped, and the ones returned are added to it."""
    taken = set() if taken is None else taken
    ports: list[int] = []
    port = first
    while len(ports) < n and port < EPHEMERAL:
        if port not in taken:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                    ports.append(port)
                except OSError:
                    pass
        port += 1
    if len(ports) < n:
        raise RuntimeError(f"fewer than {n} free UDP ports from {first}")
    taken.update(ports)
    return ports


def can_make_namespaces() -> bool:
    return os.geteuid() == 0


@contextmanager
def namespace() -> Iterator[str]:
    """A network namespace with only a loopback, up and carrying multicast; deleted after.
    Needs root."""
    name = f"castway-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "set", "lo", "multicast", "on"],
            ["ip", "route", "add", "224.0.0.0/4", "dev", "lo"],
        ):
            subprocess.run(["ip", "netns", "exec", name, *cmd], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
