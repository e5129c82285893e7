"""A control server whose trace spans are kept in memory, for the tests of tracing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from castway.client import Client
from castway.server import run_server

from support.control import ADMIN


@contextmanager
def traced_client(data_dir: Path) -> Iterator[tuple[Client, InMemorySpanExporter]]:
    """A server whose spans are kept in memory, and an admin client of it. Read the spans after
    the block: the server has stopped, so every span has ended."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with run_server(data_dir, admin_key=ADMIN, tracer_provider=provider, grace_s=1) as running:
        with Client(f"127.0.0.1:{running.port}", ADMIN) as c:
            yield c, exporter
