"""The castway control plane: a gRPC server over a durable store and a :class:`castway.Gateway`.

>>> with run_server(Path("data"), admin_key="a-long-admin-key-for-tests") as running:
...     print(running.port)

Everything the gRPC API does, :class:`Control` (routes, templates) and :class:`Keys` do in
process too.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider

from castway.client import is_local
from castway.errors import CastwayError, ConfigError
from castway.gateway import Gateway
from castway.server import config as config_file
from castway.server.auth import AuthInterceptor
from castway.server.control import Control
from castway.server.errors import ControlError
from castway.server.events import EventHub, FileSink, LogSink, record_change
from castway.server.keys import Keys
from castway.server.limits import Limits
from castway.server.media import RECORDINGS_DIR, MediaError, MediaRoot
from castway.server.metrics import Metrics, otlp_configured
from castway.server.recording.catalog import Catalog, CatalogSink
from castway.server.recording.manager import Recordings
from castway.server.recording.service import RecordingService
from castway.server.servicers import (
    EventService,
    KeyService,
    RouteService,
    SystemService,
    TemplateService,
)
from castway.server.store import Store
from castway.server.telemetry import TracingInterceptor, provider_from_env
from castway.server.webhooks import Webhooks
from castway.v1 import (
    event_pb2,
    event_pb2_grpc,
    key_pb2,
    key_pb2_grpc,
    recording_pb2,
    recording_pb2_grpc,
    route_pb2,
    route_pb2_grpc,
    system_pb2,
    system_pb2_grpc,
    template_pb2,
    template_pb2_grpc,
)

__all__ = [
    "Control",
    "EventHub",
    "Keys",
    "Running",
    "ServeError",
    "Store",
    "Tls",
    "Webhooks",
    "run_server",
]

SERVICES = (
    route_pb2.DESCRIPTOR.services_by_name["RouteService"].full_name,
    event_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    template_pb2.DESCRIPTOR.services_by_name["TemplateService"].full_name,
    key_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    system_pb2.DESCRIPTOR.services_by_name["SystemService"].full_name,
    recording_pb2.DESCRIPTOR.services_by_name["RecordingService"].full_name,
)




class ServeError(Exception):
    """The server cannot start: address taken, unreadable certificate, bad config."""


class ServeUsageError(ServeError):
    """The server cannot start because what it was asked is wrong: a malformed ``listen`` or
    ``metrics_listen`` address, or a bad ``srt_listen`` address given as an argument (``castway
    serve --listen``, ``--metrics-listen``, ``--srt-listen``; exit status 2)."""


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path
    # Given: clients must present a certificate this CA signed (mutual TLS).
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        def read(path: Path, what: str) -> bytes:
            try:
                return path.read_bytes()
            except OSError as e:
                raise ServeError(f"cannot read the TLS {what} {path}: {e.strerror}") from None

        pair = [(read(self.key, "key"), read(self.cert, "certificate"))]
        ca = read(self.client_ca, "client CA") if self.client_ca else None
        return grpc.ssl_server_credentials(
            pair, root_certificates=ca, require_client_auth=ca is not None
        )


@dataclass(frozen=True)
class Running:
    server: grpc.aio.Server
    port: int
    control: Control
    keys: Keys
    # The admin key created at this start (first start without CASTWAY_ADMIN_KEY), else None.
    created_admin_key: str | None
    # The port of the Prometheus endpoint (`metrics_listen`), else None.
    metrics_port: int | None = None
    # The event sinks and streams, and the webhooks.
    events: EventHub | None = None
    webhooks: Webhooks | None = None
    # The JSON-lines events file (`events_file`), else None.
    events_file: FileSink | None = None
    # Recording policy, the catalog and each route's recorder (docs/recording.md).
    recordings: Recordings | None = None
    # `HOST:PORT` the shared SRT port listens on (`srt_listen`), else None.
    srt_port: str | None = None


def _refuse_taken(listen: str) -> None:
    """Refuses a ``listen`` port another socket listens on before the store opens or an admin
    key is made (gRPC finds out only when it binds, after everything else, and prints its own
    log line). gRPC binds with ``SO_REUSEADDR``, so this does too: a port whose last
    connections linger in ``TIME_WAIT`` is free."""
    host, _, port = listen.rpartition(":")
    if int(port) == 0:
        return
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (OSError, UnicodeError):
        return  # gRPC says why when it binds
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ServeError(f"cannot listen on {listen}: the port is in use") from None


@contextmanager
def run_server(
    data_dir: Path,
    listen: str = "127.0.0.1:0",
    *,
    tls: Tls | None = None,
    config: Path | None = None,
    extra_config: config_file.Declared | None = None,
    admin_key: str | None = None,
    tracer_provider: TracerProvider | None = None,
    limits: Limits | None = None,
    media_dir: Path | None = None,
    insecure: bool = False,
    metrics_listen: str | None = None,
    metrics_key: bool = False,
    events_file: Path | None = None,
    srt_listen: str | None = None,
    grace_s: float = 5.0,
    out: TextIO = sys.stderr,
) -> Iterator[Running]:
    """Opens the store in ``data_dir``, restores every route, applies ``config``, serves the
    API on ``listen`` (port 0 picks one) and yields; on exit stops taking calls, lets running
    ones finish for ``grace_s`` and stops every route. ``file:`` endpoints live in
    ``media_dir`` (default ``DATA_DIR/media``). Without ``tls``, a ``listen`` address that is
    not loopback is refused (before anything is opened or bound) unless ``insecure``.
    ``metrics_listen`` (``HOST:PORT``) serves Prometheus metrics at ``/metrics`` (plain HTTP,
    so loopback only unless ``insecure``), to any scraper or, with ``metrics_key``, to one
    presenting an API key (any role) as ``Authorization: Bearer KEY``; with
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` set they are also pushed over OTLP. ``events_file`` (else
    the config's ``events_file``) gets every event appended as a line of JSON. ``srt_listen``
    (``[HOST]:PORT``, else the config's ``srt_listen``) opens the shared SRT port: publishers and
    readers of every route's ``srt-shared://`` endpoints, chosen by stream ID."""
    for what, address in (("listen", listen), ("metrics", metrics_listen)):
        host, sep, port = (address or "").rpartition(":")
        if address is not None and (not sep or not port.isdigit() or (
                ":" in host and not (host.startswith("[") and host.endswith("]")))):
            raise ServeUsageError(
                f"{what} address {address!r} is not HOST:PORT (an IPv6 address goes in "
                "brackets: [::1]:50051)"
            )
        if address is not None and int(port) > 65535:
            # gRPC would serve on a port of its choosing instead.
            raise ServeUsageError(
                f"{what} address {address!r}: port {int(port)} is out of range (0 to 65535)"
            )
    _refuse_taken(listen)
    if tls is None and not insecure and not is_local(listen):
        raise ServeError(
            f"refusing to serve plaintext on {listen}, which is not loopback: API keys and SRT "
            "passphrases would cross the network in clear. Give --tls-cert and --tls-key, or "
            "--insecure if a TLS proxy sits in front"
        )
    sources: list[tuple[config_file.Declared, str]] = []
    if extra_config is not None:
        sources.append((extra_config, "built-in config"))
    if config is not None:
        sources.append((config_file.load(config), str(config)))
    if metrics_key and metrics_listen is None:
        raise ServeError("a key for metrics (--metrics-key) needs --metrics-listen")
    if metrics_listen is not None and not insecure and not is_local(metrics_listen):
        raise ServeError(
            f"refusing to serve metrics on {metrics_listen}, which is not loopback: route names "
            "and peer addresses would be open to the network. Put a TLS proxy with access "
            "control in front and give --insecure"
        )
    declared_limits = [d.limits for d, _ in sources if d.limits is not None]
    limits = limits or (declared_limits[-1] if declared_limits else Limits())
    declared_files = [d.events_file for d, _ in sources if d.events_file is not None]
    events_file = events_file or (declared_files[-1] if declared_files else None)
    declared_ports = [d.srt_listen for d, _ in sources if d.srt_listen is not None]
    srt_listen_given = srt_listen is not None
    srt_listen = srt_listen or (declared_ports[-1] if declared_ports else None)
    store = Store(data_dir)
    control: Control | None = None
    gateway: Gateway | None = None
    hub: EventHub | None = None
    webhooks: Webhooks | None = None
    recordings: Recordings | None = None
    try:
        gateway = Gateway(event_history=limits.event_history)
        gw = gateway
        srt_port = None
        if srt_listen is not None:
            try:
                srt_port = gateway.listen_srt(srt_listen)
            except ConfigError as e:
                # The address is wrong (a port in use is an AddressInUseError).
                error = ServeUsageError if srt_listen_given else ServeError
                raise error(str(e)) from None
            except CastwayError as e:
                raise ServeError(str(e)) from None
        hub = EventHub(gateway)
        hub.start()
        hub.add_sink(LogSink())
        sink = None
        if events_file is not None:
            try:
                sink = FileSink(events_file)
            except OSError as e:
                raise ServeError(
                    f"cannot open the events file {events_file}: {e.strerror}"
                ) from None
            hub.add_sink(sink)
        keys = Keys(
            store, limits.max_keys, emit=lambda kind, **f: record_change(gw, kind, **f),
            on_keys=gw.set_srt_keys,
        )
        try:
            created = keys.bootstrap(admin_key, out)
        except ControlError as e:
            raise ServeError(str(e)) from None
        try:
            media = MediaRoot(
                media_dir or data_dir / "media",
                data_dir,
                store.files,
                store.known_output,
                store.remember_output,
            )
        except MediaError as e:
            raise ServeError(str(e)) from None
        control = Control(store, media, gateway=gateway, limits=limits)
        webhooks = Webhooks(store, hub, limits.max_webhooks)
        catalog = Catalog(store)
        try:
            recordings = Recordings(control, catalog, media.path / RECORDINGS_DIR)
        except OSError as e:
            raise ServeError(f"cannot use the recordings directory: {e}") from None
        recordings.repair()
        hub.add_sink(CatalogSink(catalog))
        control.restore()
        recordings.start()
        for declared, source in sources:
            for line in config_file.apply(control, declared, source, webhooks):
                print(f"castway: {source}: {line}", file=out, flush=True)
        server = _Server(
            keys,
            control,
            EventService(hub, webhooks, keys),
            tls,
            listen,
            tracer_provider or provider_from_env(),
            limits,
            RecordingService(recordings),
        )
        metrics: Metrics | None = None
        http: Any = None
        try:
            server.start()
            metrics_port = None
            if metrics_listen is not None or otlp_configured():
                metrics = Metrics(control.stats, webhooks.statuses, hub.statuses,
                                  gw.srt_port_stats, recordings.metrics)
            if metrics is not None and metrics_listen is not None:
                host, _, port = metrics_listen.rpartition(":")
                try:
                    http, metrics_port = metrics.serve(
                        host.strip("[]") or "127.0.0.1",
                        int(port),
                        (lambda k: keys.authenticate(k) is not None) if metrics_key else None,
                    )
                except (OSError, ValueError) as e:
                    raise ServeError(f"cannot serve metrics on {metrics_listen}: {e}") from None
            yield Running(
                server.server, server.port, control, keys, created, metrics_port, hub, webhooks,
                sink, recordings, srt_port,
            )
        finally:
            if http is not None:
                http.shutdown()
                http.server_close()
            if metrics is not None:
                metrics.close()
            # Open WatchEvents streams end now rather than hold the grace period.
            hub.end_watches()
            server.stop(grace_s)
    finally:
        # Webhooks first (a receiver must not hold the stop up); the routes' last events
        # still reach the events file.
        if webhooks is not None:
            webhooks.close()
        if recordings is not None:
            recordings.close()
        if control is not None:
            control.close()
        elif gateway is not None:
            gateway.close()
        if hub is not None:
            hub.stop()
        store.close()


class _Server:
    """The ``grpc.aio`` server on its own event-loop thread.

    Every call is accepted on the event loop: the key is checked there as soon as the headers
    arrive (a refused call never takes a worker), health checks are answered there, and a call
    waiting for its request body holds only a coroutine. The servicers themselves are plain
    functions run on ``limits.workers`` threads once their request is in.
    """

    def __init__(
        self,
        keys: Keys,
        control: Control,
        events: EventService,
        tls: Tls | None,
        listen: str,
        provider: TracerProvider,
        limits: Limits,
        recordings: RecordingService,
    ) -> None:
        self._keys, self._control, self._tls, self._listen = keys, control, tls, listen
        self._events, self._recordings = events, recordings
        self._provider, self._limits = provider, limits
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="castway-grpc", daemon=True
        )
        self._pool = futures.ThreadPoolExecutor(
            max_workers=limits.workers, thread_name_prefix="castway-rpc"
        )
        self.port = 0
        self.server: grpc.aio.Server
        self._started = False

    def start(self) -> None:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._pool.shutdown(wait=False)
            raise
        self._started = True

    async def _start(self) -> None:
        limits = self._limits
        server = grpc.aio.server(
            self._pool,
            interceptors=[TracingInterceptor(self._provider), AuthInterceptor(self._keys)],
            options=[
                # One server per port: without this, gRPC binds with SO_REUSEPORT and a second
                # castway on the same port would silently share it.
                ("grpc.so_reuseport", 0),
                ("grpc.max_concurrent_streams", limits.max_streams_per_connection),
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                ("grpc.max_connection_idle_ms", limits.connection_idle_s * 1000),
                ("grpc.max_connection_age_ms", limits.connection_age_s * 1000),
                ("grpc.max_connection_age_grace_ms", limits.connection_age_grace_s * 1000),
            ],
            maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
        )
        route_pb2_grpc.add_RouteServiceServicer_to_server(RouteService(self._control), server)
        template_pb2_grpc.add_TemplateServiceServicer_to_server(
            TemplateService(self._control), server
        )
        key_pb2_grpc.add_KeyServiceServicer_to_server(KeyService(self._keys), server)
        event_pb2_grpc.add_EventServiceServicer_to_server(self._events, server)
        system_pb2_grpc.add_SystemServiceServicer_to_server(
            SystemService(self._control.gateway.srt_port_stats), server
        )
        recording_pb2_grpc.add_RecordingServiceServicer_to_server(self._recordings, server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        listen = self._listen
        try:
            if self._tls is None:
                port = server.add_insecure_port(listen)
            else:
                port = server.add_secure_port(listen, self._tls.credentials())
        except RuntimeError as e:
            raise ServeError(f"cannot listen on {listen}: {e}") from None
        if port == 0:
            raise ServeError(f"cannot listen on {listen} (address in use or not local)")
        await server.start()
        for name in ("", *SERVICES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.server, self.port = server, port

    async def _stop(self, grace_s: float) -> None:
        await self._health.enter_graceful_shutdown()
        await self.server.stop(grace_s)

    def stop(self, grace_s: float) -> None:
        if not self._started:
            return  # start() failed and already let go of everything
        try:
            asyncio.run_coroutine_threadsafe(self._stop(grace_s), self._loop).result(
                timeout=grace_s + 30
            )
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._pool.shutdown(wait=True, cancel_futures=True)
