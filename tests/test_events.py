"""Events: the gateway's one numbered sequence, watched over gRPC (resuming after a reconnect),
in Python, through signed webhooks to a real HTTP receiver on loopback, in the JSON-lines file
and with `castway events`. Senders are real (ffmpeg), killed with SIGKILL as a failing encoder
would be."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

import castway
from castway import cli
from castway.client import Client, event_dict
from castway.server import run_server
from castway.server.limits import Limits
from castway.v1 import event_pb2, key_pb2, route_pb2, spec_pb2, template_pb2

from support import closing_all, sha256, wait_until
from support.control import ADMIN, CODE, ServeProcess, Server, ep, expect, spec, test_input
from support.net import free_port
from support.peers import Peers
from support.senders import LiveSender, UdpSender, live_sender
from support.ts import random_ts

CASTWAY = str(Path(sys.executable).with_name("castway"))
SECRET = "webhook-secret-0123456789"
Event = dict[str, Any]


def kill(p: subprocess.Popen[bytes]) -> None:
    """An abrupt end: SIGKILL to the sender's process group."""
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)


class Watch:
    """A `WatchEvents` stream with `follow`, read on a thread: `events` as they arrive."""

    def __init__(self, client: Client, after: int = 0, **filters: Any) -> None:
        request = event_pb2.WatchEventsRequest(after_seq=after, follow=True, **filters)
        self.call = client.events.WatchEvents(request, metadata=client.metadata)
        self.events: list[Event] = []
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for pb in self.call:
                self.events.append(dict(event_dict(pb)))
        except grpc.RpcError as e:
            self.error = e

    def wait_for(self, wanted: Callable[[Event], bool], timeout: float, what: str) -> Event:
        found: Event = wait_until(
            lambda: next((e for e in list(self.events) if wanted(e)), None), timeout, what
        )
        return found

    def close(self) -> list[Event]:
        """Disconnects; returns every event it got."""
        self.call.cancel()
        self.thread.join(10)
        assert not self.thread.is_alive()
        return list(self.events)


def kept(client: Client, after: int = 0, **filters: Any) -> list[Event]:
    """The events the server keeps now (no `follow`)."""
    request = event_pb2.WatchEventsRequest(after_seq=after, **filters)
    stream = client.events.WatchEvents(request, metadata=client.metadata, timeout=30)
    return [dict(event_dict(pb)) for pb in stream]


def switch(e: Event) -> tuple[str, str, str] | None:
    return (e["from"], e["to"], e["reason"]) if e["kind"] == "switch" else None


def test_watch_sees_the_switch_and_resumes_from_its_last_number(
    server: Server, peers: Peers, ts_file: Path
) -> None:
    """A client sees the switch when the main sender is killed, disconnects; meanwhile the
    main sender comes back (failback) and is killed again; the client reconnects from the last
    number it saw and gets every event once: no gap, no repeat."""
    main_port, backup_port = free_port(), free_port()
    inputs = [ep(f"udp://127.0.0.1:{main_port}", "main"),
              ep(f"udp://127.0.0.1:{backup_port}", "backup")]
    server.create("news", spec(
        inputs,
        [f"udp://127.0.0.1:{free_port()}"],
        failover=spec_pb2.Failover(failback_after_ms=1000),
    ))
    main_url = f"udp://127.0.0.1:{main_port}?pkt_size=1316"
    main = live_sender(peers, ts_file, main_url)
    live_sender(peers, ts_file, f"udp://127.0.0.1:{backup_port}?pkt_size=1316")
    wait_until(lambda: all(i.healthy for i in server.get("news").status.inputs), 20, "both inputs")

    watch = Watch(server.client)
    kill(main)
    lost = watch.wait_for(lambda e: switch(e) is not None, 15, "the switch")
    assert switch(lost) == ("main", "backup", "lost") and lost["route"] == "news"
    # The loss of the input comes first, with the reason.
    gone = watch.wait_for(lambda e: e["kind"] == "input_lost", 1, "input_lost")
    assert gone["seq"] < lost["seq"] and (gone["input"], gone["reason"]) == ("main", "lost")
    first = watch.close()
    last = first[-1]["seq"]

    # While the client is away: failback to main, then main is killed again.
    main = live_sender(peers, ts_file, main_url)
    wait_until(lambda: server.get("news").status.switch.active == "main", 20, "the failback")
    kill(main)
    wait_until(lambda: server.get("news").status.switch.active == "backup", 15, "switch again")

    again = Watch(server.client, after=last)
    again.wait_for(lambda e: e["seq"] > last and switch(e) == ("main", "backup", "lost"), 10,
                   "the second switch after reconnecting")
    rest = again.close()
    numbers = [e["seq"] for e in first + rest]
    # From the first event the server made, each number once and in order.
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    switches = [switch(e) for e in rest if switch(e)]
    assert switches == [("backup", "main", "failback"), ("main", "backup", "lost")]
    kinds = [e["kind"] for e in rest if e.get("input") == "main" and e["kind"] != "analysis"]
    assert kinds == ["input_recovered", "input_lost"]


