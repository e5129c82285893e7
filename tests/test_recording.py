"""Recording: keyframe-clean TS segments that are exact slices of what the outputs carry,
written as `.part` and renamed, without disturbing the outputs (docs/recording.md)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import castway
from castway.cli import main
from castway.client import Client
from castway.server import run_server
from castway.server.recording.catalog import Segment, iter_all
from castway.server.recording.retention import free_bytes
from castway.v1 import recording_pb2, route_pb2, spec_pb2, template_pb2

from support import wait_until
from support.clips import decode_errors, make_clip
from support.control import ADMIN, CODE, ServeProcess, Server, expect, spec, test_input
from support.net import free_port
from support.peers import Peers, srt_receiver
from support.senders import UdpSender
from support.ts import ts_continuity, whole_gops

PACKET = 188


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """12 s at 25 fps with a keyframe every second (ffmpeg puts PAT/PMT before each)."""
    path = tmp_path_factory.mktemp("rec") / "gop1s.ts"
    return make_clip(path, 12, "320x180", 500, gop=25).read_bytes()


def segments_closed(gateway: castway.Gateway, route: str) -> list[dict[str, Any]]:
    """The records of the segments `route` closed, in order."""
    return [
        json.loads(e["segment"])
        for e in gateway.wait_events(0, 0.0, 100_000)
        if e["kind"] == "segment_closed" and e.get("route") == route
    ]


def srt_output_with_receiver(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any, name: str = "r"
) -> tuple[castway.Route, int, Any]:
    """A route from a UDP input to an SRT listener output, with srt-live-transmit connected
    to it (forwarding to a UDP capture)."""
    in_port, out_port = free_port(), free_port()
    route = gateway.add_route(
        name, f"udp://127.0.0.1:{in_port}", f"srt://127.0.0.1:{out_port}?mode=listener"
    )
    cap = udp_capture()
    srt_receiver(peers, out_port, cap)
    wait_until(
        lambda: route.stats()["outputs"][0]["srt"]["callers"], 10, "the receiver connected"
    )
    return route, in_port, cap


def test_ts_segments_start_clean_and_join_into_what_an_srt_receiver_got(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any, tmp_path: Path, gop_clip: bytes
) -> None:
    route, in_port, cap = srt_output_with_receiver(gateway, peers, udp_capture)
    rec = tmp_path / "rec"
    route.recording.start(rec, segment_ms=2500, path="{route}/%Y%m%d/%H%M%S")
    assert route.recording.stats()["state"] == "recording"
    UdpSender(gop_clip, in_port, bitrate=4e6).join()
    out_bytes = len(gop_clip)
    wait_until(lambda: route.stats()["outputs"][0]["bytes"] >= out_bytes, 10, "all sent out")
    wait_until(lambda: cap.size >= out_bytes, 10, "all at the receiver")
    route.recording.stop()

    segs = segments_closed(gateway, "r")
    assert len(segs) >= 3, segs
    assert not list(rec.rglob("*.part"))
    stats = route.recording.stats()
    assert stats["state"] == "stopped"
    assert stats["drops"] == 0 and stats["errors"] == 0
    assert stats["segments"] == len(segs)
    assert stats["bytes"] == sum(s["bytes"] for s in segs)
    joined = b""
    for s in segs:
        data = (rec / s["path"]).read_bytes()
        assert len(data) == s["bytes"]
        assert s["psi"] and data[1:3] == b"\x40\x00", "a segment starts with the PAT"
        assert decode_errors(rec / s["path"]) == "", s["path"]
        assert s["keyframes"] and s["keyframes"][0] == 0
        assert not s["switch"] and not s["gap"]
        joined += data
    # Cut at the first keyframe at or after 2.5 s: within one GOP (1 s) of the target.
    for s in segs[:-1]:
        assert 2.5 <= s["duration"] < 3.5 + 0.05, s
    # Exact slices of the output: together they are a run of the receiver's bytes, and the
    # recording misses nothing from its first PAT to the end.
    assert cap.data.find(joined) >= 0
    assert gop_clip.endswith(joined)
    # Skipped: what came before the first cut, and what the hub sent while the stop waited
    # for a frame's start (the slate, once the input was lost).
    assert stats["skipped"] * PACKET >= len(gop_clip) - len(joined)
    assert ts_continuity(joined)["cc_errors"] == 0


def test_a_sender_restart_gives_each_segment_its_own_duration_and_flags_where_it_fell(
    gateway: castway.Gateway, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "a.ts", 5, "320x180", 500, gop=25).read_bytes()
    in_port = free_port()
    route = gateway.add_route("restart", f"udp://127.0.0.1:{in_port}")
    route.recording.start(tmp_path / "rec", segment_ms=2000)
    UdpSender(clip, in_port, bitrate=len(clip) * 8 / 5).join()
    restarted = time.time()
    # The sender starts over: its timestamps begin again where the first run's began.
    UdpSender(clip, in_port, bitrate=len(clip) * 8 / 5).join()
    route.recording.stop()
    segs = segments_closed(gateway, "restart")
    assert len(segs) >= 4, segs
    for seg in segs:
        # Each within one GOP (1 s) of its wall-clock span, whatever the timeline did.
        assert abs(seg["duration"] - (seg["end"] - seg["start"])) <= 1.0, seg
    [at] = [s for s in segs if s["start"] <= restarted < s["end"]]
    assert at["switch"], at


# The control server: policy in the spec, the catalog, RecordingService and the CLI.


def rec_spec(in_port: int, **policy: Any) -> spec_pb2.RouteSpec:
    return spec([f"udp://127.0.0.1:{in_port}"], recording=spec_pb2.Recording(**policy))


def list_segments(server: Server, route: str, **times: float) -> list[recording_pb2.Segment]:
    req = recording_pb2.ListSegmentsRequest(route=route)
    for name, t in times.items():
        getattr(req, name).FromNanoseconds(int(t * 1e9))
    reply = server.client.recordings.ListSegments(req, metadata=server.client.metadata)
    return list(reply.segments)


def test_a_policy_in_the_spec_records_and_the_catalog_lists_a_time_range(
    server: Server, gop_clip: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    in_port = free_port()
    server.create("news", rec_spec(in_port, enabled=True, segment_ms=2000))
    root = server.running.recordings.root  # type: ignore[union-attr]
    wait_until(
        lambda: server.get("news").status.recording.state == "recording", 10, "recording"
    )
    UdpSender(gop_clip, in_port, bitrate=4e6).join()
    wait_until(lambda: len(list_segments(server, "news")) >= 4, 10, "segments cataloged")
    segs = list_segments(server, "news")
    for s in segs:
        data = (root / s.path).read_bytes()
        assert s.route == "news" and s.bytes == len(data) and data[1:3] == b"\x40\x00"
        assert s.keyframes[0] == 0 and s.format == "ts" and not s.repaired
    # A range maps to the segments overlapping it: one strictly inside the second segment (its
    # bounds as float seconds lose nanoseconds, so a range ending at the third's start could
    # reach into it).
    s1, e1 = segs[1].start.ToNanoseconds() / 1e9, segs[1].end.ToNanoseconds() / 1e9
    inside = (s1 + (e1 - s1) / 4, e1 - (e1 - s1) / 4)
    one = list_segments(server, "news", **{"from": inside[0]}, to=inside[1])
    assert [s.path for s in one] == [segs[1].path]
    assert list_segments(server, "news", to=segs[0].start.ToNanoseconds() / 1e9 - 60) == []
    # The same from the CLI.
    code = main([
        "recording", "list", "news", "--addr", server.addr, "--key", ADMIN,
        "--from", str(inside[0]), "--to", str(inside[1]),
    ])
    out = capsys.readouterr().out
    assert code == 0 and segs[1].path in out and segs[0].path not in out


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"path": "../elsewhere/%Y"}, "spec.recording.path"),
        ({"path": "/abs/{route}"}, "spec.recording.path"),
        ({"path": "{route}/../../x"}, "spec.recording.path"),
        ({"path": "{route}/%Y-%m-%d/%H"}, "spec.recording.path"),
        ({"path": "{route}/%H-%M-%S"}, "spec.recording.path"),
        ({"segment_ms": 10}, "spec.recording.segment_ms"),
        ({"format": "mkv"}, "spec.recording.format"),
        ({"format": "MP4"}, "spec.recording.format"),
        ({"max_age_s": 1}, "spec.recording.max_age_s"),
        ({"schedule": "mon 25:00-26:00"}, "spec.recording.schedule"),
        ({"schedule": "someday 10:00-11:00"}, "spec.recording.schedule"),
        ({"timezone": "Mars/Olympus_Mons"}, "spec.recording.timezone"),
    ],
)
def test_a_bad_recording_policy_is_refused_naming_its_field(
    server: Server, policy: dict[str, Any], field: str
) -> None:
    details = expect(
        CODE.INVALID_ARGUMENT, lambda: server.create("r", rec_spec(free_port(), **policy))
    )
    assert details.startswith(field), details


def test_a_route_inherits_its_recording_policy_from_its_template(server: Server) -> None:
    policy = spec_pb2.Recording(segment_ms=3000, path="x/{route}/%Y%m%d/%H%M%S")
    tmpl = spec_pb2.RouteSpec(recording=policy)
    server.client.templates.CreateTemplate(
        template_pb2.CreateTemplateRequest(name="t", spec=tmpl), metadata=server.client.metadata
    )
    s = rec_spec(free_port(), enabled=False)
    s.template = "t"
    r = server.create("r", s)
    assert r.resolved.recording.segment_ms == 3000
    assert r.resolved.recording.path == "x/{route}/%Y%m%d/%H%M%S"
    assert not r.resolved.recording.enabled
    assert r.status.recording.state == "stopped"


def test_start_pause_resume_stop_leave_an_srt_receiver_without_a_gap_or_cc_error(
    server: Server, peers: Peers, udp_capture: Any, gop_clip: bytes
) -> None:
    in_port, out_port = free_port(), free_port()
    server.create("r", spec(
        [f"udp://127.0.0.1:{in_port}"], [f"srt://127.0.0.1:{out_port}?mode=listener"],
        recording=spec_pb2.Recording(segment_ms=1000),
    ))
    cap = udp_capture()
    srt_receiver(peers, out_port, cap)
    wait_until(lambda: server.get("r").status.outputs[0].srt.callers, 10, "receiver connected")
    md = server.client.metadata
    rec = server.client.recordings

    def call(method: Any) -> Any:
        return method(recording_pb2.RecordingRequest(route="r"), metadata=md, timeout=30)

    def recording() -> Any:
        return server.get("r").status.recording

    def received(more: int) -> Callable[[], bool]:
        at = cap.size
        return lambda: cap.size >= at + more

    def written() -> Callable[[], bool]:
        at = recording().bytes
        return lambda: recording().bytes > at

    def a_segment_closed() -> Callable[[], bool]:
        return lambda: recording().segments >= 1

    # Each step waits for what must come before it, from when the step before ended: the
    # receiver a sixteenth further into the clip, the recorder writing, and before the last
    # stop a segment closed (the open one closes at the stop). Steps spaced by the receiver's
    # progress alone came so close on a loaded machine (it may take a second's data at once)
    # that a recording took no keyframe and closed no segment.
    # At 1 Mb/s the clip (12 s, 0.7 Mb/s) lasts 8 s: the steps need 6 s of it at most, and
    # the calls between them take some on a loaded machine.
    sixteenth = len(gop_clip) // 16
    steps: list[tuple[Callable[[], Callable[[], bool]], Any, str]] = [
        (lambda: received(sixteenth), rec.StartRecording, "recording"),
        (written, rec.PauseRecording, "paused"),
        (lambda: received(sixteenth), rec.ResumeRecording, "recording"),
        (written, rec.StopRecording, "stopped"),
        (lambda: received(sixteenth), rec.StartRecording, "recording"),
        (a_segment_closed, rec.StopRecording, "stopped"),
    ]
    sender = UdpSender(gop_clip, in_port, bitrate=1e6)
    for i, (ready, method, state) in enumerate(steps):
        wait_until(ready(), 20, f"what comes before step {i}")
        assert call(method).state == state
    sender.join()
    wait_until(lambda: cap.size >= len(gop_clip), 10, "every byte at the receiver")
    assert cap.data == gop_clip, "the receiver got every byte, in order"
    assert ts_continuity(cap.data)["cc_errors"] == 0
    status = server.get("r").status.recording
    assert status.segments >= 2 and status.skipped > 0 and status.drops == 0
    # Stopped by hand: the policy (off) does not start it again, nor does a tick.
    server.running.recordings.tick(time.time())  # type: ignore[union-attr]
    assert server.get("r").status.recording.state == "stopped"
    expect(CODE.FAILED_PRECONDITION, lambda: call(rec.PauseRecording))
    expect(CODE.NOT_FOUND, lambda: rec.StartRecording(
        recording_pb2.RecordingRequest(route="nope"), metadata=md, timeout=30))


def test_a_segment_open_at_kill_9_is_repaired_cataloged_and_recording_goes_on(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    first = ServeProcess(data)
    key = (data / "admin.key").read_text().strip()
    root = data / "media" / "recordings"
    with Client(f"127.0.0.1:{first.port}", key) as c:
        c.routes.CreateRoute(route_pb2.CreateRouteRequest(
            name="cam", spec=spec([test_input()], recording=spec_pb2.Recording(
                enabled=True, segment_ms=60_000))), metadata=c.metadata, timeout=30)
        wait_until(
            lambda: any(p.stat().st_size > 600_000 for p in root.rglob("*.ts.part")), 30,
            "a segment being written (its bytes on disk: flushed every second)",
        )
    part = next(root.rglob("*.ts.part"))
    first.stop(signal.SIGKILL)
    # What the crash left: maybe a packet cut short at the end.
    with part.open("ab") as f:
        f.write(b"\x47\x01\x00")
    second = ServeProcess(data)
    try:
        with Client(f"127.0.0.1:{second.port}", key) as c:
            repaired = Path(str(part)[: -len(".part")])
            assert repaired.exists() and not part.exists()
            data = repaired.read_bytes()
            assert len(data) % PACKET == 0 and data[1:3] == b"\x40\x00"
            # The open segment's last GOP may be cut short by the crash: whole GOPs decode.
            assert decode_errors(whole_gops(data, tmp_path / "gops.ts")) == ""
            rel = repaired.relative_to(root).as_posix()
            segs = c.recordings.ListSegments(
                recording_pb2.ListSegmentsRequest(route="cam"), metadata=c.metadata
            ).segments
            assert [(s.path, s.repaired) for s in segs] == [(rel, True)]
            assert segs[0].duration_s > 0 and segs[0].keyframes
            wait_until(lambda: c.routes.GetRoute(
                route_pb2.GetRouteRequest(name="cam"), metadata=c.metadata
            ).status.recording.segment_bytes > 0, 30, "recording again")
            now = c.routes.GetRoute(route_pb2.GetRouteRequest(name="cam"), metadata=c.metadata)
            assert now.status.recording.segment not in ("", rel)
    finally:
        second.stop(signal.SIGTERM)


def test_a_server_stopping_closes_every_recording_routes_segment_whole_and_catalogs_it(
    tmp_path: Path,
) -> None:
    # A stop asks every recorder to end its segment at a frame first, then waits for them
    # all at once (it waited for one after another: up to 1.5 s per recording route).
    names = [f"cam{i}" for i in range(4)]
    config = tmp_path / "castway.toml"
    config.write_text("".join(
        f'[routes.{n}]\ninputs = ["{test_input()}"]\n'
        "recording = { enabled = true, segment_ms = 60000 }\n"
        for n in names
    ))
    data = tmp_path / "data"
    root = data / "media" / "recordings"
    srv = ServeProcess(data, env={"CASTWAY_ADMIN_KEY": ADMIN}, args=("--config", str(config)))
    try:
        wait_until(
            lambda: all(
                any(p.stat().st_size > 100_000 for p in (root / n).rglob("*.ts.part"))
                for n in names
            ),
            60, "every route writing a segment",
        )
    finally:
        assert srv.stop(signal.SIGTERM) == 0, srv.text()
    from castway.server.recording.catalog import Catalog
    from castway.server.store import Store

    assert not list(root.rglob("*.part")), "every segment closed and renamed"
    rows = {s.path: s for s in iter_all(Catalog(Store(data)))}
    for n in names:
        [seg] = (root / n).rglob("*.ts")
        row = rows[seg.relative_to(root).as_posix()]
        assert not row.open and not row.repaired and row.bytes == seg.stat().st_size, row
        assert decode_errors(seg) == "", seg


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """10 s at about 2.6 Mb/s, a keyframe every second."""
    path = tmp_path_factory.mktemp("rec") / "big.ts"
    return make_clip(path, 10, "640x360", 2500, gop=25).read_bytes()


def deleted_events(server: Server) -> list[dict[str, Any]]:
    gw = server.running.control.gateway
    return [
        {**json.loads(e["segment"]), "route": e.get("route")}
        for e in gw.wait_events(0, 0.0, 100_000) if e["kind"] == "recording_deleted"
    ]


def test_retention_deletes_oldest_first_by_bytes_and_age_never_the_open_segment(
    server: Server, big_clip: bytes
) -> None:
    in_port = free_port()
    # Each segment in a directory of its own, so that deleting it leaves one empty.
    policy = {"enabled": True, "segment_ms": 1000, "path": "{route}/%Y%m%d/%H%M%S/seg"}
    server.create("r", rec_spec(in_port, **policy))
    recordings = server.running.recordings
    assert recordings is not None
    root = recordings.root
    UdpSender(big_clip, in_port, bitrate=8e6).join()
    wait_until(lambda: len(list_segments(server, "r")) >= 6, 10, "segments cataloged")
    segs = list_segments(server, "r")
    # A file removed by hand is noticed and leaves the catalog.
    (root / segs[-1].path).unlink()
    recordings.prune(time.time())
    assert segs[-1].path not in [s.path for s in list_segments(server, "r")]
    assert {"route": "r", "path": segs[-1].path, "reason": "missing"} in deleted_events(server)
    # Bytes: the oldest go until the route fits.
    segs = list_segments(server, "r")
    cap = sum(s.bytes for s in segs) // 2
    server.update("r", rec_spec(in_port, **policy, max_bytes=max(cap, 1 << 20)))
    recordings.prune(time.time())
    kept = list_segments(server, "r")
    assert sum(s.bytes for s in kept) <= max(cap, 1 << 20)
    assert kept and [s.path for s in kept] == [s.path for s in segs[-len(kept):]], "oldest first"
    kept_dirs = {(root / s.path).parent for s in kept}
    for s in segs[: len(segs) - len(kept)]:
        assert not (root / s.path).exists()
        d = (root / s.path).parent
        assert d in kept_dirs or not d.exists(), "a directory left empty went too"
    # Age: everything closed is older than a minute an hour from now; the open segment stays.
    open_seg = server.get("r").status.recording.segment
    assert open_seg and (root / f"{open_seg}.part").exists()
    server.update("r", rec_spec(in_port, **policy, max_age_s=60))
    recordings.prune(time.time() + 3600)
    assert list_segments(server, "r") == []
    assert (root / f"{open_seg}.part").exists()
    reasons = {e["reason"] for e in deleted_events(server)}
    assert reasons == {"missing", "bytes", "age"}


def test_a_deleted_routes_segments_are_pruned_by_its_last_policy(
    server: Server, gop_clip: bytes
) -> None:
    in_port = free_port()
    server.create("gone", rec_spec(in_port, enabled=True, segment_ms=1000, max_age_s=60))
    recordings = server.running.recordings
    assert recordings is not None
    UdpSender(gop_clip, in_port, bitrate=8e6).join()
    wait_until(lambda: len(list_segments(server, "gone")) >= 2, 10, "segments cataloged")
    recordings.prune(time.time())
    server.client.routes.DeleteRoute(route_pb2.DeleteRouteRequest(name="gone"),
                                     metadata=server.client.metadata, timeout=30)
    # The open segment closes when the route goes.
    wait_until(lambda: not list((recordings.root / "gone").rglob("*.part")) and not [
        s for s in iter_all(recordings.catalog) if s.route == "gone" and s.open
    ], 10, "the last segment closed")
    paths = [s.path for s in recordings.catalog.oldest(1000, "gone")]
    assert paths and all((recordings.root / p).exists() for p in paths)
    # An hour on, every segment of it is older than its policy's max_age_s.
    recordings.prune(time.time() + 3600)
    assert recordings.catalog.oldest(1000, "gone") == []
    assert not any((recordings.root / p).exists() for p in paths)
    assert {e["path"] for e in deleted_events(server) if e["reason"] == "age"} >= set(paths)
    # Nothing of it left: its limits are forgotten.
    recordings.prune(time.time() + 3600)
    assert "gone" not in recordings.catalog.retention()


def test_files_removed_by_hand_are_noticed_newest_first_a_share_of_the_catalog_a_pass(
    tmp_path: Path
) -> None:
    from castway.server.recording import retention as retention_mod
    from castway.server.recording.catalog import Catalog
    from castway.server.store import Store

    root = tmp_path / "rec"
    (root / "r").mkdir(parents=True)
    store = Store(tmp_path / "data")
    catalog = Catalog(store)
    rows = 30 * 1000
    with store._tx() as db:
        db.executemany(
            "INSERT INTO segments (path, route, format, start, end, duration, bytes, psi, "
            "switch, gap, repaired, keyframes, open) VALUES (?, 'r', 'ts', ?, ?, 1, 1, 1, 0, "
            "0, 0, '[]', 0)", [(f"r/s{i:05d}.ts", 1000.0 + i, 1001.0 + i) for i in range(rows)],
        )
    # The newest 1500 files are there but the newest of all, removed by hand; the older rows
    # have no file (removed long ago).
    for i in range(rows - 1500, rows - 1):
        (root / "r" / f"s{i:05d}.ts").write_bytes(b"")
    reported: list[tuple[str, str]] = []
    ret = retention_mod.Retention(root, catalog, lambda r, p, why: reported.append((p, why)))
    done = ret.run({}, 1e9)
    # A thirtieth of the catalog (1000 rows), the newest first: the one removed is among them.
    assert done.deleted == {"missing": [f"r/s{rows - 1:05d}.ts"]}
    assert catalog.count() == rows - 1
    ret.run({}, 1e9)
    # The next pass goes on from there: the next 1000, of which the older 500 have no file.
    assert catalog.count() == rows - 1 - 500, catalog.count()


def test_a_symbolic_link_in_the_recordings_directory_is_never_followed(
    server: Server, gop_clip: bytes, tmp_path: Path
) -> None:
    recordings = server.running.recordings
    assert recordings is not None
    root = recordings.root
    outside = tmp_path / "outside"
    outside.mkdir()
    root.mkdir(parents=True, exist_ok=True)
    (root / "linked").symlink_to(outside)
    # The writer refuses to make its directories through the link.
    in_port = free_port()
    server.create("linked", rec_spec(in_port, enabled=True, segment_ms=1000, max_age_s=60))
    wait_until(
        lambda: server.get("linked").status.recording.state == "recording", 10, "recording"
    )
    sender = UdpSender(gop_clip, in_port, bitrate=4e6)
    wait_until(lambda: server.get("linked").status.recording.errors > 0, 10, "an error")
    assert "symbolic link" in server.get("linked").status.recording.last_error
    sender.join()
    assert list(outside.rglob("*")) == [], "nothing was written through the link"
    # Crash repair leaves a `.part` reached through the link alone.
    part = outside / "planted.ts.part"
    part.write_bytes(gop_clip[: PACKET * 100])
    assert recordings.repair() == []
    assert part.read_bytes() == gop_clip[: PACKET * 100]
    # Retention drops a cataloged file reached through the link from the catalog, and does
    # not delete it.
    victim = outside / "old.ts"
    victim.write_bytes(gop_clip[: PACKET * 10])
    recordings.catalog.add(Segment(
        path="linked/old.ts", route="linked", format="ts", start=1.0, end=2.0, duration=1.0,
        bytes=PACKET * 10,
    ))
    recordings.prune(time.time() + 3600)
    assert victim.exists()
    assert "linked/old.ts" not in [s.path for s in list_segments(server, "linked")]
    assert {"route": "linked", "path": "linked/old.ts", "reason": "outside"} in deleted_events(
        server
    )


def test_only_a_recording_routes_free_space_floor_counts_and_never_one_beyond_the_volume(
    server: Server, gop_clip: bytes
) -> None:
    in_port = free_port()
    server.create("keep", rec_spec(in_port, enabled=True, segment_ms=1000))
    wait_until(lambda: server.get("keep").status.recording.state == "recording", 10, "recording")
    UdpSender(gop_clip, in_port, bitrate=8e6).join()
    wait_until(lambda: len(list_segments(server, "keep")) >= 3, 10, "segments cataloged")
    before = [s.path for s in list_segments(server, "keep")]
    recordings = server.running.recordings
    assert recordings is not None
    huge = 1 << 59
    # A stopped route's floor, and a recording route's floor larger than the volume.
    server.create("wipe", rec_spec(free_port(), enabled=True, min_free_bytes=huge),
                  desired_state=route_pb2.DESIRED_STATE_STOPPED)
    server.create("wipe2", rec_spec(free_port(), enabled=True, min_free_bytes=huge))
    wait_until(lambda: server.get("wipe2").status.recording.state == "recording", 10, "recording")
    recordings.prune(time.time())
    assert set(before) <= {s.path for s in list_segments(server, "keep")}
    assert "free_space" not in {e["reason"] for e in deleted_events(server)}
    # A floor the volume can meet, of a route recording, still holds.
    free = free_bytes(recordings.root)
    server.update("wipe2", rec_spec(free_port(), enabled=True, min_free_bytes=free + 1))
    recordings.prune(time.time())
    assert "free_space" in {e["reason"] for e in deleted_events(server)}


def test_open_catalog_rows_that_lost_their_segment_leave_the_catalog(server: Server) -> None:
    recordings = server.running.recordings
    assert recordings is not None
    root, catalog = recordings.root, recordings.catalog
    # An empty `.part` a crash left, listed as open: both go at repair.
    (root / "ghost").mkdir(parents=True, exist_ok=True)
    (root / "ghost/empty.ts.part").write_bytes(b"")
    catalog.add(Segment(path="ghost/empty.ts", route="ghost", format="ts", start=1.0, end=1.0,
                        duration=0.0, bytes=0, open=True))
    assert recordings.repair() == []
    assert not (root / "ghost/empty.ts.part").exists()
    assert catalog.get("ghost/empty.ts") is None
    # An open row no route writes, older than any segment lasts: it expires.
    catalog.add(Segment(path="ghost/lost.ts", route="ghost", format="ts", start=1.0, end=1.0,
                        duration=0.0, bytes=0, open=True))
    recordings.prune(time.time())
    assert catalog.get("ghost/lost.ts") is None
    assert {"route": "ghost", "path": "ghost/lost.ts", "reason": "missing"} in deleted_events(
        server
    )


def test_a_segment_that_cannot_be_renamed_is_reported_and_listed_as_its_part(
    server: Server, gop_clip: bytes
) -> None:
    recordings = server.running.recordings
    assert recordings is not None
    in_port = free_port()
    server.create("norename", rec_spec(in_port, enabled=True, segment_ms=60_000))
    UdpSender(gop_clip, in_port, bitrate=8e6).join()
    wait_until(lambda: server.get("norename").status.recording.segment, 10, "a segment open")
    seg = server.get("norename").status.recording.segment
    wait_until(lambda: recordings.catalog.get(seg) is not None, 10, "the open row")
    # A directory in the way of its final name: the rename at its close fails.
    (recordings.root / seg / "blocker").mkdir(parents=True)
    req = recording_pb2.RecordingRequest(route="norename")
    server.client.recordings.StopRecording(req, metadata=server.client.metadata)
    gw = server.running.control.gateway
    wait_until(
        lambda: any(e["kind"] == "recording_error" and e.get("route") == "norename"
                    and "cannot rename" in e.get("error", "")
                    for e in gw.wait_events(0, 0.0, 100_000)),
        10, "the error reported",
    )
    wait_until(lambda: recordings.catalog.get(seg) is None, 10, "the open row gone")
    # What it holds stays as its `.part`, listed under that name: retention sees it.
    part = recordings.root / f"{seg}.part"
    wait_until(lambda: recordings.catalog.get(f"{seg}.part") is not None, 10, "the .part listed")
    row = recordings.catalog.get(f"{seg}.part")
    assert row is not None and not row.open and row.bytes == part.stat().st_size > 0


def test_a_policy_change_restarts_a_running_recorder_with_its_new_path_and_length(
    server: Server, gop_clip: bytes
) -> None:
    recordings = server.running.recordings
    assert recordings is not None
    in_port = free_port()
    policy = {"enabled": True, "segment_ms": 1000, "path": "{route}/first/%Y%m%d/%H%M%S"}
    server.create("moving", rec_spec(in_port, **policy))
    wait_until(lambda: server.get("moving").status.recording.state == "recording", 10, "on")
    policy["path"] = "{route}/second/%Y%m%d/%H%M%S"
    server.update("moving", rec_spec(in_port, **policy))
    recordings.tick(time.time())
    UdpSender(gop_clip, in_port, bitrate=8e6).join()
    wait_until(lambda: len(list_segments(server, "moving")) >= 2, 10, "segments cataloged")
    paths = [s.path for s in list_segments(server, "moving")]
    assert all(p.startswith("moving/second/") for p in paths), paths


def test_an_operators_stop_does_not_outlive_its_route(server: Server) -> None:
    recordings = server.running.recordings
    assert recordings is not None
    s = rec_spec(free_port(), enabled=True)
    server.create("again", s)
    wait_until(lambda: server.get("again").status.recording.state == "recording", 10, "on")
    req = recording_pb2.RecordingRequest(route="again")
    server.client.recordings.StopRecording(req, metadata=server.client.metadata)
    assert server.get("again").status.recording.state == "stopped"
    server.client.routes.DeleteRoute(
        route_pb2.DeleteRouteRequest(name="again"), metadata=server.client.metadata
    )
    recordings.tick(time.time())
    # A new route of the same name records as its policy says.
    server.create("again", s)
    recordings.tick(time.time())
    assert server.get("again").status.recording.state == "recording"


def test_a_full_disk_is_reported_outputs_stay_bit_exact_and_the_free_space_floor_holds(
    tmp_path: Path, small_tmpfs: Path, udp_capture: Any, big_clip: bytes
) -> None:
    in_port = free_port()
    cap = udp_capture()
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1, media_dir=small_tmpfs) as run:
        client = Client(f"127.0.0.1:{run.port}", key=ADMIN)
        srv = Server(run, client, tmp_path / "data")
        s = spec([f"udp://127.0.0.1:{in_port}"], [f"udp://127.0.0.1:{cap.port}"],
                 recording=spec_pb2.Recording(enabled=True, segment_ms=1000))
        srv.create("r", s)
        wait_until(lambda: srv.get("r").status.recording.state == "recording", 10, "recording")
        sender = UdpSender(big_clip, in_port, bitrate=8e6)
        # 3 MiB fill up before the clip (3.3 MB) is through: the writes fail.
        wait_until(lambda: srv.get("r").status.recording.errors > 0, 20, "a failed write")
        assert "No space left" in srv.get("r").status.recording.last_error
        errors = [e for e in run.control.gateway.wait_events(0, 0.0, 100_000)
                  if e["kind"] == "recording_error"]
        assert errors and errors[0]["route"] == "r"
        # A floor of 1 MiB: retention frees the oldest segments until it holds.
        floor = 1 << 20
        s.recording.min_free_bytes = floor
        srv.update("r", s)
        recordings = run.recordings
        assert recordings is not None
        wait_until(
            lambda: recordings.prune(time.time()) is not None
            and free_bytes(small_tmpfs) >= floor, 10, "the floor",
        )
        sender.join()
        wait_until(lambda: cap.size >= len(big_clip), 10, "every byte at the output")
        assert cap.data == big_clip, "the output relayed every byte, unchanged"
        recordings.prune(time.time())
        assert free_bytes(small_tmpfs) >= floor
        assert "free_space" in {e["reason"] for e in deleted_events(srv)}
        assert srv.get("r").status.recording.drops > 0, "what could not be written is counted"
        client.close()


def test_an_mp4_segment_that_ends_in_a_failure_lists_its_video_keyframes_in_order(
    gateway: castway.Gateway, small_tmpfs: Path, big_clip: bytes
) -> None:
    in_port = free_port()
    route = gateway.add_route("mf", f"udp://127.0.0.1:{in_port}")
    route.recording.start(small_tmpfs / "rec", segment_ms=60_000, format="mp4")
    # 3 MiB fill up before the clip (3.3 MB) is through: the branch fails mid-file.
    UdpSender(big_clip, in_port, bitrate=8e6).join()
    wait_until(lambda: route.recording.stats()["errors"] > 0, 20, "a failed write")

    def failed() -> list[dict[str, Any]]:
        return [json.loads(e["segment"]) for e in gateway.wait_events(0, 0.0, 100_000)
                if e["kind"] == "segment_closed" and e.get("route") == "mf" and e.get("error")]

    [seg] = wait_until(failed, 10, "the failed file reported")
    assert seg["path"].endswith(".mp4.part"), seg
    keys = seg["keyframes"]
    # A keyframe every second from the file's first frame on (then, perhaps, the slate's,
    # every 2 s, once the sender is through).
    assert len(keys) >= 2 and keys[0] == 0 and keys == sorted(keys), seg
    clip_keys = [k for k in keys if k < 9.5]
    assert clip_keys == list(range(len(clip_keys))), json.dumps(keys)
    route.recording.stop()


def test_a_segment_nothing_reached_on_a_full_disk_is_neither_kept_nor_listed(
    tmp_path: Path, small_tmpfs: Path, gop_clip: bytes
) -> None:
    in_port = free_port()
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1, media_dir=small_tmpfs) as run:
        client = Client(f"127.0.0.1:{run.port}", key=ADMIN)
        srv = Server(run, client, tmp_path / "data")
        # The volume full before the first segment opens.
        with open(small_tmpfs / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        srv.create("r", rec_spec(in_port, enabled=True, segment_ms=1000))
        wait_until(lambda: srv.get("r").status.recording.state != "stopped", 10, "recording")
        UdpSender(gop_clip, in_port, bitrate=4e6).join()
        wait_until(lambda: srv.get("r").status.recording.errors >= 2, 10, "failed writes")
        gw = run.control.gateway
        wait_until(lambda: any("is empty: removed" in e.get("error", "")
                               for e in gw.wait_events(0, 0.0, 100_000)), 10, "removed")
        assert [f for f in small_tmpfs.rglob("*.ts*") if f.stat().st_size == 0] == []
        assert run.recordings is not None
        wait_until(lambda: all(not s.open for s in run.recordings.catalog.page("", 100)), 10,
                   "no open row left")
        assert all(s.bytes > 0 for s in run.recordings.catalog.page("", 100))
        client.close()


def test_weekly_windows_in_a_time_zone_cross_midnight_and_name_what_is_wrong() -> None:
    from castway.server.errors import InvalidArgument
    from castway.server.recording.schedule import active, parse_windows, zone

    paris = zone("Europe/Paris")
    windows = parse_windows("mon-fri 18:00-19:00; sat 23:30-00:30")

    def at(text: str) -> float:
        from datetime import datetime

        return datetime.fromisoformat(text).replace(tzinfo=paris).timestamp()

    assert active(windows, paris, at("2026-11-23T18:00:00"))  # a Monday
    assert not active(windows, paris, at("2026-11-23T19:00:00"))
    assert not active(windows, paris, at("2026-11-22T18:30:00"))  # a Sunday
    assert active(windows, paris, at("2026-11-28T23:45:00"))  # Saturday night ...
    assert active(windows, paris, at("2026-11-29T00:15:00"))  # ... into Sunday
    assert not active(windows, paris, at("2026-11-29T00:30:00"))
    for bad in ("mon 18:00", "mon 18:00-18:00", "fun 10:00-11:00", "mon 9:60-10:00", ";"):
        with pytest.raises(InvalidArgument) as info:
            parse_windows(bad, "spec.recording.schedule")
        assert info.value.field.startswith("spec.recording.schedule"), info.value


def test_a_schedule_starts_and_stops_recording_by_an_injected_clock(server: Server) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    recordings = server.running.recordings
    assert recordings is not None
    ny = ZoneInfo("America/New_York")
    clock = [datetime(2026, 11, 23, 17, 59, 59, tzinfo=ny).timestamp()]  # a Monday
    recordings.clock = lambda: clock[0]
    server.create("news", spec([test_input()], recording=spec_pb2.Recording(
        enabled=True, schedule="mon-fri 18:00-19:00", timezone="America/New_York")))

    def state() -> str:
        recordings.tick(clock[0])
        return str(server.get("news").status.recording.state)

    assert state() == "stopped"
    clock[0] += 2
    assert state() == "recording"
    clock[0] += 3600
    assert state() == "stopped"


def probe(path: Path, *entries: str) -> list[str]:
    r = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", *entries, "-of", "csv=p=0",
         str(path)], capture_output=True, text=True, timeout=60, check=True,
    )
    return [x.strip(",") for x in r.stdout.split() if x.strip(",")]


@pytest.mark.parametrize(("recorded", "suffix"), [("ts", "ts"), ("ts", "mp4"), ("mp4", "mp4")])
def test_a_clip_across_segments_starts_at_a_keyframe_with_continuous_timestamps(
    server: Server, gop_clip: bytes, tmp_path: Path, recorded: str, suffix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    in_port = free_port()
    server.create("r", rec_spec(in_port, enabled=True, segment_ms=2000, format=recorded))
    wait_until(lambda: server.get("r").status.recording.state == "recording", 10, "recording")
    UdpSender(gop_clip, in_port, bitrate=2e6).join()
    wait_until(lambda: len(list_segments(server, "r")) >= 4, 10, "segments cataloged")
    segs = list_segments(server, "r")
    t = [s.start.ToNanoseconds() / 1e9 for s in segs]
    # From three quarters into the second segment (wall clock; past its second keyframe) to
    # inside the fourth.
    start = t[1] + (t[2] - t[1]) * 3 / 4
    end = t[3] + (t[4] - t[3]) / 2 if len(t) > 4 else t[3] + 0.1
    out = tmp_path / f"clip.{suffix}"
    code = main([
        "recording", "export", "r", "--addr", server.addr, "--key", ADMIN,
        "--from", str(start), "--to", str(end), "-o", str(out),
    ])
    assert code == 0, capsys.readouterr().err
    assert decode_errors(out) == ""
    keys = probe(out, "-read_intervals", "%+#1", "-show_entries", "frame=key_frame")
    assert keys == ["1"], "the clip starts at a keyframe"
    pts = sorted(float(x) for x in probe(out, "-show_entries", "packet=pts_time"))
    steps = [b - a for a, b in itertools.pairwise(pts)]
    assert max(steps) < 0.1, "timestamps run on across segment boundaries"
    # The media time the range asked for, each end mapped inside its segment by its share
    # of the segment's span (the sender ran faster than real time).
    def media(at: float, i: int) -> float:
        share = (at - t[i]) / (segs[i].end.ToNanoseconds() / 1e9 - t[i])
        return sum(s.duration_s for s in segs[:i]) + min(share, 1.0) * segs[i].duration_s
    asked = media(end, 4 if len(t) > 4 else 3) - media(start, 1)
    video = pts[-1] - pts[0] + 0.04
    # All of it, from the last keyframe at or before `from`: at most one GOP (1 s) and a
    # frame more (it started at the segment's start, up to 1.5 s before).
    assert asked - 0.04 <= video <= asked + 1.0 + 0.08, (video, asked)
    expect(CODE.NOT_FOUND, lambda: list(server.client.recordings.ExportClip(
        recording_pb2.ExportClipRequest(route="nope", format=suffix, **{"from": segs[0].start},
                                        to=segs[1].start),
        metadata=server.client.metadata, timeout=30)))


def test_a_clip_across_a_pause_holds_everything_recorded_with_timestamps_running_on(
    server: Server, gop_clip: bytes, tmp_path: Path
) -> None:
    in_port = free_port()
    server.create("paused", rec_spec(in_port, enabled=True, segment_ms=1000))
    wait_until(lambda: server.get("paused").status.recording.state == "recording", 10, "on")
    # Sent at its own pace (12 s), so that wall clock and media time go together, in thirds.
    realtime = len(gop_clip) * 8 / 12
    third = len(gop_clip) // 3 // PACKET * PACKET
    req = recording_pb2.RecordingRequest(route="paused")
    meta = server.client.metadata
    UdpSender(gop_clip[:third], in_port, bitrate=realtime).join()
    wait_until(lambda: server.get("paused").status.recording.bytes > 0, 10, "recorded")
    server.client.recordings.PauseRecording(req, metadata=meta)
    # What flows during the pause is skipped: the stream's timestamps jump across it.
    UdpSender(gop_clip[third:2 * third], in_port, bitrate=realtime).join()
    server.client.recordings.ResumeRecording(req, metadata=meta)
    UdpSender(gop_clip[2 * third:], in_port, bitrate=realtime).join()
    server.client.recordings.StopRecording(req, metadata=meta)
    segs = list_segments(server, "paused")
    assert len(segs) >= 2
    out = tmp_path / "clip.ts"
    with open(out, "wb") as f:
        for chunk in server.client.recordings.ExportClip(
            recording_pb2.ExportClipRequest(route="paused", format="ts",
                                            **{"from": segs[0].start}, to=segs[-1].end),
            metadata=meta, timeout=60,
        ):
            f.write(chunk.data)
    duration = float(probe(out, "-show_entries", "format=duration")[0])
    recorded = sum(s.duration_s for s in segs)
    assert recorded - 1.0 < duration < recorded + 1.0, (duration, recorded)
    pts = sorted(float(x) for x in probe(out, "-select_streams", "v", "-show_entries",
                                         "packet=pts_time"))
    # The 4 s the pause skipped are not a hole in the clip (the join may leave a few frames).
    assert max(b - a for a, b in itertools.pairwise(pts)) < 0.5, "no jump at the pause"


def test_a_clip_across_a_restarted_sender_covers_the_range_with_timestamps_running_on(
    server: Server, gop_clip: bytes, tmp_path: Path
) -> None:
    in_port = free_port()
    server.create("sw", rec_spec(in_port, enabled=True, segment_ms=2000))
    wait_until(lambda: server.get("sw").status.recording.state == "recording", 10, "on")
    # The clip twice, each at its own pace: the second time its timestamps start over.
    realtime = len(gop_clip) * 8 / 12
    half = gop_clip[: len(gop_clip) // 2 // PACKET * PACKET]
    UdpSender(half, in_port, bitrate=realtime).join()
    restart = time.time()
    UdpSender(half, in_port, bitrate=realtime).join()
    server.client.recordings.StopRecording(recording_pb2.RecordingRequest(route="sw"),
                                           metadata=server.client.metadata)
    segs = list_segments(server, "sw")
    assert len(segs) >= 5
    # From the middle of the segment the restart is in (or the first after it).
    t = [(s.start.ToNanoseconds() / 1e9, s.end.ToNanoseconds() / 1e9) for s in segs]
    at = next(a for a, b in t if b > restart)
    start, end = at + 1.0, t[-1][1]
    out = tmp_path / "clip.ts"
    req = export_request("sw", start, end)
    out.write_bytes(b"".join(c.data for c in server.client.recordings.ExportClip(
        req, metadata=server.client.metadata, timeout=60)))
    pts = sorted(float(x) for x in probe(out, "-show_entries", "packet=pts_time"))
    # The range is about 12 s - 2.5 s of video (wall clock and media time go together here).
    assert pts and pts[-1] - pts[0] + 0.04 >= end - start - 1.0, (pts[:1], pts[-1:], end - start)
    assert max(b - a for a, b in itertools.pairwise(pts)) < 0.5, "no jump at the restart"


def test_the_cli_refuses_an_unknown_route_a_missing_directory_and_an_unknown_format(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = ["--addr", server.addr, "--key", ADMIN]
    assert main(["recording", "list", "nosuch", *creds]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    server.create("known", rec_spec(free_port()))
    assert main(["recording", "list", "known", *creds]) == 0
    for out, why in ((tmp_path / "missing" / "c.ts", "does not exist"),
                     (tmp_path / "c.mkv", ".ts or .mp4")):
        code = main(["recording", "export", "known", *creds, "--from", "1", "--to", "2",
                     "-o", str(out)])
        err = capsys.readouterr().err
        assert code == 1 and why in err and "Traceback" not in err, err
        assert not out.exists()


def test_the_cli_sets_a_routes_recording_policy_and_controls_it(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    auth = ["--addr", server.addr, "--key", ADMIN]
    assert main(["route", "create", "r", "-i", test_input(), *auth]) == 0
    assert main(["route", "update", "r", "--record", "--segment-ms", "2000", *auth]) == 0
    r = server.get("r")
    assert r.spec.recording.enabled and r.spec.recording.segment_ms == 2000
    wait_until(lambda: server.get("r").status.recording.state == "recording", 10, "by policy")
    capsys.readouterr()
    assert main(["recording", "pause", "r", *auth]) == 0
    assert capsys.readouterr().out.strip() == "r: paused"
    assert main(["route", "update", "r", "--record-path", "../up", *auth]) == 1
    assert "spec.recording.path" in capsys.readouterr().err


def test_the_cli_says_what_an_update_did_to_the_recording_policy(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """`route update r --record` used to print `nothing changed on air` while recording
    started."""
    auth = ["--addr", server.addr, "--key", ADMIN]
    assert main(["route", "create", "r", "-i", test_input(), *auth]) == 0
    capsys.readouterr()

    def update(*flags: str) -> str:
        assert main(["route", "update", "r", *flags, *auth]) == 0
        return capsys.readouterr().out.strip().splitlines()[-1]

    assert update("--record") == "recording enabled"
    wait_until(lambda: server.get("r").status.recording.state == "recording", 10, "by policy")
    assert update("--segment-ms", "2000") == "recording policy changed"
    assert update("--segment-ms", "2000") == "nothing changed on air"
    assert update("--no-record") == "recording disabled"
    assert update("--loss-timeout", "700", "--record") == "settings; recording enabled"
    # Through a template: each route that uses it says its own.
    assert main(["template", "create", "t", "--max-age", "3600", *auth]) == 0
    assert main(["route", "create", "u", "-i", test_input(), "--template", "t", *auth]) == 0
    capsys.readouterr()
    assert main(["template", "update", "t", "--record", *auth]) == 0
    assert capsys.readouterr().out.strip() == "u: recording enabled"
    assert main(["template", "update", "t", "--max-age", "7200", *auth]) == 0
    assert capsys.readouterr().out.strip() == "u: recording policy changed"
    assert main(["route", "update", "r", "--json", "--no-record", *auth]) == 0
    assert json.loads(capsys.readouterr().out)["changes"]["recording"] == (
        "RECORDING_CHANGE_DISABLED"
    )


def test_the_cli_sets_format_slate_and_schedule_clears_it_and_names_a_bad_number(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    auth = ["--addr", server.addr, "--key", ADMIN]
    assert main(["route", "create", "r", "-i", test_input(), "--record-format", "mp4",
                 "--no-record-slate", "--schedule", "mon 10:00-11:00", *auth]) == 0
    rec = server.get("r").spec.recording
    assert (rec.format, rec.slate, rec.schedule) == ("mp4", False, "mon 10:00-11:00")
    assert main(["route", "update", "r", "--record-slate", "--no-schedule", *auth]) == 0
    rec = server.get("r").spec.recording
    assert rec.slate and not rec.HasField("schedule") and rec.format == "mp4"
    assert main(["route", "update", "r", "--schedule", "sat 10:00-11:00", *auth]) == 0
    assert server.get("r").spec.recording.schedule == "sat 10:00-11:00"
    assert main(["route", "update", "r", "--schedule", "", *auth]) == 0
    assert not server.get("r").spec.recording.HasField("schedule")
    capsys.readouterr()
    for flag, value in (("--min-free", "-1"), ("--latency", str(2**32)), ("--max-age", "x")):
        with pytest.raises(SystemExit) as exit_:
            main(["route", "update", "r", flag, value, *auth])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and flag in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("flag", "field"),
    [("--segment-ms", "recording.segment_ms"), ("--max-age", "recording.max_age_s"),
     ("--max-bytes", "recording.max_bytes"), ("--min-free", "recording.min_free_bytes")],
)
def test_the_cli_refuses_a_recording_number_outside_the_servers_range_before_sending(
    server: Server, capsys: pytest.CaptureFixture[str], flag: str, field: str
) -> None:
    """`--max-age 6` used to pass the CLI (any 64-bit number did) and be refused by the server
    (`spec.recording.max_age_s: 6 is outside 60..316224000`); `-5` was `a whole number from 0
    to 18446744073709551615`. The CLI takes the bounds the server checks."""
    from castway import _castway

    low, high = _castway.limits()["ranges"][field]
    auth = ["--addr", server.addr, "--key", ADMIN]
    assert main(["route", "create", "r", "-i", test_input(), *auth]) == 0
    capsys.readouterr()
    below = [str(low - 1)] if low > 0 else []
    for value in [*below, str(high + 1), "-5"]:
        with pytest.raises(SystemExit) as exit_:
            main(["route", "update", "r", f"{flag}={value}", *auth])
        err = capsys.readouterr().err
        assert exit_.value.code == 2, err
        assert f"argument {flag}: a whole number from {low} to {high}" in err, err
    for value in (low, high):
        assert main(["route", "update", "r", flag, str(value), *auth]) == 0, capsys.readouterr()
        assert getattr(server.get("r").spec.recording, field.split(".")[1]) == value


def mp4_clip_of_two(server: Server, segs: list[Any], out: Path) -> float:
    """Exports route r's first two segments as an MP4 clip into `out`, checks it decodes
    cleanly, and returns its duration (ffprobe)."""
    with open(out, "wb") as f:
        for chunk in server.client.recordings.ExportClip(
            recording_pb2.ExportClipRequest(route="r", format="mp4", **{"from": segs[0].start},
                                            to=segs[1].end),
            metadata=server.client.metadata, timeout=60,
        ):
            f.write(chunk.data)
    assert decode_errors(out) == ""
    return float(probe(out, "-show_entries", "format=duration")[0])


def test_mp4_segments_probe_with_their_duration_and_a_cut_short_one_is_repaired(
    server: Server, gop_clip: bytes, tmp_path: Path
) -> None:
    in_port = free_port()
    server.create("r", rec_spec(in_port, enabled=True, segment_ms=3000, format="mp4"))
    recordings = server.running.recordings
    assert recordings is not None
    wait_until(lambda: server.get("r").status.recording.state == "recording", 10, "recording")
    UdpSender(gop_clip, in_port, bitrate=2e6).join()
    wait_until(lambda: len(list_segments(server, "r")) >= 3, 10, "segments cataloged")
    segs = list_segments(server, "r")
    for s in segs:
        path = recordings.root / s.path
        assert s.format == "mp4" and path.suffix == ".mp4"
        assert decode_errors(path) == ""
        duration = float(probe(path, "-show_entries", "format=duration")[0])
        # Cut at the first keyframe at or after 3 s: within a GOP (1 s) of it.
        assert 3.0 <= duration < 4.05 and abs(duration - s.duration_s) < 0.1
    # A file a crash cut short mid-fragment: repaired to its last whole fragment.
    whole = (recordings.root / segs[0].path).read_bytes()
    # (Named as the route's path pattern names its segments: no catalog row tells its route.)
    part = recordings.root / "r" / "2020-01-02" / "03-04-05.mp4.part"
    part.parent.mkdir()
    part.write_bytes(whole[: len(whole) * 2 // 3])
    repaired = recordings.repair()
    assert [(s.path, s.route) for s in repaired] == [("r/2020-01-02/03-04-05.mp4", "r")]
    fixed = recordings.root / "r" / "2020-01-02" / "03-04-05.mp4"
    assert not part.exists() and 0 < fixed.stat().st_size < len(whole) * 2 // 3
    assert decode_errors(fixed) == ""
    assert 0 < float(probe(fixed, "-show_entries", "format=duration")[0]) < 3.0
    # Its video keyframes (one a second), in order, as a closed file lists them.
    keys = list(repaired[0].keyframes)
    assert keys and keys[0] == 0 and keys == sorted(keys), keys
    assert all(abs(k - round(k)) < 0.05 for k in keys), json.dumps(keys)
    for s in segs:
        assert list(s.keyframes) == sorted(s.keyframes) and s.keyframes[0] == 0, s
    # A clip of MP4 recordings.
    t = [s.start.ToNanoseconds() / 1e9 for s in segs]
    duration = mp4_clip_of_two(server, segs, tmp_path / "clip.mp4")
    assert abs(duration - (segs[0].duration_s + segs[1].duration_s)) < 1.0, (duration, t)


def test_an_mp4_clip_reads_the_segments_it_checked_not_what_their_paths_name_later(
    server: Server, gop_clip: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from castway.server.recording import clips

    in_port = free_port()
    server.create("r", rec_spec(in_port, enabled=True, segment_ms=2000, format="mp4"))
    wait_until(lambda: server.get("r").status.recording.state == "recording", 10, "recording")
    UdpSender(gop_clip, in_port, bitrate=2e6).join()
    wait_until(lambda: len(list_segments(server, "r")) >= 3, 10, "segments cataloged")
    segs = list_segments(server, "r")
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"not a segment" * 1000)
    root = server.running.recordings.root  # type: ignore[union-attr]
    real_start = clips.Job._start

    def swap_then_start(job: clips.Job, *args: Any, **kwargs: Any) -> Any:
        # The race: once the segments are checked, and before ffmpeg reads them, each path
        # is made to name a link to another file.
        for s in segs:
            path = root / s.path
            if not path.is_symlink():
                path.rename(path.with_name(path.name + ".moved"))
                path.symlink_to(outside)
        return real_start(job, *args, **kwargs)

    monkeypatch.setattr(clips.Job, "_start", swap_then_start)
    duration = mp4_clip_of_two(server, segs, tmp_path / "clip.mp4")
    assert abs(duration - (segs[0].duration_s + segs[1].duration_s)) < 1.0, duration


def test_a_policy_without_slate_time_pauses_while_the_slate_is_on_air(
    server: Server, gop_clip: bytes
) -> None:
    recordings = server.running.recordings
    assert recordings is not None
    in_port = free_port()
    server.create("r", rec_spec(in_port, enabled=True, slate=False))
    UdpSender(gop_clip[: len(gop_clip) // 4], in_port, bitrate=4e6).join()
    wait_until(lambda: server.get("r").status.state == "slate", 10, "the slate on air")
    recordings.tick(time.time())
    assert server.get("r").status.recording.state == "paused"
    back = UdpSender(gop_clip[len(gop_clip) // 4:], in_port, bitrate=4e6)
    wait_until(lambda: server.get("r").status.state == "live", 10, "the input back")
    recordings.tick(time.time())
    assert server.get("r").status.recording.state == "recording"
    back.join()


def probe_streams(path: Path) -> list[tuple[str, float]]:
    """Each stream of `path` as ffprobe sees it: its type and duration (seconds)."""
    r = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,duration",
         "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=60, check=True,
    )
    out = []
    for line in r.stdout.split():
        kind, _, duration = line.strip(",").partition(",")
        out.append((kind, float(duration) if duration not in ("", "N/A") else 0.0))
    return sorted(out)


def test_mp4_recordings_of_video_and_audio_hold_both_tracks_every_time(
    gateway: castway.Gateway, tmp_path: Path
) -> None:
    # The demuxer's pads appear while data flows: linked in the wrong order, the audio branch
    # could push into nothing and the muxer wait for it forever. Repeated to shake out races.
    for n in range(6):
        name = f"mp4av{n}"
        route = gateway.add_route(name, "test://?size=320x240&bitrate=500&fps=25")
        rec = tmp_path / name
        route.recording.start(rec, segment_ms=1000, format="mp4")
        wait_until(lambda name=name: len(segments_closed(gateway, name)) >= 2, 20,
                   f"round {n}: two mp4 segments closed")
        route.recording.stop()
        stats = route.recording.stats()
        gateway.remove_route(name)
        assert stats["errors"] == 0 and stats.get("stalls", 0) == 0, stats
        for s in segments_closed(gateway, name):
            streams = probe_streams(rec / s["path"])
            assert [k for k, _ in streams] == ["audio", "video"], (n, s, streams)
            for kind, duration in streams:
                assert abs(duration - s["duration"]) < 0.5, (n, s, kind, duration)


def test_mp4_segments_list_their_keyframe_times_from_their_start(
    gateway: castway.Gateway, tmp_path: Path
) -> None:
    # test:// puts a keyframe every 2 s: a 4 s segment holds two, at 0 and 2 s.
    route = gateway.add_route("mp4k", "test://?size=320x240&bitrate=500&fps=25")
    route.recording.start(tmp_path / "rec", segment_ms=4000, format="mp4")
    wait_until(lambda: len(segments_closed(gateway, "mp4k")) >= 2, 30, "two mp4 segments")
    route.recording.stop()
    for s in segments_closed(gateway, "mp4k")[:2]:
        assert [round(k, 1) for k in s["keyframes"]] == [0.0, 2.0], s


def video_packets(path: Path) -> list[tuple[float, bool]]:
    """The video packets of `path` in presentation order: each one's time and whether it is a
    keyframe (in an MP4: a sync sample)."""
    r = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts_time,flags", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    rows = [line.strip(",").split(",") for line in r.stdout.split() if line.strip(",")]
    return sorted((float(pts), "K" in flags) for pts, flags, *_ in rows)


@pytest.mark.parametrize(("fmt", "segment_ms"), [("mp4", 2500), ("mp4", 3000), ("ts", 3000)])
def test_segments_are_cut_at_the_first_keyframe_at_or_after_the_target_and_timed_by_content(
    gateway: castway.Gateway, gop_clip: bytes, tmp_path: Path, fmt: str, segment_ms: int
) -> None:
    """A segment lasts its target plus at most one GOP, and begins with a keyframe; every
    keyframe of the source is one in the file; its catalog start and end are as far apart as
    its media lasts. (`mp4` used `splitmuxsink`'s `max-size-time`, which makes files of *at
    most* the target: 2 s files for a 2.5 s target, or a 3 s one, with 1 s GOPs. And its first
    file's start was when `splitmuxsink` said it opened, a GOP or more late.)"""
    clip = tmp_path / "gop1s.ts"
    clip.write_bytes(gop_clip)
    name = f"cut{fmt}{segment_ms}"
    route = gateway.add_route(name, f"file://{clip}?loop=1")
    rec = tmp_path / "rec"
    route.recording.start(rec, segment_ms=segment_ms, format=fmt)
    wait_until(lambda: len(segments_closed(gateway, name)) >= 3, 30, "three segments closed")
    route.recording.stop()
    gateway.remove_route(name)
    target = segment_ms / 1000
    for s in segments_closed(gateway, name)[:3]:
        packets = video_packets(rec / s["path"])
        first = packets[0][0]
        media = packets[-1][0] - first + 0.04
        assert target <= media <= target + 1.0 + 0.001, (s, media)
        assert packets[0][1], f"{s['path']} begins with a keyframe"
        # The source has an IDR every second (25 frames): each of them is a keyframe here,
        # and no other frame is.
        keys = [round(t - first, 2) for t, key in packets if key]
        assert keys == [float(k) for k in range(round(media))], (s, keys)
        assert [round(k, 1) for k in s["keyframes"]] == keys, s
        assert abs(s["duration"] - media) <= 0.045, (s, media)
        # Within two frames (`mp4`: the wall times follow the running time; `ts`: the arrival
        # of each segment's first packet, as the input paced it).
        slack = 0.085 if fmt == "mp4" else 0.2
        assert abs((s["end"] - s["start"]) - media) <= slack, (s, media)


def test_castway_serve_records_mp4_from_its_start_without_a_stall(tmp_path: Path) -> None:
    # The recorder starts after the route is live, so it joins mid-GOP: the video parser holds
    # everything back until the next keyframe while the audio goes on, and the demuxer must not
    # block on the audio meanwhile (it did: nothing was ever muxed, a stall every start).
    config = tmp_path / "castway.toml"
    config.write_text(
        '[routes.mp4]\ninputs = ["test://"]\n'
        'recording = { enabled = true, segment_ms = 2000, format = "mp4" }\n'
    )
    data = tmp_path / "data"
    srv = ServeProcess(data, env={"CASTWAY_ADMIN_KEY": ADMIN}, args=("--config", str(config)))
    try:
        client = Client(f"127.0.0.1:{srv.port}", key=ADMIN)

        def recording() -> Any:
            req = route_pb2.GetRouteRequest(name="mp4")
            return client.routes.GetRoute(req, metadata=client.metadata).status.recording

        wait_until(lambda: recording().segments >= 1 or recording().stalls, 30, "a segment")
        stats = recording()
        assert stats.segments >= 1 and stats.stalls == 0 and stats.errors == 0, stats
        [first, *_] = sorted((data / "media" / "recordings" / "mp4").rglob("*.mp4"))
        assert [kind for kind, _ in probe_streams(first)] == ["audio", "video"]
        client.close()
    finally:
        srv.stop(signal.SIGTERM)


def test_an_mp4_recording_of_mp2_audio_holds_both_tracks_and_never_stalls_silently(
    gateway: castway.Gateway, tmp_path: Path
) -> None:
    # MPEG-1 layer II audio (DVB radio and many contribution feeds): the branch once gave the
    # muxer an audio pad that no data reached, and the muxer waited for it forever, silently.
    clip = tmp_path / "mp2.ts"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
         "-i", "testsrc2=size=320x180:rate=25", "-f", "lavfi",
         "-i", "sine=frequency=440:sample_rate=48000", "-t", "8", "-c:v", "libx264",
         "-preset", "ultrafast", "-g", "25", "-b:v", "500k", "-pix_fmt", "yuv420p",
         "-c:a", "mp2", "-f", "mpegts", str(clip)],
        check=True, timeout=60,
    )
    in_port = free_port()
    route = gateway.add_route("mp2", f"udp://127.0.0.1:{in_port}")
    rec = tmp_path / "rec"
    route.recording.start(rec, segment_ms=2000, format="mp4")
    UdpSender(clip.read_bytes(), in_port, bitrate=2e6).join()
    wait_until(lambda: len(segments_closed(gateway, "mp2")) >= 2, 15, "mp4 segments closed")
    stats = route.recording.stats()
    assert stats["errors"] == 0 and stats["stalls"] == 0, stats
    for s in segments_closed(gateway, "mp2"):
        assert [k for k, _ in probe_streams(rec / s["path"])] == ["audio", "video"], s


