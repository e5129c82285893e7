"""Cost of the gRPC control plane, and how fast a route created through it carries data.

1. Creates: `--routes` N routes (default 500) through `CreateRoute`, each running with an idle
   UDP listener input on its own port and one UDP output: latency p50/p99 and creates per
   second. The same N created with `desired_state=STOPPED` (stored only, no pipeline) and
   deleted again first separate the store's cost (one SQLite commit, WAL, synchronous=FULL)
   from the pipelines' start. The server's threads, file descriptors, RSS and idle CPU before
   and after the N running routes show what a route costs to keep.
2. Reads with the N routes present: `GetRoute` (`--gets` calls over random names) and
   `ListRoutes` (`--lists` calls; the reply holds all N routes with their live status), each
   call interleaved with a gRPC health `Check` on the same channel, the peer: the RTT of a call
   that does no work, through the same server, interceptors and channel.
3. Create to first packet: a sender already streams MPEG-TS to the input port; a receiver
   socket waits on the output port; the time from the `CreateRoute` call to the first datagram
   there, `--reps` times (the route is deleted between runs). Peer, interleaved with it and fed
   by the same sender: spawning `srt-live-transmit udp://:IN udp://127.0.0.1:OUT`, from `Popen`
   to its first datagram. The sender is a clip ffmpeg encoded once (640x360 H.264, 25 fps, 1 s
   GOP, ~4 Mb/s), looped by a separate process in evenly paced 1316-byte datagrams (one every
   ~2.6 ms): a live encoder sends a burst per frame, every 40 ms, and that wait would swamp
   what is measured. Arrival times are the kernel's receive timestamps (SO_TIMESTAMPNS), so a
   busy interpreter does not delay them.

The server runs in this process (`castway.server.run_server` on 127.0.0.1, its SQLite store in
a temporary directory), so client and server share the interpreter; the health peer pays the
same price. Nothing here asserts a timing.

    .venv/bin/python benches/control.py [--routes 500] [--gets 1000] [--lists 50] [--reps 10]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from castway.client import Client
from castway.server import run_server
from castway.v1 import route_pb2, spec_pb2

import support_path  # noqa: F401
from support import udp_tool
from support.clips import make_clip
from support.net import free_ports
from support.ts import CHUNK

ADMIN_KEY = "bench-admin-key-0123456789"
RPC_TIMEOUT_S = 30.0
TICKS = os.sysconf("SC_CLK_TCK")
# Linux: receive timestamps as a struct timespec (CLOCK_REALTIME) in the ancillary data.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
CLIP_S = 10
# The longest each stage may take; past it the stage stops and says so.
CREATE_BUDGET_S = 120.0
FIRST_PACKET_TIMEOUT_S = 10.0
# A new route's switch waits up to 2 s for its first input before it settles.
SETTLE_S = 3.0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else float("nan")


def udp_ports(n: int, start: int, taken: set[int]) -> list[int]:
    """`n` UDP ports from `start` up that nothing is bound to now (below the ephemeral range,
    so no socket of this run picks one meanwhile)."""
    try:
        return free_ports(n, start, taken)
    except RuntimeError as e:
        raise SystemExit(f"control bench: {e}") from None


@dataclass
class Proc:
    """This process (the server is in it): threads, file descriptors, RSS, CPU seconds."""

    threads: int
    fds: int
    rss_mb: float
    cpu_s: float

    @staticmethod
    def now() -> Proc:
        rss = 0.0
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return Proc(
            threads=len(os.listdir("/proc/self/task")),
            fds=len(os.listdir("/proc/self/fd")),
            rss_mb=rss,
            cpu_s=(int(fields[11]) + int(fields[12])) / TICKS,
        )


def idle_cpu(seconds: float = 3.0) -> float:
    """Share of one core this process uses while the caller sleeps (%)."""
    before = Proc.now().cpu_s
    time.sleep(seconds)
    return 100 * (Proc.now().cpu_s - before) / seconds


@dataclass
class Row:
    what: str
    ms: list[float]
    # Wall time of the whole series (for the rate), when it ran back to back.
    total_s: float | None = None
    note: str = ""

    @property
    def p50(self) -> float:
        return pct(self.ms, 0.5)

    @property
    def p99(self) -> float:
        return pct(self.ms, 0.99)


class ServerLog(logging.Handler):
    """Keeps what the server logs at WARNING and above, to report it after the run."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()}")


def request(
    name: str, in_port: int, out_port: int, running: bool = True
) -> route_pb2.CreateRouteRequest:
    state = route_pb2.DESIRED_STATE_RUNNING if running else route_pb2.DESIRED_STATE_STOPPED
    return route_pb2.CreateRouteRequest(
        name=name,
        spec=spec_pb2.RouteSpec(
            inputs=[spec_pb2.Endpoint(uri=f"udp://127.0.0.1:{in_port}")],
            outputs=[spec_pb2.Endpoint(uri=f"udp://127.0.0.1:{out_port}")],
        ),
        desired_state=state,
    )


