"""castway in a notebook: rich displays, stats as tables and plots, pictures and frames.

Nothing here is needed to import castway: pandas, matplotlib and numpy (``pip install
castway[notebook]``) are imported by the calls that use them, which say what to install when one
is missing. The displays (``_repr_html_``, ``_repr_png_``, ``_repr_jpeg_``) are plain methods
Jupyter finds; a REPL shows their ``repr``.
"""

from __future__ import annotations

import html
import importlib
import itertools
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypedDict, cast

from castway import _castway
from castway.errors import TimedOutError

if TYPE_CHECKING:
    import numpy

    from castway.gateway import EndpointStats, RouteStats

__all__ = [
    "DecodeStats",
    "EndpointSample",
    "Frame",
    "Frames",
    "Image",
    "Sample",
    "StatsView",
    "history_frame",
    "plot_history",
    "stats_frame",
]

PictureFormat = Literal["rgb", "bgr", "gray", "jpeg", "png"]
FrameFormat = Literal["rgb", "bgr", "gray"]


def _require(module: str) -> ModuleType:
    """Imports an optional dependency, or says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{module} is needed for this: pip install 'castway[notebook]'"
        ) from e


class EndpointSample(TypedDict):
    id: str
    role: Literal["input", "output"]
    bytes: int
    bitrate_bps: int
    drops: int
    rtt_ms: float | None
    loss: int | None


class Sample(TypedDict):
    """A route's figures at one moment (:meth:`castway.Route.history`)."""

    at: float
    state: Literal["live", "slate", "waiting", "stopped"]
    active: str | None
    switches: int
    endpoints: list[EndpointSample]


class DecodeStats(TypedDict):
    """What a decode branch did (:meth:`Frames.stats`)."""

    bytes: int
    # TS packets the hub dropped for the branch (it fell behind); the route lost none.
    dropped_packets: int
    pictures: int
    taken: int
    # Pictures replaced by a newer one before the consumer asked (the newest wins).
    skipped: int


# ---------------------------------------------------------------------------------------------
# Pictures


class Image:
    """A still picture (PNG or JPEG) that Jupyter displays; ``data`` holds the encoded bytes."""

    def __init__(self, data: bytes, format: Literal["png", "jpeg"], width: int, height: int,
                 pts: float | None, at: float) -> None:
        self.data, self.format, self.width, self.height = data, format, width, height
        # Its presentation time in the decode branch's timeline, and when it was decoded
        # (Unix time).
        self.pts, self.at = pts, at

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def save(self, path: str | Path) -> Path:
        """Writes the encoded picture to ``path``; returns it."""
        p = Path(path)
        p.write_bytes(self.data)
        return p

    def _repr_png_(self) -> bytes | None:
        return self.data if self.format == "png" else None

    def _repr_jpeg_(self) -> bytes | None:
        return self.data if self.format == "jpeg" else None

    def __repr__(self) -> str:
        return (f"<castway.Image {self.format} {self.width}x{self.height}, "
                f"{len(self.data)} bytes>")


class Frame(NamedTuple):
    """One decoded picture: ``image`` is a (height, width, 3) uint8 array (rgb, bgr) or
    (height, width) (gray); ``pts`` its presentation time (seconds), ``at`` when it was
    decoded (Unix time)."""

    image: numpy.ndarray[Any, Any]
    pts: float | None
    at: float


class Frames:
    """Decoded frames of a route (:meth:`castway.Route.frames`): an iterator that yields the
    newest :class:`Frame` each time it is asked, and a context manager; :meth:`close` (or the
    end of a ``with`` block, or leaving a ``for`` loop over it) stops the decode branch.

    A consumer slower than ``fps`` gets the newest frame, never a queue of old ones;
    :meth:`stats` counts what it skipped. Waiting for a frame releases the GIL; no frame within
    ``timeout`` seconds raises :class:`castway.errors.TimedOutError`, the route stopping
    :class:`castway.errors.ClosedError`; Ctrl-C interrupts the wait within a second.
    """

    def __init__(self, native: _castway.Decoder, timeout: float,
                 what: str = "the route") -> None:
        self._numpy = _require("numpy")
        self._native = native
        self._timeout = timeout
        self._what = what
        self._closed = False

    def __iter__(self) -> Iterator[Frame]:
        try:
            while not self._closed:
                yield self.next()
        finally:
            self.close()

    def next(self) -> Frame:
        """The newest frame, waiting up to the timeout for one."""
        got = self._native.pull(self._timeout)
        if got is None:
            raise TimedOutError(
                f"no frame of {self._what} within {self._timeout} s (is video arriving?)")
        data, width, height, fmt, pts, at = got
        np = self._numpy
        shape = (height, width) if fmt == "gray" else (height, width, 3)
        image = np.frombuffer(data, dtype=np.uint8).reshape(shape)
        return Frame(image, pts, at)

    def stats(self) -> DecodeStats:
        return cast(DecodeStats, self._native.stats())

    def close(self) -> None:
        """Stops the decode branch. Idempotent."""
        self._closed = True
        self._native.close()

    def __enter__(self) -> Frames:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._native.close()


