"""The limits of one ``castway serve``: sizes, counts and the gRPC server's connection bounds.

Every limit has a default here and can be changed in the config file's ``[limits]`` table
(``max_routes = 5000``) or with ``run_server(limits=Limits(...))``. docs/control-plane.md lists
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from castway.server.errors import InvalidArgument

# What the native event log can keep.
MAX_EVENT_HISTORY = 1_000_000


@dataclass(frozen=True)
class Limits:
    # Specs.
    max_uri_bytes: int = 4096
    max_inputs: int = 16
    max_outputs: int = 64
    max_spec_bytes: int = 64 * 1024
    # Counts in the store.
    max_routes: int = 1000
    max_templates: int = 200
    max_keys: int = 100
    max_webhooks: int = 32
    # Events kept in memory for WatchEvents to resume from.
    event_history: int = 10_000
    # ListRoutes and ListSegments pages.
    default_page_size: int = 100
    max_page_size: int = 500
    # ExportClip: the longest range a clip may cover (seconds), and the clips made at once.
    max_clip_s: int = 6 * 3600
    max_clips: int = 2
    # The gRPC server.
    max_concurrent_rpcs: int = 1024
    max_streams_per_connection: int = 128
    max_message_bytes: int = 4 * 1024 * 1024
    connection_idle_s: int = 300
    connection_age_s: int = 3600
    connection_age_grace_s: int = 30
    workers: int = 16
    # GetSnapshot calls decoding at once (and at most half the workers): each may hold a
    # worker for up to its timeout.
    max_snapshots: int = 4


def limits_from_dict(d: Mapping[str, Any], where: str = "limits") -> Limits:
    known = {f.name for f in fields(Limits)}
    values: dict[str, int] = {}
    for key, value in d.items():
        if key not in known:
            raise InvalidArgument(
                f"{where}.{key}", f"unknown limit (known: {', '.join(sorted(known))})"
            )
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgument(f"{where}.{key}", f"must be a positive integer, not {value!r}")
        values[key] = value
    limits = replace(Limits(), **values)
    if limits.event_history > MAX_EVENT_HISTORY:
        raise InvalidArgument(
            f"{where}.event_history", f"must be at most {MAX_EVENT_HISTORY}"
        )
    if limits.default_page_size > limits.max_page_size:
        raise InvalidArgument(f"{where}.default_page_size", "must not exceed max_page_size")
    return limits