def test_the_mp4_stall_watchdog_fires_when_the_video_stops_and_the_audio_goes_on(
    gateway: castway.Gateway, tmp_path: Path, udp_capture: Any
) -> None:
    # The muxer cuts files at video keyframes and holds the audio until the video passes it:
    # with the video gone and the audio still arriving, it gives nothing out.
    clip = tmp_path / "video-stops.ts"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
         "-i", "testsrc2=size=320x180:rate=25:duration=3", "-f", "lavfi",
         "-i", "sine=frequency=440:sample_rate=48000:duration=30", "-c:v", "libx264",
         "-preset", "ultrafast", "-g", "25", "-b:v", "300k", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-f", "mpegts", str(clip)],
        check=True, timeout=60,
    )
    data = clip.read_bytes()
    in_port = free_port()
    cap = udp_capture()
    route = gateway.add_route("st", f"udp://127.0.0.1:{in_port}", f"udp://127.0.0.1:{cap.port}")
    route.recording.start(tmp_path / "rec", segment_ms=2000, format="mp4")
    # About real time: the audio goes on arriving for well over the watchdog's 10 s.
    sender = UdpSender(data, in_port, bitrate=len(data) * 8 / 27)
    wait_until(lambda: route.recording.stats()["stalls"] > 0, 40, "the watchdog to fire")
    sender.join()
    stats = route.recording.stats()
    assert stats["errors"] >= 1 and "stalled" in stats["last_error"], stats
    errors = [e["error"] for e in gateway.wait_events(0, 0.0, 100_000)
              if e["kind"] == "recording_error" and e.get("route") == "st"]
    assert any("the mp4 branch stalled: nothing muxed for 10s" in e for e in errors), errors
    wait_until(lambda: cap.size >= len(data), 10, "every byte at the output")
    assert cap.data[: len(data)] == data, "the output relayed every byte, unchanged"
    route.recording.stop()


