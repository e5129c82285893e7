"""Recording: what a second review of it found (issue 13) — rows a crash left open while their
file was whole, a writer idle with bytes in hand, retention stuck on a file it cannot delete,
and the rest (docs/recording.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import test_metrics

import castway
from castway.cli import main
from castway.client import Client
from castway.server import run_server
from castway.server.recording.catalog import Catalog, CatalogSink, Segment
from castway.server.recording.retention import Retention
from castway.server.specs import Recording
from castway.server.store import Store
from castway.v1 import recording_pb2, route_pb2, spec_pb2

from support import wait_until
from support.clips import make_clip
from support.control import ADMIN, CODE, ServeProcess, Server, expect, spec
from support.net import free_port
from support.senders import UdpSender

PACKET = 188
# Prometheus on loopback, started against a metrics port (a fixture).
prometheus = test_metrics.prometheus


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """12 s at 25 fps with a keyframe every second."""
    path = tmp_path_factory.mktemp("review") / "gop1s.ts"
    return make_clip(path, 12, "320x180", 500, gop=25).read_bytes()


def opened_row(path: str, start: float) -> Segment:
    return Segment(path=path, route="r", format="ts", start=start, end=start, duration=0.0,
                   bytes=0, open=True)


def test_a_segment_renamed_before_its_close_reached_the_catalog_is_closed_from_its_file(
    server: Server, clip: bytes
) -> None:
    recordings = server.running.recordings
    assert recordings is not None
    root, catalog = recordings.root, recordings.catalog
    (root / "r").mkdir(parents=True, exist_ok=True)
    # Killed between the rename and the catalog's write: the file whole, its row open.
    start = time.time() - 3 * 3600
    (root / "r/crash.ts").write_bytes(clip)
    catalog.add(opened_row("r/crash.ts", start))
    done = recordings.repair()
    assert [s.path for s in done] == ["r/crash.ts"]
    seg = catalog.get("r/crash.ts")
    assert seg is not None and not seg.open and seg.bytes == len(clip)
    assert 11.5 < seg.duration < 13.5 and seg.end == seg.start + seg.duration and seg.keyframes
    # Retention counts it, and deletes it by bytes, file and row.
    recordings.retention.run({"r": Recording(max_bytes=1)}, time.time())
    assert catalog.get("r/crash.ts") is None and not (root / "r/crash.ts").exists()


def test_a_row_left_open_is_never_dropped_while_its_file_is_on_disk(
    tmp_path: Path, clip: bytes
) -> None:
    root = tmp_path / "rec"
    (root / "r").mkdir(parents=True)
    catalog = Catalog(Store(tmp_path / "data"))
    # Open rows older than any segment lasts, no route writing them: one whole file, one
    # `.part` (for the next start's repair), one with neither (gone).
    old = time.time() - 3 * 3600
    (root / "r/whole.ts").write_bytes(clip)
    (root / "r/torn.ts.part").write_bytes(clip)
    for name in ("whole", "torn", "gone"):
        catalog.add(opened_row(f"r/{name}.ts", old))
    reported: list[tuple[str, str, str]] = []
    Retention(root, catalog, lambda *a: reported.append(a)).run({}, time.time())
    assert reported == [("r", "r/gone.ts", "missing")]
    assert catalog.get("r/whole.ts") is not None and catalog.get("r/torn.ts") is not None


def test_a_close_the_catalog_never_got_is_taken_from_the_file_once_it_settles(
    server: Server, clip: bytes
) -> None:
    from castway.server.recording.manager import SETTLE_S

    recordings = server.running.recordings
    assert recordings is not None
    root, catalog = recordings.root, recordings.catalog
    (root / "r").mkdir(parents=True, exist_ok=True)
    now = time.time()
    (root / "r/late.ts").write_bytes(clip)
    (root / "r/fresh.ts").write_bytes(clip)
    os.utime(root / "r/late.ts", (now - SETTLE_S - 5, now - SETTLE_S - 5))
    catalog.add(opened_row("r/late.ts", now - 60))
    catalog.add(opened_row("r/fresh.ts", now - 10))
    recordings.prune(now)
    late = catalog.get("r/late.ts")
    assert late is not None and not late.open and late.bytes == len(clip)
    # Its `segment_closed` may still be on its way: left to it.
    fresh = catalog.get("r/fresh.ts")
    assert fresh is not None and fresh.open
    # A `segment_closed` that lands after wins; a close from the file never overwrites one.
    assert not catalog.close_open(late)


def test_a_full_catalog_queue_holds_segment_events_then_counts_what_it_drops(
    tmp_path: Path,
) -> None:
    catalog = Catalog(Store(tmp_path / "data"))
    sink = CatalogSink(catalog, size=1)

    def closed(seq: int) -> dict[str, object]:
        record = {"path": f"r/{seq}.ts", "start": 1.0, "end": 2.0, "duration": 1.0, "bytes": 1}
        return {"kind": "segment_closed", "seq": seq, "route": "r",
                "segment": json.dumps(record)}

    sink.offer(closed(1))  # not started: the queue is full
    offered = threading.Thread(target=sink.offer, args=(closed(2),))
    offered.start()
    sink.start()  # the queue drains: the event waiting gets in
    offered.join(timeout=30)
    wait_until(lambda: catalog.get("r/2.ts") is not None, 10, "both cataloged")
    assert catalog.get("r/1.ts") is not None and sink.dropped == 0
    sink.stop()
    # Nothing draining it: held, then dropped and counted (a retention pass closes its row
    # from the file).
    stopped = CatalogSink(catalog, size=1)
    stopped.offer(closed(3))
    stopped.offer(closed(4))
    assert stopped.dropped == 1


def test_a_writer_left_idle_puts_what_it_received_on_disk_and_kill_9_keeps_it(
    tmp_path: Path, clip: bytes
) -> None:
    data = tmp_path / "data"
    first = ServeProcess(data)
    key = (data / "admin.key").read_text().strip()
    root = data / "media" / "recordings"
    in_port = free_port()
    try:
        with Client(f"127.0.0.1:{first.port}", key) as c:
            c.routes.CreateRoute(route_pb2.CreateRouteRequest(
                name="idle", spec=spec(
                    [f"udp://127.0.0.1:{in_port}"], failover=spec_pb2.Failover(slate=False),
                    recording=spec_pb2.Recording(enabled=True, segment_ms=600_000),
                )), metadata=c.metadata, timeout=30)

            def status() -> Any:
                return c.routes.GetRoute(
                    route_pb2.GetRouteRequest(name="idle"), metadata=c.metadata
                ).status.recording

            wait_until(lambda: status().state == "recording", 30, "recording")
            UdpSender(clip, in_port, bitrate=4e6).join()
            # The sender stopped: everything received reaches the file, what the cutter held
            # back from the last PAT too.
            wait_until(
                lambda: status().segment_bytes + PACKET * status().skipped == len(clip), 30,
                "every byte received written",
            )
            rec = status()
            part = root / (rec.segment + ".part")
            wait_until(lambda: part.stat().st_size == rec.segment_bytes, 30,
                       "what the recorder wrote on disk")
    finally:
        first.stop(signal.SIGKILL)
    second = ServeProcess(data)
    try:
        with Client(f"127.0.0.1:{second.port}", key) as c:
            segs = c.recordings.ListSegments(
                recording_pb2.ListSegmentsRequest(route="idle"), metadata=c.metadata
            ).segments
            assert [(s.path, s.repaired, s.bytes) for s in segs] == [
                (rec.segment, True, rec.segment_bytes)
            ]
    finally:
        second.stop(signal.SIGTERM)


def test_a_segment_retention_cannot_delete_is_reported_and_the_next_one_goes_instead(
    server: Server,
) -> None:
    recordings = server.running.recordings
    assert recordings is not None
    root, catalog = recordings.root, recordings.catalog
    (root / "r").mkdir(parents=True, exist_ok=True)
    now = time.time()
    # The oldest cannot be unlinked (a directory where its file was: EISDIR, as a read-only
    # directory or an immutable file gives EPERM).
    (root / "r/a.ts").mkdir()
    for i, name in enumerate(["a", "b", "c"]):
        if name != "a":
            (root / f"r/{name}.ts").write_bytes(b"\x47" * PACKET)
        catalog.add(Segment(path=f"r/{name}.ts", route="r", format="ts", start=now - 100 + i,
                            end=now - 99 + i, duration=1.0, bytes=3 << 20))
    policy = {"r": Recording(max_bytes=4 << 20)}
    first = recordings.retention.run(policy, now)
    assert first.failed == ["r/a.ts"] and first.deleted == {"bytes": ["r/b.ts", "r/c.ts"]}
    assert catalog.get("r/a.ts") is not None and (root / "r/a.ts").is_dir()
    assert catalog.route_bytes()["r"] <= 4 << 20
    second = recordings.retention.run(policy, now)
    assert second.failed == [] and second.deleted == {}  # under the cap: nothing to do
    catalog.add(Segment(path="r/d.ts", route="r", format="ts", start=now, end=now + 1,
                        duration=1.0, bytes=3 << 20))
    (root / "r/d.ts").write_bytes(b"\x47" * PACKET)
    third = recordings.retention.run(policy, now)
    assert third.failed == ["r/a.ts"] and third.deleted == {"bytes": ["r/d.ts"]}
    assert recordings.retention.failures == 2
    errors = [
        e for e in server.running.control.gateway.wait_events(0, 0.0, 100_000)
        if e["kind"] == "recording_error" and e.get("route") == "r"
    ]
    # Reported once, naming the segment.
    assert len(errors) == 1 and "`r/a.ts`" in errors[0]["error"] and "segment" not in errors[0]


def probe_durations(path: Path) -> dict[str, float]:
    """ffprobe's duration of each stream of `path` by type, and of the whole (`format`)."""
    r = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,duration:format=duration",
         "-of", "json", str(path)], capture_output=True, text=True, timeout=60, check=True,
    )
    info = json.loads(r.stdout)
    out = {s["codec_type"]: float(s["duration"]) for s in info["streams"]}
    return {**out, "format": float(info["format"]["duration"])}


