"""Bad input gets a clear, typed error naming what is wrong — or a counted drop — and never a
crash, a hang, or a half-started route."""

from __future__ import annotations

import gc
import socket
from pathlib import Path
from typing import Any

import pytest

import castway
from castway import errors

from support import sha256, wait_until
from support.net import free_port
from support.senders import UdpSender
from support.ts import random_ts


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("srt//:9000", "missing scheme"),
        ("rtmp://host/app", "unknown scheme `rtmp`"),
        ("srt://:notaport", "port `notaport`"),
        ("srt://:9000?mode=push", "`mode=push`"),
        ("srt://:9000?latency=fast", "`latency=fast`"),
        ("srt://:9000?latency=200000", "microseconds"),
        ("srt://:9000?passphrase=123456789", "10 to 79 bytes long (got 9)"),
        ("srt://:9000?pbkeylen=20&passphrase=0123456789", "`pbkeylen=20`"),
        ("srt://:9000?streamid=a&streamid=b", "twice"),
        ("srt://:9000?lantency=20", "unknown key `lantency`"),
        ("udp://999.1.1.1:5000", "not a valid host"),
        ("file://relative.ts", "absolute path"),
        ("test://?size=big", "`size=big`"),
        ("udp://:5000?buffer_size=3000000000", "`buffer_size=3000000000` is above"),
        ("udp://:+5000", "port `+5000`"),
        ("srt://:05000", "port `05000`"),
        ("udp://@239.1.1.1:5000?iface=nosuch0", "network interface `iface=nosuch0` does not"),
        ("udp://@239.1.1.1:5000?iface=..", "`iface=..` is not a network interface name"),
    ],
)
def test_invalid_input_uri_names_the_bad_part(
    gateway: castway.Gateway, uri: str, needle: str
) -> None:
    with pytest.raises(errors.InvalidUriError, match="invalid URI") as e:
        gateway.add_route("r", uri, ["udp://127.0.0.1:5000"])
    assert needle in str(e.value)
    assert gateway.routes() == []


def test_a_uri_python_cannot_encode_is_an_invalid_uri(gateway: castway.Gateway) -> None:
    """A lone surrogate (bytes that were not UTF-8, decoded with surrogateescape) is a bad URI
    wherever a URI goes in, never a bare TypeError or UnicodeEncodeError."""
    bad = "udp://127.0.0.1:5000?iface=e\udcff"
    with pytest.raises(errors.InvalidUriError, match="lone surrogate"):
        gateway.add_route("r", "udp://127.0.0.1:5999", [bad])
    with pytest.raises(errors.InvalidUriError, match="lone surrogate"):
        gateway.add_route("r", bad.replace("127.0.0.1", ""), [])
    with pytest.raises(errors.InvalidUriError, match="lone surrogate"):
        castway.check_uri(bad, "output")
    secret = "never-shown-in-errors-42"
    with pytest.raises(errors.InvalidUriError, match="lone surrogate") as e:
        gateway.add_route("r", f"srt://:9000?passphrase={secret}&streamid=\udcff", [])
    assert secret not in str(e.value)
    route = gateway.add_route("r", f"udp://127.0.0.1:{free_port()}", [])
    with pytest.raises(errors.InvalidUriError, match="lone surrogate"):
        route.add_output(bad)
    with pytest.raises(errors.InvalidUriError, match="lone surrogate"):
        route.add_input(bad)
    assert route.stats()["outputs"] == []


def test_an_error_in_a_spec_names_its_field(gateway: castway.Gateway) -> None:
    bad = ["udp://127.0.0.1:1", "udp://127.0.0.1:2", "srt://:9?latency=999999"]
    with pytest.raises(errors.InvalidUriError) as e:
        gateway.add_route("r", f"udp://127.0.0.1:{free_port()}", bad)
    assert errors.field_of(e.value) == "outputs[2].uri"
    assert str(e.value).startswith("outputs[2].uri: invalid URI")
    assert errors.reason_of(e.value).startswith("invalid URI `srt://:9?latency=999999`")
    with pytest.raises(errors.ConfigError) as c:
        gateway.add_route("r", {"a": "udp://127.0.0.1:1", "slate": "udp://127.0.0.1:2"}, [])
    assert errors.field_of(c.value) == "inputs[1].id"
    assert errors.field_of(errors.CastwayError("no field")) is None


