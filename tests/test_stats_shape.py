"""The stats are defined once, in Rust (rust/route/stats.rs, rust/stats/): every key a live
route's `Route.stats()` shows must also have its field in `route.proto` (the gRPC server fills
the messages by name) and in the TypedDicts of `castway.gateway`. A figure added in Rust and
forgotten in either fails here, naming it."""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor

import castway
from castway import gateway as api
from castway.server.servicers import STATS_ELSEWHERE, STATS_NAMES
from castway.v1 import route_pb2

from support import wait_until
from support.capture import UdpCapture
from support.control import test_input
from support.net import free_port
from support.peers import Peers, srt_receiver

# The stats' key of each proto field that differs from it, the other way round.
PROTO_FIELD = {key: field for field, key in STATS_NAMES.items()}


def keys(value: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every key of every mapping in `value`, depth first."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield path, k, v
            yield from keys(v, f"{path}.{k}")
    elif isinstance(value, list):
        for item in value:
            yield from keys(item, f"{path}[]")


def missing_in_proto(stats: Mapping[str, Any], message: Descriptor, path: str) -> list[str]:
    """The stats keys (by path) that `message` and the messages of its fields lack."""
    missing = []
    for k, v in stats.items():
        if path.count(".") == 0 and k in STATS_ELSEWHERE:
            continue
        field = message.fields_by_name.get(PROTO_FIELD.get(k, k))
        if field is None:
            missing.append(f"{path}.{k} (no field in {message.full_name})")
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            # A map (by_reason): its keys are data; a message value is checked as one.
            value = field.message_type.fields_by_name["value"]
            items = list(v.values()) if value.message_type is not None else []
            for item in items:
                missing += missing_in_proto(item, value.message_type, f"{path}.{k}{{}}")
            continue
        items = v if isinstance(v, list) else [v]
        for item in items:
            if isinstance(item, Mapping):
                missing += missing_in_proto(item, field.message_type, f"{path}.{k}")
    return list(dict.fromkeys(missing))


def typed_dict_of(hint: Any) -> Any:
    """The TypedDict in a type hint (`list[X]`, `X | None`), or None."""
    if typing.is_typeddict(hint):
        return hint
    for arg in typing.get_args(hint):
        found = typed_dict_of(arg)
        if found is not None:
            return found
    return None


def missing_in_typed_dict(stats: Mapping[str, Any], td: Any, path: str) -> list[str]:
    """The stats keys (by path) that TypedDict `td` and the TypedDicts of its keys lack."""
    hints = typing.get_type_hints(td)
    missing = []
    for k, v in stats.items():
        if k not in hints:
            missing.append(f"{path}.{k} (no key in {td.__module__}.{td.__name__})")
            continue
        if typing.get_origin(hints[k]) is dict:
            # A map (by_reason): its keys are data; a TypedDict value is checked as one.
            inner = typed_dict_of(typing.get_args(hints[k])[1])
            for item in v.values() if inner is not None else ():
                missing += missing_in_typed_dict(item, inner, f"{path}.{k}{{}}")
            continue
        items = v if isinstance(v, list) else [v]
        for item in items:
            if isinstance(item, Mapping):
                inner = typed_dict_of(hints[k])
                assert inner is not None, f"{path}.{k}: {hints[k]} names no TypedDict"
                missing += missing_in_typed_dict(item, inner, f"{path}.{k}")
    return list(dict.fromkeys(missing))


def test_every_stats_key_has_its_proto_field_and_its_typed_dict_key(
    gateway: castway.Gateway, peers: Peers, udp_capture: Callable[..., UdpCapture]
) -> None:
    out = free_port()
    inputs = {"a": test_input(), "b": test_input()}
    outputs = {"srt": f"srt://:{out}?mode=listener", "udp": f"udp://127.0.0.1:{free_port()}"}
    route = gateway.add_route("shape", inputs, outputs)
    srt_receiver(peers, out, udp_capture())

    def with_caller() -> api.RouteStats | None:
        stats = route.stats()
        srt = stats["outputs"][0].get("srt")
        return stats if srt and srt["callers"] else None

    wait_until(with_caller, 30, "a caller on the SRT listener output")
    route.switch_to("b")
    event = route.wait_switch(0, 15)
    assert event is not None
    stats = wait_until(with_caller, 30, "the caller still there")
    applied = gateway.update_route("shape", inputs, outputs, loss_timeout_ms=400)

    # Every kind of mapping the stats have was seen, so no key went unchecked.
    seen = {p for p, _, _ in keys(stats, "stats")}
    assert {"stats.inputs[]", "stats.outputs[].srt.callers[]", "stats.switch.history[]"} <= seen

    missing = missing_in_proto(stats, route_pb2.RouteStatus.DESCRIPTOR, "stats")
    missing += missing_in_proto(event, route_pb2.SwitchEvent.DESCRIPTOR, "wait_switch()")
    missing += missing_in_proto(applied, route_pb2.Changes.DESCRIPTOR, "update_route()")
    assert not missing, "stats figures route.proto lacks: " + ", ".join(missing)

    missing = missing_in_typed_dict(stats, api.RouteStats, "stats")
    missing += missing_in_typed_dict(event, api.SwitchEvent, "wait_switch()")
    missing += missing_in_typed_dict(applied, api.Applied, "update_route()")
    assert not missing, "stats figures castway/gateway.py lacks: " + ", ".join(missing)