# ---------------------------------------------------------------------------------------------
# Stats as tables

# Lists in an endpoint's stats that a table row shows as their length.
_COUNTED = {"callers", "active", "programs", "pids", "video", "audio", "history"}


def _flatten(prefix: str, value: Mapping[str, object], row: dict[str, object]) -> None:
    for key, v in value.items():
        name = f"{prefix}{key}"
        if isinstance(v, Mapping):
            _flatten(f"{name}.", v, row)
        elif isinstance(v, list):
            if key in _COUNTED:
                row[name] = len(v)
        else:
            row[name] = v


def endpoint_rows(stats: Sequence[RouteStats]) -> list[dict[str, object]]:
    """One flat dict per endpoint: ``route``, ``role``, then the endpoint's figures with
    nested ones as dotted keys (``srt.rtt_ms``, ``analysis.errors.pat_error``); lists as their
    length (``srt.callers``, ``analysis.active``)."""
    rows: list[dict[str, object]] = []
    for route in stats:
        for role, endpoints in (("input", route["inputs"]), ("output", route["outputs"])):
            for ep in endpoints:
                row: dict[str, object] = {"route": route["name"], "role": role}
                _flatten("", cast(Mapping[str, object], ep), row)
                rows.append(row)
    return rows


def stats_frame(stats: Sequence[RouteStats]) -> Any:
    """A pandas DataFrame, one row per endpoint of the routes' stats (see
    :func:`endpoint_rows`)."""
    pd = _require("pandas")
    return pd.DataFrame(endpoint_rows(stats))


def history_frame(samples: Sequence[Sample], route: str) -> Any:
    """A pandas DataFrame of a route's samples, one row per endpoint per second: ``at``
    (a UTC timestamp), ``route``, ``state``, ``active``, ``switches``, then the endpoint's
    ``id``, ``role``, ``bytes``, ``bitrate_bps``, ``drops``, ``rtt_ms``, ``loss``."""
    pd = _require("pandas")
    rows = []
    for s in samples:
        head = {"at": datetime.fromtimestamp(s["at"], UTC), "route": route,
                "state": s["state"], "active": s["active"], "switches": s["switches"]}
        for ep in s["endpoints"]:
            rows.append({**head, **ep})
    columns = ["at", "route", "state", "active", "switches", "id", "role", "bytes",
               "bitrate_bps", "drops", "rtt_ms", "loss"]
    return pd.DataFrame(rows, columns=columns)


def plot_history(samples: Sequence[Sample], switches: Sequence[Mapping[str, Any]], title: str,
                 ax: Any = None) -> Any:
    """Draws bitrate (Mb/s), SRT round trip (ms) and SRT loss (packets a second) of each
    endpoint over time, with a dashed line and the new source at each switch. Returns the
    matplotlib Figure (pass ``ax``, a sequence of three Axes, to draw into your own)."""
    plt = _require("matplotlib.pyplot")
    if ax is None:
        fig, axes = plt.subplots(3, 1, sharex=True, figsize=(9, 6.5))
    else:
        axes = list(ax)
        fig = axes[0].figure
    t0 = samples[0]["at"] if samples else 0.0
    series: dict[str, dict[str, list[float | None]]] = {}
    times: dict[str, list[float]] = {}
    for s in samples:
        for ep in s["endpoints"]:
            key = f"{ep['role']} {ep['id']}"
            d = series.setdefault(key, {"bitrate": [], "rtt": [], "loss": []})
            times.setdefault(key, []).append(s["at"] - t0)
            d["bitrate"].append(ep["bitrate_bps"] / 1e6)
            d["rtt"].append(ep["rtt_ms"])
            d["loss"].append(None if ep["loss"] is None else float(ep["loss"]))
    for key, d in series.items():
        t = times[key]
        axes[0].plot(t, d["bitrate"], label=key)
        if any(v is not None for v in d["rtt"]):
            axes[1].plot(t, [float("nan") if v is None else v for v in d["rtt"]], label=key)
            loss = [float("nan") if v is None else v for v in d["loss"]]
            rate = [0.0] + [max(b - a, 0.0) for a, b in itertools.pairwise(loss)]
            axes[2].plot(t, rate, label=key)
    for sw in switches:
        x = sw["at"] - t0
        if samples and 0 <= x <= samples[-1]["at"] - t0:
            for a in axes:
                a.axvline(x, color="grey", linestyle="--", linewidth=1)
            axes[0].annotate(f"→ {sw['to'] or 'nothing'} ({sw['reason']})", (x, 1.0),
                             xycoords=("data", "axes fraction"), rotation=90, va="top",
                             ha="right", fontsize=8)
    axes[0].set_ylabel("Mb/s")
    axes[1].set_ylabel("SRT RTT (ms)")
    axes[2].set_ylabel("SRT loss /s")
    axes[2].set_xlabel("seconds")
    axes[0].set_title(title)
    if series:
        axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Displays


