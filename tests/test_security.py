"""Issue 14, the control plane locked down: each finding of the security review against a real
server on port 0 with a temporary data dir."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from castway import cli
from castway.client import Client, PlaintextError
from castway.server import ServeError, Tls, run_server
from castway.server.errors import FailedPrecondition
from castway.server.limits import Limits
from castway.server.specs import Endpoint, Spec
from castway.server.store import MIGRATIONS, Store
from castway.v1 import key_pb2, route_pb2, spec_pb2, system_pb2, template_pb2

from support import wait_until
from support.capture import UdpCapture
from support.control import (
    ADMIN,
    CODE,
    ServeProcess,
    Server,
    ep,
    expect,
    spec,
    test_input,
)
from support.net import free_port
from support.tracing import traced_client

# 2. Header-only unauthenticated calls


def _held_open(stop: threading.Event) -> Iterator[Any]:
    """A request stream that sends nothing until ``stop``: the call's headers go out, its
    body never does."""
    stop.wait(30)
    return
    yield


def test_header_only_calls_do_not_stop_admin_calls_or_health_checks(server: Server) -> None:
    methods = [
        "/castway.v1.RouteService/ListRoutes",
        "/castway.v1.RouteService/CreateRoute",
        "/castway.v1.KeyService/ListKeys",
        "/grpc.health.v1.Health/Check",
    ]
    stop = threading.Event()
    channels: list[grpc.Channel] = []
    calls: list[tuple[str, Any]] = []
    try:
        for i in range(64):
            # A channel each, with its own connection, as separate attackers would.
            ch = grpc.insecure_channel(server.addr, options=[("grpc.use_local_subchannel_pool", 1)])
            grpc.channel_ready_future(ch).result(timeout=10)
            channels.append(ch)
            method = methods[i % len(methods)]
            calls.append((method, ch.stream_unary(method).future(_held_open(stop), timeout=60)))
        # Calls without a key are refused as soon as their headers arrive, body or not.
        refused = [f for m, f in calls if not m.startswith("/grpc.health")]
        wait_until(lambda: all(f.done() for f in refused), 10, "the keyless calls to be refused")
        assert {f.exception().code() for f in refused} == {CODE.UNAUTHENTICATED}
        health = health_pb2_grpc.HealthStub(server.client.channel)
        # With a worker held per open call these would wait for ever: the deadline only bounds
        # the test on a loaded machine, it asserts no timing.
        for _ in range(5):
            server.client.routes.ListRoutes(
                route_pb2.ListRoutesRequest(), metadata=server.client.metadata, timeout=20
            )
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=20)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # The header-only health checks are still waiting for their bodies, holding no worker.
        assert not any(f.done() for m, f in calls if m.startswith("/grpc.health"))
    finally:
        stop.set()
        for _, f in calls:
            f.cancel()
        for ch in channels:
            ch.close()


# 7. The audit trail


def test_mutations_and_refusals_are_audited_with_key_and_peer(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="castway.audit")
    md = server.client.metadata
    me = server.client.system.WhoAmI(system_pb2.WhoAmIRequest(), metadata=md)
    server.create("audited", spec([test_input()]), desired_state=route_pb2.DESIRED_STATE_STOPPED)
    server.client.routes.GetRoute(route_pb2.GetRouteRequest(name="audited"), metadata=md)
    with server.client_with("cw_00000000_wrong") as wrong:
        expect(
            CODE.UNAUTHENTICATED,
            lambda: wrong.routes.DeleteRoute(
                route_pb2.DeleteRouteRequest(name="audited"), metadata=wrong.metadata
            ),
        )
    with server.client_with(server.key("viewer")) as viewer:
        viewer_id = viewer.system.WhoAmI(system_pb2.WhoAmIRequest(), metadata=viewer.metadata)
        expect(
            CODE.PERMISSION_DENIED,
            lambda: viewer.routes.StopRoute(
                route_pb2.StopRouteRequest(name="audited"), metadata=viewer.metadata
            ),
        )
    expect(CODE.NOT_FOUND, lambda: server.get("nope"))
    # A name that would forge a line of its own stays in its field, escaped.
    forged = "zz\n2026-11-23 KeyService/RevokeKey key=1 status=0 name=backdoor"
    expect(CODE.NOT_FOUND, lambda: server.get(forged))

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "castway.audit"]

    def line(*parts: str) -> None:
        # A refusal's line may be written just after the client has its answer.
        wait_until(
            lambda: [x for x in lines() if all(p in x for p in parts)], 5, f"audit line {parts}"
        )
        found = [x for x in lines() if all(p in x for p in parts)]
        assert len(found) == 1, (parts, found)

    line("RouteService/CreateRoute", f"key={me.key_id}", "peer=ipv4:127.0.0.1:", "status=OK",
         "name=audited")
    line("KeyService/CreateKey", f"key={me.key_id}", "status=OK")
    line("RouteService/DeleteRoute", "key=-", "peer=ipv4:127.0.0.1:", "status=UNAUTHENTICATED")
    line("RouteService/StopRoute", f"key={viewer_id.key_id}", "status=PERMISSION_DENIED")
    line("RouteService/GetRoute", "status=NOT_FOUND", "name=nope")
    line("RouteService/GetRoute", "status=NOT_FOUND", "name=zz\\n2026-11-23\\x20KeyService")
    [forged_line] = [x for x in lines() if "RevokeKey" in x]
    assert forged_line.startswith("RouteService/GetRoute ") and "\n" not in forged_line
    # Reads that succeed are not mutations: no line.
    assert not [x for x in lines() if "GetRoute" in x and "status=OK" in x]


def test_the_key_id_is_on_the_trace_span(tmp_path: Path) -> None:
    with traced_client(tmp_path) as (c, exporter):
        me = c.system.WhoAmI(system_pb2.WhoAmIRequest(), metadata=c.metadata)
        c.routes.ListRoutes(route_pb2.ListRoutesRequest(), metadata=c.metadata)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    span = spans["castway.v1.RouteService/ListRoutes"]
    assert span.attributes is not None and span.attributes["castway.key.id"] == me.key_id


def test_a_peer_with_repeated_failures_is_slowed_down(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="castway.audit")
    took = []
    with server.client_with("cw_00000000_guess") as guess:
        for _ in range(14):
            started = time.monotonic()
            expect(
                CODE.UNAUTHENTICATED,
                lambda: guess.routes.ListRoutes(
                    route_pb2.ListRoutesRequest(), metadata=guess.metadata, timeout=10
                ),
            )
            took.append(time.monotonic() - started)
    # The first ten are answered at once; from the eleventh on each waits longer.
    assert took[-1] >= 0.35 and sum(took[10:]) >= 0.9, took
    assert any("peer 127.0.0.1 throttled" in r.getMessage() for r in caplog.records)
    # A good key from the same address is not held back.
    server.client.routes.ListRoutes(
        route_pb2.ListRoutesRequest(), metadata=server.client.metadata, timeout=2
    )


# 1. File endpoints stay in the media root


def _refused(server: Server, code: grpc.StatusCode, field: str, s: Any, name: str = "f") -> str:
    details = expect(code, lambda: server.create(name, s))
    assert details.startswith(field), details
    return details


def test_file_endpoints_outside_the_media_root_are_refused(server: Server, tmp_path: Path) -> None:
    media = server.data_dir / "media"
    assert media.is_dir()
    config = tmp_path / "castway.toml"
    config.write_text("[routes]\n")
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$hash\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    bad = CODE.INVALID_ARGUMENT
    # An absolute path names a file in the media root, not in /: no such directory there.
    _refused(server, bad, "spec.outputs[0].uri", spec([test_input()], [f"file://{config}"]))
    _refused(server, bad, "spec.inputs[0].uri", spec([f"file://{secret}"]))
    _refused(server, bad, "spec.outputs[0].uri", spec([test_input()], ["file:///../escape.ts"]))
    _refused(server, bad, "spec.outputs[0].uri", spec([test_input()], ["file:///a/%2e%2e/x.ts"]))
    _refused(server, bad, "spec.inputs[0].uri", spec(["file:///../../../../etc/passwd"]))
    # The store: beside the media root, never reachable; not by a hard link either.
    _refused(server, bad, "spec.outputs[0].uri", spec([test_input()], ["file:///../castway.db"]))
    os.link(server.data_dir / "castway.db", media / "db.ts")
    denied = CODE.PERMISSION_DENIED
    _refused(server, denied, "spec.inputs[0].uri", spec(["file:///db.ts"]))
    _refused(
        server, denied, "spec.outputs[0].uri", spec([test_input()], ["file:///db.ts?overwrite=1"])
    )
    # Symbolic links, as a directory on the way or as the file itself.
    (media / "out").symlink_to(outside)
    (media / "clip.ts").symlink_to(secret)
    _refused(server, denied, "spec.outputs[0].uri", spec([test_input()], ["file:///out/x.ts"]))
    _refused(server, denied, "spec.inputs[0].uri", spec(["file:///clip.ts"]))
    _refused(server, denied, "spec.outputs[0].uri", spec([test_input()], ["file:///clip.ts"]))
    # An existing file castway did not write is kept, unless the spec says overwrite=1.
    (media / "keep.ts").write_bytes(b"precious")
    _refused(server, denied, "spec.outputs[0].uri", spec([test_input()], ["file:///keep.ts"]))
    # Templates are checked the same way.
    details = expect(
        bad,
        lambda: server.client.templates.CreateTemplate(
            template_pb2.CreateTemplateRequest(
                name="t", spec=spec([], [f"file://{outside}/x.ts"])
            ),
            metadata=server.client.metadata,
        ),
    )
    assert details.startswith("spec.outputs[0].uri"), details
    assert config.read_text() == "[routes]\n" and not list(outside.iterdir())
    assert (media / "keep.ts").read_bytes() == b"precious"
    listed = server.client.routes.ListRoutes(
        route_pb2.ListRoutesRequest(), metadata=server.client.metadata
    )
    assert not listed.routes


def test_file_endpoints_inside_the_media_root_play_and_record(
    tmp_path: Path, ts_file: Path, udp_capture: Callable[..., UdpCapture]
) -> None:
    data = tmp_path / "data"
    media = tmp_path / "media"
    (media / "clips").mkdir(parents=True)
    (media / "rec").mkdir()
    shutil.copy(ts_file, media / "clips" / "feed.ts")
    (media / "rec" / "old.ts").write_bytes(b"not castway's")
    cap = udp_capture()
    with run_server(data, admin_key=ADMIN, grace_s=1, media_dir=media) as running:
        with Client(f"127.0.0.1:{running.port}", ADMIN) as c:
            c.routes.CreateRoute(
                route_pb2.CreateRouteRequest(
                    name="play",
                    spec=spec(
                        ["file:///clips/feed.ts?loop=1"],
                        [
                            f"udp://127.0.0.1:{cap.port}",
                            ep("file:///rec/news.ts", "rec"),
                            ep("file:///rec/old.ts?overwrite=1", "old"),
                        ],
                    ),
                ),
                metadata=c.metadata,
            )
            wait_until(lambda: cap.size > 100_000, 30, "the file input to play")
            rec = media / "rec" / "news.ts"
            wait_until(lambda: rec.stat().st_size > 100_000, 30, "the file output to grow")
            assert stat.S_IMODE(rec.stat().st_mode) == 0o600
            wait_until(lambda: (media / "rec" / "old.ts").read_bytes()[:1] == b"\x47", 30,
                       "the file output written over on request")
            route = c.routes.GetRoute(route_pb2.GetRouteRequest(name="play"), metadata=c.metadata)
            assert route.resolved.outputs[1].uri == "file:///rec/news.ts"
    # After a restart castway writes over its own output again, and keeps refusing others.
    with run_server(data, admin_key=ADMIN, grace_s=1, media_dir=media) as running:
        view = running.control.get_route("play")
        assert view.state != "failed", view.error
    # A media dir that holds the data dir (and so the store) is refused.
    with pytest.raises(ServeError, match="holds the data dir"):
        with run_server(data, admin_key=ADMIN, media_dir=tmp_path):
            pass


# 3. Secrets kept secret on disk


def _modes(data: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.iterdir() if p.is_file()}


def test_data_dir_and_every_store_file_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ServeProcess(data)
    try:
        key_file = data / "admin.key"
        key = key_file.read_text().strip()
        # The first admin key is in a 0600 file, not in the log.
        assert key.startswith("cw_") and key not in first.text()
        assert str(key_file) in first.text()
        with Client(f"127.0.0.1:{first.port}", key_file=key_file) as c:
            c.routes.CreateRoute(
                route_pb2.CreateRouteRequest(
                    name="r",
                    spec=spec([test_input()], srt=spec_pb2.SrtDefaults(passphrase="a-secret-pass")),
                    desired_state=route_pb2.DESIRED_STATE_STOPPED,
                ),
                metadata=c.metadata,
            )
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        modes = _modes(data)
        assert {"castway.db", "castway.db-wal", "castway.db-shm", "admin.key"} <= set(modes)
        assert set(modes.values()) == {0o600}, modes
    finally:
        assert first.stop(signal.SIGTERM) == 0, first.text()


def test_store_files_made_by_an_older_castway_are_made_private(tmp_path: Path) -> None:
    data = tmp_path / "old"
    data.mkdir(mode=0o700)
    db = sqlite3.connect(data / Store.FILE)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    db.close()
    for p in data.iterdir():
        p.chmod(0o644)
    with run_server(data, admin_key=ADMIN, grace_s=1) as running:
        assert running.control is not None
        modes = _modes(data)
        assert "castway.db" in modes and set(modes.values()) == {0o600}, modes
    assert Store(data).schema_version == len(MIGRATIONS)


def test_a_data_dir_others_can_read_is_refused_at_start(tmp_path: Path) -> None:
    data = tmp_path / "open"
    data.mkdir()
    data.chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-m", "castway", "serve", "--data-dir", str(data), "--listen",
         "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "CASTWAY_ADMIN_KEY": ADMIN},
    )
    assert done.returncode == 1, done.stderr
    assert "can be read by others (mode 0755)" in done.stderr
    assert f"chmod 700 {data}" in done.stderr
    assert not (data / "castway.db").exists()


@pytest.mark.parametrize(
    "weak",
    ["short-key-0123456", "a" * 40, "abababababababababababababab", "0123456789012345678901234"],
)
def test_a_weak_admin_key_from_the_environment_is_refused(tmp_path: Path, weak: str) -> None:
    with pytest.raises(ServeError, match="CASTWAY_ADMIN_KEY"):
        with run_server(tmp_path / "data", admin_key=weak):
            pass


def test_the_cli_reads_its_key_from_a_file(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(ADMIN + "\n")
    assert cli.main(["route", "list", "--addr", server.addr, "--key-file", str(key_file)]) == 0
    assert cli.main(["route", "list", "--addr", server.addr, "--key-file", "/nonexistent"]) == 1
    assert "cannot read the key file" in capsys.readouterr().err


def test_the_cli_says_where_a_key_goes_when_none_was_given(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a key the server's refusal alone (`missing authorization: Bearer KEY metadata`)
    left a new user guessing; with a wrong one, the refusal is enough."""
    for var in ("CASTWAY_KEY", "CASTWAY_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    assert cli.main(["route", "list", "--addr", server.addr]) == 1
    err = capsys.readouterr().err
    assert err.startswith("castway: UNAUTHENTICATED: ") and "--key-file" in err, err
    assert "CASTWAY_KEY_FILE" in err, err
    assert cli.main(["route", "list", "--addr", server.addr, "--key", "x" * 32]) == 1
    err = capsys.readouterr().err
    assert "UNAUTHENTICATED" in err and "--key-file" not in err, err


# 9. A changed CASTWAY_ADMIN_KEY replaces the one it registered before


def test_a_new_admin_key_from_the_environment_revokes_the_old_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old, new = ADMIN, "rotated-admin-KEY-9876543210-xyz"
    with run_server(data, admin_key=old, grace_s=1):
        pass
    with run_server(data, admin_key=new, grace_s=1) as running:
        addr = f"127.0.0.1:{running.port}"
        with Client(addr, old) as c:
            expect(
                CODE.UNAUTHENTICATED,
                lambda: c.routes.ListRoutes(route_pb2.ListRoutesRequest(), metadata=c.metadata),
            )
        with Client(addr, new) as c:
            keys = c.keys.ListKeys(key_pb2.ListKeysRequest(), metadata=c.metadata).keys
    assert sorted((k.name, k.revoked) for k in keys) == [("env", False), ("env", True)]


# 4. Per-route limits and the port index


def test_inputs_and_outputs_per_route_are_limited(server: Server) -> None:
    udp = [f"udp://127.0.0.1:{9000 + i}" for i in range(65)]
    details = _refused(server, CODE.INVALID_ARGUMENT, "spec.inputs", spec([test_input()] * 17))
    assert "limits.max_inputs" in details
    details = _refused(server, CODE.INVALID_ARGUMENT, "spec.outputs", spec([test_input()], udp))
    assert "limits.max_outputs" in details
    md = server.client.metadata
    server.client.templates.CreateTemplate(
        template_pb2.CreateTemplateRequest(name="wide", spec=spec([], udp[:40])), metadata=md
    )
    details = _refused(
        server, CODE.INVALID_ARGUMENT, "resolved.outputs",
        spec([test_input()], udp[40:], template="wide"),
    )
    assert "at most 64" in details


def test_port_claims_are_found_through_an_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from castway import _castway
    from castway.server import control as control_module

    # How many other routes' binds each clash check is given to compare: through the index,
    # those on the new route's ports only; comparing every pair took 16 s here at 16000.
    compared: list[int] = []
    find_clash = _castway.find_clash

    def counting(mine: Any, held: Any) -> Any:
        compared.append(len(held))
        return find_clash(mine, held)

    monkeypatch.setattr(control_module._castway, "find_clash", counting)
    wide = Limits(max_inputs=16000, max_spec_bytes=1 << 20)
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1, limits=wide) as running:
        control = running.control
        many = Spec(inputs=tuple(Endpoint("", f"udp://:{20000 + i}") for i in range(16000)))
        control.create_route("many", many, "stopped")
        compared.clear()
        control.create_route("other", Spec(inputs=(Endpoint("", "udp://:40000"),)), "stopped")
        assert max(compared) == 0, compared
        compared.clear()
        with pytest.raises(FailedPrecondition, match="in15999 of route 'many'"):
            control.create_route("clash", Spec(inputs=(Endpoint("", "udp://:35999"),)), "stopped")
        # The one bind on that port, not the 16000 of the route.
        assert max(compared) == 1, compared
        # The index follows updates and deletes.
        control.update_route("other", Spec(inputs=(Endpoint("", "udp://:40001"),)))
        control.create_route("reuse", Spec(inputs=(Endpoint("", "udp://:40000"),)), "stopped")
        with pytest.raises(FailedPrecondition, match="of route 'other'"):
            control.create_route("again", Spec(inputs=(Endpoint("", "udp://:40001"),)), "stopped")
        control.delete_route("many")
        control.create_route("freed", Spec(inputs=(Endpoint("", "udp://:35999"),)), "stopped")


