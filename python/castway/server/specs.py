"""Route and template specs: their shape, checks, ids, and how a template resolves into a route.

One plain-data shape serves the store (as JSON), the declarative config file and the gRPC API
(translated in ``servicers``). Every check names the field it is about, e.g.
``spec.inputs[1].uri``.

The rules of the fields themselves (names, ids, URIs, bounds, SRT defaults, slate sizes) are
the data plane's: they run in the native module (``castway._castway.check_spec`` and friends),
and this module only says where each field stands in the API's spec. What is the server's own
stays here: a template's place in a route, and files confined to the media root.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypedDict

from castway import _castway
from castway.errors import CastwayError, field_of, reason_of
from castway.server.errors import InvalidArgument
from castway.server.media import MediaRoot, is_file_uri

LIMITS = _castway.limits()
Kind = Literal["route", "template"]
# Where the fields of the native checks (named as the notebook API's arguments) stand in the
# API's spec; the others (`queue_bytes`, `inputs[1].uri`) stand where they are.
NATIVE_FIELDS = {
    "loss_timeout_ms": "failover.loss_timeout_ms",
    "failback_after_ms": "failover.failback_after_ms",
    "slate": "failover.slate",
    "slate_size": "failover.slate_size",
}


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
    # Any other socket option of docs/uri.md, by URI key, valued as a URI writes it; None: none.
    options: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Recording:
    """A route's recording policy (docs/recording.md); ``None``: inherit, then the default."""

    enabled: bool | None = None
    format: str | None = None
    segment_ms: int | None = None
    path: str | None = None
    slate: bool | None = None
    max_age_s: int | None = None
    max_bytes: int | None = None
    min_free_bytes: int | None = None
    schedule: str | None = None
    timezone: str | None = None


# What a resolved route's recording policy holds when neither route nor template sets it.
RECORDING_DEFAULTS = Recording(
    enabled=False, format="ts", segment_ms=6000, path="{route}/%Y-%m-%d/%H-%M-%S", slate=True,
    timezone="UTC",
)
_RECORDING_KINDS: dict[str, type] = {
    "enabled": bool, "format": str, "path": str, "slate": bool, "schedule": str, "timezone": str,
}


@dataclass(frozen=True)
class Spec:
    """A route as written, or a template (a partial route)."""

    inputs: tuple[Endpoint, ...] = ()
    outputs: tuple[Endpoint, ...] = ()
    template: str = ""
    queue_bytes: int | None = None
    failover: Failover = field(default_factory=Failover)
    srt: SrtDefaults = field(default_factory=SrtDefaults)
    gop_cache_bytes: int | None = None
    recording: Recording = field(default_factory=Recording)

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
        if self.gop_cache_bytes is not None:
            d["gop_cache_bytes"] = self.gop_cache_bytes
        for key, part in (
            ("failover", self.failover), ("srt", self.srt), ("recording", self.recording)
        ):
            values = {k: v for k, v in vars(part).items() if v is not None}
            if "options" in values:
                values["options"] = dict(values["options"])
            if values:
                d[key] = values
        return d


def spec_from_dict(d: Mapping[str, Any], where: str = "spec") -> Spec:
    """Reads the JSON/TOML/YAML shape; endpoints may be plain URI strings."""
    known = {"inputs", "outputs", "template", "queue_bytes", "failover", "srt", "gop_cache_bytes",
             "recording"}
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
        gop_cache_bytes=_opt(d, "gop_cache_bytes", int, where),
        recording=Recording(**_section(d, "recording", vars(Recording()), where)),
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
    kinds: dict[str, type] = {"slate": bool, "slate_size": str, "passphrase": str}
    if key == "recording":
        kinds = _RECORDING_KINDS
    values = {k: _opt(part, k, kinds.get(k, int), f"{where}.{key}") for k in part
              if k != "options"}
    if key == "srt" and part.get("options") is not None:
        values["options"] = _srt_options(part["options"], f"{where}.srt.options")
    return values