def test_watch_filters_by_route_and_kind_and_names_bad_filters(server: Server) -> None:
    two = [ep(test_input(), "a"), ep(test_input(), "b")]
    for name in ("one", "two"):
        server.create(name, spec(two, ["udp://127.0.0.1:9"]))
    for name in ("one", "two"):
        wait_until(lambda n=name: all(i.healthy for i in server.get(n).status.inputs), 20,
                   "both inputs")
        server.client.routes.SwitchInput(route_pb2.SwitchInputRequest(name=name, input_id="b"),
                                         metadata=server.client.metadata)
    got = kept(server.client, routes=["one"], kinds=["switch", "route_created"])
    assert [(e["route"], e["kind"]) for e in got] == [("one", "route_created"), ("one", "switch")]
    assert switch(got[1]) == ("a", "b", "manual")
    admin_id = kept(server.client, kinds=["key_created"])[0]["key"]
    assert got[0]["key_id"] == admin_id and "key_id" not in got[1]
    # A route filter passes no template or key event; a kind filter alone passes them.
    assert [e["kind"] for e in kept(server.client, kinds=["key_created"])] == ["key_created"]

    details = expect(CODE.INVALID_ARGUMENT,
                     lambda: kept(server.client, kinds=["switch", "explosion"]))
    assert details.startswith("kinds[1]: unknown event kind 'explosion'")
    details = expect(CODE.INVALID_ARGUMENT, lambda: kept(server.client, routes=["no spaces"]))
    assert details.startswith("routes[0]:")


def test_control_plane_events_carry_the_key_that_made_them(server: Server) -> None:
    operator = server.client_with(server.key("operator"))
    operator_id = operator.key.split("_")[1]
    operator.templates.CreateTemplate(template_pb2.CreateTemplateRequest(name="t", spec=spec([])),
                                      metadata=operator.metadata)
    operator.routes.CreateRoute(route_pb2.CreateRouteRequest(
        name="r", spec=spec([test_input()], template="t"),
        desired_state=route_pb2.DESIRED_STATE_STOPPED), metadata=operator.metadata)
    operator.routes.DeleteRoute(route_pb2.DeleteRouteRequest(name="r"), metadata=operator.metadata)
    server.client.keys.RevokeKey(key_pb2.RevokeKeyRequest(id=operator_id),
                                 metadata=server.client.metadata)
    admin_id = next(e for e in kept(server.client) if e["kind"] == "key_created")["key"]
    control = [e for e in kept(server.client)
               if e["kind"].startswith(("template", "route_", "key"))]
    seen = [(e["kind"], e.get("route") or e.get("name"), e.get("key_id")) for e in control]
    assert seen == [
        ("key_created", "env", None),  # at start, from CASTWAY_ADMIN_KEY
        ("key_created", "operator", admin_id),
        ("template_created", "t", operator_id),
        ("route_created", "r", operator_id),
        ("route_deleted", "r", operator_id),
        ("key_revoked", "operator", admin_id),
    ]
    assert control[-1]["key"] == operator_id
    operator.close()


