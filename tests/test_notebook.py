"""castway in a notebook (issue 15): snapshots and frames from a decode branch off the hub,
waiting on states and events, stats as tables and plots, and the docs notebook run top to
bottom in a real Jupyter kernel."""

from __future__ import annotations

import asyncio
import io
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import castway
from castway import cli
from castway.client import Client
from castway.errors import ClosedError, ConfigError, NotFoundError, TimedOutError
from castway.server import run_server
from castway.server.limits import Limits
from castway.v1 import route_pb2

from support import sha256, wait_until
from support.control import ADMIN, CODE, Server, ep, expect, spec, test_input
from support.net import free_port
from support.peers import Peers
from support.senders import UdpSender, gst_udp_encoder, live_sender

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")
PIL_Image = pytest.importorskip("PIL.Image")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "notebooks" / "castway.ipynb"

# videotestsrc's SMPTE pattern: the seven 75% bars of the top two thirds, left to right, as
# (red, green, blue) high (1) or low (0).
SMPTE_BARS = [(1, 1, 1), (1, 1, 0), (0, 1, 1), (0, 1, 0), (1, 0, 1), (1, 0, 0), (0, 0, 1)]


@pytest.fixture(scope="module")
def lab() -> Iterator[castway.Route]:
    """A 25 fps SMPTE test route shared by the tests that only look at its pictures."""
    with castway.Gateway() as gw:
        route = gw.add_route("lab", "test://?size=640x360&fps=25&pattern=smpte")
        route.wait_for("live", timeout=20)
        yield route


def bar_colours(rgb: Any, width: int, height: int) -> list[tuple[int, int, int]]:
    """High/low of each channel at the middle of each of the seven top bars."""
    y = height // 3
    out = []
    for i in range(7):
        x = int((i + 0.5) * width / 7)
        r, g, b = (int(v) for v in rgb[y, x][:3])
        out.append((int(r > 128), int(g > 128), int(b > 128)))
    return out


def test_snapshot_of_smpte_has_the_bar_colours_in_place(lab: castway.Route) -> None:
    # The branch joins as an output does: it starts from the GOP the hub keeps.
    wait_until(lambda: lab.stats()["gop_cache"]["gops"], 20, "a whole GOP kept")
    bursts = lab.stats()["gop_cache"]["bursts"]
    image = lab.snapshot(format="png", timeout=10)
    assert lab.stats()["gop_cache"]["bursts"] == bursts + 1
    assert (image.width, image.height) == (640, 360)
    assert image._repr_png_() == image.data and image._repr_jpeg_() is None
    pixels = np.asarray(PIL_Image.open(io.BytesIO(image.data)).convert("RGB"))
    assert pixels.shape == (360, 640, 3)
    assert bar_colours(pixels, 640, 360) == SMPTE_BARS


def test_a_jpeg_snapshot_of_an_input_is_scaled_to_the_size_asked(lab: castway.Route) -> None:
    image = lab.snapshot("in0", size=(320, 180), timeout=10)
    assert image.format == "jpeg" and image.data[:2] == b"\xff\xd8"
    assert PIL_Image.open(io.BytesIO(image.data)).size == (320, 180) == image.size
    pixels = np.asarray(PIL_Image.open(io.BytesIO(image.data)).convert("RGB"))
    assert bar_colours(pixels, 320, 180) == SMPTE_BARS


def test_a_snapshot_of_a_standby_input_shows_that_input_not_the_output(
    gateway: castway.Gateway,
) -> None:
    route = gateway.add_route("two", {"main": "test://?size=320x180&pattern=smpte&audio=0",
                                      "backup": "test://?size=320x180&pattern=red&audio=0"})
    route.wait_for("live", timeout=20)
    backup = np.asarray(PIL_Image.open(io.BytesIO(
        route.snapshot("backup", format="png", timeout=10).data)).convert("RGB"))
    r, g, b = (float(backup[..., i].mean()) for i in range(3))
    assert r > 200 and g < 40 and b < 40, (r, g, b)
    out = np.asarray(PIL_Image.open(io.BytesIO(
        route.snapshot(format="png", timeout=10).data)).convert("RGB"))
    assert bar_colours(out, 320, 180) == SMPTE_BARS
    assert route.stats()["switch"]["active"] == "main"


