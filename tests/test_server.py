"""The gRPC control plane against a real server on port 0 with a temporary data dir."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from castway import cli
from castway.client import Client
from castway.server import ServeError, Tls, run_server
from castway.server.store import MIGRATIONS, Store, StoreError
from castway.v1 import event_pb2, key_pb2, route_pb2, spec_pb2, template_pb2

from support import wait_until
from support.capture import UdpCapture
from support.control import ADMIN, CODE, ServeProcess, Server, ep, expect, spec, test_input
from support.net import free_port
from support.peers import Peers, srt_receiver
from support.tracing import traced_client
from support.ts import ts_continuity


def test_health_needs_no_key_and_reflection_lists_every_service(server: Server) -> None:
    health = health_pb2_grpc.HealthStub(server.client.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reply = health.Check(health_pb2.HealthCheckRequest(service="castway.v1.RouteService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    stub = reflection_pb2_grpc.ServerReflectionStub(server.client.channel)

    def ask(md: Any, **request: Any) -> reflection_pb2.ServerReflectionResponse:
        stream = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(**request)]), metadata=md, timeout=10
        )
        return next(iter(stream))

    listed = ask(server.client.metadata, list_services="")
    names = {s.name for s in listed.list_services_response.service}
    for service in ("Route", "Template", "Key", "Event", "System"):
        assert f"castway.v1.{service}Service" in names
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    # The descriptor itself comes over the wire, so grpcurl needs no .proto file.
    found = ask(server.client.metadata, file_containing_symbol="castway.v1.RouteService")
    assert found.file_descriptor_response.file_descriptor_proto
    # Reflection is an RPC like any other: no key, no answer.
    expect(CODE.UNAUTHENTICATED, lambda: ask((), list_services=""))


@pytest.mark.parametrize(
    ("who", "read", "write", "admin"),
    [
        ("none", CODE.UNAUTHENTICATED, CODE.UNAUTHENTICATED, CODE.UNAUTHENTICATED),
        ("wrong", CODE.UNAUTHENTICATED, CODE.UNAUTHENTICATED, CODE.UNAUTHENTICATED),
        ("revoked", CODE.UNAUTHENTICATED, CODE.UNAUTHENTICATED, CODE.UNAUTHENTICATED),
        ("viewer", CODE.OK, CODE.PERMISSION_DENIED, CODE.PERMISSION_DENIED),
        ("operator", CODE.OK, CODE.OK, CODE.PERMISSION_DENIED),
        ("admin", CODE.OK, CODE.OK, CODE.OK),
    ],
)
def test_auth_matrix(
    server: Server, who: str, read: grpc.StatusCode, write: grpc.StatusCode, admin: grpc.StatusCode
) -> None:
    if who == "revoked":
        key = server.key("operator")
        kid = key.split("_")[1]
        server.client.keys.RevokeKey(
            key_pb2.RevokeKeyRequest(id=kid), metadata=server.client.metadata
        )
    else:
        fixed = {"none": "", "wrong": "cw_00000000_not-a-key", "admin": ADMIN}
        key = fixed[who] if who in fixed else server.key(who)
    c = server.client_with(key)
    calls: list[tuple[grpc.StatusCode, Callable[[], Any]]] = [
        (read, lambda: c.routes.ListRoutes(route_pb2.ListRoutesRequest(), metadata=c.metadata)),
        (read, lambda: list(c.events.WatchEvents(event_pb2.WatchEventsRequest(),
                                                 metadata=c.metadata, timeout=10))),
        (
            write,
            lambda: c.events.ListWebhooks(event_pb2.ListWebhooksRequest(), metadata=c.metadata),
        ),
        (
            write,
            lambda: c.templates.CreateTemplate(
                template_pb2.CreateTemplateRequest(name=f"t-{who}", spec=spec([])),
                metadata=c.metadata,
            ),
        ),
        (admin, lambda: c.keys.ListKeys(key_pb2.ListKeysRequest(), metadata=c.metadata)),
    ]
    for code, call in calls:
        if code == CODE.OK:
            call()
        else:
            details = expect(code, call)
            assert ("needs" in details) == (code == CODE.PERMISSION_DENIED)
    c.close()


def test_viewers_read_routes_without_passphrases(server: Server) -> None:
    secret = "a-very-secret-phrase"
    s = spec(
        [f"srt://:{free_port()}?mode=listener&passphrase={secret}"],
        srt=spec_pb2.SrtDefaults(passphrase=secret),
    )
    server.create("enc", s, desired_state=route_pb2.DESIRED_STATE_STOPPED)
    assert secret in str(server.get("enc"))
    with server.client_with(server.key("viewer")) as viewer:
        seen = viewer.routes.GetRoute(
            route_pb2.GetRouteRequest(name="enc"), metadata=viewer.metadata
        )
    assert secret not in str(seen) and "passphrase=***" in seen.resolved.inputs[0].uri
    assert seen.spec.srt.passphrase == "***"


def test_keys_are_stored_hashed_and_shown_once(server: Server) -> None:
    created = server.client.keys.CreateKey(
        key_pb2.CreateKeyRequest(name="ci", role=key_pb2.ROLE_VIEWER),
        metadata=server.client.metadata,
    )
    assert created.secret.startswith(f"cw_{created.key.id}_")
    listed = server.client.keys.ListKeys(key_pb2.ListKeysRequest(), metadata=server.client.metadata)
    assert "secret" not in str(listed) and created.secret not in str(listed)
    db = (server.data_dir / "castway.db").read_bytes() + b"".join(
        p.read_bytes() for p in server.data_dir.glob("castway.db-*")
    )
    assert created.secret.encode() not in db and ADMIN.encode() not in db
    # The last admin key cannot be revoked: nobody could manage keys any more.
    admin_id = next(k.id for k in listed.keys if k.role == key_pb2.ROLE_ADMIN)
    expect(
        CODE.FAILED_PRECONDITION,
        lambda: server.client.keys.RevokeKey(
            key_pb2.RevokeKeyRequest(id=admin_id), metadata=server.client.metadata
        ),
    )


def _version_call(c: Client) -> Any:
    from castway.v1 import system_pb2

    return c.system.GetVersion(system_pb2.GetVersionRequest(), metadata=c.metadata, timeout=5)


def test_tls_handshake(tmp_path: Path, certs: Path) -> None:
    tls = Tls(certs / "server.pem", certs / "server.key")
    with run_server(tmp_path, "127.0.0.1:0", tls=tls, admin_key=ADMIN, grace_s=1) as running:
        addr = f"127.0.0.1:{running.port}"
        with Client(addr, ADMIN, tls_ca=certs / "ca.pem") as c:
            assert _version_call(c).api_version == "v1"
        with Client(addr, ADMIN, tls_ca=certs / "other-ca.pem") as c:
            expect(CODE.UNAVAILABLE, lambda: _version_call(c))
        with Client(addr, ADMIN) as plain:
            expect(CODE.UNAVAILABLE, lambda: _version_call(plain))


def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(
    tmp_path: Path, certs: Path
) -> None:
    tls = Tls(certs / "server.pem", certs / "server.key", certs / "ca.pem")
    with run_server(tmp_path, "127.0.0.1:0", tls=tls, admin_key=ADMIN, grace_s=1) as running:
        addr = f"127.0.0.1:{running.port}"
        ca = certs / "ca.pem"
        with Client(
            addr, ADMIN, tls_ca=ca, tls_cert=certs / "client.pem", tls_key=certs / "client.key"
        ) as c:
            assert _version_call(c).castway_version
        with Client(addr, ADMIN, tls_ca=ca) as c:
            expect(CODE.UNAVAILABLE, lambda: _version_call(c))
        with Client(
            addr, ADMIN, tls_ca=ca, tls_cert=certs / "stranger.pem", tls_key=certs / "stranger.key"
        ) as c:
            expect(CODE.UNAVAILABLE, lambda: _version_call(c))


def test_stale_version_update_is_aborted(server: Server) -> None:
    route = server.create("r", spec([test_input()]), desired_state=route_pb2.DESIRED_STATE_STOPPED)
    assert route.version == 1
    first = server.update("r", spec([test_input()], ["udp://127.0.0.1:9"]), version=1)
    assert first.route.version == 2
    details = expect(CODE.ABORTED, lambda: server.update("r", spec([test_input()], []), version=1))
    assert "version 2" in details
    # The stale write changed nothing; an update without a version is unconditional.
    assert [o.uri for o in server.get("r").spec.outputs] == ["udp://127.0.0.1:9"]
    assert server.update("r", spec([test_input()])).route.version == 3
    delete = route_pb2.DeleteRouteRequest(name="r", version=2)
    expect(
        CODE.ABORTED,
        lambda: server.client.routes.DeleteRoute(delete, metadata=server.client.metadata),
    )


def test_update_by_diff_leaves_an_unchanged_output_without_a_gap(
    server: Server, peers: Peers, udp_capture: Callable[..., UdpCapture]
) -> None:
    # The kept output is an SRT listener with srt-live-transmit calling it; the update removes
    # one UDP output, adds another and changes the loss timeout.
    keep, other, new = free_port(), free_port(), free_port()
    cap = udp_capture()
    other_cap = udp_capture(other)
    new_cap = udp_capture(new)
    keep_uri = f"srt://:{keep}?mode=listener"
    server.create(
        "diff",
        spec(
            [ep(test_input(), "pattern")],
            [ep(keep_uri, "keep"), ep(f"udp://127.0.0.1:{other}", "other")],
        ),
    )
    srt_receiver(peers, keep, cap)
    wait_until(lambda: cap.size > 200_000 and other_cap.size > 0, 30, "the route to go live")
    before = cap.size
    changed = server.update(
        "diff",
        spec(
            [ep(test_input(), "pattern")],
            [ep(keep_uri, "keep"), ep(f"udp://127.0.0.1:{new}", "new")],
            failover=spec_pb2.Failover(loss_timeout_ms=800),
        ),
    )
    c = changed.changes
    assert (list(c.outputs_added), list(c.outputs_removed)) == (["new"], ["other"])
    assert not c.inputs_added and not c.inputs_removed and not c.restarted and c.settings
    wait_until(lambda: new_cap.size > 100_000, 30, "the new output to deliver")
    wait_until(lambda: cap.size > before + 300_000, 30, "more at the SRT receiver")
    other_stopped = other_cap.size
    status = server.get("diff").status
    assert {o.id for o in status.outputs} == {"keep", "new"}
    keep_status = next(o for o in status.outputs if o.id == "keep")
    assert keep_status.reconnects == 0 and keep_status.drops == 0
    cont = ts_continuity(cap.data)
    # Not one packet lost at the receiver of the kept output across the update.
    assert cont["cc_errors"] == 0 and cont["pcr_backwards"] == 0, cont
    assert other_cap.size == other_stopped


def test_template_inheritance_and_hot_apply(
    server: Server, udp_capture: Callable[..., UdpCapture]
) -> None:
    mon, mon2, own, srt_port = free_port(), free_port(), free_port(), free_port()
    tpl_spec = spec(
        [],
        [ep(f"udp://127.0.0.1:{mon}", "monitor")],
        failover=spec_pb2.Failover(loss_timeout_ms=700, failback_after_ms=2000),
        srt=spec_pb2.SrtDefaults(latency_ms=250, passphrase="template-secret-1"),
        gop_cache_bytes=0,
    )
    md = server.client.metadata
    server.client.templates.CreateTemplate(
        template_pb2.CreateTemplateRequest(name="contrib", spec=tpl_spec), metadata=md
    )
    mon_cap = udp_capture(mon)
    route = server.create(
        "news",
        spec(
            [test_input()],
            [f"udp://127.0.0.1:{own}", f"srt://:{srt_port}?mode=listener&latency=80"],
            template="contrib",
            failover=spec_pb2.Failover(failback_after_ms=9000),
        ),
    )
    # As stored: only what the route says.
    assert route.spec.template == "contrib" and len(route.spec.outputs) == 2
    assert not route.spec.failover.HasField("loss_timeout_ms")
    # As resolved: the template's output first, its failover and SRT defaults where unset.
    r = route.resolved
    assert [o.id for o in r.outputs] == ["monitor", "out0", "out1"]
    assert r.failover.loss_timeout_ms == 700 and r.failover.failback_after_ms == 9000
    srt_uri = r.outputs[2].uri
    assert "latency=80" in srt_uri and "latency=250" not in srt_uri
    assert "passphrase=template-secret-1" in srt_uri
    assert r.HasField("gop_cache_bytes") and r.gop_cache_bytes == 0
    assert route.status.gop_cache.limit_bytes == 0
    wait_until(lambda: mon_cap.size > 100_000, 30, "the inherited output to deliver")

    mon2_cap = udp_capture(mon2)
    new_tpl = spec(
        [],
        [ep(f"udp://127.0.0.1:{mon}", "monitor"), ep(f"udp://127.0.0.1:{mon2}", "backup-monitor")],
        failover=spec_pb2.Failover(loss_timeout_ms=400),
        srt=spec_pb2.SrtDefaults(latency_ms=250, passphrase="template-secret-1"),
        gop_cache_bytes=512 * 1024,
    )
    before = mon_cap.size
    updated = server.client.templates.UpdateTemplate(
        template_pb2.UpdateTemplateRequest(name="contrib", spec=new_tpl, version=1), metadata=md
    )
    assert updated.template.version == 2 and list(updated.template.used_by) == ["news"]
    (applied,) = updated.routes
    assert applied.route == "news"
    assert list(applied.changes.outputs_added) == ["backup-monitor"]
    assert not applied.changes.outputs_removed and applied.changes.settings
    wait_until(lambda: mon2_cap.size > 100_000, 30, "the output the template gained")
    wait_until(lambda: mon_cap.size > before + 200_000, 30, "the monitor output to go on")
    assert ts_continuity(mon_cap.data)["cc_errors"] == 0
    got = server.get("news")
    assert got.resolved.failover.loss_timeout_ms == 400 and got.version == route.version
    # Instant start's bound applies live, like the loss timeout.
    assert got.status.gop_cache.limit_bytes == 512 * 1024
    expect(
        CODE.FAILED_PRECONDITION,
        lambda: server.client.templates.DeleteTemplate(
            template_pb2.DeleteTemplateRequest(name="contrib"), metadata=md
        ),
    )
    # An inherited output is the template's to change.
    expect(
        CODE.FAILED_PRECONDITION,
        lambda: server.client.routes.RemoveOutput(
            route_pb2.RemoveOutputRequest(name="news", output_id="monitor"), metadata=md
        ),
    )


def test_validation_errors_name_the_field_and_leave_the_store_intact(server: Server) -> None:
    md = server.client.metadata
    port = free_port()
    server.create("ok", spec([f"udp://:{port}"], [ep("udp://127.0.0.1:7", "mon")]),
                  desired_state=route_pb2.DESIRED_STATE_STOPPED)
    cases: list[tuple[grpc.StatusCode, str, Callable[[], Any]]] = [
        (
            CODE.INVALID_ARGUMENT,
            "spec.inputs[0].uri",
            lambda: server.create("a", spec(["srt://host:notaport"])),
        ),
        (
            CODE.INVALID_ARGUMENT,
            "spec.outputs[0].uri",
            lambda: server.create("a", spec([test_input()], ["ftp://x"])),
        ),
        (CODE.INVALID_ARGUMENT, "spec.inputs", lambda: server.create("a", spec([]))),
        (
            # Only this host can tell: the path comes from the data plane's check.
            CODE.INVALID_ARGUMENT,
            "resolved.outputs[1] (out1): invalid URI",
            lambda: server.create(
                "a", spec([test_input()], ["udp://127.0.0.1:9", "udp://239.1.1.1:9?iface=nosuch0"])
            ),
        ),
        (
            CODE.INVALID_ARGUMENT,
            "spec.failover.loss_timeout_ms",
            lambda: server.create(
                "a", spec([test_input()], failover=spec_pb2.Failover(loss_timeout_ms=1))
            ),
        ),
        (
            CODE.INVALID_ARGUMENT,
            "spec.srt.passphrase",
            lambda: server.create(
                "a", spec([test_input()], srt=spec_pb2.SrtDefaults(passphrase="short"))
            ),
        ),
        (
            CODE.INVALID_ARGUMENT,
            "spec.outputs[1].id",
            lambda: server.create(
                "a",
                spec([test_input()], [ep("udp://127.0.0.1:9", "x"), ep("udp://127.0.0.1:8", "x")]),
            ),
        ),
        (CODE.INVALID_ARGUMENT, "name", lambda: server.create("bad name!", spec([test_input()]))),
        (
            CODE.INVALID_ARGUMENT,
            "spec.failover.slate_size",
            lambda: server.create(
                "a", spec([test_input()], failover=spec_pb2.Failover(slate_size="7x7"))
            ),
        ),
        (
            CODE.NOT_FOUND,
            "spec.template",
            lambda: server.create("a", spec([test_input()], template="nope")),
        ),
        (
            CODE.FAILED_PRECONDITION,
            "already claims",
            lambda: server.create("a", spec([f"srt://:{port}?mode=listener"])),
        ),
        (
            CODE.INVALID_ARGUMENT,
            "like in0",
            lambda: server.create(
                "a", spec([f"udp://:{port + 1}"], [f"srt://:{port + 1}?mode=listener"])
            ),
        ),
        (CODE.ALREADY_EXISTS, "'ok'", lambda: server.create("ok", spec([test_input()]))),
        (CODE.NOT_FOUND, "'nope'", lambda: server.get("nope")),
        (CODE.NOT_FOUND, "'nope'", lambda: server.update("nope", spec([test_input()]))),
        (
            CODE.NOT_FOUND,
            "input 'x'",
            lambda: server.client.routes.SwitchInput(
                route_pb2.SwitchInputRequest(name="ok", input_id="x"), metadata=md
            ),
        ),
        (
            # An id taken is a name taken, as for routes (it was INVALID_ARGUMENT, "used twice").
            CODE.ALREADY_EXISTS,
            "output 'mon' of route 'ok'",
            lambda: server.client.routes.AddOutput(
                route_pb2.AddOutputRequest(name="ok", output=ep("udp://127.0.0.1:6", "mon")),
                metadata=md,
            ),
        ),
        (
            CODE.NOT_FOUND,
            "output 'x'",
            lambda: server.client.routes.RemoveOutput(
                route_pb2.RemoveOutputRequest(name="ok", output_id="x"), metadata=md
            ),
        ),
        (
            CODE.INVALID_ARGUMENT,
            "role",
            lambda: server.client.keys.CreateKey(key_pb2.CreateKeyRequest(name="k"), metadata=md),
        ),
        (
            CODE.INVALID_ARGUMENT,
            "spec.template",
            lambda: server.client.templates.CreateTemplate(
                template_pb2.CreateTemplateRequest(name="t", spec=spec([], template="x")),
                metadata=md,
            ),
        ),
    ]
    # A template's defaults are checked by the same rules, at the template's fields.
    template_cases = [
        ("spec.srt.pbkeylen", {"srt": spec_pb2.SrtDefaults(pbkeylen=20)}),
        ("spec.srt.latency_ms", {"srt": spec_pb2.SrtDefaults(latency_ms=60_001)}),
        ("spec.srt.passphrase", {"srt": spec_pb2.SrtDefaults(passphrase="x" * 80)}),
        ("spec.failover.slate_size", {"failover": spec_pb2.Failover(slate_size="640x361")}),
        ("spec.failover.failback_after_ms",
         {"failover": spec_pb2.Failover(failback_after_ms=3_600_001)}),
        ("spec.queue_bytes", {"queue_bytes": (1 << 30) + 1}),
        ("spec.gop_cache_bytes", {"gop_cache_bytes": (64 << 20) + 1}),
        ("spec.outputs[0].id", {"outputs": [ep("udp://127.0.0.1:9", "-x")]}),
        ("spec.outputs[0].uri", {"outputs": [ep("udp://127.0.0.1:notaport")]}),
    ]
    for field, kw in template_cases:
        cases.append((
            CODE.INVALID_ARGUMENT,
            f"{field}: ",
            lambda kw=kw: server.client.templates.CreateTemplate(  # type: ignore[misc]
                template_pb2.CreateTemplateRequest(name="t", spec=spec_pb2.RouteSpec(**kw)),
                metadata=md,
            ),
        ))
    for code, field, call in cases:
        details = expect(code, call)
        assert field in details, (field, details)
    # The path also as a google.rpc.BadRequest field violation, for clients that point at it.
    bad = spec([test_input()], ["udp://127.0.0.1:9", "udp://127.0.0.1:8", "srt://:9?latency=999999"])
    with pytest.raises(grpc.RpcError) as info:
        server.create("a", bad)
    status = rpc_status.from_call(info.value)  # type: ignore[arg-type]
    assert status is not None and status.code == code_pb2.INVALID_ARGUMENT
    violations = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(violations)
    [v] = violations.field_violations
    assert v.field == "spec.outputs[2].uri" and "latency=999999" in v.description
    # A port another process holds: refused at create, nothing stored.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("0.0.0.0", 0))
        taken = held.getsockname()[1]
        details = expect(
            CODE.FAILED_PRECONDITION, lambda: server.create("held", spec([f"udp://:{taken}"]))
        )
        assert str(taken) in details
    routes = server.client.routes.ListRoutes(route_pb2.ListRoutesRequest(), metadata=md).routes
    assert [r.name for r in routes] == ["ok"]
    stored = Store(server.data_dir).routes()
    assert [(r.name, r.version) for r in stored] == [("ok", 1)]


def test_a_file_has_one_writer_across_routes_and_within_one(server: Server) -> None:
    """A file output claims its file in the media root as a listener claims its port: a second
    writer (another route, running or not, or another output of the same route; by any name of
    the same file) is refused at create and update, naming both. Reading the file is not
    writing it."""
    (server.data_dir / "media" / "out").mkdir(parents=True)
    server.create("filer", spec([test_input()], [ep("file:///out/rec.ts", "rec")]))
    server.create(
        "idle", spec([test_input()], [ep("file:///out/idle.ts", "keep")]),
        desired_state=route_pb2.DESIRED_STATE_STOPPED,
    )
    for name, uri, other in (
        ("bad4", "file:///out/rec.ts", "rec of route 'filer'"),
        ("bad5", "file://localhost/out/%72ec.ts", "rec of route 'filer'"),
        ("bad6", "file:///out/idle.ts?overwrite=1", "keep of route 'idle'"),
    ):
        details = expect(
            CODE.FAILED_PRECONDITION,
            lambda n=name, u=uri: server.create(n, spec([test_input()], [u])),  # type: ignore[misc]
        )
        assert f"out0 of route {name!r} writes file:///out/" in details, details
        assert f"which {other} already claims" in details, details
    details = expect(
        CODE.INVALID_ARGUMENT,
        lambda: server.create(
            "twice", spec([test_input()], ["file:///out/two.ts", "file:///out/two.ts"])
        ),
    )
    assert "spec.outputs[1].uri" in details and "like out0 of the same route" in details, details
    # One output from a template, one from the route: the resolved route is checked alike.
    server.client.templates.CreateTemplate(
        template_pb2.CreateTemplateRequest(
            name="rec-tpl", spec=spec([], [ep("file:///out/tpl.ts", "tpl")])
        ),
        metadata=server.client.metadata,
    )
    details = expect(
        CODE.INVALID_ARGUMENT,
        lambda: server.create(
            "both", spec([test_input()], ["file:///out/tpl.ts"], template="rec-tpl")
        ),
    )
    assert "like tpl of the same route" in details, details
    details = expect(
        CODE.FAILED_PRECONDITION,
        lambda: server.update(
            "idle", spec([test_input()], [ep("file:///out/idle.ts", "keep"),
                                          ep("file:///out/rec.ts?overwrite=1", "more")])
        ),
    )
    assert "which rec of route 'filer' already claims" in details, details
    # A reader is no writer; a deleted route's file is free again.
    wait_until(lambda: (server.data_dir / "media" / "out" / "rec.ts").exists(), 10, "rec.ts")
    server.create("reader", spec(["file:///out/rec.ts"], ["udp://127.0.0.1:9"]),
                  desired_state=route_pb2.DESIRED_STATE_STOPPED)
    server.client.routes.DeleteRoute(route_pb2.DeleteRouteRequest(name="filer"),
                                     metadata=server.client.metadata)
    server.create("bad4", spec([test_input()], ["file:///out/rec.ts"]))
    names = [r.name for r in Store(server.data_dir).routes()]
    assert sorted(names) == ["bad4", "idle", "reader"]


def test_get_route_carries_srt_callers_and_the_switch_history(
    server: Server, peers: Peers, udp_capture: Any
) -> None:
    """Everything `Route.stats()` has reaches gRPC: per-caller SRT figures of a listener
    output, and the switch with its history."""
    out = free_port()
    # Two live encoders on a busy 2-core machine can stall past 300 ms: this test is not
    # about losing an input, so it gives them 5 s.
    server.create("calls", spec([ep(test_input(), "a"), ep(test_input(), "b")],
                                [f"srt://:{out}?mode=listener"],
                                failover=spec_pb2.Failover(loss_timeout_ms=5000)))
    for _ in range(2):
        srt_receiver(peers, out, udp_capture())

    def callers() -> list[Any]:
        o = server.get("calls").status.outputs[0]
        return list(o.srt.callers) if len(o.srt.callers) == 2 else []

    found = wait_until(callers, 30, "two callers in GetRoute")
    assert len({c.address for c in found}) == 2
    # Each caller's link is being fed and acknowledges: libsrt's own counts, per caller.
    def fed() -> list[Any]:
        both = [c for c in callers() if c.packets > 100 and c.acks > 0]
        return both if len(both) == 2 else []

    links = wait_until(fed, 30, "packets and ACKs on both links")
    assert server.get("calls").status.outputs[0].srt.packets >= sum(c.packets for c in links)
    for c in found:
        host, _, port = c.address.rpartition(":")
        assert host == "127.0.0.1" and int(port) > 0
        assert c.latency_ms == 120, c
    server.client.routes.SwitchInput(
        route_pb2.SwitchInputRequest(name="calls", input_id="b"), metadata=server.client.metadata
    )

    def switched() -> Any:
        sw = server.get("calls").status.switch
        return sw if sw.active == "b" and sw.history else None

    sw = wait_until(switched, 15, "the switch to b in GetRoute")
    last = sw.history[-1]
    assert (last.from_source, last.to_source, last.reason) == ("a", "b", "manual")
    assert last.seq == 1 and last.at.seconds > 0
    assert sw.locked == "b" and sw.loss_timeout_ms == 5000 and sw.slate
    inputs = server.get("calls").status.inputs
    assert [i.standby for i in inputs] == ["warm", "warm"]
    assert inputs[0].HasField("idle_ms") and inputs[1].off_air_packets > 0


def test_rpcs_are_traced_and_health_checks_are_not(tmp_path: Path) -> None:
    with traced_client(tmp_path) as (c, exporter):
        health_pb2_grpc.HealthStub(c.channel).Check(health_pb2.HealthCheckRequest())
        c.routes.ListRoutes(route_pb2.ListRoutesRequest(), metadata=c.metadata)
        expect(
            CODE.NOT_FOUND,
            lambda: c.routes.GetRoute(route_pb2.GetRouteRequest(name="x"), metadata=c.metadata),
        )
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"castway.v1.RouteService/ListRoutes", "castway.v1.RouteService/GetRoute"}
    assert spans["castway.v1.RouteService/ListRoutes"].attributes["rpc.grpc.status_code"] == 0
    assert spans["castway.v1.RouteService/GetRoute"].attributes["rpc.grpc.status_code"] == 5


def test_schema_migrates_forward_and_refuses_a_newer_one(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / Store.FILE)
    db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    db.execute(
        "INSERT INTO routes VALUES ('old', ?, 'stopped', 4, 1.0, 2.0)",
        ('{"inputs": [{"id": "in0", "uri": "udp://:5000"}], "outputs": []}',),
    )
    db.commit()
    db.close()
    store = Store(tmp_path)
    assert store.schema_version == len(MIGRATIONS)
    (old,) = store.routes()
    assert (old.name, old.version, old.locked_input, old.spec.inputs[0].uri) == (
        "old",
        4,
        "",
        "udp://:5000",
    )
    store.close()
    db = sqlite3.connect(tmp_path / Store.FILE)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        Store(tmp_path)


def test_config_file_is_applied_at_start_and_merged_with_the_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out1, out2 = free_port(), free_port()
    config = tmp_path / "castway.toml"
    config.write_text(f"""
