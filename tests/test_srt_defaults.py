"""Every SRT socket option as a template (or route) default: checked by the URI key's rule,
inherited by the route's srt:// endpoints that do not set it, and set on their sockets."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from castway import cli
from castway.server.errors import InvalidArgument
from castway.server.specs import spec_from_dict
from castway.v1 import spec_pb2, template_pb2

from support import wait_until
from support.capture import UdpCapture
from support.control import ADMIN, CODE, Server, expect, spec, test_input
from support.net import free_port
from support.peers import Peers, srt_receiver

OPTIONS = {"oheadbw": "50", "maxbw": "2000000", "peeridletimeo": "1500", "tlpktdrop": "false"}


def test_template_srt_options_reach_the_routes_srt_sockets(
    server: Server, peers: Peers, udp_capture: Callable[..., UdpCapture]
) -> None:
    md = server.client.metadata
    server.client.templates.CreateTemplate(
        template_pb2.CreateTemplateRequest(
            name="contrib", spec=spec([], srt=spec_pb2.SrtDefaults(options=OPTIONS))
        ),
        metadata=md,
    )
    port, other = free_port(), free_port()
    route = server.create("news", spec(
        [test_input()],
        [f"srt://:{port}?mode=listener", f"srt://:{other}?mode=listener&oheadbw=30"],
        template="contrib",
    ))
    assert dict(server.client.templates.GetTemplate(
        template_pb2.GetTemplateRequest(name="contrib"), metadata=md
    ).spec.srt.options) == OPTIONS
    inherited, own = (o.uri for o in route.resolved.outputs)
    for key, value in OPTIONS.items():
        assert f"{key}={value}" in inherited, inherited
    # A key the URI sets itself keeps its value; the others still come from the template.
    assert "oheadbw=30" in own and "oheadbw=50" not in own and "maxbw=2000000" in own, own
    # The socket has them: libsrt reports maxbw (2000000 bytes/s) as its 16 Mb/s ceiling.
    cap = udp_capture()
    srt_receiver(peers, port, cap)

    def ceiling() -> float:
        callers = server.get("news").status.outputs[0].srt.callers
        return callers[0].libsrt.link.maxBandwidth if callers else 0.0

    wait_until(lambda: ceiling() > 0 and cap.size > 0, 30, "a reader on the inherited output")
    assert ceiling() == 16.0


def test_a_route_sets_srt_options_over_its_templates_key_by_key(server: Server) -> None:
    md = server.client.metadata
    server.client.templates.CreateTemplate(
        template_pb2.CreateTemplateRequest(
            name="contrib", spec=spec([], srt=spec_pb2.SrtDefaults(options=OPTIONS))
        ),
        metadata=md,
    )
    route = server.create("news", spec(
        [test_input()], [f"srt://:{free_port()}?mode=listener"], template="contrib",
        srt=spec_pb2.SrtDefaults(options={"oheadbw": "25", "nakreport": "off"}),
    ))
    uri = route.resolved.outputs[0].uri
    assert "oheadbw=25" in uri and "nakreport=off" in uri and "maxbw=2000000" in uri, uri
    assert dict(route.spec.srt.options) == {"oheadbw": "25", "nakreport": "off"}


def test_a_bad_srt_option_default_is_refused_naming_its_key(server: Server) -> None:
    for options, where, why in (
        ({"oheadbw": "200"}, "spec.srt.options.oheadbw", "`oheadbw=200`"),
        ({"tlpktdrop": "maybe"}, "spec.srt.options.tlpktdrop", "true or false"),
        ({"latency": "200"}, "spec.srt.options.latency", "own fields"),
        ({"nosuchkey": "1"}, "spec.srt.options.nosuchkey", "not an SRT socket option"),
        ({"packetfilter": ""}, "spec.srt.options.packetfilter", "not a packet filter"),
        ({"kmrefreshrate": "100", "kmpreannounce": "80"}, "spec.srt.options.kmpreannounce",
         "at most half of `kmrefreshrate` (100)"),
    ):
        details = expect(CODE.INVALID_ARGUMENT, lambda o=options: server.create(
            "news", spec([test_input()], srt=spec_pb2.SrtDefaults(options=o))
        ))
        assert where in details and why in details, details


def test_the_cli_sets_srt_option_defaults_and_update_keeps_the_others(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--addr", server.addr, "--key", ADMIN]
    assert cli.main(["template", "create", "contrib", "--srt-option", "oheadbw=50",
                     "--srt-option", "maxbw=2000000", *base]) == 0
    assert cli.main(["template", "update", "contrib", "--srt-option", "oheadbw=25", *base]) == 0
    t = server.client.templates.GetTemplate(
        template_pb2.GetTemplateRequest(name="contrib"), metadata=server.client.metadata
    )
    assert dict(t.spec.srt.options) == {"oheadbw": "25", "maxbw": "2000000"}
    assert cli.main(["template", "update", "contrib", "--srt-option", "oheadbw=2", *base]) == 1
    assert "spec.srt.options.oheadbw" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["template", "update", "contrib", "--srt-option", "oheadbw", *base])
    assert "KEY=VALUE" in capsys.readouterr().err


def test_a_config_file_takes_srt_options_as_a_table() -> None:
    spec_ = spec_from_dict({"srt": {"latency_ms": 200, "options": {
        "oheadbw": 25, "tlpktdrop": False, "packetfilter": "fec,cols:10,rows:5"}}})
    assert spec_.srt.options == {
        "oheadbw": "25", "tlpktdrop": "false", "packetfilter": "fec,cols:10,rows:5"
    }
    assert spec_from_dict(spec_.to_dict()) == spec_
    with pytest.raises(InvalidArgument, match=r"spec\.srt\.options"):
        spec_from_dict({"srt": {"options": ["oheadbw=25"]}})
