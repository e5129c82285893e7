"""Route and template specs: their shape, checks, ids, and how a template resolves into a route.

One plain-data shape serves the store (as JSON), the declarative config file and the gRPC API
(translated in ``servicers``). Every check names the field it is about, e.g.
``spec.inputs[1].uri``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypedDict
from urllib.parse import parse_qsl, quote, urlsplit

from castway import _castway
from castway.errors import CastwayError, field_of, reason_of
from castway.gateway import check_route
from castway.server.errors import InvalidArgument
from castway.server.media import MediaRoot, is_file_uri

LIMITS = _castway.limits()
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SLATE_SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")
MAX_QUEUE_BYTES = 1 << 30
MAX_LATENCY_MS = 60_000
Kind = Literal["route", "template"]


@dataclass(frozen=True)
class Endpoint:
    id: str
    uri: str


@dataclass(frozen=True)
class Failover:
    loss_timeout_ms: int | None = None
    failback_after_ms: int | None = None
    slate: bool | None = None
    slate_size: str | None = None


@dataclass(frozen=True)
class SrtDefaults:
    latency_ms: int | None = None
    passphrase: str | None = None
    pbkeylen: int | None = None


@dataclass(frozen=True)
class Spec:
    """A route as written, or a template (a partial route)."""

    inputs: tuple[Endpoint, ...] = ()
    outputs: tuple[Endpoint, ...] = ()
    template: str = ""
    queue_bytes: int | None = None
    failover: Failover = field(default_factory=Failover)
    srt: SrtDefaults = field(default_factory=SrtDefaults)

    def to_dict(self) -> dict[str, Any]:
        """The JSON/TOML shape: unset fields left out."""
        d: dict[str, Any] = {
            "inputs": [{"id": e.id, "uri": e.uri} for e in self.inputs],
            "outputs": [{"id": e.id, "uri": e.uri} for e in self.outputs],
        }
        if self.template:
            d["template"] = self.template
        if self.queue_bytes is not None:
            d["queue_bytes"] = self.queue_bytes
        for key, part in (("failover", self.failover), ("srt", self.srt)):
            values = {k: v for k, v in vars(part).items() if v is not None}
            if values:
                d[key] = values
        return d


def spec_from_dict(d: Mapping[str, Any], where: str = "spec") -> Spec:
    """Reads the JSON/TOML/YAML shape; endpoints may be plain URI strings."""
    known = {"inputs", "outputs", "template", "queue_bytes", "failover", "srt"}
    _no_unknown(d, known, where)
    template = d.get("template", "")
    if not isinstance(template, str):
        raise InvalidArgument(f"{where}.template", "must be a template name")
    return Spec(
        inputs=_endpoints(d.get("inputs", []), f"{where}.inputs"),
        outputs=_endpoints(d.get("outputs", []), f"{where}.outputs"),
        template=template,
        queue_bytes=_opt(d, "queue_bytes", int, where),
        failover=Failover(**_section(d, "failover", vars(Failover()), where)),
        srt=SrtDefaults(**_section(d, "srt", vars(SrtDefaults()), where)),
    )


def _no_unknown(d: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in d:
        if key not in known:
            raise InvalidArgument(
                f"{where}.{key}", f"unknown field (known: {', '.join(sorted(known))})"
            )


def _opt(d: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = d.get(key)
    # bool is an int in Python; a number where a flag is wanted (or the other way) is an error.
    if value is not None and (
        not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    ):
        raise InvalidArgument(f"{where}.{key}", f"must be {kind.__name__}, not {value!r}")
    return value


def _section(
    d: Mapping[str, Any], key: str, fields: Mapping[str, Any], where: str
) -> dict[str, Any]:
    part = d.get(key) or {}
    if not isinstance(part, Mapping):
        raise InvalidArgument(f"{where}.{key}", "must be a table of settings")
    _no_unknown(part, set(fields), f"{where}.{key}")
    kinds = {"slate": bool, "slate_size": str, "passphrase": str}
    return {k: _opt(part, k, kinds.get(k, int), f"{where}.{key}") for k in part}


def _endpoints(items: Any, where: str) -> tuple[Endpoint, ...]:
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise InvalidArgument(where, "must be a list of URIs or {id, uri} tables")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append(Endpoint("", item))
        elif isinstance(item, Mapping):
            _no_unknown(item, {"id", "uri"}, f"{where}[{i}]")
            ep_id, uri = item.get("id", ""), item.get("uri")
            if not isinstance(uri, str) or not isinstance(ep_id, str):
                raise InvalidArgument(
                    f"{where}[{i}]", "needs a `uri` string (and an optional `id`)"
                )
            out.append(Endpoint(ep_id, uri))
        else:
            raise InvalidArgument(f"{where}[{i}]", "must be a URI or an {id, uri} table")
    return tuple(out)


def check_name(what: str, name: str, where: str = "name") -> None:
    if not NAME.match(name):
        raise InvalidArgument(
            where,
            f"{what} name {name!r} must be 1 to 64 characters of A-Z, a-z, 0-9, `.`, `_`, `-`, "
            "starting with a letter or digit",
        )


def _checkable(uri: str, role: str, field: str, media: MediaRoot | None) -> str:
    """The URI as the data plane's parser should see it: a served spec's ``file:`` URI names a
    file in the media root (checked there); everything else as it is."""
    if media is not None and is_file_uri(uri):
        return media.check(uri, role, field)
    return uri


def normalize(
    kind: Kind,
    name: str,
    spec: Spec,
    previous: Spec | None = None,
    media: MediaRoot | None = None,
) -> Spec:
    """Checks every field of ``spec`` and gives each endpoint without an id one that lasts.

    An endpoint without an id keeps the id of the previous spec's endpoint with the same URI;
    otherwise it gets the next free ``in<n>``/``out<n>`` (``NAME-in<n>``/``NAME-out<n>`` in a
    template ``NAME``, so a route's own ids never clash with inherited ones by accident).
    """
    if kind == "template" and spec.template:
        raise InvalidArgument("spec.template", "templates do not inherit from templates")
    if spec.template:
        check_name("template", spec.template, "spec.template")
    prefix = f"{name}-" if kind == "template" else ""
    inputs = _ids(spec.inputs, previous.inputs if previous else (), f"{prefix}in", "input")
    outputs = _ids(spec.outputs, previous.outputs if previous else (), f"{prefix}out", "output")
    for group, role in (("inputs", "input"), ("outputs", "output")):
        endpoints = inputs if group == "inputs" else outputs
        for i, e in enumerate(endpoints):
            field = f"spec.{group}[{i}].uri"
            try:
                _castway.check_uri(_checkable(e.uri, role, field, media), role)
            except CastwayError as err:
                raise InvalidArgument(field, str(err)) from None
    _check_settings(spec)
    return replace(spec, inputs=inputs, outputs=outputs)


def _ids(
    endpoints: Sequence[Endpoint], previous: Sequence[Endpoint], prefix: str, what: str
) -> tuple[Endpoint, ...]:
    group = f"spec.{what}s"
    used: set[str] = set()
    for i, e in enumerate(endpoints):
        if e.id:
            check_name(what, e.id, f"{group}[{i}].id")
            if e.id == "slate":
                raise InvalidArgument(f"{group}[{i}].id", "`slate` is reserved for the slate")
            if e.id in used:
                raise InvalidArgument(f"{group}[{i}].id", f"{what} id {e.id!r} is used twice")
            used.add(e.id)
    reusable: dict[str, str] = {}
    for e in previous:
        if e.id not in used:
            reusable.setdefault(e.uri, e.id)
    out = []
    n = 0
    for e in endpoints:
        ep_id = e.id
        if not ep_id:
            ep_id = reusable.pop(e.uri, "")
            while not ep_id or ep_id in used:
                ep_id = f"{prefix}{n}"
                n += 1
            used.add(ep_id)
        out.append(Endpoint(ep_id, e.uri))
    return tuple(out)


def _check_settings(spec: Spec) -> None:
    def bounded(where: str, value: int | None, low: int, high: int) -> None:
        if value is not None and not low <= value <= high:
            raise InvalidArgument(where, f"{value} is outside {low}..{high}")

    bounded("spec.queue_bytes", spec.queue_bytes, LIMITS["min_queue_bytes"], MAX_QUEUE_BYTES)
    f = spec.failover
    bounded(
        "spec.failover.loss_timeout_ms",
        f.loss_timeout_ms,
        LIMITS["min_loss_timeout_ms"],
        LIMITS["max_loss_timeout_ms"],
    )
    bounded(
        "spec.failover.failback_after_ms", f.failback_after_ms, 0, LIMITS["max_failback_after_ms"]
    )
    if f.slate_size is not None:
        size = parse_size(f.slate_size)
        if size is None:
            raise InvalidArgument(
                "spec.failover.slate_size",
                f"{f.slate_size!r} must be WIDTHxHEIGHT with even sides from 16x16 to 7680x4320",
            )
    s = spec.srt
    bounded("spec.srt.latency_ms", s.latency_ms, 0, MAX_LATENCY_MS)
    if s.passphrase is not None and not 10 <= len(s.passphrase) <= 79:
        raise InvalidArgument("spec.srt.passphrase", "must be 10 to 79 characters long")
    if s.pbkeylen is not None and s.pbkeylen not in (16, 24, 32):
        raise InvalidArgument("spec.srt.pbkeylen", f"{s.pbkeylen} must be 16, 24 or 32")


def parse_size(text: str) -> tuple[int, int] | None:
    m = SLATE_SIZE.match(text)
    if not m:
        return None
    w, h = int(m[1]), int(m[2])
    ok = 16 <= w <= 7680 and 16 <= h <= 4320 and w % 2 == 0 and h % 2 == 0
    return (w, h) if ok else None


def resolve(name: str, spec: Spec, template: Spec | None) -> Spec:
    """The route as it runs: template merged in, SRT defaults in the URIs, defaults filled.

    Scalars: the route's value, else the template's, else the default. Inputs: the route's, then
    the template's (lower priority). Outputs: the template's, then the route's; a route endpoint
    with the id of a template one replaces it in place.
    """
    t = template or Spec()
    inputs = _merge(t.inputs, spec.inputs, own_first=True)
    outputs = _merge(t.outputs, spec.outputs, own_first=False)
    if not inputs:
        raise InvalidArgument("spec.inputs", f"route {name!r} needs at least one input")

    def pick(mine: Any, theirs: Any, default: Any) -> Any:
        return mine if mine is not None else theirs if theirs is not None else default

    srt = SrtDefaults(
        **{k: pick(getattr(spec.srt, k), getattr(t.srt, k), None) for k in vars(SrtDefaults())}
    )
    failover = Failover(
        loss_timeout_ms=pick(
            spec.failover.loss_timeout_ms, t.failover.loss_timeout_ms, LIMITS["loss_timeout_ms"]
        ),
        failback_after_ms=pick(
            spec.failover.failback_after_ms,
            t.failover.failback_after_ms,
            LIMITS["failback_after_ms"],
        ),
        slate=pick(spec.failover.slate, t.failover.slate, True),
        slate_size=pick(spec.failover.slate_size, t.failover.slate_size, None),
    )
    return Spec(
        inputs=tuple(Endpoint(e.id, with_srt_defaults(e.uri, srt)) for e in inputs),
        outputs=tuple(Endpoint(e.id, with_srt_defaults(e.uri, srt)) for e in outputs),
        queue_bytes=pick(spec.queue_bytes, t.queue_bytes, LIMITS["queue_bytes"]),
        failover=failover,
    )


def _merge(
    inherited: Iterable[Endpoint], own: Sequence[Endpoint], own_first: bool
) -> list[Endpoint]:
    mine = {e.id: e for e in own}
    kept = [mine.pop(e.id, e) for e in inherited]
    rest = [e for e in own if e.id in mine]
    return rest + kept if own_first else kept + rest


def with_srt_defaults(uri: str, srt: SrtDefaults) -> str:
    """Adds each SRT default the URI does not set itself (only to ``srt://`` URIs)."""
    if not uri.lower().startswith("srt://"):
        return uri
    present = {k.lower() for k, _ in parse_qsl(urlsplit(uri).query, keep_blank_values=True)}
    extra = []
    if srt.latency_ms is not None and not present & {"latency", "rcvlatency"}:
        extra.append(f"latency={srt.latency_ms}")
    if srt.passphrase is not None and "passphrase" not in present:
        extra.append(f"passphrase={quote(srt.passphrase, safe='')}")
    if srt.pbkeylen is not None and "pbkeylen" not in present:
        extra.append(f"pbkeylen={srt.pbkeylen}")
    if not extra:
        return uri
    sep = "&" if "?" in uri else "?"
    return uri + sep + "&".join(extra)


class NativeSpec(TypedDict):
    """The arguments of ``Gateway.add_route``/``update_route``."""

    name: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    queue_bytes: int | None
    loss_timeout_ms: int | None
    failback_after_ms: int | None
    slate: bool | None
    slate_size: tuple[int, int] | None


def native(name: str, resolved: Spec) -> NativeSpec:
    f = resolved.failover
    return {
        "name": name,
        "inputs": {e.id: e.uri for e in resolved.inputs},
        "outputs": {e.id: e.uri for e in resolved.outputs},
        "queue_bytes": resolved.queue_bytes,
        "loss_timeout_ms": f.loss_timeout_ms,
        "failback_after_ms": f.failback_after_ms,
        "slate": f.slate,
        "slate_size": parse_size(f.slate_size) if f.slate_size else None,
    }


def check_resolved(name: str, resolved: Spec, media: MediaRoot | None = None) -> None:
    """What only the whole route shows: URIs with the SRT defaults in, ids across the merge."""
    checked: dict[str, tuple[Endpoint, ...]] = {}
    for group, role in (("inputs", "input"), ("outputs", "output")):
        endpoints = []
        for i, e in enumerate(getattr(resolved, group)):
            field = f"resolved.{group}[{i}] ({e.id})"
            try:
                uri = _checkable(e.uri, role, field, media)
                _castway.check_uri(uri, role)
            except CastwayError as err:
                raise InvalidArgument(field, str(err)) from None
            endpoints.append(Endpoint(e.id, uri))
        checked[group] = tuple(endpoints)
    as_checked = replace(resolved, inputs=checked["inputs"], outputs=checked["outputs"])
    try:
        check_route(**native(name, as_checked))
    except CastwayError as err:
        at = field_of(err)
        if at is None:
            raise InvalidArgument("spec", str(err)) from None
        # The data plane saw the resolved spec (template endpoints merged in): its path names
        # the endpoint there, with its id, as the URI checks above do.
        group, _, rest = at.partition("[")
        index = int(rest.partition("]")[0]) if rest else -1
        named: tuple[Endpoint, ...] = getattr(resolved, group, ())
        where = f"resolved.{at}"
        if 0 <= index < len(named):
            where = f"resolved.{group}[{index}] ({named[index].id})"
        raise InvalidArgument(where, reason_of(err)) from None


def listen_addresses(resolved: Spec) -> list[tuple[str, str, int]]:
    """``(endpoint id, host, port)`` of every address the route binds for itself alone."""
    out = []
    for group, role in ((resolved.inputs, "input"), (resolved.outputs, "output")):
        for e in group:
            if is_file_uri(e.uri):
                continue
            addr = _castway.listen_address(e.uri, role)
            if addr is not None:
                out.append((e.id, addr[0], addr[1]))
    return out


def overlaps(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Two binds clash on the same port when either is a wildcard or the hosts match."""
    wildcard = {"", "0.0.0.0", "::"}
    return a[1] == b[1] and (a[0] == b[0] or a[0] in wildcard or b[0] in wildcard)
