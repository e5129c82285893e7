"""Metrics on a Prometheus endpoint, scraped by a real Prometheus server (Debian's package)
started on loopback with a config the test writes; the shipped alert rules are loaded and must
fire when a route's only sender stops."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from castway.client import Client
from castway.server import ServeError, run_server
from castway.v1 import key_pb2, route_pb2, spec_pb2

from support import wait_until
from support.clips import make_clip
from support.control import Server, ep, spec, test_input
from support.net import free_port
from support.peers import Peers, srt_receiver
from support.senders import UdpSender

ADMIN = "cw_metrics-test-admin-key-0123456789abcdef"
RULES = Path(__file__).parent.parent / "docs" / "castway-alerts.yml"


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


@pytest.fixture
def prometheus(tmp_path: Path, peers: Peers) -> Iterator[Any]:
    """Starts Prometheus against a target given later: returns a function taking the metrics
    port (and the key to scrape with, if any) and returning the Prometheus base URL."""

    def start(metrics_port: int, key: str | None = None) -> str:
        config = tmp_path / "prometheus.yml"
        auth = ""
        if key is not None:
            (tmp_path / "scrape.key").write_text(key)
            auth = f"    authorization: {{credentials_file: '{tmp_path / 'scrape.key'}'}}\n"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{RULES}']\n"
            "scrape_configs:\n"
            "  - job_name: castway\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n" + auth
        )
        # Port 0, and the port read from Prometheus' log: a port found free beforehand may be
        # taken (by a listener, or the local end of a connection) before Prometheus binds it,
        # and Prometheus then exits at once.
        p = peers.start([
            "prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            "--web.listen-address=127.0.0.1:0",
        ])

        def running() -> None:
            if p.poll() is not None:
                raise AssertionError(f"Prometheus exited ({p.returncode}):\n{peers.log(p)}")

        def listening() -> str | None:
            running()
            found = re.search(r'msg="Listening on" address=(127\.0\.0\.1:\d+)', peers.log(p))
            return found[1] if found else None

        # Bounded generously for a loaded machine; a Prometheus that exits fails at once.
        base = f"http://{wait_until(listening, 60, 'Prometheus to listen')}"

        def ready() -> bool:
            running()
            try:
                return "Ready" in get(f"{base}/-/ready")
            except OSError:
                return False

        wait_until(ready, 60, "Prometheus to be ready")
        return base

    yield start


def query(base: str, promql: str) -> list[dict[str, Any]]:
    body = json.loads(get(f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"))
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_prometheus_scrapes_routes_srt_callers_and_fires_the_slate_alert(
    tmp_path: Path, peers: Peers, udp_capture: Any, prometheus: Any
) -> None:
    clip = make_clip(tmp_path / "clip.ts", 20, "320x180", 600).read_bytes()
    in_port, out_port = free_port(), free_port()
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1,
                    metrics_listen="127.0.0.1:0") as running:
        assert running.metrics_port
        client = Client(f"127.0.0.1:{running.port}", key=ADMIN)
        client.routes.CreateRoute(route_pb2.CreateRouteRequest(
            name="news", spec=spec_pb2.RouteSpec(
                inputs=[spec_pb2.Endpoint(id="main", uri=f"udp://127.0.0.1:{in_port}")],
                outputs=[spec_pb2.Endpoint(id="cdn", uri=f"srt://:{out_port}?mode=listener")],
            )), metadata=client.metadata, timeout=30)
        sender = UdpSender(clip, in_port, bitrate=1e6)
        for _ in range(2):
            srt_receiver(peers, out_port, udp_capture())
        # The endpoint as any Prometheus client parses it.
        url = f"http://127.0.0.1:{running.metrics_port}/metrics"

        def callers() -> list[Any]:
            families = {f.name: f for f in text_string_to_metric_families(get(url))}
            rtt = families.get("castway_srt_rtt_milliseconds")
            return [s for s in rtt.samples if s.labels.get("peer")] if rtt else []

        assert len(wait_until(lambda: len(callers()) == 2 and callers(), 30, "two callers")) == 2

        base = prometheus(running.metrics_port)
        packets = 'castway_endpoint_packets_total{route="news",endpoint="cdn"}'
        wait_until(lambda: query(base, f"{packets} > 1000"), 30, "packets in Prometheus")
        peers_seen = query(base, 'castway_srt_latency_milliseconds{route="news",peer!=""}')
        assert len(peers_seen) == 2 and all(float(r["value"][1]) == 120 for r in peers_seen)
        assert query(base, 'castway_route_live{route="news"} == 1')
        assert not query(base, 'ALERTS{alertname="CastwayRouteOnSlate"}')

        def switches() -> dict[str, int]:
            status = client.routes.GetRoute(route_pb2.GetRouteRequest(name="news"),
                                            metadata=client.metadata, timeout=30).status
            return dict(status.switch.by_reason)

        # On a loaded machine the paced sender may have stalled past the loss timeout already
        # (a short slate, too short for the alert): only the switch the stop makes is counted.
        slates = switches().get("slate", 0)
        sender.close()  # the only sender stops: the slate covers, and the alert fires

        def firing() -> list[dict[str, Any]]:
            return query(base, 'ALERTS{alertname="CastwayRouteOnSlate",alertstate="firing"}')

        [alert] = wait_until(firing, 45, "the slate alert to fire")
        assert alert["metric"]["route"] == "news"
        # The switch to the slate is counted by its reason, in gRPC and in Prometheus alike.
        by_reason = switches()
        assert by_reason["slate"] == slates + 1 and len(by_reason) == 9, by_reason
        slated = f'castway_route_switches_total{{route="news",reason="slate"}} == {slates + 1}'
        wait_until(lambda: query(base, slated), 30, "the switch counted by reason")
        client.close()


def test_the_prometheus_text_is_what_the_opentelemetry_exporter_writes(
    gateway: Any, peers: Peers, udp_capture: Any, tmp_path: Path
) -> None:
    """castway writes /metrics itself (the SDK's reader is too slow for 500 routes): the same
    stats through OpenTelemetry's Prometheus reader give the same families, types, samples and
    values, but for the ``otel_scope_*`` labels the reader adds."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    from castway.server.metrics import Metrics, add_instruments

    clip = make_clip(tmp_path / "clip.ts", 10, "320x180", 600).read_bytes()
    in_port, out_port = free_port(), free_port()
    route = gateway.add_route("news", f"udp://127.0.0.1:{in_port}",
                              [f"srt://:{out_port}?mode=listener", "udp://127.0.0.1:9"])
    sender = UdpSender(clip, in_port, bitrate=1e6)
    srt_receiver(peers, out_port, udp_capture())
    wait_until(lambda: route.stats()["outputs"][0]["srt"]["callers"], 30, "a caller")
    sender.close()
    stats = gateway.stats()  # one read for both

    hooks = [("ops", {"delivered": 3, "failed": 1, "retries": 2, "dropped": 0, "queued": 0})]
    metrics = Metrics(lambda: stats, lambda: hooks, recordings=lambda: {
        "lost": 2, "totals": {"news": {"segments": 3, "bytes": 100, "drops": 0, "errors": 0}},
        "segment_start": {}, "deleted": {"age": 4}, "failures": 1,
    })
    ours = metrics.render().decode()
    reader = PrometheusMetricReader()
    REGISTRY.unregister(reader._collector)
    registry = CollectorRegistry()
    registry.register(reader._collector)
    provider = MeterProvider(metric_readers=[reader])
    add_instruments(provider.get_meter("castway"), metrics.reading)
    theirs = generate_latest(registry).decode()
    registry.unregister(reader._collector)
    REGISTRY.register(reader._collector)  # where the reader's shutdown takes it from
    provider.shutdown()

    def samples(text: str) -> dict[tuple[str, str], set[tuple[str, tuple[Any, ...], float]]]:
        out: dict[tuple[str, str], set[tuple[str, tuple[Any, ...], float]]] = {}
        for f in text_string_to_metric_families(text):
            if f.name == "target_info":
                continue
            out[(f.name, f.type)] = {
                # An empty label is no label to Prometheus (the reader writes `peer=""`).
                (x.name, tuple(sorted((k, v) for k, v in x.labels.items()
                                      if v and not k.startswith("otel_scope"))), x.value)
                for x in f.samples
            }
        return out

    mine, reference = samples(ours), samples(theirs)
    assert mine.keys() == reference.keys()
    assert mine == reference
    assert any(labels and dict(labels).get("peer") for (_, t), ss in mine.items()
               for _, labels, _ in ss), "the caller's series are there"


def status_of(url: str, key: str | None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            text_string_to_metric_families(r.read().decode())  # it parses
            return int(r.status)
    except urllib.error.HTTPError as e:
        assert e.headers["WWW-Authenticate"].startswith("Bearer")
        why = e.read().decode()
        assert ("unknown or revoked API key" in why) == bool(key), why
        return int(e.code)


def test_metrics_with_a_key_answer_only_a_live_key_and_prometheus_scrapes_with_one(
    tmp_path: Path, prometheus: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1,
                    metrics_listen="127.0.0.1:0", metrics_key=True) as running:
        server = Server(running, Client(f"127.0.0.1:{running.port}", key=ADMIN), tmp_path)
        server.create("news", spec([ep(test_input())], [ep("udp://127.0.0.1:9")]))
        url = f"http://127.0.0.1:{running.metrics_port}/metrics"
        viewer, other = server.key("viewer"), server.key("operator")
        assert status_of(url, None) == 401
        with caplog.at_level(logging.WARNING, logger="castway.audit"):
            assert status_of(url, "cw_00000000_not-a-key") == 401
        assert "metrics key=- peer=127.0.0.1 status=UNAUTHENTICATED" in caplog.text
        assert status_of(url, viewer) == 200
        other_id = other.split("_")[1]
        server.client.keys.RevokeKey(key_pb2.RevokeKeyRequest(id=other_id),
                                     metadata=server.client.metadata)
        assert status_of(url, other) == 401

        base = prometheus(running.metrics_port, key=viewer)
        wait_until(lambda: query(base, 'castway_route_live{route="news"} == 1'), 30,
                   "Prometheus to scrape with the key")
        server.client.close()


def test_a_metrics_key_without_a_metrics_endpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ServeError, match="needs --metrics-listen"), run_server(
        tmp_path / "data", admin_key=ADMIN, metrics_key=True
    ):
        pass


def test_metrics_on_an_address_that_is_not_loopback_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ServeError, match="not loopback"), run_server(
        tmp_path / "data", admin_key=ADMIN, metrics_listen="0.0.0.0:0"
    ):
        pass


