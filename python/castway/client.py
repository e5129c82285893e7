"""A gRPC client for a castway server: the stubs with the key and TLS settings applied.

>>> c = Client("127.0.0.1:50051", key="cw_…")
>>> c.routes.ListRoutes(route_pb2.ListRoutesRequest(), metadata=c.metadata)

``CASTWAY_ADDR``, ``CASTWAY_KEY`` (or ``CASTWAY_KEY_FILE``, a file holding it),
``CASTWAY_TLS_CA``, ``CASTWAY_TLS_CERT`` and ``CASTWAY_TLS_KEY`` fill in what is not given.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import cast

import grpc

from castway._closing import Closing
from castway.gateway import Event
from castway.v1 import (
    event_pb2,
    event_pb2_grpc,
    key_pb2_grpc,
    recording_pb2_grpc,
    route_pb2_grpc,
    system_pb2_grpc,
    template_pb2_grpc,
)

DEFAULT_ADDR = "127.0.0.1:50051"


class Client(Closing):
    def __init__(
        self,
        addr: str | None = None,
        key: str | None = None,
        *,
        key_file: Path | None = None,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        timeout_s: float = 30.0,
        insecure: bool = False,
    ) -> None:
        """Plaintext (no ``tls_ca``/``tls_cert``) to an address that is not loopback is refused
        with :class:`PlaintextError` unless ``insecure`` (the key would cross the network in
        clear)."""
        env = os.environ.get
        self.addr = addr or env("CASTWAY_ADDR") or DEFAULT_ADDR
        key_path = key_file or _path(env("CASTWAY_KEY_FILE"))
        if not key and key_path is not None:
            key = read_key_file(key_path)
        self.key = key or env("CASTWAY_KEY") or ""
        ca = tls_ca or _path(env("CASTWAY_TLS_CA"))
        cert = tls_cert or _path(env("CASTWAY_TLS_CERT"))
        private = tls_key or _path(env("CASTWAY_TLS_KEY"))
        self.timeout_s = timeout_s
        if ca or cert:
            creds = grpc.ssl_channel_credentials(
                root_certificates=ca.read_bytes() if ca else None,
                private_key=private.read_bytes() if private else None,
                certificate_chain=cert.read_bytes() if cert else None,
            )
            self.channel = grpc.secure_channel(self.addr, creds)
        else:
            if not insecure and not is_local(self.addr):
                raise PlaintextError(
                    f"refusing plaintext to {self.addr}, which is not this machine: the key would "
                    "cross the network in clear; give --tls-ca (TLS), or --insecure if you must"
                )
            self.channel = grpc.insecure_channel(self.addr)
        self.routes = route_pb2_grpc.RouteServiceStub(self.channel)
        self.templates = template_pb2_grpc.TemplateServiceStub(self.channel)
        self.keys = key_pb2_grpc.KeyServiceStub(self.channel)
        self.system = system_pb2_grpc.SystemServiceStub(self.channel)
        self.events = event_pb2_grpc.EventServiceStub(self.channel)
        self.recordings = recording_pb2_grpc.RecordingServiceStub(self.channel)

    @property
    def metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return (("authorization", f"Bearer {self.key}"),) if self.key else ()

    def close(self) -> None:
        self.channel.close()


# Proto field names of an event that differ from its keys (`from`/`to` are Python keywords).
_EVENT_KEYS = {"from_source": "from", "to_source": "to"}


def event_dict(pb: event_pb2.Event) -> Event:
    """A ``WatchEvents`` message as the event it carries: the shape ``Gateway.events()``
    yields, the events file holds and webhooks receive (unset fields left out)."""
    d: dict[str, object] = {"seq": pb.seq, "at": pb.at.ToNanoseconds() / 1e9, "kind": pb.kind}
    for field in pb.DESCRIPTOR.fields:
        if field.name in ("seq", "at", "kind", "active"):
            continue
        if value := getattr(pb, field.name):
            d[_EVENT_KEYS.get(field.name, field.name)] = value
    if pb.HasField("active"):
        d["active"] = pb.active
    return cast(Event, d)


class KeyFileError(Exception):
    """The key file cannot be read."""


class PlaintextError(Exception):
    """Plaintext to an address that is not this machine's, without ``insecure``."""


def host_of(addr: str) -> str:
    """The host of ``HOST:PORT``, ``[V6]:PORT``, ``dns:///HOST:PORT`` or ``unix:PATH`` ("unix")."""
    if addr.startswith(("unix:", "unix-abstract:")):
        return "unix"
    addr = addr.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    if addr.startswith("["):
        return addr[1:].partition("]")[0]
    return addr.rpartition(":")[0] if ":" in addr else addr


def is_local(addr: str) -> bool:
    """Whether ``addr`` (a gRPC target or listen address) stays on this machine: loopback,
    ``localhost`` or a unix socket."""
    host = host_of(addr).lower()
    if host in ("unix", "localhost") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_key_file(path: Path) -> str:
    """The key in ``path``: its first line, without surrounding whitespace."""
    try:
        text = path.read_text()
    except OSError as e:
        raise KeyFileError(f"cannot read the key file {path}: {e.strerror}") from None
    lines = text.strip().splitlines()
    if not lines or not lines[0].strip():
        raise KeyFileError(f"the key file {path} is empty")
    return lines[0].strip()


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None