def test_a_pause_ends_the_segment_before_the_next_video_frame_so_its_last_frame_is_whole(
    gateway: castway.Gateway, tmp_path: Path, gop_clip: bytes
) -> None:
    in_port = free_port()
    route = gateway.add_route("p", f"udp://127.0.0.1:{in_port}")
    rec = tmp_path / "rec"
    route.recording.start(rec, segment_ms=60_000)
    sender = UdpSender(gop_clip, in_port, bitrate=1e6)
    wait_until(lambda: route.recording.stats()["segment_bytes"] > 100_000, 10, "data written")
    route.recording.pause()
    wait_until(lambda: segments_closed(gateway, "p"), 5, "the segment closed")
    sender.join()
    stats = route.recording.stats()
    assert stats["pauses_mid_frame"] == 0 and stats["errors"] == 0, stats
    [seg] = segments_closed(gateway, "p")
    data = (rec / seg["path"]).read_bytes()
    assert decode_errors(rec / seg["path"]) == ""
    # An exact slice of the input, ending right before a packet that starts a video PES.
    at = gop_clip.find(data)
    assert at >= 0
    after = [gop_clip[i:i + PACKET] for i in range(at + len(data), len(gop_clip), PACKET)]
    video = next(p for p in after if (p[1] & 0x1F) << 8 | p[2] == 0x100)
    assert video[1] & 0x40, "the packet after the segment starts the next video frame"


