"""A UDP peer as a process, for where pytest's own threads are not (inside a network namespace)
or should not be (a bench's sender, off the measured interpreter): `send` paces a file out in
1316-byte datagrams, once or looped; `capture` writes what arrives to a file.

    python -m support.udp_tool send HOST PORT FILE [BITRATE] [--loop]
    python -m support.udp_tool capture HOST PORT OUT BYTES [GROUP_IFACE]

`argv(...)` is the command line that runs it from anywhere (prefix it with
`ip netns exec NAME` to run it in a namespace).
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
from pathlib import Path

from support.senders import paced_chunks

TESTS = Path(__file__).resolve().parent.parent


def argv(*args: str) -> list[str]:
    """The command line that runs this tool with `args`, with `tests/` on its path."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return ["env", f"PYTHONPATH={path}", sys.executable, "-m", "support.udp_tool", *args]


def send(host: str, port: int, path: str, bitrate: float, loop: bool = False) -> None:
    data = Path(path).read_bytes()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if socket.inet_aton(host)[0] >= 224:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    paced_chunks(data, bitrate, lambda c: s.sendto(c, (host, port)), loop=loop)


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


def main() -> None:
    ap = argparse.ArgumentParser(prog="udp_tool", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("send")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("file")
    p.add_argument("bitrate", type=float, nargs="?", default=4e6)
    p.add_argument("--loop", action="store_true", help="send whole chunks over and over")
    p = sub.add_parser("capture")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("out")
    p.add_argument("bytes", type=int)
    p.add_argument("iface", nargs="?")
    args = ap.parse_args()
    if args.cmd == "send":
        send(args.host, args.port, args.file, args.bitrate, args.loop)
    else:
        capture(args.host, args.port, args.out, args.bytes, args.iface)


if __name__ == "__main__":
    main()