def test_resuming_from_a_number_gone_or_not_yet_made_is_out_of_range(tmp_path: Path) -> None:
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1,
                    limits=Limits(event_history=3)) as running:
        client = Client(f"127.0.0.1:{running.port}", key=ADMIN)
        for i in range(5):
            client.templates.CreateTemplate(
                template_pb2.CreateTemplateRequest(name=f"t{i}", spec=spec([])),
                metadata=client.metadata)
        # Six events (the admin key, five templates): #4 to #6 are kept.
        assert [e["seq"] for e in kept(client)] == [4, 5, 6]
        assert [e["seq"] for e in kept(client, after=3)] == [4, 5, 6]
        for after, why in ((1, "events #2..#3 are no longer kept"),
                           (9, "no event after #9 can come: the latest is #6")):
            with pytest.raises(grpc.RpcError) as info:
                kept(client, after=after)
            err: Any = info.value
            assert err.code() == CODE.OUT_OF_RANGE
            assert err.details() == f"{why}; the oldest kept is #4"
            assert dict(err.trailing_metadata())["castway-oldest-seq"] == "4"
        client.close()


def test_gateway_events_and_stats_show_a_stream_ids_password_as_stars(
    gateway: castway.Gateway, peers: Peers, udp_capture: Any
) -> None:
    out = free_port()
    route = gateway.add_route(
        "lab",
        ["test://?size=320x180",
         f"srt://127.0.0.1:{free_port()}?streamid=publish:x:u:streampw123&standby=cold"],
        {"srt": f"srt://:{out}?mode=listener"},
    )
    after = gateway.latest_event()
    receiver = peers.start([
        "srt-live-transmit", "-q",
        f"srt://127.0.0.1:{out}?mode=caller&streamid=read:lab:viewer:viewerpassword",
        f"udp://127.0.0.1:{udp_capture().port}",
    ])


    def first(kind: str) -> Event:
        return wait_until(lambda: next(
            (e for e in gateway.wait_events(after, timeout=0.5) if e["kind"] == kind), None
        ), 20, kind)

    assert first("caller_joined")["stream_id"] == "read:lab:viewer:***"
    kill(receiver)
    assert first("caller_left")["stream_id"] == "read:lab:viewer:***"
    uri = route.stats()["inputs"][1]["uri"]
    assert uri.endswith("&streamid=publish:x:u:***"), uri
    frame = route.stats_frame()
    assert not frame.astype(str).apply(lambda c: c.str.contains("streampw123")).any().any()


def test_srt_callers_join_and_leave_and_viewers_do_not_see_their_stream_id(
    server: Server, peers: Peers, udp_capture: Any
) -> None:
    out = free_port()
    server.create("calls", spec([test_input()], [ep(f"srt://:{out}?mode=listener", "srt")]))
    viewer = server.client_with(server.key("viewer"))
    kinds = ["caller_joined", "caller_left", "output_connected", "output_disconnected"]
    as_admin, as_viewer = Watch(server.client, kinds=kinds), Watch(viewer, kinds=kinds)
    receiver = peers.start([
        "srt-live-transmit", "-q", f"srt://127.0.0.1:{out}?mode=caller&streamid=token-123",
        f"udp://127.0.0.1:{udp_capture().port}",
    ])
    joined = as_admin.wait_for(lambda e: e["kind"] == "caller_joined", 20, "the caller")
    host, _, _ = joined["address"].rpartition(":")
    assert (joined["output"], joined["stream_id"], host) == ("srt", "token-123", "127.0.0.1")
    seen = as_viewer.wait_for(lambda e: e["kind"] == "caller_joined", 5, "the caller (viewer)")
    assert seen["stream_id"] == "***" and seen["address"] == joined["address"]
    kill(receiver)
    left = as_admin.wait_for(lambda e: e["kind"] == "caller_left", 20, "the caller to leave")
    assert left["address"] == joined["address"]
    as_admin.wait_for(lambda e: e["kind"] == "output_disconnected", 5, "the output alone")
    got = [e["kind"] for e in as_admin.close()]
    assert got == ["caller_joined", "output_connected", "caller_left", "output_disconnected"]
    as_viewer.close()
    viewer.close()