def timed(call: Callable[[], Any]) -> float:
    t = time.perf_counter()
    call()
    return (time.perf_counter() - t) * 1000


def series(what: str, calls: Iterator[Callable[[], Any]], budget_s: float) -> tuple[Row, int]:
    """Times each call in turn; stops at the first error or when `budget_s` is spent."""
    ms: list[float] = []
    t0 = time.perf_counter()
    note = ""
    for call in calls:
        try:
            ms.append(timed(call))
        except grpc.RpcError as e:
            note = f"stopped after {len(ms)}: {e.code().name}: {e.details()}"
            break
        if time.perf_counter() - t0 > budget_s:
            note = f"stopped after {len(ms)}: over the {budget_s:.0f} s budget"
            break
    return Row(what, ms, time.perf_counter() - t0, note), len(ms)


def creates_and_reads(
    c: Client, n: int, gets: int, lists: int, taken: set[int]
) -> tuple[list[Row], Row, list[str]]:
    """Stage 1 and 2: the rows, the health peer and the resource notes."""
    md = c.metadata
    # grpc_health's stub is untyped.
    health: Any = health_pb2_grpc.HealthStub(c.channel)
    check = health_pb2.HealthCheckRequest()
    for _ in range(20):  # connect and warm up
        health.Check(check, timeout=RPC_TIMEOUT_S)
        c.routes.ListRoutes(route_pb2.ListRoutesRequest(), metadata=md, timeout=RPC_TIMEOUT_S)
    ins = udp_ports(n, 20000, taken)
    out_port = udp_ports(1, 20000, taken)[0]  # nothing listens: the inputs stay idle anyway
    rows: list[Row] = []
    notes: list[str] = []

    def creating(prefix: str, running: bool) -> Iterator[Callable[[], Any]]:
        for i, port in enumerate(ins):
            req = request(f"{prefix}{i}", port, out_port, running)
            yield partial(c.routes.CreateRoute, req, metadata=md, timeout=RPC_TIMEOUT_S)

    def deleting(names: list[str]) -> Iterator[Callable[[], Any]]:
        for name in names:
            req = route_pb2.DeleteRouteRequest(name=name)
            yield partial(c.routes.DeleteRoute, req, metadata=md, timeout=RPC_TIMEOUT_S)

    row, made = series("CreateRoute, stored only (STOPPED)", creating("s", False),
                       CREATE_BUDGET_S)
    rows.append(row)
    row, _ = series("DeleteRoute, stored only", deleting([f"s{i}" for i in range(made)]),
                    CREATE_BUDGET_S)
    rows.append(row)

    before = Proc.now()
    cpu_before = idle_cpu()
    row, made = series("CreateRoute, running (idle UDP in, UDP out)", creating("r", True),
                       CREATE_BUDGET_S)
    rows.append(row)
    names = [f"r{i}" for i in range(made)]
    time.sleep(SETTLE_S)
    after = Proc.now()
    cpu_after = idle_cpu()
    if made:
        notes.append(
            f"{made} running routes: threads {before.threads} -> {after.threads} "
            f"({(after.threads - before.threads) / made:.1f}/route), fds {before.fds} -> "
            f"{after.fds} ({(after.fds - before.fds) / made:.1f}/route), RSS "
            f"{before.rss_mb:.0f} -> {after.rss_mb:.0f} MB "
            f"({(after.rss_mb - before.rss_mb) * 1024 / made:.0f} KB/route), idle CPU "
            f"{cpu_before:.1f}% -> {cpu_after:.1f}% of a core ({SETTLE_S:.0f} s after the "
            "last create)"
        )

    # Reads, each call next to a health check on the same channel.
    rng = random.Random(1)
    health_ms: list[float] = []
    get_ms: list[float] = []
    list_ms: list[float] = []
    size = 0
    if names:
        for _ in range(gets):
            req = route_pb2.GetRouteRequest(name=rng.choice(names))
            health_ms.append(timed(lambda: health.Check(check, timeout=RPC_TIMEOUT_S)))
            get_ms.append(timed(
                partial(c.routes.GetRoute, req, metadata=md, timeout=RPC_TIMEOUT_S)))
        for _ in range(lists):
            health_ms.append(timed(lambda: health.Check(check, timeout=RPC_TIMEOUT_S)))
            t = time.perf_counter()
            # One page of up to 500 (the server's largest page) holds them all.
            reply = c.routes.ListRoutes(route_pb2.ListRoutesRequest(page_size=500), metadata=md,
                                        timeout=RPC_TIMEOUT_S)
            list_ms.append((time.perf_counter() - t) * 1000)
            size = reply.ByteSize()
    rows.append(Row(f"GetRoute ({len(names)} routes)", get_ms))
    rows.append(Row(f"ListRoutes ({len(names)} routes, {size / 1024:.0f} KB)", list_ms))
    row, _ = series("DeleteRoute, running", deleting(names), CREATE_BUDGET_S)
    rows.append(row)
    return rows, Row("health Check (peer)", health_ms), notes