[templates.base]
failover = {{ loss_timeout_ms = 600 }}

[routes.declared]
template = "base"
inputs = ["{test_input()}"]
outputs = [{{ id = "main", uri = "udp://127.0.0.1:{out1}" }}]
state = "stopped"
""")
    with run_server(data, config=config, admin_key=ADMIN, grace_s=1) as running:
        control = running.control
        route = control.get_route("declared")
        assert route.record.desired == "stopped" and route.resolved.failover.loss_timeout_ms == 600
        from castway.server.specs import Spec, spec_from_dict

        control.create_route("api", spec_from_dict({"inputs": [test_input()]}), "stopped")
    config.write_text(config.read_text().replace(str(out1), str(out2)).replace("600", "900"))
    with run_server(data, config=config, admin_key=ADMIN, grace_s=1) as running:
        control = running.control
        route = control.get_route("declared")
        assert [e.uri for e in route.resolved.outputs] == [f"udp://127.0.0.1:{out2}"]
        assert route.resolved.failover.loss_timeout_ms == 900 and route.record.version == 2
        # What the API created and the file does not mention stays.
        assert control.get_route("api").record.spec == Spec(
            inputs=control.get_route("api").record.spec.inputs
        )
    yaml_config = tmp_path / "castway.yaml"
    yaml_config.write_text(f"routes:\n  y:\n    inputs: ['{test_input()}']\n    state: stopped\n")
    with run_server(data, config=yaml_config, admin_key=ADMIN, grace_s=1) as running:
        assert running.control.get_route("y").record.desired == "stopped"
    bad = tmp_path / "bad.toml"
    bad.write_text("[routes.z]\ninputs = ['srt://x:1']\noutputs = 5\n")
    from castway.server.config import ConfigError

    with pytest.raises(ConfigError, match=r"routes\.z\.outputs"):
        with run_server(data, config=bad, admin_key=ADMIN):
            pass


def test_serve_refuses_a_port_in_use_and_a_bad_address_at_once(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ServeError, match=f"127.0.0.1:{taken}: the port is in use"), \
                run_server(tmp_path / "a", f"127.0.0.1:{taken}"):
            pass
        assert time.monotonic() - started < 10  # an answer, not a hang
        # Refused before anything was made: no store, no admin key.
        assert not (tmp_path / "a").exists()
    for bad in ("::1:0", "127.0.0.1", "localhost:http"):
        with pytest.raises(ServeError, match="HOST:PORT"), run_server(
            tmp_path / "b", bad, admin_key=ADMIN
        ):
            pass


@pytest.mark.parametrize(
    "address", [":abc", "127.0.0.1:8890?mode=caller", "127.0.0.1:0?latency=+5"]
)
def test_serve_exits_2_for_a_bad_srt_listen_address_as_for_any_usage_error(
    tmp_path: Path, address: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "castway", "serve", "--data-dir", str(tmp_path / "data"),
         "--listen", "127.0.0.1:0", "--srt-listen", address],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "CASTWAY_ADMIN_KEY": ADMIN},
    )
    assert done.returncode == 2, done.stderr
    assert "the shared SRT port" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("flag", "address", "says"),
    [("--listen", "127.0.0.1:abc", "is not HOST:PORT"),
     ("--listen", "127.0.0.1:99999", "port 99999 is out of range"),
     ("--listen", "::1:50051", "is not HOST:PORT"),
     ("--metrics-listen", "127.0.0.1:70000", "port 70000 is out of range")],
)
def test_serve_exits_2_for_a_malformed_listen_address_and_serves_nothing(
    tmp_path: Path, flag: str, address: str, says: str
) -> None:
    """A port out of range used to be served on a port gRPC picked."""
    argv = [sys.executable, "-m", "castway", "serve", "--data-dir", str(tmp_path / "data"),
            "--listen", "127.0.0.1:0", flag, address]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CASTWAY_ADMIN_KEY": ADMIN})
    assert done.returncode == 2, done.stderr
    assert says in done.stderr, done.stderr
    assert "serving" not in done.stderr + done.stdout


def test_serve_exits_1_when_the_srt_listen_port_is_in_use(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "castway", "serve", "--data-dir", str(tmp_path / "data"),
             "--listen", "127.0.0.1:0", "--srt-listen", f"127.0.0.1:{taken}"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "CASTWAY_ADMIN_KEY": ADMIN},
        )
    assert done.returncode == 1, done.stderr
    assert "in use" in done.stderr, done.stderr


def test_cli_update_changes_only_what_its_flags_name(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """`castway template update NAME --latency 300` (as docs/control-plane.md shows it) keeps
    the template's passphrase and outputs; `--replace` sends the flags as the whole spec."""
    base = ["--addr", server.addr, "--key", ADMIN]
    secret = "a long secret phrase"
    assert cli.main(["template", "create", "contribution", "--latency", "200",
                     "--passphrase", secret, "-o", "monitor=udp://127.0.0.1:5000", *base]) == 0
    assert cli.main(["template", "update", "contribution", "--latency", "300", *base]) == 0
    t = server.client.templates.GetTemplate(
        template_pb2.GetTemplateRequest(name="contribution"), metadata=server.client.metadata)
    assert (t.spec.srt.latency_ms, t.spec.srt.passphrase) == (300, secret)
    assert [o.id for o in t.spec.outputs] == ["monitor"]
    assert cli.main(["route", "create", "cam", "-i", test_input(), "--loss-timeout", "500",
                     "--template", "contribution", *base]) == 0
    assert cli.main(["route", "update", "cam", "--failback-after", "2000", *base]) == 0
    r = server.get("cam")
    assert (r.spec.failover.loss_timeout_ms, r.spec.failover.failback_after_ms) == (500, 2000)
    assert r.spec.template == "contribution" and len(r.spec.inputs) == 1
    assert cli.main(["template", "update", "contribution", "--replace", "--latency", "250",
                     *base]) == 0
    t = server.client.templates.GetTemplate(
        template_pb2.GetTemplateRequest(name="contribution"), metadata=server.client.metadata)
    assert not t.spec.srt.HasField("passphrase") and not t.spec.outputs
    capsys.readouterr()