def _mbps(bps: int | None) -> str:
    return "-" if bps is None else f"{bps / 1e6:.2f}"


def _endpoint_text(ep: EndpointStats) -> str:
    parts = [f"{ep.get('id')} {ep.get('state')}", f"{_mbps(ep.get('bitrate_bps'))} Mb/s"]
    if ep.get("drops"):
        parts.append(f"{ep.get('drops')} drops")
    srt = ep.get("srt")
    if srt:
        parts.append(f"rtt {srt['rtt_ms']:.1f} ms, loss {srt['loss']}")
    return ", ".join(parts)


def route_text(s: RouteStats) -> str:
    """A route's stats in a few readable lines."""
    lines = [f"route {s['name']!r}: {s['state']}, on air {s['switch']['active'] or 'nothing'}"
             f", up {s['uptime_s']:.0f} s"]
    lines += [f"  in  {_endpoint_text(ep)}" for ep in s["inputs"]]
    lines += [f"  out {_endpoint_text(ep)}" for ep in s["outputs"]]
    for sw in s["switch"]["history"][-3:]:
        when = datetime.fromtimestamp(sw["at"], UTC).strftime("%H:%M:%S")
        lines.append(f"  switch {when} {sw['from']} → {sw['to']} ({sw['reason']})")
    return "\n".join(lines)


_STATE_COLOURS = {"live": "#2e7d32", "slate": "#ef6c00", "waiting": "#757575",
                  "stopped": "#b71c1c", "retrying": "#b71c1c", "listening": "#1565c0",
                  "connecting": "#1565c0", "starting": "#757575", "ended": "#757575",
                  "standby": "#757575"}


def _badge(state: str) -> str:
    colour = _STATE_COLOURS.get(state, "#555")
    return (f'<span style="background:{colour};color:#fff;border-radius:3px;'
            f'padding:0 4px">{html.escape(state)}</span>')


def _ts_state(ep: EndpointStats) -> str:
    analysis = ep.get("analysis")
    if analysis is None:
        return ""
    if not analysis["sync"]:
        return "no sync"
    active = sorted({c["check"] for c in analysis["active"]})
    return "ok" if not active else ", ".join(active)


def route_html(s: RouteStats) -> str:
    """A route's stats as a compact HTML table."""
    e = html.escape
    head = (f"<b>route {e(s['name'])}</b> {_badge(s['state'])} on air "
            f"<b>{e(s['switch']['active'] or 'nothing')}</b>, up {s['uptime_s']:.0f} s")
    if s["switch"]["locked"]:
        head += f", locked to {e(s['switch']['locked'])}"
    rows = []
    for role, eps in (("in", s["inputs"]), ("out", s["outputs"])):
        for ep in eps:
            srt = ep.get("srt")
            rtt, loss = ("", "") if not srt else (f"{srt['rtt_ms']:.1f}", str(srt["loss"]))
            rows.append(
                "<tr>"
                f"<td>{role}</td><td>{e(str(ep.get('id')))}</td><td>{e(str(ep.get('kind')))}</td>"
                f"<td>{_badge(str(ep.get('state')))}{' ●' if ep.get('active') else ''}</td>"
                f"<td style='text-align:right'>{_mbps(ep.get('bitrate_bps'))}</td>"
                f"<td style='text-align:right'>{ep.get('drops', 0)}</td>"
                f"<td style='text-align:right'>{rtt}</td>"
                f"<td style='text-align:right'>{loss}</td>"
                f"<td>{e(_ts_state(ep))}</td>"
                f"<td>{e(ep.get('last_error') or '')}</td>"
                "</tr>"
            )
    table = (
        "<table style='font-size:90%'><tr><th></th><th>id</th><th>kind</th><th>state</th>"
        "<th>Mb/s</th><th>drops</th><th>RTT ms</th><th>loss</th><th>TR 101 290</th>"
        "<th>last error</th></tr>" + "".join(rows) + "</table>"
    )
    switches = "".join(
        f"<li>{datetime.fromtimestamp(sw['at'], UTC).strftime('%H:%M:%S')} "
        f"{e(str(sw['from']))} → {e(str(sw['to']))} ({e(sw['reason'])})</li>"
        for sw in s["switch"]["history"][-3:]
    )
    tail = f"<div>last switches:<ul style='margin:0'>{switches}</ul></div>" if switches else ""
    return f"<div>{head}{table}{tail}</div>"


class StatsView:
    """Stats that display themselves: HTML in Jupyter, text in a REPL. ``stats`` is the
    plain list of route stats (:meth:`castway.Gateway.stats`), unchanged."""

    def __init__(self, stats: Sequence[RouteStats]) -> None:
        self.stats = list(stats)

    def _repr_html_(self) -> str:
        if not self.stats:
            return "<div>no routes</div>"
        return "".join(route_html(s) for s in self.stats)

    def __repr__(self) -> str:
        return "\n".join(route_text(s) for s in self.stats) or "no routes"