# 5. Sizes, counts and paging


def test_sizes_and_counts_are_limited(tmp_path: Path) -> None:
    config = tmp_path / "castway.toml"
    config.write_text("[limits]\nmax_routes = 3\nmax_templates = 1\nmax_keys = 2\n")
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1, config=config) as running:
        with Client(f"127.0.0.1:{running.port}", ADMIN) as c:
            s = Server(running, c, tmp_path / "data")
            huge = "file:///" + "x" * 1_500_000 + ".ts"
            details = _refused(s, CODE.INVALID_ARGUMENT, "spec.outputs[0].uri",
                               spec([test_input()], [huge]))
            assert "limits.max_uri_bytes" in details
            long_uris = [f"udp://127.0.0.1:{9000 + i}?buffer_size=1{'0' * 3990}"[:4000]
                         for i in range(20)]
            assert "limits.max_spec_bytes" in _refused(
                s, CODE.INVALID_ARGUMENT, "spec", spec([test_input()], long_uris)
            )
            _refused(s, CODE.INVALID_ARGUMENT, "name", spec([test_input()]), name="n" * 65)
            stopped = route_pb2.DESIRED_STATE_STOPPED
            for i in range(3):
                s.create(f"r{i}", spec([test_input()]), desired_state=stopped)
            details = expect(
                CODE.RESOURCE_EXHAUSTED,
                lambda: s.create("r3", spec([test_input()]), desired_state=stopped),
            )
            assert "limits.max_routes" in details
            md = c.metadata
            c.templates.CreateTemplate(
                template_pb2.CreateTemplateRequest(name="t0", spec=spec([])), metadata=md
            )
            expect(
                CODE.RESOURCE_EXHAUSTED,
                lambda: c.templates.CreateTemplate(
                    template_pb2.CreateTemplateRequest(name="t1", spec=spec([])), metadata=md
                ),
            )
            viewer = key_pb2.CreateKeyRequest(name="k", role=key_pb2.ROLE_VIEWER)
            c.keys.CreateKey(viewer, metadata=md)
            expect(
                CODE.RESOURCE_EXHAUSTED,
                lambda: c.keys.CreateKey(
                    key_pb2.CreateKeyRequest(name="k2", role=key_pb2.ROLE_VIEWER), metadata=md
                ),
            )
            listed = c.routes.ListRoutes(route_pb2.ListRoutesRequest(), metadata=md)
            assert [r.name for r in listed.routes] == ["r0", "r1", "r2"]


