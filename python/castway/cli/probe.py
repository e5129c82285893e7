"""``castway probe srt://HOST:PORT``: measures an SRT path (round trip, loss, jitter) against a
listener for a few seconds at a given bitrate, and prints the latency and bandwidth overhead
the SRT Deployment Guide recommends for it, as the URI keys to use."""

from __future__ import annotations

import argparse
import json
from typing import Any

from castway import errors, srt_probe
from castway.cli.exits import EXIT_FAILED, EXIT_OK

__all__ = ["add_command"]


def _bitrate(text: str) -> int:
    """``2M``, ``500k`` or a number of bit/s."""
    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a bitrate (e.g. 2M, 500k)") from None
    if not 8_000 <= value <= 1_000_000_000:
        raise argparse.ArgumentTypeError(f"`{text}`: the bitrate must be 8k to 1G")
    return int(value)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a number of seconds") from None
    if not 1 <= value <= 600:
        raise argparse.ArgumentTypeError(f"`{text}`: probe for 1 to 600 seconds")
    return value


def add_command(sub: Any) -> None:
    p = sub.add_parser("probe", help="measure an SRT path and recommend latency and overhead",
                       description=__doc__)
    p.add_argument("uri", help="the listener to probe: srt://HOST:PORT (passphrase etc. as keys)")
    p.add_argument("--seconds", type=_seconds, default=5.0, help="how long (default 5)")
    p.add_argument("--bitrate", type=_bitrate, default=2_000_000,
                   help="what to send, e.g. 2M (default), 500k")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        r = srt_probe(args.uri, args.seconds, args.bitrate)
    except errors.CastwayError as e:
        print(f"castway probe: {e}")
        return EXIT_FAILED
    if args.json:
        print(json.dumps(r))
        return EXIT_OK
    print(f"round trip  {r['rtt_ms']:.1f} ms (min {r['rtt_min_ms']:.1f}, max "
          f"{r['rtt_max_ms']:.1f}), jitter {r['jitter_ms']:.1f} ms")
    print(f"loss        {r['loss_percent']:.2f} % ({r['lost']} of {r['packets']} packets, "
          f"{r['retransmitted']} retransmitted) over {r['seconds']:.1f} s")
    print(f"bandwidth   {r['bandwidth_mbps']:.1f} Mb/s (libsrt's estimate)")
    beyond = " (loss beyond the guide's table: fix the link first)" if r["beyond_guide"] else ""
    print(f"recommended latency {r['latency_ms']} ms ({r['rtt_multiplier']} x RTT), overhead "
          f"{r['overhead_percent']} %{beyond}")
    print(f"URI keys    latency={r['latency_ms']}&oheadbw={r['overhead_percent']}")
    return EXIT_OK