def test_the_shipped_alert_rules_pass_promtool() -> None:
    r = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def promtool_test(tmp_path: Path, tests: str) -> None:
    """Runs promtool's rule unit tests ``tests`` (the YAML below ``tests:``) on the shipped
    rules, every 15 s of evaluation."""
    path = tmp_path / "alert-test.yml"
    path.write_text(f"rule_files: ['{RULES}']\nevaluation_interval: 15s\ntests:\n{tests}")
    r = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_ts_priority_1_alert_fires_on_an_error_and_on_a_condition_in_force(
    tmp_path: Path,
) -> None:
    """promtool's rule unit test: a continuity error fires the alert for the minute it counts;
    a PAT missing for minutes (counted once) fires it as long as its condition is in force;
    priority 2 errors and a clean input do not."""
    base = 'route="news",endpoint="main",kind="udp",direction="in"'
    where = "on input main of route news"
    promtool_test(tmp_path, f"""\
  - interval: 15s
    input_series:
      - series: 'castway_input_ts_errors_total{{{base},
                 check="continuity_count_error",priority="1"}}'
        values: '0 0 3 3 3 3 3 3 3 3 3 3 3 3'
      - series: 'castway_input_ts_conditions{{{base},check="pat_error",priority="1"}}'
        values: '0 0 0 0 0 0 0 0 0 0 1 1 1 1'
      - series: 'castway_input_ts_errors_total{{{base},check="pcr_repetition_error",priority="2"}}'
        values: '0 5 10 15 20 25 30 35 40 45 50 55 60 65'
      - series: 'castway_input_ts_conditions{{{base},check="pcr_repetition_error",priority="2"}}'
        values: '1 1 1 1 1 1 1 1 1 1 1 1 1 1'
    alert_rule_test:
      - eval_time: 15s
        alertname: CastwayTsPriority1Error
        exp_alerts: []
      - eval_time: 45s
        alertname: CastwayTsPriority1Error
        exp_alerts:
          - exp_labels: {{route: news, endpoint: main, check: continuity_count_error,
                          severity: warning}}
            exp_annotations:
              summary: "TR 101 290 priority 1 error continuity_count_error {where}"
      - eval_time: 2m
        alertname: CastwayTsPriority1Error
        exp_alerts: []
      - eval_time: 165s
        alertname: CastwayTsPriority1Error
        exp_alerts:
          - exp_labels: {{route: news, endpoint: main, check: pat_error, severity: warning}}
            exp_annotations:
              summary: "TR 101 290 priority 1 error pat_error {where}"
""")