def test_frames_from_a_25_fps_source_at_fps_5_come_five_a_second(lab: castway.Route) -> None:
    with lab.frames(fps=5, size=(320, 180)) as frames:
        got = []
        for frame in frames:
            got.append(frame)
            if (frame.pts or 0) - (got[0].pts or 0) >= 4.0 or len(got) >= 100:
                break
    assert all(f.image.shape == (180, 320, 3) and f.image.dtype == np.uint8 for f in got)
    pts = [f.pts for f in got]
    assert all(b > a for a, b in itertools.pairwise(pts)), pts
    # Counted over four seconds of the stream's own time: 5 a second, one either side.
    in_window = [p for p in pts if p < pts[0] + 4.0]
    assert 19 <= len(in_window) <= 21, pts
    assert bar_colours(got[-1].image, 320, 180) == SMPTE_BARS


def test_a_consumer_sleeping_two_seconds_gets_a_recent_frame(lab: castway.Route) -> None:
    with lab.frames(fps=25, size=(160, 90), format="gray") as frames:
        first = frames.next()
        assert first.image.shape == (90, 160)
        time.sleep(2)  # the slow consumer under test
        late = frames.next()
        stats = frames.stats()
    # The newest frame, not the one queued after the first (0.04 s later).
    assert late.pts is not None and first.pts is not None
    assert late.pts - first.pts >= 1.5, (first.pts, late.pts)
    assert stats["skipped"] >= 30, stats
    assert stats["dropped_packets"] == 0, stats


