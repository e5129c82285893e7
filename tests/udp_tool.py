"""A UDP peer for tests that run inside a network namespace (where pytest's own threads are
not): `send` paces a file out in 1316-byte datagrams, `capture` writes what arrives to a file.

    python udp_tool.py send HOST PORT FILE [BITRATE]
    python udp_tool.py capture HOST PORT OUT BYTES [GROUP_IFACE]
"""

from __future__ import annotations

import socket
import struct
import sys
import time

CHUNK = 7 * 188


def send(host: str, port: int, path: str, bitrate: float) -> None:
    data = open(path, "rb").read()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if socket.inet_aton(host)[0] >= 224:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    interval = CHUNK * 8 / bitrate
    start = time.monotonic()
    for i, off in enumerate(range(0, len(data), CHUNK)):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        s.sendto(data[off:off + CHUNK], (host, port))


def capture(host: str, port: int, out: str, want: int, iface_addr: str | None) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    s.bind((host, port))
    if socket.inet_aton(host)[0] >= 224:
        iface = socket.inet_aton(iface_addr or "0.0.0.0")
        mreq = struct.pack("4s4s", socket.inet_aton(host), iface)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    s.settimeout(30)
    got = 0
    with open(out, "wb") as f:
        print("ready", flush=True)
        while got < want:
            data = s.recv(65536)
            f.write(data)
            f.flush()
            got += len(data)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "send":
        send(sys.argv[2], int(sys.argv[3]), sys.argv[4],
             float(sys.argv[5]) if len(sys.argv) > 5 else 4e6)
    else:
        capture(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]),
                sys.argv[6] if len(sys.argv) > 6 else None)