def test_list_routes_pages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    limits = Limits(default_page_size=3, max_page_size=5)
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1, limits=limits) as running:
        for i in range(7):
            running.control.create_route(f"r{i}", Spec(inputs=(Endpoint("", test_input()),)),
                                         "stopped")
        addr = f"127.0.0.1:{running.port}"
        with Client(addr, ADMIN) as c:
            md = c.metadata

            def page(**kw: Any) -> route_pb2.ListRoutesResponse:
                return c.routes.ListRoutes(route_pb2.ListRoutesRequest(**kw), metadata=md)

            first = page()
            assert [r.name for r in first.routes] == ["r0", "r1", "r2"] and first.next_page_token
            capped = page(page_size=100)
            assert len(capped.routes) == 5
            names, token = [], ""
            for _ in range(10):
                p = page(page_size=2, page_token=token)
                names += [r.name for r in p.routes]
                token = p.next_page_token
                if not token:
                    break
            assert names == [f"r{i}" for i in range(7)]
            details = expect(CODE.INVALID_ARGUMENT, lambda: page(page_token="bogus"))
            assert details.startswith("page_token")
        # The CLI follows the pages.
        assert cli.main(["route", "list", "--json", "--addr", addr, "--key", ADMIN]) == 0
        listed = json.loads(capsys.readouterr().out)["routes"]
        assert [r["name"] for r in listed] == [f"r{i}" for i in range(7)]