def test_outputs_stay_bit_exact_while_frames_are_decoded(
    gateway: castway.Gateway, udp_capture: Any, ts_file: Path
) -> None:
    in_port = free_port()
    cap = udp_capture()
    # No slate: what the receiver gets is the input's bytes alone.
    route = gateway.add_route(
        "exact", f"udp://127.0.0.1:{in_port}", f"udp://127.0.0.1:{cap.port}", slate=False
    )
    data = ts_file.read_bytes()
    data = data[: len(data) // 1316 * 1316]
    with route.frames(fps=10, size=(320, 180)) as frames:
        sender = UdpSender(data, in_port, bitrate=len(data) * 8 / 4)
        decoded = 0
        while sender.thread.is_alive() and decoded < 1000:
            try:
                frames.next()
                decoded += 1
            except TimedOutError:
                break
        sender.join()
        stats = frames.stats()
    wait_until(lambda: cap.size >= len(data), 10, "every byte at the receiver")
    assert sha256(cap.data[: len(data)]) == sha256(data)
    assert decoded >= 10, stats
    assert stats["bytes"] > 0
    out = route.stats()["outputs"][0]
    assert out["drops"] == 0 and out["bytes"] == len(data) == cap.size


def is_red(image: Any) -> bool:
    r, g, b = (float(image[..., i].mean()) for i in range(3))
    return r > 200 and g < 40 and b < 40


def test_frames_go_on_across_switches_between_inputs_of_other_program_layouts(
    gateway: castway.Gateway, peers: Peers, ts_file: Path
) -> None:
    # ffmpeg and mpegtsmux both send version 0 of their PAT and PMT, with the program on other
    # PIDs: the decode branch follows each switch only if the tables it gets say they changed.
    ff_port, gst_port = free_port(), free_port()
    route = gateway.add_route(
        "layouts",
        {"ffmpeg": f"udp://127.0.0.1:{ff_port}", "gst": f"udp://127.0.0.1:{gst_port}"},
        slate=False,
    )
    live_sender(peers, ts_file, f"udp://127.0.0.1:{ff_port}?pkt_size=1316")
    peers.start(gst_udp_encoder(gst_port, pattern="red"))
    wait_until(lambda: all(i["healthy"] for i in route.stats()["inputs"]), 30, "both inputs")
    with route.frames(fps=5, size=(160, 90), timeout=10) as frames:
        assert not is_red(frames.next().image), "ffmpeg's testsrc2 first"
        for target, red in [("gst", True), ("ffmpeg", False)]:
            route.switch_to(target)
            wait_until(lambda t=target: route.stats()["switch"]["active"] == t, 15,
                       f"{target} on air")
            # A running frames() keeps yielding, now the new input's pictures (5 a second:
            # at most 10 s of frames until one shows it).
            for _ in range(50):
                if is_red(frames.next().image) == red:
                    break
            else:
                raise AssertionError(f"no frame of {target} after the switch")
    sw = route.stats()["switch"]
    # Both ways, the PAT and the PMT each took a new version.
    assert sw["psi_versions_bumped"] >= 4, sw
    assert sw["psi_multi_packet"] == 0, sw


def test_a_snapshot_of_a_route_without_data_times_out_naming_it(
    gateway: castway.Gateway,
) -> None:
    route = gateway.add_route("silent", f"udp://127.0.0.1:{free_port()}")
    with pytest.raises(TimedOutError, match=r"route `silent`.*no data arrived"):
        route.snapshot(timeout=0.5)


def test_a_route_removed_during_frames_or_a_snapshot_ends_the_wait_with_closed_error(
    gateway: castway.Gateway,
) -> None:
    """Not a TimedOutError after the whole wait: the route stopping ends it."""
    for n, wait in enumerate([
        lambda r: r.frames(timeout=30).next(),
        lambda r: r.snapshot(timeout=30),
    ]):
        name = f"gone{n}"
        route = gateway.add_route(name, f"udp://127.0.0.1:{free_port()}", slate=False)
        remover = threading.Thread(target=gateway.remove_route, args=(name,))
        remover.start()
        try:
            with pytest.raises(ClosedError, match=f"route `{name}`"):
                wait(route)
        finally:
            remover.join(timeout=30)


def test_pictures_that_cannot_be_are_refused_saying_why(gateway: castway.Gateway) -> None:
    route = gateway.add_route("plain", [
        f"udp://127.0.0.1:{free_port()}",
        f"udp://127.0.0.1:{free_port()}?standby=cold",
    ], slate=False)
    with pytest.raises(NotFoundError, match=r"input `slate` .*slate=false"):
        route.snapshot("slate", timeout=30)
    with pytest.raises(TimedOutError, match="cold standby"):
        route.snapshot("in1", timeout=0.3)
    for size in [(-1, 100), (100, 0)]:
        with pytest.raises(ConfigError, match=f"size {size[0]}x{size[1]}"):
            route.snapshot(size=size)
        with pytest.raises(ConfigError, match=f"size {size[0]}x{size[1]}"):
            route.frames(size=size)


def test_frames_of_an_input_come_at_the_size_asked(lab: castway.Route) -> None:
    with lab.frames(input="in0", size=(160, 90), fps=5, timeout=10) as frames:
        frame = frames.next()
    assert frame.image.shape == (90, 160, 3)


def test_closing_or_abandoning_frames_detaches_the_branch(lab: castway.Route) -> None:
    """Closed (or dropped unclosed), a Frames' branch takes no more data and is stopped."""
    import gc

    def route_bytes() -> int:
        return int(lab.stats()["inputs"][0]["bytes"])

    closed = lab.frames(fps=5, timeout=10)
    closed.next()
    closed.close()
    abandoned = lab.frames(fps=5, timeout=10)
    abandoned.next()
    native = abandoned._native
    del abandoned
    gc.collect()
    taken = [closed.stats()["bytes"], native.stats()["bytes"]]
    start = route_bytes()
    wait_until(lambda: route_bytes() > start + 200_000, 20, "more data through the route")
    assert [closed.stats()["bytes"], native.stats()["bytes"]] == taken
    with pytest.raises(ClosedError, match="decode branch"):
        closed.next()


def test_frames_that_time_out_name_the_route(gateway: castway.Gateway) -> None:
    route = gateway.add_route("quiet", f"udp://127.0.0.1:{free_port()}", slate=False)
    with route.frames(timeout=0.3) as frames, \
            pytest.raises(TimedOutError, match="frame of route `quiet`"):
        frames.next()


def test_ctrl_c_ends_a_wait_for_a_picture_or_a_state(gateway: castway.Gateway) -> None:
    """Each wait looks for signals at least once a second: a SIGINT to the main thread raises
    KeyboardInterrupt there, not a TimedOutError after the whole wait."""
    import signal
    route = gateway.add_route("hush", f"udp://127.0.0.1:{free_port()}", slate=False)
    main = threading.get_ident()
    for wait in [
        lambda: route.wait_for("live", timeout=30),
        lambda: route.snapshot(timeout=30),
        lambda: route.frames(timeout=30).next(),
    ]:
        # The signal comes while the wait blocks in Rust (or just before it, which Python
        # raises at once too); nothing tells this thread when the wait started.
        timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                wait()
        finally:
            timer.join(timeout=5)


def test_bad_picture_requests_are_refused_naming_what_is_wrong(lab: castway.Route) -> None:
    with pytest.raises(ConfigError, match="tiff"):
        lab.snapshot(format="tiff")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="size 3x2"):
        lab.frames(size=(3, 2))
    with pytest.raises(ConfigError, match="fps"):
        lab.frames(fps=0)
    with pytest.raises(NotFoundError, match="input `nope`"):
        lab.snapshot("nope")
    with pytest.raises(ValueError, match="timeout"):
        lab.snapshot(timeout=-1)