def test_open_watches_hold_no_worker_thread_and_leave_none_behind(server: Server) -> None:
    """More watches than the server has worker threads (16): calls still get answered, and
    the watches, cancelled, leave no thread behind."""
    before = threading.active_count()
    watches = [Watch(server.client) for _ in range(24)]
    wait_until(lambda: all(w.events for w in watches), 15, "every watch to start")
    started = time.monotonic()
    server.client.routes.ListRoutes(route_pb2.ListRoutesRequest(),
                                    metadata=server.client.metadata, timeout=10)
    assert time.monotonic() - started < 5
    server.client.templates.CreateTemplate(
        template_pb2.CreateTemplateRequest(name="t", spec=spec([])),
        metadata=server.client.metadata, timeout=10)
    for w in watches:
        w.wait_for(lambda e: e["kind"] == "template_created", 10, "the new event")
        w.close()
    # The reader threads of this test are gone; the server kept none per watch.
    wait_until(lambda: threading.active_count() <= before + 2, 10, "threads to end")


def test_gateway_events_time_out_without_holding_the_gil() -> None:
    with castway.Gateway() as gw:
        marks: list[float] = []
        done = threading.Event()

        def spin() -> None:
            n = 0
            while not done.is_set():
                n += 1
                if n % 1000 == 0:
                    marks.append(time.monotonic())

        spinner = threading.Thread(target=spin)
        spinner.start()
        started = time.monotonic()
        try:
            got = list(gw.events(after=gw.latest_event(), timeout=0.6))
        finally:
            ended = time.monotonic()
            done.set()
            spinner.join()
        assert got == []
        assert ended - started >= 0.6
        # Another thread ran all along while this one waited in Rust.
        inside = [t for t in marks if started + 0.1 <= t <= ended - 0.1]
        assert len(inside) > 100, len(inside)
        assert max(b - a for a, b in itertools.pairwise(inside)) < 0.1


def test_python_sees_state_inputs_and_outputs(udp_capture: Any, ts_file: Path) -> None:
    port, dead = free_port(), free_port()
    sending = threading.Event()
    sending.set()
    sender = LiveSender(ts_file.read_bytes(), port, on=lambda _: sending.is_set(), bitrate=2e6)
    seen: list[Event] = []
    try:
        with castway.Gateway() as gw:
            reader = threading.Thread(
                target=lambda: [seen.append(dict(e)) for e in gw.events(timeout=30)]
            )
            reader.start()
            gw.add_route("r", {"main": f"udp://127.0.0.1:{port}"}, {
                "ok": f"udp://127.0.0.1:{udp_capture().port}",
                "broken": f"srt://127.0.0.1:{dead}?mode=caller",
            }, slate=False)

            def event(wanted: Callable[[Event], bool], what: str) -> Event:
                found: Event = wait_until(
                    lambda: next((e for e in list(seen) if wanted(e)), None), 20, what)
                return found

            event(lambda e: e["kind"] == "route_state" and e["to"] == "live", "the route live")
            event(lambda e: e["kind"] == "output_connected" and e["output"] == "ok", "ok up")
            failing = event(lambda e: e["kind"] == "output_failing", "the broken output")
            assert failing["output"] == "broken" and "SRT" in failing["error"]
            sending.clear()
            lost = event(lambda e: e["kind"] == "input_lost", "the input lost")
            assert (lost["route"], lost["input"], lost["reason"]) == ("r", "main", "lost")
            event(lambda e: e["kind"] == "route_state" and e["to"] == "waiting"
                  and e["seq"] > lost["seq"], "the route waiting")
            sending.set()
            back = event(lambda e: e["kind"] == "input_recovered", "the input back")
            assert back["input"] == "main" and back["seq"] > lost["seq"]
            event(lambda e: e["kind"] == "route_state" and e["seq"] > lost["seq"]
                  and e["to"] == "live", "the route live again")
            states = [e["to"] for e in seen if e["kind"] == "route_state"]
            assert states[:4] == ["waiting", "live", "waiting", "live"], states
        reader.join(10)
        assert not reader.is_alive(), "the iterator did not end when the gateway closed"
        assert seen[-1]["kind"] == "route_state" and seen[-1]["to"] == "stopped"
        numbers = [e["seq"] for e in seen]
        assert numbers == list(range(1, len(numbers) + 1))
        # The broken output retried all along, reported failing once.
        assert [e["kind"] for e in seen if e.get("output") == "broken"] == ["output_failing"]
    finally:
        sender.close()