# 6. Plaintext stays on loopback


def test_plaintext_on_an_address_that_is_not_loopback_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for listen in ("0.0.0.0:0", "[::]:0", "gw.example:50051"):
        with pytest.raises(ServeError, match="refusing to serve plaintext"):
            with run_server(data, listen, admin_key=ADMIN):
                pass
    # Refused before anything was opened or bound.
    assert not data.exists()
    done = subprocess.run(
        [sys.executable, "-m", "castway", "serve", "--data-dir", str(data), "--listen",
         "0.0.0.0:0"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "CASTWAY_ADMIN_KEY": ADMIN},
    )
    assert done.returncode == 1 and "--insecure" in done.stderr, done.stderr
    # Told so, it serves; the test talks to it over loopback only.
    with run_server(data, "0.0.0.0:0", admin_key=ADMIN, insecure=True, grace_s=1) as running:
        with Client(f"127.0.0.1:{running.port}", ADMIN) as c:
            c.routes.ListRoutes(route_pb2.ListRoutesRequest(), metadata=c.metadata, timeout=5)


def test_the_cli_refuses_plaintext_to_an_address_that_is_not_loopback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Refused before any channel exists: nothing is sent anywhere.
    assert cli.main(["route", "list", "--addr", "192.0.2.1:50051", "--key", ADMIN]) == 1
    assert "refusing plaintext to 192.0.2.1:50051" in capsys.readouterr().err
    with pytest.raises(PlaintextError):
        Client("[2001:db8::1]:50051", ADMIN)
    for local in ("127.0.0.1:1", "[::1]:1", "localhost:1"):
        Client(local, ADMIN).close()