def test_the_first_mp4_segment_of_a_start_mid_gop_has_audio_and_video_starting_together(
    tmp_path: Path,
) -> None:
    # The recorder starts after the route is live: it joins mid-GOP (test:// has a keyframe
    # every 2 s), and the audio before the first keyframe must not make the file longer.
    config = tmp_path / "castway.toml"
    config.write_text(
        '[routes.mp4]\ninputs = ["test://"]\n'
        'recording = { enabled = true, segment_ms = 2000, format = "mp4" }\n'
    )
    data = tmp_path / "data"
    srv = ServeProcess(data, env={"CASTWAY_ADMIN_KEY": ADMIN}, args=("--config", str(config)))
    try:
        with Client(f"127.0.0.1:{srv.port}", key=ADMIN) as c:

            def recording() -> Any:
                req = route_pb2.GetRouteRequest(name="mp4")
                return c.routes.GetRoute(req, metadata=c.metadata).status.recording

            wait_until(lambda: recording().segments >= 1, 30, "a segment closed")
            assert recording().audio_dropped > 0
            wait_until(lambda: c.recordings.ListSegments(
                recording_pb2.ListSegmentsRequest(route="mp4"), metadata=c.metadata
            ).segments, 30, "the segment cataloged")
            first = c.recordings.ListSegments(
                recording_pb2.ListSegmentsRequest(route="mp4"), metadata=c.metadata
            ).segments[0]
    finally:
        srv.stop(signal.SIGTERM)
    d = probe_durations(data / "media" / "recordings" / first.path)
    # Within an audio frame (and a video frame) of each other, and of the catalog's duration.
    assert abs(d["audio"] - d["video"]) < 0.1, d
    assert abs(d["format"] - d["video"]) < 0.1, d
    assert abs(d["video"] - first.duration_s) < 0.1, (d, first.duration_s)


