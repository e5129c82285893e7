"""The castway control plane: a gRPC server over a durable store and a :class:`castway.Gateway`.

>>> with run_server(Path("data"), admin_key="a-long-admin-key-for-tests") as running:
...     print(running.port)

Everything the gRPC API does, :class:`Control` (routes, templates) and :class:`Keys` do in
process too.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider

from castway.server import config as config_file
from castway.server.auth import AuthInterceptor
from castway.server.control import Control
from castway.server.keys import Keys
from castway.server.servicers import KeyService, RouteService, SystemService, TemplateService
from castway.server.store import Store
from castway.server.telemetry import TracingInterceptor, provider_from_env
from castway.v1 import (
    key_pb2,
    key_pb2_grpc,
    route_pb2,
    route_pb2_grpc,
    system_pb2,
    system_pb2_grpc,
    template_pb2,
    template_pb2_grpc,
)

__all__ = ["Control", "Keys", "Running", "ServeError", "Store", "Tls", "run_server"]

WORKERS = 16
SERVICES = (
    route_pb2.DESCRIPTOR.services_by_name["RouteService"].full_name,
    template_pb2.DESCRIPTOR.services_by_name["TemplateService"].full_name,
    key_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    system_pb2.DESCRIPTOR.services_by_name["SystemService"].full_name,
)


class ServeError(Exception):
    """The server cannot start: address taken, unreadable certificate, bad config."""


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
    server: grpc.Server
    port: int
    control: Control
    keys: Keys
    # The admin key created at this start (first start without CASTWAY_ADMIN_KEY), else None.
    created_admin_key: str | None


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
    grace_s: float = 5.0,
    out: TextIO = sys.stderr,
) -> Iterator[Running]:
    """Opens the store in ``data_dir``, restores every route, applies ``config``, serves the
    API on ``listen`` (port 0 picks one) and yields; on exit stops taking calls, lets running
    ones finish for ``grace_s`` and stops every route."""
    sources: list[tuple[config_file.Declared, str]] = []
    if extra_config is not None:
        sources.append((extra_config, "built-in config"))
    if config is not None:
        sources.append((config_file.load(config), str(config)))
    store = Store(data_dir)
    control: Control | None = None
    try:
        keys = Keys(store)
        created = keys.bootstrap(admin_key, out)
        control = Control(store)
        control.restore()
        for declared, source in sources:
            for line in config_file.apply(control, declared, source):
                print(f"castway: {source}: {line}", file=out, flush=True)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="castway-rpc"),
            interceptors=[
                TracingInterceptor(tracer_provider or provider_from_env()),
                AuthInterceptor(keys),
            ],
            # One server per port: without this, gRPC binds with SO_REUSEPORT and a second
            # castway on the same port would silently share it.
            options=[("grpc.so_reuseport", 0)],
        )
        route_pb2_grpc.add_RouteServiceServicer_to_server(RouteService(control), server)
        template_pb2_grpc.add_TemplateServiceServicer_to_server(TemplateService(control), server)
        key_pb2_grpc.add_KeyServiceServicer_to_server(KeyService(keys), server)
        system_pb2_grpc.add_SystemServiceServicer_to_server(SystemService(), server)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        try:
            if tls is None:
                port = server.add_insecure_port(listen)
            else:
                port = server.add_secure_port(listen, tls.credentials())
        except RuntimeError as e:
            raise ServeError(f"cannot listen on {listen}: {e}") from None
        if port == 0:
            raise ServeError(f"cannot listen on {listen} (address in use or not local)")
        server.start()
        for name in ("", *SERVICES):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        try:
            yield Running(server, port, control, keys, created)
        finally:
            health_servicer.enter_graceful_shutdown()
            server.stop(grace_s).wait()
    finally:
        if control is not None:
            control.close()
        store.close()