@pytest.mark.parametrize("how", ["stop", "route removed"])
def test_a_stop_ends_the_last_segment_before_the_next_video_frame_so_it_decodes_clean(
    gateway: castway.Gateway, tmp_path: Path, gop_clip: bytes, how: str
) -> None:
    in_port = free_port()
    route = gateway.add_route("s", f"udp://127.0.0.1:{in_port}")
    rec = tmp_path / "rec"
    route.recording.start(rec, segment_ms=60_000)
    sender = UdpSender(gop_clip, in_port, bitrate=1e6)
    wait_until(lambda: route.recording.stats()["segment_bytes"] > 100_000, 10, "data written")
    if how == "stop":
        route.recording.stop()
        stats = route.recording.stats()
        assert stats["pauses_mid_frame"] == 0 and stats["errors"] == 0, stats
    else:
        gateway.remove_route("s")
    sender.close()
    [seg] = segments_closed(gateway, "s")
    assert decode_errors(rec / seg["path"]) == ""


@pytest.mark.parametrize("fmt", ["ts", "mp4"])
def test_below_the_floor_no_segment_opens_it_is_said_once_and_recording_resumes_with_room(
    gateway: castway.Gateway, small_tmpfs: Path, udp_capture: Any, gop_clip: bytes, fmt: str
) -> None:
    """Below the floor no segment opens. It is said once (one error, one event); the tries
    after it are counted in `floor_retries` (`mp4` reported each try after its backoff as an
    error of its own)."""
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (2 << 20))
    in_port = free_port()
    cap = udp_capture()
    route = gateway.add_route("f", f"udp://127.0.0.1:{in_port}", f"udp://127.0.0.1:{cap.port}")
    rec = small_tmpfs / "rec"
    route.recording.start(rec, segment_ms=1000, format=fmt, min_free_bytes=(3 << 20) // 2)
    sender = UdpSender(gop_clip, in_port, bitrate=1e6)
    wait_until(lambda: route.recording.stats()["no_space_bytes"] > 0, 10, "bytes not recorded")
    # Tried again: at each cut (ts), after the backoff of 1 s then 2 s (mp4).
    wait_until(lambda: route.recording.stats()["floor_retries"] >= 2, 10, "tried again twice")
    stats = route.recording.stats()
    assert stats["state"] == "failing" and stats["errors"] == 1, stats
    assert "min_free_bytes" in stats["last_error"], stats
    assert stats["drops"] == 0, "what is not recorded for the floor is no_space_bytes"
    assert not [p for p in rec.rglob("*") if p.is_file()], "no segment opened"
    errors = [e for e in gateway.wait_events(0, 0.0, 100_000) if e["kind"] == "recording_error"]
    assert len(errors) == 1 and "below the floor" in errors[0]["error"], errors
    # Room made (as retention would): the next try opens a segment (the stream goes on).
    filler.unlink()
    sender.join()
    sender = UdpSender(gop_clip, in_port, bitrate=1e6)
    wait_until(lambda: route.recording.stats()["segment"], 10, "a segment open")
    assert route.recording.stats()["state"] == "recording"
    sender.join()
    route.recording.stop()
    assert segments_closed(gateway, "f")
    wait_until(lambda: cap.size >= len(gop_clip), 10, "every byte at the output")
    # (The slate may follow once the input is lost: the stop waits for a frame's start.)
    assert cap.data[: len(gop_clip)] == gop_clip, "the output relayed every byte, unchanged"


@pytest.mark.parametrize("fmt", ["ts", "mp4"])
def test_a_segment_being_written_ends_whole_when_the_volume_reaches_its_free_space_floor(
    gateway: castway.Gateway, small_tmpfs: Path, udp_capture: Any, big_clip: bytes, fmt: str
) -> None:
    in_port = free_port()
    cap = udp_capture()
    route = gateway.add_route("fl", f"udp://127.0.0.1:{in_port}", f"udp://127.0.0.1:{cap.port}")
    rec = small_tmpfs / "rec"
    # Room for a segment to open (3 MiB free), but not for the whole clip (3.3 MB) above the
    # floor: the open segment crosses it. About real time, so that the check (once a second)
    # finds it before the disk is full.
    floor = (3 << 20) // 2
    route.recording.start(rec, segment_ms=60_000, format=fmt, min_free_bytes=floor)
    sender = UdpSender(big_clip, in_port, bitrate=3e6)
    wait_until(lambda: route.recording.stats()["floor_ends"] > 0, 20, "the floor reached")
    wait_until(lambda: route.recording.stats()["segments"] == 1, 10, "the segment ended")
    sender.join()
    stats = route.recording.stats()
    assert stats["floor_ends"] == 1 and stats["state"] == "failing", stats
    assert "min_free_bytes" in stats["last_error"], stats
    errors = [e["error"] for e in gateway.wait_events(0, 0.0, 100_000)
              if e["kind"] == "recording_error"]
    assert errors and all("below the floor" in e for e in errors), errors
    [seg] = [p for p in rec.rglob("*") if p.is_file()]
    assert seg.suffix == f".{fmt}", "closed and renamed, not left as .part"
    assert decode_errors(seg) == "", "it ends whole"
    assert stats["no_space_bytes"] > 0, "what was not recorded is counted"
    wait_until(lambda: cap.size >= len(big_clip), 10, "every byte at the output")
    assert cap.data[: len(big_clip)] == big_clip, "the output relayed every byte, unchanged"
    # Room made (as retention makes it): recording goes on in a new segment.
    seg.unlink()
    sender = UdpSender(big_clip[: len(big_clip) // 3], in_port, bitrate=3e6)
    wait_until(lambda: route.recording.stats()["segment"], 10, "a new segment open")
    sender.join()
    route.recording.stop()


def test_repair_cuts_a_large_part_with_a_garbage_tail_in_place_reading_it_in_chunks(
    tmp_path: Path, gop_clip: bytes
) -> None:
    import tracemalloc

    from castway.server.recording import repair as repair_mod
    from castway.server.recording.catalog import Catalog
    from castway.server.store import Store

    root = tmp_path / "rec"
    (root / "r").mkdir(parents=True)
    body = gop_clip * 12  # some 10 MB: several chunks
    assert len(body) > 4 * repair_mod.CHUNK
    part = root / "r" / "big.ts.part"
    # What a power cut can leave: a torn packet, then blocks of zeros.
    part.write_bytes(body + gop_clip[:PACKET // 2] + b"\0" * (3 * PACKET * 1000 + 17))
    catalog = Catalog(Store(tmp_path / "data"))
    tracemalloc.start()
    try:
        [seg] = repair_mod.repair(root, catalog, patterns={"r": "{route}/big"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    fixed = root / "r" / "big.ts"
    assert not part.exists() and fixed.stat().st_size == len(body) == seg.bytes
    assert fixed.read_bytes() == body
    assert peak < 4 * repair_mod.CHUNK, f"repair held {peak} bytes at once"
    assert seg.repaired and seg.keyframes and seg.keyframes[0] == 0


def test_repair_takes_times_from_the_content_and_the_route_from_the_path_patterns(
    tmp_path: Path, gop_clip: bytes
) -> None:
    from castway.server.recording import repair as repair_mod
    from castway.server.recording.catalog import Catalog
    from castway.server.store import Store

    root = tmp_path / "rec"
    catalog = Catalog(Store(tmp_path / "data"))
    patterns = {"cam": "%Y/{route}/%H-%M-%S", "studio": "{route}/%Y-%m-%d/%H-%M-%S"}
    # Its opening cataloged (an open row): it starts there and lasts its media duration,
    # whenever the repair runs.
    opened = root / "studio" / "2023-11-14" / "22-13-20.ts.part"
    opened.parent.mkdir(parents=True)
    opened.write_bytes(gop_clip)
    catalog.add(Segment(path="studio/2023-11-14/22-13-20.ts", route="studio", format="ts",
                        start=1_700_000_000.0, end=1_700_000_000.0, duration=0.0, bytes=0,
                        open=True))
    # No row: the route is the one whose pattern the path matches (not its first component);
    # it ends at its last write, before the repair.
    unknown = root / "2023" / "cam" / "22-13-20.ts.part"
    unknown.parent.mkdir(parents=True)
    unknown.write_bytes(gop_clip + b"\x47\x00")
    os.utime(unknown, (1_699_000_000.0, 1_699_000_000.0))
    # No row and no pattern matches: repaired, never given a wrong route.
    stray = root / "misc" / "x.ts.part"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(gop_clip)
    lost: list[str] = []
    done = {s.path: s for s in repair_mod.repair(root, catalog, patterns=patterns, lost=lost)}
    assert set(done) == {"studio/2023-11-14/22-13-20.ts", "2023/cam/22-13-20.ts"}
    a = done["studio/2023-11-14/22-13-20.ts"]
    assert 11.5 < a.duration < 13.5
    assert (a.route, a.start, a.end) == ("studio", 1_700_000_000.0, 1_700_000_000.0 + a.duration)
    b = done["2023/cam/22-13-20.ts"]
    assert (b.route, b.end, b.start) == ("cam", 1_699_000_000.0, 1_699_000_000.0 - b.duration)
    # Keyframe times from the video alone, in order (the audio's random access points and
    # timestamps are not the video's): the clip has one every second.
    assert list(a.keyframes) == [float(i) for i in range(12)], a.keyframes
    assert list(b.keyframes) == [float(i) for i in range(12)], b.keyframes
    assert lost == ["misc/x.ts"] and (root / "misc" / "x.ts").exists()
    assert catalog.get("misc/x.ts") is None


def test_segments_repaired_but_not_cataloged_are_counted_in_grpc_and_the_metrics(
    tmp_path: Path, gop_clip: bytes
) -> None:
    import urllib.request

    data = tmp_path / "data"
    # Left open by a crash under a path no route's pattern matches: repaired at start, but no
    # route can be told for it.
    stray = data / "media" / "recordings" / "misc" / "x.ts.part"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(gop_clip)
    data.chmod(0o700)
    port = free_port()
    srv = ServeProcess(data, env={"CASTWAY_ADMIN_KEY": ADMIN},
                       args=("--metrics-listen", f"127.0.0.1:{port}"))
    try:
        assert (stray.parent / "x.ts").exists() and not stray.exists()
        with Client(f"127.0.0.1:{srv.port}", ADMIN) as c:
            stats = c.recordings.GetRecordingsStats(
                recording_pb2.GetRecordingsStatsRequest(), metadata=c.metadata, timeout=30
            )
            assert stats.lost == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert "# TYPE castway_recordings_lost_total counter" in text
        assert "\ncastway_recordings_lost_total 1\n" in text
    finally:
        assert srv.stop(signal.SIGTERM) == 0, srv.text()


def test_segments_are_listed_a_page_at_a_time_and_the_cli_follows_every_page(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    recordings = server.running.recordings
    assert recordings is not None
    server.create("r", rec_spec(free_port(), enabled=False))
    # 250 segments, some starting at the same second (the page order breaks ties by path).
    for i in range(250):
        recordings.catalog.add(Segment(
            path=f"r/s{i:03d}.ts", route="r", format="ts", start=1000.0 + i // 2,
            end=1001.0 + i // 2, duration=1.0, bytes=188,
        ))
    seen: list[str] = []
    req = recording_pb2.ListSegmentsRequest(route="r", page_size=100)
    for _ in range(10):
        reply = server.client.recordings.ListSegments(req, metadata=server.client.metadata)
        assert len(reply.segments) <= 100
        seen += [s.path for s in reply.segments]
        req.page_token = reply.next_page_token
        if not req.page_token:
            break
    assert seen == [f"r/s{i:03d}.ts" for i in range(250)]
    req.page_token = "bm90IGEgdG9rZW4="
    assert "page_token" in expect(
        CODE.INVALID_ARGUMENT,
        lambda: server.client.recordings.ListSegments(req, metadata=server.client.metadata),
    )
    # The CLI asks for page after page (the server's default is 100 a page).
    auth = ["--addr", server.addr, "--key", ADMIN]
    assert main(["recording", "list", "r", "--json", *auth]) == 0
    listed = json.loads(capsys.readouterr().out)["segments"]
    assert [s["path"] for s in listed] == seen


def test_clips_are_bounded_in_range_segments_and_exports_at_once(
    tmp_path: Path, gop_clip: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from castway.server.limits import Limits
    from castway.server.recording import clips

    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1,
                    limits=Limits(max_clip_s=60, max_clips=1)) as run:
        client = Client(f"127.0.0.1:{run.port}", key=ADMIN)
        recordings = run.recordings
        assert recordings is not None

        def export(start: float, end: float) -> bytes:
            req = recording_pb2.ExportClipRequest(route="r", format="ts")
            getattr(req, "from").FromNanoseconds(int(start * 1e9))
            req.to.FromNanoseconds(int(end * 1e9))
            return b"".join(c.data for c in client.recordings.ExportClip(
                req, metadata=client.metadata, timeout=60))

        (recordings.root / "r").mkdir(parents=True)
        for i in range(6):
            (recordings.root / "r" / f"s{i}.ts").write_bytes(gop_clip)
            recordings.catalog.add(Segment(
                path=f"r/s{i}.ts", route="r", format="ts", start=1000.0 + 12 * i,
                end=1012.0 + 12 * i, duration=12.0, bytes=len(gop_clip),
            ))
        # A range longer than limits.max_clip_s.
        err = expect(CODE.INVALID_ARGUMENT, lambda: export(1000, 1061))
        assert "max_clip_s" in err and "60" in err
        # More segments than a clip joins: refused naming the limit, never cut short.
        monkeypatch.setattr(clips, "MAX_LIST", 4)
        err = expect(CODE.INVALID_ARGUMENT, lambda: export(1000, 1060))
        assert "more than 4 segments" in err
        monkeypatch.undo()
        # One export at a time (limits.max_clips = 1): a second is RESOURCE_EXHAUSTED.
        with recordings.clip():
            err = expect(CODE.RESOURCE_EXHAUSTED, lambda: export(1000, 1010))
            assert "max_clips" in err
        assert len(export(1000, 1010)) > 0
        client.close()


def fake_segments(recordings: Any, data: bytes, count: int, name: str = "r") -> None:
    """``count`` copies of ``data`` cataloged as 12 s segments of route ``name`` from t=1000."""
    (recordings.root / name).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (recordings.root / name / f"s{i}.ts").write_bytes(data)
        recordings.catalog.add(Segment(
            path=f"{name}/s{i}.ts", route=name, format="ts", start=1000.0 + 12 * i,
            end=1012.0 + 12 * i, duration=12.0, bytes=len(data),
        ))


def export_request(route: str, start: float, end: float) -> recording_pb2.ExportClipRequest:
    req = recording_pb2.ExportClipRequest(route=route, format="ts")
    getattr(req, "from").FromNanoseconds(int(start * 1e9))
    req.to.FromNanoseconds(int(end * 1e9))
    return req


def test_a_segment_missing_on_disk_or_not_a_file_fails_the_clip_naming_it(
    tmp_path: Path, gop_clip: bytes
) -> None:
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1) as run:
        client = Client(f"127.0.0.1:{run.port}", key=ADMIN)
        assert run.recordings is not None
        fake_segments(run.recordings, gop_clip, 3)
        (run.recordings.root / "r" / "s1.ts").unlink()
        err = expect(CODE.FAILED_PRECONDITION, lambda: list(client.recordings.ExportClip(
            export_request("r", 1000, 1036), metadata=client.metadata, timeout=60)))
        assert "r/s1.ts" in err and "missing" in err, err
        # A FIFO in its place neither blocks the clip nor is read.
        os.mkfifo(run.recordings.root / "r" / "s1.ts")
        err = expect(CODE.FAILED_PRECONDITION, lambda: list(client.recordings.ExportClip(
            export_request("r", 1000, 1036), metadata=client.metadata, timeout=60)))
        assert "r/s1.ts" in err and "not a regular file" in err, err
        # A range without it is a clip.
        assert b"".join(c.data for c in client.recordings.ExportClip(
            export_request("r", 1000, 1010), metadata=client.metadata, timeout=60))
        client.close()


def test_a_clip_is_made_on_the_recordings_volume_and_refused_below_its_free_space_floor(
    server: Server, gop_clip: bytes
) -> None:
    from castway.server.errors import ResourceExhausted
    from castway.server.recording import clips

    recordings = server.running.recordings
    assert recordings is not None
    fake_segments(recordings, gop_clip, 2, name="old")
    assert b"".join(c.data for c in server.client.recordings.ExportClip(
        export_request("old", 1000, 1020), metadata=server.client.metadata, timeout=60))
    assert not list((recordings.root / ".castway-clips").iterdir()), "its files went"
    # A floor of what is free now: any clip would take the volume below it.
    with recordings.clip_dir() as tmp:
        assert tmp.parent == recordings.root / ".castway-clips"
        floor = free_bytes(tmp)
        with pytest.raises(ResourceExhausted, match="min_free_bytes"):
            clips.make(recordings.catalog, recordings.root, "old", 1000, 1020, "ts", tmp,
                       floor=floor)
        assert not list(tmp.iterdir())


def test_a_cancelled_clip_keeps_its_place_until_its_ffmpeg_is_killed(
    tmp_path: Path, gop_clip: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from castway.server.limits import Limits
    from castway.server.recording import clips

    # The segments reach ffmpeg one at a time, the second only when the test lets it: the
    # clip is still being made when the call is cancelled.
    reached, let_go = threading.Event(), threading.Event()
    feed = clips._segments_bytes

    def held(root: Path, segs: list[Segment]) -> Iterator[bytes]:
        for i, data in enumerate(feed(root, segs)):
            if i == 1:
                reached.set()
                let_go.wait(30)
            yield data

    monkeypatch.setattr(clips, "_segments_bytes", held)

    def ffmpegs() -> list[str]:
        r = subprocess.run(["pgrep", "-P", str(os.getpid()), "-x", "ffmpeg"],
                           capture_output=True, text=True, check=False)
        return r.stdout.split()

    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1,
                    limits=Limits(max_clips=1)) as run:
        client = Client(f"127.0.0.1:{run.port}", key=ADMIN)
        recordings = run.recordings
        assert recordings is not None
        fake_segments(recordings, gop_clip, 3)
        call = client.recordings.ExportClip(
            export_request("r", 1000, 1036), metadata=client.metadata, timeout=60)
        wait_until(lambda: ffmpegs() and reached.is_set(), 10, "ffmpeg reading the clip")
        call.cancel()
        wait_until(lambda: not ffmpegs(), 10, "the clip's ffmpeg killed")
        # Its thread has not finished (the feed is held): the place and the files are still
        # the clip's.
        assert recordings._clips == 1
        assert list((recordings.root / ".castway-clips").iterdir())
        let_go.set()
        wait_until(lambda: recordings._clips == 0, 10, "the place let go")
        assert not list((recordings.root / ".castway-clips").iterdir())
        client.close()


def test_a_file_output_into_the_recordings_directory_is_refused_naming_field_and_directory(
    server: Server,
) -> None:
    recordings = server.running.recordings
    assert recordings is not None
    for uri in ("file:///recordings/r/x.ts", "file:///recordings", "file:///recordings/new.ts"):
        details = expect(
            CODE.INVALID_ARGUMENT, lambda uri=uri: server.create("f", spec([test_input()], [uri]))
        )
        assert details.startswith("spec.outputs[0].uri"), details
        assert str(recordings.root) in details and "recordings directory" in details, details
    # Reading a recording back (a file input) is fine; so is a file output beside it.
    (recordings.root / "r").mkdir(parents=True, exist_ok=True)
    (recordings.root / "r" / "old.ts").write_bytes(b"\x47" + b"\xff" * 187)
    server.create("in", spec(["file:///recordings/r/old.ts"]))
    server.create("out", spec([test_input()], ["file:///recordings-copy.ts"]))


def test_a_segment_longer_than_two_hours_is_found_by_any_range_it_overlaps(
    server: Server,
) -> None:
    recordings = server.running.recordings
    assert recordings is not None
    server.create("r", rec_spec(free_port(), enabled=False))
    # A source without keyframes for hours, or a segment repaired after a crash: 5 h long.
    for seg in (
        Segment(path="r/long.ts", route="r", format="ts", start=10_000.0, end=28_000.0,
                duration=18_000.0, bytes=188, repaired=True),
        Segment(path="r/short.ts", route="r", format="ts", start=28_000.0, end=28_006.0,
                duration=6.0, bytes=188),
    ):
        recordings.catalog.add(seg)
    assert [s.path for s in list_segments(server, "r", **{"from": 20_000.0, "to": 20_001.0})] == [
        "r/long.ts"
    ]
    assert [s.path for s in list_segments(server, "r", **{"from": 27_000.0, "to": 28_003.0})] == [
        "r/long.ts", "r/short.ts"
    ]
    assert list_segments(server, "r", **{"from": 28_010.0, "to": 28_020.0}) == []
    plan = recordings.catalog._store._query(
        "EXPLAIN QUERY PLAN SELECT * FROM segments WHERE route = ? AND "
        "end - start > 7200.0 AND start < ? AND end > ? AND open = 0", "r", 1.0, 0.0,
    )
    assert "segments_long" in str(plan), plan


def test_segments_of_a_source_with_psi_on_a_timer_start_with_copies_of_it_and_decode_at_once(
    gateway: castway.Gateway, udp_capture: Any, tmp_path: Path
) -> None:
    # castway's test:// source (GStreamer's mpegtsmux) writes its PAT and PMT every 100 ms,
    # wherever the keyframes fall: a frame or two lie between the last PAT and a keyframe.
    cap = udp_capture()
    route = gateway.add_route(
        "t", "test://?size=320x240&bitrate=500&fps=25", f"udp://127.0.0.1:{cap.port}"
    )
    wait_until(lambda: cap.size > 0, 10, "the output flowing")
    rec = tmp_path / "rec"
    route.recording.start(rec, segment_ms=1000)
    wait_until(lambda: len(segments_closed(gateway, "t")) >= 3, 20, "three segments closed")
    # A pause ends the last one before the next frame (a stop ends it where the data stops).
    route.recording.pause()
    wait_until(lambda: route.recording.stats()["segment"] is None, 5, "the last one closed")
    route.recording.stop()
    stats = route.recording.stats()
    gateway.remove_route("t")
    segs = segments_closed(gateway, "t")
    assert stats["cuts_off_keyframe"] == 0 and stats["cuts_without_psi"] == 0, stats
    assert stats["psi_inserted"] == sum(s["inserted"] for s in segs) > 0, stats
    joined = b""
    for s in segs:
        data = (rec / s["path"]).read_bytes()
        assert s["psi"] and data[1:3] == b"\x40\x00", "it starts with the PAT"
        # Every video frame decodes, from the first: none before the keyframe lacks its PPS.
        # (An AAC frame that straddles a cut is cut with it: ffmpeg's probe says so; not
        # what this test is about.)
        errors = decode_errors(rec / s["path"], video_only=True).splitlines()
        assert [e for e in errors if not e.startswith("[aac")] == [], (s["path"], errors)
        joined += data[s["inserted"] * PACKET:]
    # With the copies taken out, the segments are a run of the output's bytes.
    wait_until(lambda: cap.data.find(joined[-PACKET * 50:]) >= 0, 10, "the output caught up")
    assert cap.data.find(joined) >= 0


def test_an_mp4_recording_goes_on_through_the_slate_and_back_in_files_of_their_own(
    gateway: castway.Gateway, gop_clip: bytes, tmp_path: Path
) -> None:
    """The slate is another program (its own PIDs, picture and audio): a running demuxer and
    muxer cannot take it (the branch failed `not-negotiated` and the slate time was lost). Each
    run of the hub now starts an mp4 file of its own, so the input, the slate and the input
    again are all recorded, each file closed with both tracks."""
    port = free_port()
    route = gateway.add_route("mp4slate", f"udp://127.0.0.1:{port}", ["udp://127.0.0.1:9"],
                              slate=True)
    route.recording.start(tmp_path, segment_ms=2000, format="mp4")
    for _ in range(2):
        UdpSender(gop_clip, port, bitrate=1.5e6).join()
        wait_until(lambda: route.stats()["state"] == "slate", 10, "the slate on air")
        closed = len(segments_closed(gateway, "mp4slate"))
        # The slate's own file: one segment of it closes while the slate is on air.
        wait_until(lambda closed=closed: len(segments_closed(gateway, "mp4slate")) > closed + 1,
                   20, "the slate recorded")
    route.recording.stop()
    stats = route.recording.stats()
    gateway.remove_route("mp4slate")
    assert stats["errors"] == 0 and stats["drops"] == 0, stats
    segments = segments_closed(gateway, "mp4slate")
    for s in segments:
        streams = probe_streams(tmp_path / s["path"])
        assert [k for k, _ in streams] == ["audio", "video"], (s, streams)
    # (The slate's last frame may be short: the hub cuts back to the input at the input's
    # keyframe, between two of the slate's buffers, as the outputs carry it; docs/recording.md.)
    assert not list(tmp_path.rglob("*.part"))


@pytest.mark.parametrize("moved", ["streams", "pmt"])
def test_an_mp4_recording_starts_a_new_file_where_the_program_changes_inside_one_run(
    gateway: castway.Gateway, tmp_path: Path, moved: str
) -> None:
    """Two encodes, the second with its streams (and perhaps its PMT) on other PIDs, sent one
    right after the other to one UDP input (a TS file of two encodes, a sender restarted
    behind the input): the hub passes them as one run, no cut. The running demuxer added a
    second video pad and the branch failed; now the file ends where the program changes and
    the next begins there, with nothing lost and no error."""
    first = make_clip(tmp_path / "a.ts", 5, "320x180", 500, gop=25).read_bytes()
    pids = (0x1000, 0x300) if moved == "streams" else (0x1200, 0x300)
    second = make_clip(tmp_path / "b.ts", 5, "320x180", 500, gop=25, pids=pids).read_bytes()
    port = free_port()
    route = gateway.add_route("mp4prog", f"udp://127.0.0.1:{port}", slate=False)
    rec = tmp_path / "rec"
    route.recording.start(rec, segment_ms=60_000, format="mp4")
    UdpSender(first + second, port, bitrate=1.5e6).join()
    wait_until(lambda: route.recording.stats()["queued_bytes"] == 0, 10, "the recorder caught up")
    route.recording.stop()
    stats = route.recording.stats()
    cuts = route.stats()["switch"]["cuts"]
    gateway.remove_route("mp4prog")
    assert cuts == 0, "one run: the hub did not cut"
    assert stats["errors"] == 0 and stats["drops"] == 0, stats
    assert stats["program_changes"] == 1, stats
    segments = segments_closed(gateway, "mp4prog")
    assert len(segments) == 2, segments
    for s in segments:
        streams = probe_streams(rec / s["path"])
        assert [k for k, _ in streams] == ["audio", "video"], (s, streams)
        # Each encode whole, from its first keyframe (each begins with one).
        for kind, duration in streams:
            assert abs(duration - 5.0) < 0.5, (s, kind, duration)
    assert not list(rec.rglob("*.part"))