def test_tls_is_1_2_at_least_and_prefers_1_3(tmp_path: Path, certs: Path) -> None:
    tls = Tls(certs / "server.pem", certs / "server.key")
    with run_server(tmp_path / "data", tls=tls, admin_key=ADMIN, grace_s=1) as running:

        def handshake(*flags: str) -> str:
            done = subprocess.run(
                ["openssl", "s_client", "-connect", f"127.0.0.1:{running.port}", "-alpn", "h2",
                 *flags],
                input="", capture_output=True, text=True, errors="replace", timeout=30,
            )
            return done.stdout + done.stderr

        assert "Protocol version: TLSv1.3" in handshake("-brief")
        assert "Protocol version: TLSv1.2" in handshake("-tls1_2", "-brief")
        old = handshake("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-brief")
        assert "Protocol version" not in old, old


# 8. Viewers never see a passphrase or a stream ID


def test_viewers_never_see_a_passphrase_or_stream_id_in_any_spelling(
    server: Server, udp_capture: Callable[..., UdpCapture]
) -> None:
    p1, p2, p3 = free_port(), free_port(), free_port()
    out = udp_capture()
    secrets = ["phrase-one-secret", "phrase-two-secret", "token-one-abc", "token-two-def"]
    s = spec(
        [
            ep(f"srt://:{p1}?mode=listener&pass%70hrase=phrase-one-secret", "a"),
            ep(f"srt://:{p2}?mode=listener&PassPhrase=phrase-two-%73ecret&streamid=token-one-abc",
               "b"),
            ep(test_input(), "pattern"),
        ],
        [
            ep(f"udp://127.0.0.1:{out.port}", "mon"),
            ep(f"srt://127.0.0.1:{p3}?stream%69d=token-two-%64ef", "push"),
        ],
    )
    server.create("secretive", s)
    wait_until(lambda: out.size > 10_000, 30, "the route to run")
    # Operators see what they wrote.
    assert "pass%70hrase=phrase-one-secret" in str(server.get("secretive"))
    with server.client_with(server.key("viewer")) as viewer:
        vm = viewer.metadata
        got = viewer.routes.GetRoute(route_pb2.GetRouteRequest(name="secretive"), metadata=vm)
        listed = viewer.routes.ListRoutes(route_pb2.ListRoutesRequest(), metadata=vm)
    assert len(got.status.inputs) == 3 and len(got.status.outputs) == 2
    seen = str(got) + str(listed)
    for secret in secrets:
        for spelling in (secret, secret.replace("s", "%73"), secret.replace("d", "%64"),
                         secret.replace("-", "%2D"), secret.replace("-", "%2d")):
            assert spelling not in seen, spelling
    assert "phrase-two-%73ecret" not in seen and "token-two-%64ef" not in seen
    assert "pass%70hrase=***" in got.spec.inputs[0].uri
    assert "streamid=***" in got.resolved.inputs[1].uri
    assert "stream%69d=***" in got.status.outputs[1].uri