def test_the_srt_loss_alert_compares_srt_packets_with_srt_packets(tmp_path: Path) -> None:
    """promtool's rule unit test: 2 % of an output's SRT packets lost fires the alert, 0.5 %
    does not, whatever the TS packet count (one SRT packet carries up to seven)."""
    base = 'route="news",endpoint="cdn",kind="srt",direction="out"'
    # Per minute: 6000 SRT packets (42000 TS packets) on each link.
    promtool_test(tmp_path, f"""\
  - interval: 15s
    input_series:
      - series: 'castway_srt_packets_total{{{base},peer=""}}'
        values: '0+1500x24'
      - series: 'castway_endpoint_packets_total{{{base}}}'
        values: '0+10500x24'
      - series: 'castway_srt_loss_total{{{base},peer=""}}'
        values: '0+30x24'
      - series: 'castway_srt_packets_total{{{base.replace("cdn", "lab")},peer=""}}'
        values: '0+1500x24'
      - series: 'castway_srt_loss_total{{{base.replace("cdn", "lab")},peer=""}}'
        values: '0+7.5x24'
    alert_rule_test:
      - eval_time: 4m
        alertname: CastwaySrtLoss
        exp_alerts:
          - exp_labels: {{route: news, endpoint: cdn, severity: warning}}
            exp_annotations:
              summary: "SRT loss above 1 % on news/cdn"
""")