def test_python_reading_past_the_history_is_an_error() -> None:
    with castway.Gateway(event_history=2) as gw:
        for name in ("a", "b", "c", "d"):
            gw.emit("template_created", name=name)
        assert [e["name"] for e in gw.wait_events(after=0)] == ["c", "d"]
        assert [e["name"] for e in gw.wait_events(after=2)] == ["c", "d"]
        gone = r"events #2\.\.#2 are no longer kept; the oldest kept is #3"
        with pytest.raises(castway.errors.EventsLostError, match=gone) as info:
            gw.wait_events(after=1)
        assert info.value.oldest == 3
        with pytest.raises(castway.errors.EventsLostError, match="the latest is #4"):
            next(gw.events(after=9))
        with pytest.raises(ValueError, match="unknown event kind"):
            gw.emit("boom")  # type: ignore[arg-type]
        with pytest.raises(castway.errors.ConfigError, match="data plane"):
            gw.emit("switch")
        with pytest.raises(ValueError, match="no text field"):
            gw.emit("route_created", colour="red")


def test_what_event_sinks_drop_and_miss_is_counted_in_metrics() -> None:
    """A sink whose queue is full drops (and counts) rather than wait; events the log moved
    past before the dispatcher read them are counted as missed; /metrics shows both."""
    from castway.server.events import EventHub, QueuedSink
    from castway.server.metrics import Metrics

    release = threading.Event()

    class Stuck(QueuedSink):
        def handle(self, event: Any) -> None:
            release.wait(10)

    with castway.Gateway(event_history=2) as gw:
        hub = EventHub(gw)
        stuck = Stuck("stuck", 1)
        hub.add_sink(stuck)
        for name in ("a", "b", "c", "d"):
            gw.emit("template_created", name=name)
        # Started after #1 and #2 are gone from the log: the dispatcher misses them; #3 and #4
        # meet a queue of one whose thread is stuck in `handle`.
        hub.start()
        try:
            wait_until(lambda: hub.statuses()[0][1]["dropped"], 10, "a dropped event")
            [(name, status)] = hub.statuses()
            assert name == "stuck" and status["missed"] == 2
            assert status["dropped"] + status["queued"] <= 2
            text = Metrics(list, list, hub.statuses).render().decode()
        finally:
            release.set()
            hub.stop()
        values = {(s.name, s.labels.get("sink")): s.value
                  for f in text_string_to_metric_families(text) for s in f.samples}
        assert values[("castway_event_sink_missed_total", "stuck")] == 2
        assert values[("castway_event_sink_dropped_total", "stuck")] == status["dropped"]