def test_picture_formats_are_checked_before_a_branch_starts(lab: castway.Route) -> None:
    # Frames are pixels for numpy; a snapshot is an image Jupyter shows.
    for fmt in ("jpeg", "jpg", "png"):
        with pytest.raises(ConfigError, match=f"format must be rgb, bgr or gray, not `{fmt}`"):
            lab.frames(format=fmt)  # type: ignore[arg-type]
    for fmt in ("rgb", "bgr", "gray"):
        with pytest.raises(ConfigError, match=f"format must be jpeg or png, not `{fmt}`"):
            lab.snapshot(format=fmt)  # type: ignore[arg-type]


def test_history_of_an_srt_listener_without_callers_has_no_rtt_or_loss(
    gateway: castway.Gateway,
) -> None:
    route = gateway.add_route("quiet", "test://?size=320x180",
                              {"srt": f"srt://:{free_port()}?mode=listener"})
    route.wait_for("live", timeout=20)
    sample = wait_until(lambda: route.history(60)[-1:], 10, "a sample")[0]
    srt = next(e for e in sample["endpoints"] if e["id"] == "srt")
    assert (srt["rtt_ms"], srt["loss"]) == (None, None)
    assert route.history_frame(60)["rtt_ms"].isna().all()


def test_history_takes_a_finite_number_of_seconds_above_zero(lab: castway.Route) -> None:
    for bad in (float("nan"), float("inf"), 0.0, -5.0):
        with pytest.raises(ConfigError, match="seconds must be a finite number above 0"):
            lab.history(bad)


def test_wait_for_returns_when_live_and_times_out_naming_the_state(
    gateway: castway.Gateway,
) -> None:
    route = gateway.add_route("w", "test://?size=320x180&audio=0")
    route.wait_for("live", timeout=20)
    assert route.stats()["state"] == "live"
    silent = gateway.add_route("w2", f"udp://127.0.0.1:{free_port()}", slate=False)
    with pytest.raises(TimedOutError, match="`waiting`, not `live`"):
        silent.wait_for("live", timeout=0.3)
    with pytest.raises(ConfigError, match="state must be one of"):
        silent.wait_for("dancing", timeout=0.1)  # type: ignore[arg-type]


def test_aevents_yields_the_events_of_the_log_in_order(gateway: castway.Gateway) -> None:
    async def first_three() -> list[castway.Event]:
        got: list[castway.Event] = []
        async for ev in gateway.aevents(timeout=10):
            got.append(ev)
            if len(got) == 3:
                break
        return got

    gateway.emit("template_created", name="a")
    gateway.emit("template_created", name="b")
    gateway.emit("template_created", name="c")
    events = asyncio.run(first_three())
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert [e.get("name") for e in events] == ["a", "b", "c"]