def test_docs_list_every_series() -> None:
    from castway.server.metrics import GROUPS

    doc = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    for s in (s for table, _ in GROUPS for s in table):
        assert f"`{s.name}`" in doc, s.name


class OtlpReceiver:
    """An OTLP/HTTP metrics receiver on loopback: decodes each export request it is sent."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
        )

        self.requests: list[Any] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                received.append((self.path, request))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def names(self) -> set[str]:
        return {m.name for _, r in self.requests for rm in r.resource_metrics
                for sm in rm.scope_metrics for m in sm.metrics}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_metrics_are_pushed_over_otlp_when_the_environment_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = OtlpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "500")
    try:
        with run_server(tmp_path / "data", admin_key=ADMIN, grace_s=1) as running:
            assert running.metrics_port is None  # no Prometheus endpoint was asked for
            client = Client(f"127.0.0.1:{running.port}", key=ADMIN)
            client.routes.CreateRoute(route_pb2.CreateRouteRequest(
                name="pushed", spec=spec_pb2.RouteSpec(
                    inputs=[spec_pb2.Endpoint(uri="test://?size=160x90")],
                    outputs=[spec_pb2.Endpoint(uri=f"udp://127.0.0.1:{free_port()}")],
                )), metadata=client.metadata, timeout=30)
            wait_until(lambda: {"castway.endpoint.packets", "castway.route.live"}
                       <= receiver.names(), 30, "castway's metrics at the OTLP receiver")
            client.close()
        assert all(path == "/v1/metrics" for path, _ in receiver.requests)
    finally:
        receiver.close()


def test_castway_serve_takes_metrics_listen(tmp_path: Path) -> None:
    """The command line: `castway serve --metrics-listen` serves the endpoint it names."""
    from support.control import ServeProcess

    port = free_port()
    srv = ServeProcess(tmp_path / "data", args=("--metrics-listen", f"127.0.0.1:{port}"))
    try:
        assert f"serving metrics on http://127.0.0.1:{port}/metrics" in srv.text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            # No route yet, so no series; but a Prometheus endpoint that answers.
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            list(text_string_to_metric_families(r.read().decode()))
    finally:
        assert srv.stop(signal.SIGTERM) == 0, srv.text()