def test_settings_and_names_are_refused_at_their_field_by_the_one_rule(
    gateway: castway.Gateway,
) -> None:
    """The notebook API and the control server check a spec with the same native rules: a
    name starts with a letter or digit, settings out of range (also below zero, or beyond 64
    bits) are refused at their field, a slate size may be given as "WxH"."""
    src = f"udp://127.0.0.1:{free_port()}"
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"name": "-news"}, "name", "starting with a letter or digit"),
        ({"name": ".hidden"}, "name", "starting with a letter or digit"),
        ({"loss_timeout_ms": 49}, "loss_timeout_ms", "49 is outside 50..60000"),
        ({"loss_timeout_ms": -1}, "loss_timeout_ms", "-1 is outside 50..60000"),
        ({"failback_after_ms": 2**70}, "failback_after_ms", f"{2**70} is outside 0..3600000"),
        ({"queue_bytes": (1 << 30) + 1}, "queue_bytes", "is outside 65536..1073741824"),
        ({"slate_size": "641x360"}, "slate_size", "`641x360` must be WIDTHxHEIGHT"),
        ({"slate_size": (8000, 720)}, "slate_size", "8000x720 must be WIDTHxHEIGHT"),
    ]
    for change, field, why in cases:
        args: dict[str, Any] = {"name": "r", "inputs": src, **change}
        for call in (castway.gateway.check_route, gateway.add_route):
            with pytest.raises(errors.ConfigError) as e:
                call(**args)
            assert (errors.field_of(e.value), why in errors.reason_of(e.value)) == (field, True), (
                change, str(e.value))
    assert gateway.routes() == []
    route = gateway.add_route("9news", src, slate_size="640x360")
    assert route.stats()["name"] == "9news"


def test_an_output_naming_a_missing_interface_starts_nothing(gateway: castway.Gateway) -> None:
    port = free_port()
    with pytest.raises(errors.InvalidUriError, match="`iface=nosuch0` does not exist"):
        gateway.add_route("r", f"udp://127.0.0.1:{port}",
                          ["udp://239.1.1.1:5000?iface=nosuch0&ttl=2"])
    assert gateway.routes() == []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", port))


def test_invalid_output_uri_starts_nothing(gateway: castway.Gateway) -> None:
    port = free_port()
    with pytest.raises(errors.InvalidUriError, match="can only be an input"):
        gateway.add_route("r", f"srt://:{port}", ["udp://127.0.0.1:5000", "test://"])
    # The valid listener input was never started: its port is free.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", port))


def test_passphrase_never_appears_in_errors_or_stats(gateway: castway.Gateway) -> None:
    secret = "do-not-print-me-1234"
    with pytest.raises(errors.InvalidUriError) as e:
        gateway.add_route("r", f"srt://:1?passphrase={secret}&bogus=1", [])
    assert secret not in str(e.value)
    route = gateway.add_route("r", f"srt://:{free_port()}?passphrase={secret}", [])
    assert secret not in repr(route.stats())


def test_port_held_by_another_process_is_refused(gateway: castway.Gateway) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("0.0.0.0", 0))
        port = holder.getsockname()[1]
        for uri in (f"srt://:{port}?mode=listener", f"udp://:{port}"):
            with pytest.raises(errors.AddressInUseError, match=f"{port}.*another process"):
                gateway.add_route("r", uri, ["udp://127.0.0.1:5000"])
    assert gateway.routes() == []


def test_two_routes_cannot_claim_one_listening_port(gateway: castway.Gateway) -> None:
    port = free_port()
    gateway.add_route("a", f"srt://:{port}", [])
    with pytest.raises(errors.AddressInUseError, match="held by a/in0"):
        gateway.add_route("b", "test://?size=160x90&bitrate=100", [f"srt://:{port}"])
    with pytest.raises(errors.AddressInUseError, match="held by a/in0"):
        gateway.route("a").add_output(f"srt://127.0.0.1:{port}?mode=listener")
    gateway.remove_route("a")
    gateway.add_route("b", "test://?size=160x90&bitrate=100", [f"srt://:{port}"])


