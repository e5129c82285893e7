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
```

How it combines with the store: what the file declares wins for what it declares. A template or
route the store lacks is created; one whose spec differs is updated by difference (running routes
see no gap on unchanged outputs); `state` is applied when given. Everything else in the store —
routes and templates created through the API, keys — is left alone: deleting an entry from the
file does not delete it from the store.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from castway.server.control import Control
from castway.server.errors import ControlError, InvalidArgument, NotFound
from castway.server.limits import Limits, limits_from_dict
from castway.server.specs import Spec, check_name, normalize, spec_from_dict
from castway.server.store import Desired


class ConfigError(Exception):
    """The config file cannot be read or applied; the message names the file and the field."""


@dataclass(frozen=True)
class Declared:
    templates: dict[str, Spec]
    routes: dict[str, tuple[Spec, Desired | None]]
    # The `[limits]` table (applied at start; see castway.server.limits).
    limits: Limits | None = None


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
        return parse(data)
    except InvalidArgument as e:
        raise ConfigError(f"{path}: {e}") from None


def parse(data: Any) -> Declared:
    if not isinstance(data, Mapping):
        raise InvalidArgument("(top)", "must be a table with `templates` and `routes`")
    for key in data:
        if key not in ("templates", "routes", "limits"):
            raise InvalidArgument(key, "unknown section (known: limits, routes, templates)")
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
    return Declared(templates, routes, limits)


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    part = data.get(key) or {}
    if not isinstance(part, Mapping):
        raise InvalidArgument(key, "must be a table of named entries")
    return part


def _body(body: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidArgument(where, "must be a table")
    return body


def apply(control: Control, declared: Declared, source: str) -> list[str]:
    """Brings the store and the gateway in line with ``declared``; returns what it did."""
    done = []
    where = source
    try:
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