def _srt_options(options: Any, where: str) -> dict[str, str] | None:
    """``srt.options`` of a file: URI keys to values as a URI writes them (a number or a flag
    is taken as it would be written: ``oheadbw = 50``, ``tlpktdrop = false``)."""
    if not isinstance(options, Mapping):
        raise InvalidArgument(where, "must be a table of SRT socket options (URI key = value)")
    out = {}
    for k, v in options.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, int):
            v = str(v)
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidArgument(f"{where}.{k}", f"must be a string, number or flag, not {v!r}")
        out[k] = v
    return out or None


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


def refused(
    where: str, error: CastwayError, fields: Mapping[str, str] = NATIVE_FIELDS
) -> InvalidArgument:
    """A native check's refusal, at its field's path under ``where`` (``spec`` and
    ``loss_timeout_ms`` make ``spec.failover.loss_timeout_ms``)."""
    at = field_of(error)
    if at is None:
        return InvalidArgument(where, str(error))
    return InvalidArgument(f"{where}.{fields.get(at, at)}", reason_of(error))


def check_name(what: str, name: str, where: str = "name") -> None:
    """A route, template, key or endpoint name, by the data plane's rule
    (``limits()["name_rule"]``)."""
    try:
        _castway.check_name(what, name)
    except CastwayError as e:
        raise InvalidArgument(where, str(e)) from None


def _checkable(uri: str, role: str, field: str, media: MediaRoot | None) -> str:
    """The URI as the data plane's parser should see it: a served spec's ``file:`` URI names a
    file in the media root (checked there); everything else as it is."""
    if media is not None and is_file_uri(uri):
        return media.check(uri, role, field)
    return uri


def _as_checked(
    spec: Spec, where: Callable[[str, int, Endpoint], str], media: MediaRoot | None
) -> Spec:
    """``spec`` with each ``file:`` URI checked in the media root and as the data plane's parser
    should see it; ``where(group, index, endpoint)`` names an endpoint in errors."""

    def side(group: str, role: str, endpoints: tuple[Endpoint, ...]) -> tuple[Endpoint, ...]:
        return tuple(
            Endpoint(e.id, _checkable(e.uri, role, where(group, i, e), media))
            for i, e in enumerate(endpoints)
        )

    return replace(
        spec,
        inputs=side("inputs", "input", spec.inputs),
        outputs=side("outputs", "output", spec.outputs),
    )


def _check_native(name: str, spec: Spec, whole: bool) -> None:
    """The data plane's check of a spec (ids given), by ``native``'s arguments."""

    def pairs(endpoints: dict[str, str]) -> list[tuple[str, str]]:
        return [(uri, ep_id) for ep_id, uri in endpoints.items()]

    n = native(name, spec)
    _castway.check_spec(
        {**n, "inputs": pairs(n["inputs"]), "outputs": pairs(n["outputs"]),
         "recording": native_recording(spec.recording)},
        whole,
    )


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
    before = previous or Spec()

    def ids(
        role: str, endpoints: tuple[Endpoint, ...], previous: tuple[Endpoint, ...]
    ) -> tuple[Endpoint, ...]:
        try:
            given = _castway.assign_ids(
                role,
                [(e.uri, e.id or None) for e in endpoints],
                [(e.uri, e.id) for e in previous],
                prefix,
            )
        except CastwayError as e:
            raise refused("spec", e) from None
        return tuple(Endpoint(i, e.uri) for i, e in zip(given, endpoints, strict=True))

    spec = replace(
        spec,
        inputs=ids("input", spec.inputs, before.inputs),
        outputs=ids("output", spec.outputs, before.outputs),
    )
    as_checked = _as_checked(spec, lambda group, i, _: f"spec.{group}[{i}].uri", media)
    try:
        _check_native(name, as_checked, whole=False)
    except CastwayError as e:
        raise refused("spec", e) from None
    s = spec.srt
    try:
        _castway.check_srt_defaults(s.latency_ms, s.passphrase, s.pbkeylen, s.options)
    except CastwayError as e:
        raise refused("spec.srt", e, {}) from None
    check_schedule(spec.recording, "spec.recording")
    return spec


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
    # Socket options key by key: the route's value of a key, else the template's.
    options = {**(t.srt.options or {}), **(spec.srt.options or {})}
    srt = replace(srt, options=options or None)
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
    recording = Recording(**{
        k: pick(getattr(spec.recording, k), getattr(t.recording, k), getattr(RECORDING_DEFAULTS, k))
        for k in vars(Recording())
    })
    return Spec(
        inputs=tuple(Endpoint(e.id, with_srt_defaults(e.uri, srt)) for e in inputs),
        outputs=tuple(Endpoint(e.id, with_srt_defaults(e.uri, srt)) for e in outputs),
        queue_bytes=pick(spec.queue_bytes, t.queue_bytes, LIMITS["queue_bytes"]),
        failover=failover,
        gop_cache_bytes=pick(
            spec.gop_cache_bytes, t.gop_cache_bytes, LIMITS["gop_cache_bytes"]
        ),
        recording=recording,
    )