class Receiver:
    """An HTTP server on loopback that records each POST (headers, body) and answers
    `status`."""

    def __init__(self, port: int = 0, status: int = 204) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        received, answer = self.posts, self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(answer.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.status = status
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/castway"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    """``receiver(port=0, status=204)``: a webhook receiver, closed after the test."""
    with closing_all(Receiver) as make:
        yield make


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What docs/events.md tells a receiver to check: HMAC-SHA256 of `TIMESTAMP.BODY` with
    the secret, and a timestamp within 5 minutes."""
    timestamp = headers["x-castway-timestamp"]
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= 300
    return fresh and hmac.compare_digest(headers["x-castway-signature"], f"sha256={mac}")


def create_webhook(c: Client, name: str, url: str, **kw: Any) -> event_pb2.Webhook:
    request = event_pb2.CreateWebhookRequest(name=name, url=url, secret=SECRET, **kw)
    return c.events.CreateWebhook(request, metadata=c.metadata, timeout=10)


def test_webhook_deliveries_are_signed_as_documented(
    server: Server, receiver: Callable[..., Receiver]
) -> None:
    r = receiver()
    made = create_webhook(server.client, "hook", r.url, kinds=["switch", "route_created"],
                          routes=["r"])
    assert made.has_secret and SECRET.encode() not in made.SerializeToString()
    server.create("r", spec([ep(test_input(), "a"), ep(test_input(), "b")], ["udp://127.0.0.1:9"]))
    server.create("other", spec([test_input()]))
    wait_until(lambda: all(i.healthy for i in server.get("r").status.inputs), 20, "both inputs")
    for target in ("b", "a"):
        server.client.routes.SwitchInput(route_pb2.SwitchInputRequest(name="r", input_id=target),
                                         metadata=server.client.metadata)
    wait_until(lambda: len(r.posts) == 3, 15, "three deliveries")
    bodies = [json.loads(body) for _, body in r.posts]
    assert [(b["kind"], b.get("to")) for b in bodies] == [
        ("route_created", None), ("switch", "b"), ("switch", "a")]
    assert all(verify(SECRET, h, body) for h, body in r.posts)
    assert not any(verify("another-secret-0123456789", h, body) for h, body in r.posts)
    for (h, _), b in zip(r.posts, bodies, strict=True):
        assert h["x-castway-event"] == b["kind"] and h["content-type"] == "application/json"
        assert h["x-castway-delivery"].endswith(f":{b['seq']}")
    # A body changed on the way no longer verifies.
    h, body = r.posts[0]
    assert not verify(SECRET, h, body.replace(b'"r"', b'"x"'))
    hook = server.client.events.GetWebhook(event_pb2.GetWebhookRequest(name="hook"),
                                           metadata=server.client.metadata)
    assert (hook.status.delivered, hook.status.failed, hook.status.retries) == (3, 0, 0)
    listed = server.client.events.ListWebhooks(event_pb2.ListWebhooksRequest(),
                                               metadata=server.client.metadata)
    assert SECRET.encode() not in listed.SerializeToString()


def unused_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_receiver_that_is_down_gets_retries_while_routes_relay_bit_exact(
    tmp_path: Path, udp_capture: Any, receiver: Callable[..., Receiver]
) -> None:
    down = unused_tcp_port()
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1,
                    metrics_listen="127.0.0.1:0") as running:
        client = Client(f"127.0.0.1:{running.port}", key=ADMIN)
        create_webhook(client, "down", f"http://127.0.0.1:{down}/hook")
        in_port, cap = free_port(), udp_capture()
        client.routes.CreateRoute(route_pb2.CreateRouteRequest(name="r", spec=spec(
            [f"udp://127.0.0.1:{in_port}"], [f"udp://127.0.0.1:{cap.port}"])),
            metadata=client.metadata, timeout=30)
        data = random_ts(7 * 3000, seed=11)
        UdpSender(data, in_port, bitrate=4e6).join()
        wait_until(lambda: cap.size >= len(data), 15, "every byte at the receiver")
        assert sha256(cap.data[: len(data)]) == sha256(data)

        def status() -> event_pb2.WebhookStatus:
            return client.events.GetWebhook(event_pb2.GetWebhookRequest(name="down"),
                                            metadata=client.metadata).status

        # The first event (route_state) is given up after five attempts, 7.5 s of backoff.
        st = wait_until(lambda: status().failed >= 1 and status(), 30, "an event given up")
        assert st.retries >= 4 and st.delivered == 0 and "Connection" in st.last_error
        url = f"http://127.0.0.1:{running.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            families = {f.name: f for f in text_string_to_metric_families(reply.read().decode())}
        [retries] = [s for s in families["castway_webhook_retries"].samples
                     if s.name.endswith("_total")]
        assert retries.labels["webhook"] == "down" and retries.value >= 4

        # The receiver comes up: what is queued gets through, signed.
        r = receiver(down)
        wait_until(lambda: status().delivered >= 1, 20, "a delivery once it is up")
        assert all(verify(SECRET, h, body) for h, body in r.posts)
        client.close()


