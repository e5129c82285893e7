"""The declarative config file (TOML or YAML): templates and routes applied at start.

```toml
[templates.contribution]
srt = { latency_ms = 200, passphrase = "a long secret" }
failover = { loss_timeout_ms = 300 }
outputs = [{ id = "monitor", uri = "udp://127.0.0.1:5000" }]

[routes.news]
template = "contribution"
inputs = ["srt://:9000?mode=listener", { id = "backup", uri = "udp://:9002" }]
outputs = ["srt://:9100?mode=listener"]
state = "running"        # or "stopped"; unset keeps what the store says

events_file = "/var/log/castway/events.jsonl"   # one event per line (relative: to this file)
srt_listen = ":8890"     # the shared SRT port: srt-shared:// endpoints, routed by stream ID

[webhooks.pager]
url = "https://hooks.example.com/castway"
kinds = ["input_lost", "switch", "output_failing"]   # unset: all
routes = ["news"]                                   # unset: all
secret = "at least 16 characters"
```

How it combines with the store: what the file declares wins for what it declares. A template or
route the store lacks is created; one whose spec differs is updated by difference (running routes
see no gap on unchanged outputs); `state` is applied when given. Everything else in the store —
routes, templates and webhooks created through the API, keys — is left alone: deleting an entry
from the file does not delete it from the store.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from castway.server.control import Control
from castway.server.errors import ControlError, InvalidArgument, NotFound
from castway.server.events import check_kinds, check_routes
from castway.server.limits import Limits, limits_from_dict
from castway.server.specs import Spec, check_name, normalize, spec_from_dict
from castway.server.store import Desired
from castway.server.webhooks import Webhooks, check_secret, check_url


class ConfigError(Exception):
    """The config file cannot be read or applied; the message names the file and the field."""


@dataclass(frozen=True)
class WebhookSpec:
    url: str
    kinds: tuple[str, ...]
    routes: tuple[str, ...]
    secret: str


@dataclass(frozen=True)
class Declared:
    templates: dict[str, Spec]
    routes: dict[str, tuple[Spec, Desired | None]]
    # The `[limits]` table (applied at start; see castway.server.limits).
    limits: Limits | None = None
    webhooks: dict[str, WebhookSpec] = field(default_factory=dict)
    # Where to append every event as a line of JSON.
    events_file: Path | None = None
    # The shared SRT port's `[HOST]:PORT` (`castway serve --srt-listen`).
    srt_listen: str | None = None


def load(path: Path) -> Declared:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.').upper()}: {e}") from None
    try:
        declared = parse(data)
    except InvalidArgument as e:
        raise ConfigError(f"{path}: {e}") from None
    if declared.events_file is not None:
        declared = replace(declared, events_file=path.parent / declared.events_file)
    return declared


def parse(data: Any) -> Declared:
    if not isinstance(data, Mapping):
        raise InvalidArgument("(top)", "must be a table with `templates` and `routes`")
    known = ("events_file", "limits", "routes", "srt_listen", "templates", "webhooks")
    for key in data:
        if key not in known:
            raise InvalidArgument(key, f"unknown section (known: {', '.join(known)})")
    templates = {}
    for name, body in _table(data, "templates").items():
        check_name("template", name, f"templates.{name}")
        templates[name] = spec_from_dict(_body(body, f"templates.{name}"), f"templates.{name}")
    routes: dict[str, tuple[Spec, Desired | None]] = {}
    for name, body in _table(data, "routes").items():
        where = f"routes.{name}"
        check_name("route", name, where)
        body = dict(_body(body, where))
        state = body.pop("state", None)
        if state not in (None, "running", "stopped"):
            raise InvalidArgument(f"{where}.state", f"must be running or stopped, not {state!r}")
        routes[name] = (spec_from_dict(body, where), state)
    limits = limits_from_dict(_table(data, "limits")) if "limits" in data else None
    webhooks = {}
    for name, body in _table(data, "webhooks").items():
        where = f"webhooks.{name}"
        check_name("webhook", name, where)
        webhooks[name] = _webhook(_body(body, where), where)
    events_file = data.get("events_file")
    if events_file is not None and (not isinstance(events_file, str) or not events_file):
        raise InvalidArgument("events_file", "must be a file path")
    srt_listen = data.get("srt_listen")
    if srt_listen is not None and (not isinstance(srt_listen, str) or ":" not in srt_listen):
        raise InvalidArgument("srt_listen", "must be [HOST]:PORT, as `:8890`")
    return Declared(
        templates, routes, limits, webhooks, Path(events_file) if events_file else None,
        srt_listen,
    )


def _webhook(body: Mapping[str, Any], where: str) -> WebhookSpec:
    for key in body:
        if key not in ("url", "kinds", "routes", "secret"):
            raise InvalidArgument(
                f"{where}.{key}", "unknown field (known: kinds, routes, secret, url)"
            )

    def text(key: str) -> str:
        value = body.get(key)
        if not isinstance(value, str):
            raise InvalidArgument(f"{where}.{key}", "is required, as a string")
        return value

    def names(key: str) -> tuple[str, ...]:
        value = body.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidArgument(f"{where}.{key}", "must be a list of strings")
        return tuple(value)

    spec = WebhookSpec(
        check_url(text("url"), f"{where}.url"),
        tuple(sorted(check_kinds(names("kinds"), f"{where}.kinds"))),
        tuple(sorted(check_routes(names("routes"), f"{where}.routes"))),
        check_secret(text("secret"), f"{where}.secret"),
    )
    return spec


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    part = data.get(key) or {}
    if not isinstance(part, Mapping):
        raise InvalidArgument(key, "must be a table of named entries")
    return part


def _body(body: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidArgument(where, "must be a table")
    return body


def apply(
    control: Control, declared: Declared, source: str, webhooks: Webhooks | None = None
) -> list[str]:
    """Brings the store and the gateway (and ``webhooks``) in line with ``declared``; returns
    what it did."""
    done = []
    where = source
    try:
        for name, w in declared.webhooks.items():
            where = f"webhooks.{name}"
            if webhooks is None:
                raise InvalidArgument(where, "webhooks need a server")
            try:
                hook = webhooks.get(name).record
            except NotFound:
                webhooks.create(name, w.url, w.kinds, w.routes, w.secret)
                done.append(f"created webhook {name}")
                continue
            if (hook.url, hook.kinds, hook.routes, hook.secret) != (
                w.url, w.kinds, w.routes, w.secret
            ):
                webhooks.update(name, w.url, w.kinds, w.routes, w.secret)
                done.append(f"updated webhook {name}")
        for name, spec in declared.templates.items():
            where = f"templates.{name}"
            try:
                current = control.get_template(name).record.spec
            except NotFound:
                control.create_template(name, spec)
                done.append(f"created template {name}")
                continue
            if normalize("template", name, spec, current, control.media) != current:
                control.update_template(name, spec)
                done.append(f"updated template {name}")
        for name, (spec, state) in declared.routes.items():
            where = f"routes.{name}"
            try:
                current_route = control.get_route(name).record
            except NotFound:
                control.create_route(name, spec, state or "running")
                done.append(f"created route {name}")
                continue
            current_spec = current_route.spec
            if normalize("route", name, spec, current_spec, control.media) != current_spec:
                control.update_route(name, spec)
                done.append(f"updated route {name}")
            if state == "running" and current_route.desired != "running":
                control.start_route(name)
                done.append(f"started route {name}")
            elif state == "stopped" and current_route.desired != "stopped":
                control.stop_route(name)
                done.append(f"stopped route {name}")
    except ControlError as e:
        raise ConfigError(f"{source}: {where}: {e}") from None
    return done