def test_cli_creates_and_lists_routes_over_grpc(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    base = ["--addr", server.addr, "--key", ADMIN]
    rc = cli.main(
        [
            "route",
            "create",
            "cam1",
            "-i",
            f"main=udp://:{port}",
            "-i",
            test_input(),
            "-o",
            "udp://127.0.0.1:9",
            "--loss-timeout",
            "500",
            *base,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "cam1" in out and "main" in out and "in0" in out
    assert cli.main(["route", "list", "--json", *base]) == 0
    import json

    listed = json.loads(capsys.readouterr().out)["routes"]
    assert [r["name"] for r in listed] == ["cam1"]
    assert listed[0]["resolved"]["failover"]["loss_timeout_ms"] == 500
    assert [e["id"] for e in listed[0]["spec"]["inputs"]] == ["main", "in0"]
    assert cli.main(["route", "switch", "cam1", "in0", *base]) == 0
    assert server.get("cam1").locked_input == "in0"
    # Errors: the status code and the message, exit code 1.
    assert cli.main(["route", "get", "nope", *base]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert cli.main(["route", "list", "--addr", server.addr]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    # `--json` prints every field, zeros too (a script need not guess a key is missing).
    assert cli.main(["route", "get", "cam1", "--json", *base]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"]["switch"]["cuts"] in (0, "0") and "held_back_packets" in doc["status"][
        "switch"]
    # A key is revoked by its id or by the name `key list` shows.
    assert cli.main(["key", "create", "prom", "--role", "viewer", *base]) == 0
    capsys.readouterr()
    assert cli.main(["key", "revoke", "prom", *base]) == 0
    assert "prom" in capsys.readouterr().out
    assert cli.main(["key", "revoke", "nobody", *base]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


# The server as a process: kill -9, SIGTERM, the first admin key.




def test_kill_9_then_restart_restores_every_route_in_its_state(
    tmp_path: Path, udp_capture: Callable[..., UdpCapture]
) -> None:
    data = tmp_path / "data"
    first = ServeProcess(data)
    text = first.text()
    assert text.count("created the first admin key") == 1
    key = (data / "admin.key").read_text().strip()
    assert key.startswith("cw_") and key not in text
    out = free_port()
    with Client(f"127.0.0.1:{first.port}", key) as c:
        md = c.metadata
        c.routes.CreateRoute(
            route_pb2.CreateRouteRequest(
                name="live",
                spec=spec(
                    [ep(test_input(), "a"), ep(test_input(), "b")], [f"udp://127.0.0.1:{out}"]
                ),
            ),
            metadata=md,
        )
        c.routes.SwitchInput(route_pb2.SwitchInputRequest(name="live", input_id="b"), metadata=md)
        c.routes.CreateRoute(
            route_pb2.CreateRouteRequest(
                name="parked",
                spec=spec([test_input()]),
                desired_state=route_pb2.DESIRED_STATE_STOPPED,
            ),
            metadata=md,
        )
        c.routes.CreateRoute(
            route_pb2.CreateRouteRequest(name="halted", spec=spec([test_input()])), metadata=md
        )
        c.routes.StopRoute(route_pb2.StopRouteRequest(name="halted"), metadata=md)
        before = {
            r.name: r
            for r in c.routes.ListRoutes(route_pb2.ListRoutesRequest(), metadata=md).routes
        }
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    cap = udp_capture(out)
    second = ServeProcess(data)
    try:
        assert "created the first admin key" not in second.text()
        with Client(f"127.0.0.1:{second.port}", key) as c:
            md = c.metadata
            after = {
                r.name: r
                for r in c.routes.ListRoutes(route_pb2.ListRoutesRequest(), metadata=md).routes
            }
            assert set(after) == {"live", "parked", "halted"}
            for name, r in after.items():
                assert (r.version, r.desired_state, r.spec) == (
                    before[name].version,
                    before[name].desired_state,
                    before[name].spec,
                ), name
            assert after["parked"].status.state == "stopped"
            assert after["halted"].status.state == "stopped"
            assert after["live"].locked_input == "b"
            wait_until(lambda: cap.size > 100_000, 30, "the restored route to deliver")
            # Held on `b` again once it delivers.
            get = route_pb2.GetRouteRequest(name="live")
            wait_until(
                lambda: c.routes.GetRoute(get, metadata=md).status.active_input == "b",
                30,
                "the route to be held on input b again",
            )
    finally:
        assert second.stop(signal.SIGTERM) == 0, second.text()
    assert "stopping" in second.text()


def test_admin_key_from_the_environment_and_graceful_sigterm(tmp_path: Path) -> None:
    env_key = "env-admin-key-0123456789abcdef"
    proc = ServeProcess(tmp_path / "data", {"CASTWAY_ADMIN_KEY": env_key})
    try:
        assert "created the first admin key" not in proc.text()
        with Client(f"127.0.0.1:{proc.port}", env_key) as c:
            keys = c.keys.ListKeys(key_pb2.ListKeysRequest(), metadata=c.metadata).keys
            assert [(k.name, k.role) for k in keys] == [("env", key_pb2.ROLE_ADMIN)]
        # A second server on the same port is refused, not silently sharing it.
        clash = subprocess.run(
            [
                sys.executable,
                "-m",
                "castway",
                "serve",
                "--data-dir",
                str(tmp_path / "d2"),
                "--listen",
                f"127.0.0.1:{proc.port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "CASTWAY_ADMIN_KEY": env_key},
        )
        assert clash.returncode == 1 and "cannot listen" in clash.stderr
    finally:
        assert proc.stop(signal.SIGTERM) == 0, proc.text()


def test_srt_listener_closes_cleanly_in_a_process_that_loaded_grpc_first() -> None:
    # libsrt's internal exceptions must unwind with the GCC unwinder, not GStreamer's libunwind.
    script = (
        "import time, grpc, castway\n"
        "with castway.Gateway() as gw:\n"
        f"    gw.add_route('a', ['{test_input()}'], ['srt://:{free_port()}?mode=listener'])\n"
        "    time.sleep(0.5)\n"
        "print('closed')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, "closed"), done.stderr


def test_every_data_plane_error_has_one_documented_status_code() -> None:
    """Each `castway.errors` class maps to one gRPC code, as docs/control-plane.md's table says."""
    from castway import errors as native
    from castway.server.control import REFUSED, _refused

    classes = {c for c in vars(native).values()
               if isinstance(c, type) and issubclass(c, native.CastwayError)}
    assert classes - {native.CastwayError} == set(REFUSED)
    doc = (Path(__file__).parent.parent / "docs" / "control-plane.md").read_text()
    for cls in REFUSED:
        code = _refused(cls("x")).code
        row = next(line for line in doc.splitlines() if f"`{cls.__name__}`" in line)
        assert f"`{code}`" in row, (cls.__name__, code, row)