def test_an_operators_pause_outlives_a_policy_change_that_restarts_the_recorder(
    server: Server, clip: bytes
) -> None:
    recordings = server.running.recordings
    assert recordings is not None
    in_port = free_port()

    def rec_spec(segment_ms: int) -> spec_pb2.RouteSpec:
        return spec([f"udp://127.0.0.1:{in_port}"], recording=spec_pb2.Recording(
            enabled=True, segment_ms=segment_ms))

    server.create("held", rec_spec(1000))
    wait_until(lambda: server.get("held").status.recording.state == "recording", 10, "on")
    recordings.pause_recording("held", True)
    server.update("held", rec_spec(2000))
    recordings.tick(time.time())
    assert recordings._started["held"][1] == 2000  # restarted with the new length
    UdpSender(clip, in_port, bitrate=8e6).join()
    wait_until(lambda: server.get("held").status.recording.skipped * PACKET >= len(clip) // 2,
               10, "the data passed over, paused")
    rec = server.get("held").status.recording
    assert rec.state == "paused" and rec.segment == "" and rec.bytes == 0, rec
    assert not list((recordings.root / "held").rglob("*.ts*"))


def test_a_failed_mp4_branch_leaves_no_empty_part_file_behind(
    gateway: castway.Gateway, small_tmpfs: Path
) -> None:
    route = gateway.add_route("full", "test://?size=640x360&bitrate=4000&fps=25")
    route.recording.start(small_tmpfs / "rec", segment_ms=1000, format="mp4")
    wait_until(lambda: route.recording.stats()["errors"] >= 2, 60, "the volume full, twice")
    route.recording.stop()
    gateway.remove_route("full")
    empty = [f for f in (small_tmpfs / "rec").rglob("*.part") if f.stat().st_size == 0]
    assert empty == []