def _merge(
    inherited: Iterable[Endpoint], own: Sequence[Endpoint], own_first: bool
) -> list[Endpoint]:
    mine = {e.id: e for e in own}
    kept = [mine.pop(e.id, e) for e in inherited]
    rest = [e for e in own if e.id in mine]
    return rest + kept if own_first else kept + rest


def with_srt_defaults(uri: str, srt: SrtDefaults) -> str:
    """Adds each SRT default the URI does not set itself (only to ``srt://`` URIs; which keys
    set what is the data plane's to say)."""
    return _castway.with_srt_defaults(
        uri, srt.latency_ms, srt.passphrase, srt.pbkeylen, srt.options
    )


class NativeSpec(TypedDict):
    """The arguments of ``Gateway.add_route``/``update_route``."""

    name: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    queue_bytes: int | None
    loss_timeout_ms: int | None
    failback_after_ms: int | None
    slate: bool | None
    slate_size: str | None
    gop_cache_bytes: int | None


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
        "slate_size": f.slate_size,
        "gop_cache_bytes": resolved.gop_cache_bytes,
    }


def native_recording(r: Recording) -> dict[str, int | str | None]:
    """The recording policy as the native ``check_spec`` takes it (the core checks the
    numbers, the path pattern and the format; the server the schedule and time zone)."""
    return {
        "segment_ms": r.segment_ms, "path": r.path, "format": r.format,
        "max_age_s": r.max_age_s, "max_bytes": r.max_bytes, "min_free_bytes": r.min_free_bytes,
    }


def check_resolved(name: str, resolved: Spec, media: MediaRoot | None = None) -> None:
    """What only the whole route shows: URIs with the SRT defaults in, ids across the merge,
    network interfaces on this host. An endpoint is named by its place in ``resolved`` and its
    id (the template's endpoints are merged in)."""

    def where(group: str, i: int, e: Endpoint) -> str:
        return f"resolved.{group}[{i}] ({e.id})"

    try:
        _check_native(name, _as_checked(resolved, where, media), whole=True)
    except CastwayError as err:
        at = field_of(err) or ""
        group, _, rest = at.partition("[")
        index = int(rest.partition("]")[0]) if rest else -1
        named: tuple[Endpoint, ...] = getattr(resolved, group, ())
        if 0 <= index < len(named):
            raise InvalidArgument(where(group, index, named[index]), reason_of(err)) from None
        raise refused("resolved", err) from None


def check_schedule(recording: Recording, where: str) -> None:
    """A policy's schedule and time zone (the server evaluates them: ``recording.schedule``)."""
    from castway.server.recording.schedule import parse_windows, zone

    if recording.timezone is not None:
        zone(recording.timezone, f"{where}.timezone")
    if recording.schedule is not None:
        parse_windows(recording.schedule, f"{where}.schedule")


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