def test_two_outputs_cannot_write_one_file(gateway: castway.Gateway, tmp_path: Path) -> None:
    """A file output claims its file as a listener claims its port, by the file it resolves to
    (`..` and symbolic links followed): a second writer, of another route or of the same one,
    is refused; a reader is not a writer."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.ts").symlink_to(tmp_path / "rec.ts")
    test = "test://?size=160x90&bitrate=100"
    gateway.add_route("a", test, [f"file://{tmp_path}/rec.ts"])
    for uri in (f"file://{tmp_path}/rec.ts", f"file://{tmp_path}/sub/../rec.ts",
                f"file://{tmp_path}/link.ts"):
        with pytest.raises(errors.AddressInUseError, match="written by a/out0"):
            gateway.add_route("b", test, [uri])
        with pytest.raises(errors.ConfigError, match="like out0 of the same route"):
            gateway.route("a").add_output(uri)
    with pytest.raises(errors.ConfigError, match="like out0 of the same route") as e:
        gateway.add_route("c", test, [f"file://{tmp_path}/two.ts", f"file://{tmp_path}/two.ts"])
    assert errors.field_of(e.value) == "outputs[1].uri"
    assert gateway.routes() == ["a"]
    wait_until(lambda: (tmp_path / "rec.ts").exists(), 10, "rec.ts")
    gateway.add_route("reader", f"file://{tmp_path}/rec.ts", [])
    gateway.remove_route("a")
    gateway.add_route("b", test, [f"file://{tmp_path}/link.ts"])


def test_dropping_an_old_route_keeps_the_ports_of_its_successor(
    gateway: castway.Gateway,
) -> None:
    port = free_port()
    old = gateway.add_route("cam", f"srt://:{port}", [])
    gateway.remove_route("cam")
    gateway.add_route("cam", f"srt://:{port}", [])
    del old
    gc.collect()
    with pytest.raises(errors.AddressInUseError, match="held by cam/in0"):
        gateway.add_route("other", f"srt://:{port}", [])


def test_invalid_api_calls_raise_typed_errors(gateway: castway.Gateway) -> None:
    route = gateway.add_route(
        "r", f"udp://127.0.0.1:{free_port()}", {"a": "udp://127.0.0.1:5000"}
    )
    with pytest.raises(errors.AlreadyExistsError, match="route `r`"):
        gateway.add_route("r", "test://", [])
    with pytest.raises(errors.AlreadyExistsError, match="output `a`"):
        route.add_output("udp://127.0.0.1:5001", id="a")
    with pytest.raises(errors.NotFoundError, match="output `nope`"):
        route.remove_output("nope")
    with pytest.raises(errors.NotFoundError, match="route `nope`"):
        gateway.remove_route("nope")
    with pytest.raises(errors.ConfigError, match="name `bad name`"):
        gateway.add_route("bad name", "test://", [])
    with pytest.raises(errors.ConfigError, match="at least one input"):
        gateway.add_route("empty", [], [])
    with pytest.raises(errors.NotFoundError, match="input file"):
        gateway.add_route("f", "file:///nonexistent/clip.ts", [])
    with pytest.raises(errors.NotFoundError, match="output directory"):
        gateway.add_route("g", "test://", ["file:///nonexistent/dir/out.ts"])
    assert issubclass(errors.InvalidUriError, castway.CastwayError)
    assert gateway.routes() == ["r"]


def test_unreachable_caller_target_retries_without_hanging(
    gateway: castway.Gateway, udp_capture: Any
) -> None:
    in_port, cap = free_port(), udp_capture()
    route = gateway.add_route(
        "r", f"udp://127.0.0.1:{in_port}",
        {
            "dead": f"srt://127.0.0.1:{free_port()}?mode=caller",
            "ok": f"udp://127.0.0.1:{cap.port}",
        },
    )
    # The caller connects when data flows; SRT gives up after its 3 s connection timeout.
    data = random_ts(7 * 3000, seed=31)
    sender = UdpSender(data, in_port, bitrate=6e6)

    def dead_output() -> Any:
        out = next(o for o in route.stats()["outputs"] if o["id"] == "dead")
        return out if out["reconnects"] >= 1 else None

    dead = wait_until(dead_output, 20, "the caller output to give up and retry")
    assert "Connection timeout" in dead["last_error"]
    assert dead["state"] in {"retrying", "starting", "connecting"}
    sender.join()
    wait_until(lambda: cap.size >= len(data), 10, "the healthy output")
    assert sha256(cap.data[: len(data)]) == sha256(data)
    gateway.close()  # returns: nothing waits on the peer that never answers


def test_garbage_instead_of_mpegts_is_dropped_and_counted(
    gateway: castway.Gateway, udp_capture: Any
) -> None:
    in_port, cap = free_port(), udp_capture()
    route = gateway.add_route(
        "r", f"udp://127.0.0.1:{in_port}", [f"udp://127.0.0.1:{cap.port}"]
    )
    garbage = bytes((i * 31 + 7) % 71 for i in range(1316 * 200))
    UdpSender(garbage, in_port, bitrate=8e6).join()
    inp = wait_until(
        lambda: (lambda s: s if s["drops"] >= 1000 else None)(route.stats()["inputs"][0]),
        10, "the garbage to be counted",
    )
    assert "not MPEG-TS" in inp["last_error"]
    assert cap.size == 0
    # Real TS afterwards flows again, untouched.
    data = random_ts(7 * 500, seed=32)
    UdpSender(data, in_port, bitrate=8e6).join()
    wait_until(lambda: cap.size >= len(data), 10, "the valid stream after the garbage")
    assert sha256(cap.data[: len(data)]) == sha256(data)


def test_gateway_closed_refuses_new_routes(tmp_path: Path) -> None:
    gw = castway.Gateway()
    gw.close()
    gw.close()
    with pytest.raises(errors.ClosedError):
        gw.add_route("r", "test://", [])