def test_bad_webhooks_are_refused_naming_the_field_and_viewers_cannot_list_them(
    server: Server,
) -> None:
    c = server.client
    for url, field in (("ftp://127.0.0.1/x", "url"), ("not a url", "url"), ("http://", "url")):
        details = expect(CODE.INVALID_ARGUMENT, lambda u=url: create_webhook(c, "w", u))
        assert details.startswith(f"{field}:"), details
    details = expect(CODE.INVALID_ARGUMENT,
                     lambda: create_webhook(c, "w", "http://127.0.0.1:1/", kinds=["nope"]))
    assert details.startswith("kinds[0]: unknown event kind 'nope'")
    details = expect(CODE.INVALID_ARGUMENT, lambda: c.events.CreateWebhook(
        event_pb2.CreateWebhookRequest(name="w", url="http://127.0.0.1:1/", secret="short"),
        metadata=c.metadata))
    assert details.startswith("secret:")
    create_webhook(c, "w", "http://127.0.0.1:1/")
    expect(CODE.ALREADY_EXISTS, lambda: create_webhook(c, "w", "http://127.0.0.1:1/"))
    viewer = server.client_with(server.key("viewer"))
    expect(CODE.PERMISSION_DENIED, lambda: viewer.events.ListWebhooks(
        event_pb2.ListWebhooksRequest(), metadata=viewer.metadata))
    assert kept(viewer)  # but viewers watch events
    viewer.close()
    updated = c.events.UpdateWebhook(event_pb2.UpdateWebhookRequest(
        name="w", url="https://127.0.0.1:1/x", kinds=["switch"]), metadata=c.metadata)
    assert (updated.version, updated.url, list(updated.kinds)) == (2, "https://127.0.0.1:1/x",
                                                                   ["switch"])
    assert updated.has_secret  # kept: it was not given
    c.events.DeleteWebhook(event_pb2.DeleteWebhookRequest(name="w"), metadata=c.metadata)
    expect(CODE.NOT_FOUND, lambda: c.events.GetWebhook(event_pb2.GetWebhookRequest(name="w"),
                                                        metadata=c.metadata))


def test_config_declares_webhooks_and_the_events_file(
    tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    r = receiver()
    config = tmp_path / "castway.toml"
    config.write_text(
        'events_file = "events.jsonl"\n'
        "[webhooks.pager]\n"
        f'url = "{r.url}"\n'
        'kinds = ["route_created"]\n'
        f'secret = "{SECRET}"\n'
        "[routes.cfg]\n"
        'inputs = ["test://?size=160x90&bitrate=200"]\n'
    )
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1, config=config) as running:
        client = Client(f"127.0.0.1:{running.port}", key=ADMIN)
        wait_until(lambda: r.posts, 15, "the route_created delivery")
        [(headers, body)] = r.posts
        assert verify(SECRET, headers, body) and json.loads(body)["route"] == "cfg"
        hook = client.events.GetWebhook(event_pb2.GetWebhookRequest(name="pager"),
                                        metadata=client.metadata)
        assert list(hook.kinds) == ["route_created"] and hook.has_secret
        client.close()
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    numbers = [e["seq"] for e in events]
    assert numbers == sorted(set(numbers)) and numbers[0] == 1
    assert ("route_created", "cfg") in [(e["kind"], e.get("route")) for e in events]
    # The route's last event, as the server stopped, is in the file too.
    assert (events[-1]["kind"], events[-1]["to"]) == ("route_state", "stopped")
    assert (tmp_path / "events.jsonl").stat().st_mode & 0o777 == 0o600

    bad = tmp_path / "bad.toml"
    bad.write_text(f'[webhooks.x]\nurl = "gopher://x"\nsecret = "{SECRET}"\n')
    from castway.server.config import ConfigError, load
    with pytest.raises(ConfigError, match=r"webhooks\.x\.url: must be an http"):
        load(bad)