def test_stats_frame_has_one_row_per_endpoint_with_nested_columns(
    gateway: castway.Gateway,
) -> None:
    route = gateway.add_route("t", "test://?size=320x180", {"o": f"udp://127.0.0.1:{free_port()}"})
    route.wait_for("live", timeout=20)
    frame = route.stats_frame()
    assert list(frame["role"]) == ["input", "output"]
    assert list(frame["id"]) == ["in0", "o"]
    assert "analysis.errors.pat_error" in frame.columns
    assert frame.loc[frame["role"] == "input", "analysis.sync"].item() is True
    assert len(gateway.stats_frame()) == 2


def test_history_shows_a_switch_and_plot_marks_it(gateway: castway.Gateway) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    route = gateway.add_route(
        "h", ["test://?size=320x180&pattern=ball", "test://?size=320x180&pattern=smpte"],
        loss_timeout_ms=300,
    )
    route.wait_for("live", timeout=20)
    wait_until(lambda: len(route.history(60)) >= 2, 10, "two samples")
    route.switch_to("in1")
    route.wait_switch(timeout=10)
    wait_until(lambda: route.history(60)[-1]["active"] == "in1", 10, "a sample after it")
    h = route.history_frame(60)
    assert {"in0", "in1"} <= set(h["active"].dropna())
    assert h["switches"].iloc[-1] == 1
    assert (h.groupby("id")["bitrate_bps"].max() > 0).all()
    fig = route.plot(60)
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"]
    assert len(lines) == 1, "one switch marked"
    assert any("in1" in t.get_text() for t in fig.axes[0].texts)


def test_displays_show_the_route_in_html_and_text(lab: castway.Route) -> None:
    html = lab._repr_html_()
    assert "route lab" in html and "live" in html and "in0" in html
    text = repr(lab)
    assert text.startswith("<castway.Route 'lab' live, on air in0")