def test_a_timestamp_out_of_range_is_refused_naming_its_field(server: Server) -> None:
    c = server.client
    server.create("cam", spec([f"udp://127.0.0.1:{free_port()}"]))
    huge = recording_pb2.ListSegmentsRequest(route="cam")
    getattr(huge, "from").seconds = 2**62
    detail = expect(CODE.INVALID_ARGUMENT,
                    lambda: c.recordings.ListSegments(huge, metadata=c.metadata))
    assert "from.seconds" in detail
    negative = recording_pb2.ListSegmentsRequest(route="cam")
    negative.to.nanos = -5
    detail = expect(CODE.INVALID_ARGUMENT,
                    lambda: c.recordings.ListSegments(negative, metadata=c.metadata))
    assert "to.nanos" in detail
    clip = recording_pb2.ExportClipRequest(route="cam", format="ts")
    getattr(clip, "from").seconds = 2**62
    clip.to.seconds = 10
    detail = expect(CODE.INVALID_ARGUMENT,
                    lambda: list(c.recordings.ExportClip(clip, metadata=c.metadata)))
    assert "from.seconds" in detail


def test_the_cli_names_a_bad_time_and_an_output_it_cannot_write_before_making_a_clip(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], clip: bytes
) -> None:
    recordings = server.running.recordings
    assert recordings is not None
    (recordings.root / "known").mkdir(parents=True, exist_ok=True)
    (recordings.root / "known/s.ts").write_bytes(clip)
    recordings.catalog.add(Segment(path="known/s.ts", route="known", format="ts", start=1000.0,
                                   end=1012.0, duration=12.0, bytes=len(clip)))
    creds = ["--addr", server.addr, "--key", ADMIN]
    for bad in ("inf", "1e300", "nan", "1e12", "-1e12"):
        with pytest.raises(SystemExit) as exited:
            main(["recording", "list", "known", *creds, f"--from={bad}"])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and "argument --from" in err and "not a time" in err, err
        assert "Traceback" not in err and "_when" not in err, err
    (tmp_path / "isdir.ts").mkdir()
    for out, why in ((tmp_path / "isdir.ts", "is a directory"),
                     (Path("/proc/self/x.ts"), "cannot write")):
        code = main(["recording", "export", "known", *creds, "--from", "1000", "--to", "1004",
                     "-o", str(out)])
        err = capsys.readouterr().err
        assert code == 1 and f"-o {out}" in err and why in err and "Traceback" not in err, err
    assert not list(tmp_path.glob("*.part"))


def test_a_recording_number_out_of_64_bits_is_refused_naming_its_field_and_range(
    gateway: castway.Gateway, tmp_path: Path
) -> None:
    route = gateway.add_route("nums", "test://")
    for kw, field in ((dict(segment_ms=-1), "recording.segment_ms"),
                      (dict(segment_ms=2**70), "recording.segment_ms"),
                      (dict(queue_bytes=-1), "recording.queue_bytes"),
                      (dict(min_free_bytes=-1), "recording.min_free_bytes")):
        with pytest.raises(castway.errors.ConfigError) as refused:
            route.recording.start(tmp_path, **kw)  # type: ignore[arg-type]
        assert field in str(refused.value) and "outside" in str(refused.value), kw
        assert route.recording.stats()["state"] == "stopped"
    route.recording.start(tmp_path)
    with pytest.raises(castway.errors.ConfigError, match=r"recording\.min_free_bytes"):
        route.recording.set_min_free(-1)
    route.recording.stop()