def test_castway_serve_events_file_and_castway_events_json_after(tmp_path: Path) -> None:
    """The command line end to end: `castway serve --events-file` writes one event per line;
    `castway events --json --after N` prints those after N, the same."""
    events_file = tmp_path / "events.jsonl"
    srv = ServeProcess(tmp_path / "data", env={"CASTWAY_ADMIN_KEY": ADMIN},
                       args=("--events-file", str(events_file)))
    try:
        addr = ["--addr", f"127.0.0.1:{srv.port}", "--key", ADMIN]
        for name in ("a", "b", "c"):
            assert cli.main(["template", "create", name, *addr]) == 0
        wait_until(lambda: len(events_file.read_text().splitlines()) >= 4, 10, "four lines")
        in_file = [json.loads(line) for line in events_file.read_text().splitlines()]
        assert [e["seq"] for e in in_file] == [1, 2, 3, 4]
        r = subprocess.run([CASTWAY, "events", "--json", "--after", "2", *addr],
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        printed = [json.loads(line) for line in r.stdout.splitlines()]
        # The same events; the time as a gRPC Timestamp (nanoseconds), so compared to a µs.
        for p, e in zip(printed, in_file[2:], strict=True):
            assert abs(p.pop("at") - e.pop("at")) < 1e-6 and p == e
        assert [(p["kind"], p["name"]) for p in printed] == [("template_created", "b"),
                                                            ("template_created", "c")]
        # Without --json: one line per event.
        r = subprocess.run([CASTWAY, "events", "--kind", "template_created", *addr],
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 3, r
        assert r.stdout.splitlines()[0].startswith("#2 ")
        r = subprocess.run([CASTWAY, "events", "--after", "99", *addr],
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 1 and "OUT_OF_RANGE" in r.stderr
        # Every event names this run of the server; a follower is told when the server ends.
        [run] = {e["run"] for e in in_file}
        follower = subprocess.Popen([CASTWAY, "events", "--follow", "--json", *addr],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert follower.stdout is not None
        os.set_blocking(follower.stdout.fileno(), False)
        follower_out = b""

        def caught_up() -> bool:
            nonlocal follower_out
            try:
                follower_out += os.read(follower.stdout.fileno(), 65536)  # type: ignore[union-attr]
            except BlockingIOError:
                pass
            return follower_out.count(b"\n") >= 4

        wait_until(caught_up, 20, "the follower to catch up")
    finally:
        assert srv.stop(signal.SIGTERM) == 0, srv.text()
    follower.wait(timeout=30)
    assert follower.stderr is not None
    err = follower.stderr.read().decode()
    assert follower.returncode == 1
    assert f"the server ended the stream (stopped?); go on with --after {run}:" in err
    # After a restart the numbers start from 1 again: going on from the old run's #2 is
    # refused, not answered with the new run's #3 on.
    again = ServeProcess(tmp_path / "data", env={"CASTWAY_ADMIN_KEY": ADMIN})
    try:
        addr = ["--addr", f"127.0.0.1:{again.port}", "--key", ADMIN]
        assert cli.main(["template", "create", "d", *addr]) == 0
        r = subprocess.run([CASTWAY, "events", "--json", "--after", f"{run}:0", *addr],
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 1 and "OUT_OF_RANGE" in r.stderr, r
        assert f"event #0 is of run {run}, and the server restarted since" in r.stderr
        r = subprocess.run([CASTWAY, "events", "--json", *addr],
                           capture_output=True, text=True, timeout=60, check=False)
        new_run = {json.loads(line)["run"] for line in r.stdout.splitlines()}
        assert r.returncode == 0 and len(new_run) == 1 and run not in new_run
    finally:
        assert again.stop(signal.SIGTERM) == 0, again.text()


def test_a_watch_ends_when_its_key_is_revoked(server: Server) -> None:
    viewer = server.key("viewer")
    client = server.client_with(viewer)
    watch = Watch(client)
    watch.wait_for(lambda e: e["kind"] == "key_created", 10, "the stream to start")
    key_id = viewer.split("_")[1]
    server.client.keys.RevokeKey(key_pb2.RevokeKeyRequest(id=key_id),
                                 metadata=server.client.metadata)
    wait_until(lambda: watch.error is not None, 10, "the stream to end")
    assert watch.error is not None and watch.error.code() == CODE.UNAUTHENTICATED
    assert "revoked" in (watch.error.details() or "")
    client.close()


def test_an_input_lost_carries_only_an_error_raised_since_it_was_last_healthy(
    server: Server, peers: Peers, ts_file: Path
) -> None:
    """Garbage on the main input leaves it an error; TS then makes it healthy; when its
    sender dies, the loss says no error (the garbage was before), not the old one."""
    port = free_port()
    server.create("stale", spec([ep(f"udp://127.0.0.1:{port}", "main"), ep(test_input(), "b")],
                                [f"udp://127.0.0.1:{free_port()}"]))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(20):
            s.sendto(bytes(range(256)) * 5, ("127.0.0.1", port))

    def main() -> Any:
        return server.get("stale").status.inputs[0]

    wait_until(lambda: "MPEG-TS" in main().last_error, 10, "the garbage named as not MPEG-TS")
    watch = Watch(server.client)
    sender = live_sender(peers, ts_file, f"udp://127.0.0.1:{port}?pkt_size=1316")
    wait_until(lambda: main().healthy, 20, "main healthy")
    kill(sender)
    gone = watch.wait_for(lambda e: e["kind"] == "input_lost" and e.get("input") == "main", 15,
                          "main lost")
    assert gone["reason"] == "lost" and "error" not in gone, gone
    watch.close()