def test_importing_castway_needs_no_display_library(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('pandas', 'matplotlib', 'numpy', 'IPython', 'PIL'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import castway\n"
        "with castway.Gateway() as gw:\n"
        "    r = gw.add_route('x', 'test://?size=320x180')\n"
        "    print(repr(r)); r._repr_html_()\n"
        "    try:\n"
        "        r.stats_frame()\n"
        "    except ImportError as e:\n"
        "        print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "<castway.Route 'x'" in out
    assert "pip install 'castway[notebook]'" in out


def test_snapshot_over_grpc_for_a_viewer_and_from_the_cli(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.create(
        "cam", spec([ep(test_input(), "main"), ep(f"udp://127.0.0.1:{free_port()}", "backup")])
    )
    viewer = server.client_with(server.key("viewer"))
    get = lambda **kw: viewer.routes.GetSnapshot(  # noqa: E731
        route_pb2.GetSnapshotRequest(**kw), metadata=viewer.metadata, timeout=30
    )
    wait_until(lambda: server.get("cam").status.state == "live", 20, "the route live")
    snap = get(name="cam", timeout_ms=10_000)
    assert snap.format == route_pb2.IMAGE_FORMAT_JPEG and snap.data[:2] == b"\xff\xd8"
    assert (snap.width, snap.height) == (320, 240)
    assert PIL_Image.open(io.BytesIO(snap.data)).size == (320, 240)
    png = get(name="cam", input_id="main", format=route_pb2.IMAGE_FORMAT_PNG, width=160,
              height=120, timeout_ms=10_000)
    assert png.data[:8] == b"\x89PNG\r\n\x1a\n" and (png.width, png.height) == (160, 120)
    # What cannot be: each refused with its status, naming what is wrong.
    assert "nope" in expect(CODE.NOT_FOUND, lambda: get(name="nope"))
    assert "in9" in expect(CODE.NOT_FOUND, lambda: get(name="cam", input_id="in9"))
    assert "width" in expect(CODE.INVALID_ARGUMENT, lambda: get(name="cam", width=320))
    assert "size 3x3" in expect(CODE.INVALID_ARGUMENT, lambda: get(name="cam", width=3, height=3))
    assert "timeout_ms" in expect(CODE.INVALID_ARGUMENT,
                                  lambda: get(name="cam", timeout_ms=60_000))
    assert "format" in expect(CODE.INVALID_ARGUMENT, lambda: get(name="cam", format=7))
    # The silent backup never delivers: no picture, said in time.
    assert "backup" in expect(CODE.DEADLINE_EXCEEDED,
                              lambda: get(name="cam", input_id="backup", timeout_ms=300))
    viewer.close()

    out = tmp_path / "thumb.png"
    base = ["--addr", server.addr, "--key", ADMIN]
    assert cli.main(["route", "snapshot", "cam", "-o", str(out), "--size", "160x120", *base]) == 0
    assert "160x120 PNG" in capsys.readouterr().out
    assert PIL_Image.open(out).size == (160, 120)
    # A file that cannot be written, a wait that is not one: a line each, no traceback.
    nowhere = tmp_path / "no" / "such" / "x.jpg"
    assert cli.main(["route", "snapshot", "cam", "-o", str(nowhere), *base]) == 1
    err = capsys.readouterr().err
    assert f"{nowhere.parent} is not a directory" in err and "Traceback" not in err
    bmp = tmp_path / "x.bmp"
    assert cli.main(["route", "snapshot", "cam", "-o", str(bmp), *base]) == 1
    assert "JPEG (.jpg, .jpeg) or PNG (.png), not .bmp" in capsys.readouterr().err
    assert not bmp.exists()
    for wait in ["0", "-1", "nan", "inf"]:
        with pytest.raises(SystemExit):
            cli.main(["route", "snapshot", "cam", "-o", str(out), "--wait", wait, *base])
        assert "positive number of seconds" in capsys.readouterr().err
    server.client.routes.StopRoute(route_pb2.StopRouteRequest(name="cam"),
                                   metadata=server.client.metadata, timeout=30)
    assert cli.main(["route", "snapshot", "cam", "-o", str(tmp_path / "x.jpg"), *base]) == 1
    assert "FAILED_PRECONDITION" in capsys.readouterr().err


def test_snapshots_waiting_at_once_are_bounded(tmp_path: Path) -> None:
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1,
                    limits=Limits(max_snapshots=1)) as running, \
            Client(f"127.0.0.1:{running.port}", key=ADMIN) as c:
        c.routes.CreateRoute(route_pb2.CreateRouteRequest(
            name="quiet", spec=spec([f"udp://127.0.0.1:{free_port()}"])),
            metadata=c.metadata, timeout=30)
        get = lambda ms: c.routes.GetSnapshot(  # noqa: E731
            route_pb2.GetSnapshotRequest(name="quiet", timeout_ms=ms), metadata=c.metadata,
            timeout=30)
        # One call waits (for a picture that never comes) ...
        first: list[str] = []
        waiting = threading.Thread(
            target=lambda: first.append(expect(CODE.DEADLINE_EXCEEDED, lambda: get(5_000)))
        )
        waiting.start()

        # ... so another is refused at once rather than take a second worker.
        refusals: list[str] = []

        def refused() -> bool:
            try:
                get(1)
            except grpc.RpcError as e:
                if e.code() == CODE.RESOURCE_EXHAUSTED:
                    refusals.append(str(e.details()))
            return bool(refusals)

        wait_until(refused, 10, "a second snapshot refused while one waits")
        assert "max_snapshots" in refusals[0]
        waiting.join(timeout=30)
        assert not waiting.is_alive() and "no data arrived" in first[0]
        # Done waiting, it leaves room for the next.
        expect(CODE.DEADLINE_EXCEEDED, lambda: get(1))


def test_the_docs_notebook_runs_top_to_bottom_in_a_kernel(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "the notebook is committed without outputs"
    client = nbclient.NotebookClient(nb, timeout=90, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    kinds = {o.get("output_type") for c in nb.cells for o in c.get("outputs", [])}
    assert "error" not in kinds
    images = [o for c in nb.cells for o in c.get("outputs", [])
              if "image/jpeg" in o.get("data", {}) or "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the snapshot and the plot show"