def test_idle_and_old_connections_are_closed(tmp_path: Path) -> None:
    short = Limits(connection_idle_s=1, connection_age_s=2, connection_age_grace_s=1)
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1, limits=short) as running:
        addr = f"127.0.0.1:{running.port}"
        idle = grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
        held = grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
        stop = threading.Event()
        try:
            health_pb2_grpc.HealthStub(idle).Check(health_pb2.HealthCheckRequest(), timeout=5)
            states: list[grpc.ChannelConnectivity] = []
            idle.subscribe(states.append)
            # A connection without calls is closed by the server (the channel goes idle).
            wait_until(lambda: grpc.ChannelConnectivity.IDLE in states, 15, "the idle close")
            # A call that never sends its body ends with its connection's age and grace.
            call = held.stream_unary("/grpc.health.v1.Health/Check").future(
                _held_open(stop), timeout=60
            )
            wait_until(call.done, 15, "the held call to be ended by the connection's age")
            assert call.exception() is not None
        finally:
            stop.set()
            idle.close()
            held.close()


def test_castway_serve_writes_the_audit_trail_to_stderr_and_its_audit_log(tmp_path: Path) -> None:
    audit_log = tmp_path / "audit.log"
    proc = ServeProcess(
        tmp_path / "data", {"CASTWAY_ADMIN_KEY": ADMIN}, ("--audit-log", str(audit_log))
    )
    try:
        addr = f"127.0.0.1:{proc.port}"
        with Client(addr, ADMIN) as c:
            c.templates.CreateTemplate(
                template_pb2.CreateTemplateRequest(name="tpl", spec=spec([])), metadata=c.metadata
            )
        with Client(addr, "cw_00000000_wrong") as wrong:
            expect(
                CODE.UNAUTHENTICATED,
                lambda: wrong.templates.DeleteTemplate(
                    template_pb2.DeleteTemplateRequest(name="tpl"), metadata=wrong.metadata
                ),
            )
        for where in (proc.text, audit_log.read_text):
            wait_until(
                lambda where=where: "TemplateService/DeleteTemplate key=- peer=ipv4:127.0.0.1:"
                in where(),
                10,
                "the refusal in the audit trail",
            )
            assert "TemplateService/CreateTemplate key=" in where() and "name=tpl" in where()
        assert stat.S_IMODE(audit_log.stat().st_mode) == 0o600
    finally:
        assert proc.stop(signal.SIGTERM) == 0, proc.text()


def test_an_invalid_uri_near_the_size_limit_comes_back_as_invalid_argument(
    server: Server,
) -> None:
    """The error shows the URI cut short, so that with its field violation it fits gRPC's
    metadata by far (above 8 KB gRPC drops a reply now and then, above 16 KB always)."""
    long = "srt://:9000?latency=999999&streamid=" + "x" * 3900
    details = expect(CODE.INVALID_ARGUMENT, lambda: server.create("long", spec([long])))
    assert "latency=999999" in details and "(3936 characters)" in details
    assert len(details.encode()) < 1024, len(details)