def receiver(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", port))
    return s


def first_arrival(s: socket.socket, since_ns: int, timeout: float) -> int | None:
    """Kernel receive time (ns, CLOCK_REALTIME) of the first datagram received at or after
    `since_ns`; earlier ones (left over from the previous run) are skipped. None on timeout."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            _, anc, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(16))
        except TimeoutError:
            return None
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = struct.unpack("qq", data[:16])
                at = int(sec) * 1_000_000_000 + int(nsec)
                if at >= since_ns:
                    return at
    return None


def drain(s: socket.socket) -> None:
    s.settimeout(0)
    for _ in range(100_000):
        try:
            s.recv(65536)
        except BlockingIOError:
            return


def stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        print(f"control bench: pid {p.pid} did not exit", file=sys.stderr)


@dataclass
class FirstPacket:
    castway_ms: list[float]
    create_rpc_ms: list[float]
    slt_ms: list[float]
    notes: list[str]


def castway_once(c: Client, name: str, in_port: int, out_port: int, rx: socket.socket,
                 res: FirstPacket) -> None:
    """CreateRoute to the first datagram at the output; then the route is deleted."""
    md = c.metadata
    drain(rx)
    t0 = time.time_ns()
    try:
        c.routes.CreateRoute(request(name, in_port, out_port), metadata=md,
                             timeout=RPC_TIMEOUT_S)
    except grpc.RpcError as e:
        res.notes.append(f"castway {name}: {e.code().name}: {e.details()}")
        return
    res.create_rpc_ms.append((time.time_ns() - t0) / 1e6)
    try:
        at = first_arrival(rx, t0, FIRST_PACKET_TIMEOUT_S)
        if at is not None:
            res.castway_ms.append((at - t0) / 1e6)
        else:
            route = c.routes.GetRoute(route_pb2.GetRouteRequest(name=name), metadata=md,
                                      timeout=RPC_TIMEOUT_S)
            res.notes.append(f"castway {name}: nothing in {FIRST_PACKET_TIMEOUT_S:.0f} s; "
                             f"state {route.status.state!r} {route.status.error}")
    finally:
        c.routes.DeleteRoute(route_pb2.DeleteRouteRequest(name=name), metadata=md,
                             timeout=RPC_TIMEOUT_S)


def slt_once(in_port: int, out_port: int, rx: socket.socket, log: Path,
             res: FirstPacket) -> None:
    """srt-live-transmit from spawn to the first datagram at the output; then it is killed."""
    drain(rx)
    with open(log, "wb") as err:
        t0 = time.time_ns()
        slt = subprocess.Popen(
            ["srt-live-transmit", "-q", f"udp://:{in_port}", f"udp://127.0.0.1:{out_port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True,
        )
        try:
            at = first_arrival(rx, t0, FIRST_PACKET_TIMEOUT_S)
        finally:
            stop(slt)
    if at is not None:
        res.slt_ms.append((at - t0) / 1e6)
    else:
        said = log.read_text(errors="replace").strip()[-300:]
        res.notes.append(f"srt-live-transmit: nothing in {FIRST_PACKET_TIMEOUT_S:.0f} s: {said}")


def first_packet(c: Client, reps: int, taken: set[int], work: Path) -> FirstPacket:
    """Stage 3, the two peers interleaved, fed by one sender that is live throughout."""
    in_port, out_port = udp_ports(2, 27000, taken)
    res = FirstPacket([], [], [], [])
    clip = make_clip(work / "clip.ts", CLIP_S, "640x360", 4000, picture="testsrc",
                     zerolatency=True, maxrate_kbps=4000, bufsize_kbps=2000, tone=None,
                     resend_headers=False, timeout=120)
    # Looped at its own bitrate (whole datagrams only), evenly, by another process.
    whole = clip.stat().st_size // CHUNK
    sender = subprocess.Popen(
        udp_tool.argv("send", "127.0.0.1", str(in_port), str(clip),
                      str(whole * CHUNK * 8 / CLIP_S), "--loop"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        with receiver(in_port) as probe:
            if first_arrival(probe, 0, FIRST_PACKET_TIMEOUT_S) is None:
                raise SystemExit("control bench: the sender sent nothing in 10 s")
        with receiver(out_port) as rx:
            for rep in range(reps):
                castway_once(c, f"fp{rep}", in_port, out_port, rx, res)
                slt_once(in_port, out_port, rx, work / "slt.log", res)
    finally:
        stop(sender)
    return res


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b and a == a and b == b else "-"


def report(rows: list[Row], health: Row, fp: FirstPacket, notes: list[str], n: int) -> None:
    hp50 = health.p50
    print(f"\n{'operation':<48} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'per s':>7} {'p50 vs health':>13}")
    for r in [health, *rows]:
        rate = f"{len(r.ms) / r.total_s:.0f}" if r.total_s and r.ms else ""
        mx = max(r.ms) if r.ms else float("nan")
        print(f"{r.what:<48} {len(r.ms):>6} {r.p50:>8.2f} {r.p99:>8.2f} {mx:>8.2f} "
              f"{rate:>7} {ratio(r.p50, hp50):>13}")
        if r.note:
            print(f"  {r.note}")
    for note in notes:
        print(note)

    cw, slt = fp.castway_ms, fp.slt_ms
    cw_max = max(cw) if cw else float("nan")
    slt_max = max(slt) if slt else float("nan")
    print(f"\ncreate/spawn to first packet at the receiver ({len(cw)} + {len(slt)} runs, "
          "sender already live):")
    print(f"  castway CreateRoute      p50 {pct(cw, .5):7.1f} ms  max {cw_max:7.1f} ms  "
          f"(the call itself returned after p50 {pct(fp.create_rpc_ms, .5):.1f} ms)")
    print(f"  srt-live-transmit spawn  p50 {pct(slt, .5):7.1f} ms  max {slt_max:7.1f} ms")
    print(f"  castway / srt-live-transmit: p50 {ratio(pct(cw, .5), pct(slt, .5))}, "
          f"max {ratio(cw_max, slt_max)}")
    for note in fp.notes:
        print(f"  {note}")

    print(f"\n### gRPC control plane ({n} routes, server in process, loopback)\n")
    print("| call | p50 | p99 | rate | p50 vs health Check |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in [health, *rows]:
        rate = f"{len(r.ms) / r.total_s:.0f}/s" if r.total_s and r.ms else ""
        print(f"| {r.what} | {r.p50:.2f} ms | {r.p99:.2f} ms | {rate} | {ratio(r.p50, hp50)} |")
    print("\n| to first packet | p50 | max | vs srt-live-transmit (p50) |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| castway `CreateRoute` | {pct(cw, .5):.0f} ms | {cw_max:.0f} ms | "
          f"{ratio(pct(cw, .5), pct(slt, .5))} |")
    print(f"| `srt-live-transmit` spawn | {pct(slt, .5):.0f} ms | {slt_max:.0f} ms | 1.0x |")


@contextmanager
def server_log() -> Iterator[ServerLog]:
    handler = ServerLog()
    logger = logging.getLogger("castway")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def raise_fd_limit(n: int) -> None:
    """Each running route holds about a dozen descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1024 + 16 * n
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            print(f"note: open-file limit {new} may be short for {n} routes", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--routes", type=int, default=500, help="routes to create (N)")
    ap.add_argument("--gets", type=int, default=1000, help="GetRoute calls")
    ap.add_argument("--lists", type=int, default=50, help="ListRoutes calls")
    ap.add_argument("--reps", type=int, default=10, help="create-to-first-packet runs per peer")
    args = ap.parse_args()
    for tool in ("ffmpeg", "srt-live-transmit"):
        if not shutil.which(tool):
            print(f"missing {tool}; run `make setup` first", file=sys.stderr)
            return 1
    raise_fd_limit(args.routes)
    taken: set[int] = set()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="castway-bench-") as tmp,
        server_log() as logged,
        run_server(Path(tmp), "127.0.0.1:0", admin_key=ADMIN_KEY) as running,
        Client(f"127.0.0.1:{running.port}", key=ADMIN_KEY) as c,
    ):
        print(f"server on 127.0.0.1:{running.port}, {args.routes} routes, "
              f"{os.cpu_count()} CPUs", flush=True)
        rows, health, notes = creates_and_reads(c, args.routes, args.gets, args.lists, taken)
        print("creates and reads done; create to first packet...", flush=True)
        fp = first_packet(c, args.reps, taken, Path(tmp))
        left = c.routes.ListRoutes(route_pb2.ListRoutesRequest(), metadata=c.metadata,
                                   timeout=RPC_TIMEOUT_S).routes
        if left:
            notes.append(f"{len(left)} routes left at the end (the server stops them)")
    report(rows, health, fp, notes, args.routes)
    if logged.records:
        print(f"\nserver log, {len(logged.records)} warnings or errors; the first ones:")
        for line in logged.records[:10]:
            print(f"  {line}")
    print(f"\n(ran {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