def test_prometheus_sees_the_recorders_state_segment_totals_and_retention(
    tmp_path: Path, prometheus: Any, clip: bytes
) -> None:
    from prometheus_client.parser import text_string_to_metric_families
    get, query = test_metrics.get, test_metrics.query

    in_port = free_port()
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1,
                    metrics_listen="127.0.0.1:0") as running:
        recordings = running.recordings
        assert recordings is not None and running.metrics_port
        srv = Server(running, Client(f"127.0.0.1:{running.port}", key=ADMIN), tmp_path / "data")

        def rec_spec(segment_ms: int) -> spec_pb2.RouteSpec:
            return spec([f"udp://127.0.0.1:{in_port}"], recording=spec_pb2.Recording(
                enabled=True, segment_ms=segment_ms))

        srv.create("rec", rec_spec(1000))
        wait_until(lambda: srv.get("rec").status.recording.state == "recording", 10, "on")
        sender = UdpSender(clip, in_port, bitrate=4e6)
        wait_until(lambda: srv.get("rec").status.recording.segments >= 2, 20, "segments")
        # The open segment's start, as the catalog has it.
        url = f"http://127.0.0.1:{running.metrics_port}/metrics"

        def segment_start() -> float | None:
            families = {f.name: f for f in text_string_to_metric_families(get(url))}
            started = families.get("castway_recording_segment_start_seconds")
            return next((s.value for s in started.samples if s.labels["route"] == "rec"),
                        None) if started else None

        assert wait_until(segment_start, 10, "the open segment's start") > 1e9
        sender.join()
        # Paused, then restarted by a policy change: the state shows paused, the totals go on.
        recordings.pause_recording("rec", True)
        wait_until(lambda: srv.get("rec").status.recording.segment == "", 10, "closed")
        before = srv.get("rec").status.recording.segments
        srv.update("rec", rec_spec(2000))
        recordings.tick(time.time())
        assert srv.get("rec").status.recording.segments == 0
        # Retention: one segment deleted by bytes, one it cannot delete.
        root, catalog = recordings.root, recordings.catalog
        (root / "old").mkdir(parents=True, exist_ok=True)
        (root / "old/a.ts").mkdir()
        (root / "old/b.ts").write_bytes(b"\x47" * PACKET)
        for i, name in enumerate("ab"):
            catalog.add(Segment(path=f"old/{name}.ts", route="old", format="ts", start=10.0 + i,
                                end=11.0 + i, duration=1.0, bytes=PACKET))
        recordings.retention.run({"old": Recording(max_bytes=1)}, time.time())

        base = prometheus(running.metrics_port)
        for promql in (
            'castway_recording_state{route="rec",state="paused"} == 1',
            'castway_recording_state{route="rec",state="recording"} == 0',
            f'castway_recording_segments_all_total{{route="rec"}} == {before}',
            'castway_recording_segments_total{route="rec"} == 0',
            'castway_recording_retention_deleted_total{reason="bytes"} == 1',
            "castway_recording_retention_failures_total == 1",
        ):
            wait_until(lambda promql=promql: query(base, promql), 30, promql)
        srv.client.close()


def test_recording_totals_run_on_across_a_restart_made_directly_from_the_python_api(
    tmp_path: Path, clip: bytes
) -> None:
    """The `*_all` totals used to be kept by the recordings manager, for the restarts it made
    itself: a recorder stopped through the Python API of the served gateway (and started again
    by the manager, as its policy wants) started them over. The route keeps them now, whoever
    stops and starts its recorder."""
    from prometheus_client.parser import text_string_to_metric_families

    in_port = free_port()
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1,
                    metrics_listen="127.0.0.1:0") as running:
        srv = Server(running, Client(f"127.0.0.1:{running.port}", key=ADMIN), tmp_path / "data")
        srv.create("direct", spec([f"udp://127.0.0.1:{in_port}"], recording=spec_pb2.Recording(
            enabled=True, segment_ms=1000)))
        route = running.control.gateway.route("direct")
        wait_until(lambda: route.recording.stats()["state"] == "recording", 10, "on")
        sender = UdpSender(clip, in_port, bitrate=2e6)
        wait_until(lambda: route.recording.stats()["segments"] >= 2, 20, "segments")
        route.recording.stop()
        first = route.recording.stats()
        wait_until(lambda: route.recording.stats()["state"] != "stopped", 10, "started again")
        sender.join()
        url = f"http://127.0.0.1:{running.metrics_port}/metrics"

        def total(name: str) -> float:
            families = {f.name: f for f in text_string_to_metric_families(test_metrics.get(url))}
            return float(next(s.value for s in families[name].samples
                              if s.labels.get("route") == "direct"))

        stats = route.recording.stats()
        assert stats["segments_all"] == first["segments"] + stats["segments"], (first, stats)
        assert stats["bytes_all"] == first["bytes"] + stats["bytes"], (first, stats)
        # (Read after the stats: the figures only grow.)
        assert total("castway_recording_segments_all") >= first["segments"] + stats["segments"]
        assert total("castway_recording_written_all_bytes") >= first["bytes"] + stats["bytes"]
        srv.client.close()
