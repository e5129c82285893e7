"""What watching castway costs.

1. One SRT -> SRT route in `castway serve` (the sender and receiver of `relay.py`): its CPU
   with nobody scraping, with a scrape each second, and the CPU of one scrape; one scrape a
   second against the relay's own CPU is the cost of the metrics (goal: at most 3 %).
2. The time to scrape `/metrics` of a gateway with 500 routes (UDP -> UDP, idle: the stats of
   an idle route have the same shape as a busy one's), each scrape reading fresh stats
   (goal: under 50 ms), with the size of the answer and the number of series.

    make bench        (or: .venv/bin/python benches/observability.py [--seconds 15] [--reps 3])
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from relay import CASTWAY, cpu_seconds, make_source

import support_path  # noqa: F401
from support import wait_until
from support.net import free_port, free_ports
from support.peers import Peers
from support.senders import live_sender

ADMIN = "cw_bench-admin-key-0123456789abcdefABCDEF"


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return bytes(r.read())


def serving(url: str) -> None:
    """Returns once the server answers ``url`` (its routes are up by then: the config is
    applied before the metrics endpoint opens); fails after 60 s."""

    def answers() -> bool:
        try:
            get(url)
            return True
        except OSError:
            return False

    wait_until(answers, 60, f"the server to answer {url}")


@contextlib.contextmanager
def scraping(url: str, every_s: float) -> Iterator[None]:
    """GETs ``url`` every ``every_s`` seconds on a thread while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            get(url)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=10)


def serve_argv(work: Path, a: int, outs: list[int], metrics_port: int) -> list[str]:
    """`castway serve` with one declared SRT listener -> SRT listener route."""
    data = work / f"data-{a}"
    config = work / f"castway-{a}.toml"
    config.write_text(
        "[routes.bench]\n"
        f'inputs = ["srt://:{a}?mode=listener"]\n'
        f'outputs = ["srt://:{outs[0]}?mode=listener"]\n'
    )
    return [CASTWAY, "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0", "--config",
            str(config), "--metrics-listen", f"127.0.0.1:{metrics_port}"]


@dataclass
class Cost:
    base_cpu_percent: float  # of a core, nobody scraping
    scraped_cpu_percent: float  # of a core, one scrape a second
    scrape_cpu_ms: float  # CPU per scrape, from a burst
    received_mb: float


def metrics_cost(source: Path, seconds: float, scrapes: int, work: Path) -> Cost:
    """One served route relaying the source to a receiver. The same process is measured for
    ``seconds`` with nobody scraping, then for ``seconds`` with a scrape each second, then
    over a burst of ``scrapes`` back-to-back scrapes (its CPU less the relay's own is the cost
    of one scrape: /proc counts CPU in 10 ms ticks, too coarse to see one scrape a second)."""
    peers = Peers(work)
    a, out, mport = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{mport}/metrics"
    try:
        relay = peers.start(serve_argv(work, a, [out], mport), env={"CASTWAY_ADMIN_KEY": ADMIN})
        serving(url)
        sink = work / "recv.ts"
        peers.start(["srt-live-transmit", "-q", f"srt://127.0.0.1:{out}", "file://con"],
                    stdout_path=sink)
        live_sender(peers, source, f"srt://127.0.0.1:{a}?pkt_size=1316")
        time.sleep(2.0)  # connections settle

        def cpu_over(s: float) -> float:
            c0 = cpu_seconds(relay.pid)
            time.sleep(s)
            return cpu_seconds(relay.pid) - c0

        base = cpu_over(seconds)
        with scraping(url, 1.0):
            scraped = cpu_over(seconds)
        c0, t0 = cpu_seconds(relay.pid), time.monotonic()
        for _ in range(scrapes):
            get(url)
        burst = cpu_seconds(relay.pid) - c0 - base / seconds * (time.monotonic() - t0)
        return Cost(100 * base / seconds, 100 * scraped / seconds, 1000 * burst / scrapes,
                    sink.stat().st_size / 1e6)
    finally:
        peers.stop_all(signal.SIGINT)


def scrape_times(n: int, scrapes: int) -> tuple[list[float], int, int]:
    """Milliseconds per scrape of ``n`` idle routes' metrics, the body's bytes, and the number
    of series (sample lines)."""
    import castway
    from castway.server.metrics import Metrics

    ports = free_ports(2 * n)
    with castway.Gateway() as gw:
        for k in range(n):
            gw.add_route(f"r{k}", f"udp://127.0.0.1:{ports[k]}",
                         [f"udp://127.0.0.1:{ports[n + k]}"])
        metrics = Metrics(gw.stats)
        http, port = metrics.serve("127.0.0.1", 0)
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            get(url)  # warm up
            times = []
            body = b""
            for _ in range(scrapes):
                # Past the snapshot's age, so every scrape reads the stats anew.
                time.sleep(metrics.snapshot.max_age + 0.1)
                t0 = time.perf_counter()
                body = get(url)
                times.append(1000 * (time.perf_counter() - t0))
            series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            return times, len(body), series
        finally:
            http.shutdown()
            metrics.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="measured time per run")
    ap.add_argument("--reps", type=int, default=3, help="runs per case (median is kept)")
    ap.add_argument("--routes", type=int, default=500, help="routes for the scrape time")
    ap.add_argument("--scrapes", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="castway-bench-") as tmp:
        work = Path(tmp)
        source = work / "source.ts"
        make_source(source, 30)
        costs = sorted((metrics_cost(source, args.seconds, 300, work) for _ in range(args.reps)),
                       key=lambda c: c.scrape_cpu_ms)
        c = costs[len(costs) // 2]
        share = c.scrape_cpu_ms / (10 * c.base_cpu_percent)  # one scrape a second
        print(f"### Metrics cost, one SRT -> SRT route in castway serve ({args.seconds:.0f} s "
              f"per phase, median of {args.reps})\n")
        print("| relay CPU, not scraped | scraped each second | CPU per scrape (burst of 300) "
              "| cost of a scrape a second |")
        print("| ---: | ---: | ---: | ---: |")
        print(f"| {c.base_cpu_percent:.2f} % of a core | {c.scraped_cpu_percent:.2f} % | "
              f"{c.scrape_cpu_ms:.2f} ms | {100 * share:.1f} % of the relay's CPU |")
        print(flush=True)
    times, size, series = scrape_times(args.routes, args.scrapes)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(f"### /metrics of {args.routes} routes ({args.scrapes} scrapes, fresh stats each)\n")
    print("| median ms | p95 ms | max ms | body KB | series |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {statistics.median(times):.1f} | {p95:.1f} | {times[-1]:.1f} | {size / 1024:.0f} | "
          f"{series} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
