"""The control plane's domain: durable routes and templates over a :class:`castway.Gateway`.

Every mutation is checked in full, applied to the running gateway, and committed to the store
before it returns; if the commit fails the running route is put back. A running route changes
by difference (only changed inputs and outputs restart). Routes whose desired state is
``running`` but that cannot start (an address held by another process) are retried every few
seconds and show state ``failed`` with the reason meanwhile.

Lock order: ``Control._lock`` → native gateway locks → ``Store._lock``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from castway import _castway
from castway import errors as native_errors
from castway.gateway import Applied, EventKind, Gateway, RouteStats, is_shared_uri
from castway.notebook import Image
from castway.server.errors import (
    Aborted,
    AlreadyExists,
    ControlError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
)
from castway.server.events import record_change
from castway.server.limits import Limits
from castway.server.logs import about
from castway.server.media import MediaRoot, Opened, is_file_uri, parse_file_uri
from castway.server.specs import (
    RECORDING_DEFAULTS,
    Endpoint,
    NativeSpec,
    Recording,
    Spec,
    check_name,
    check_resolved,
    listen_addresses,
    native,
    normalize,
    refused,
    resolve,
)
from castway.server.store import Desired, RouteRecord, Store, TemplateRecord, now

log = logging.getLogger("castway.control")

RETRY_S = 5.0
NO_CHANGES: Applied = {
    "inputs_added": [],
    "inputs_removed": [],
    "outputs_added": [],
    "outputs_removed": [],
    "reordered": False,
    "settings": False,
    "restarted": False,
}


Claim = tuple[str, str, str]  # (route, endpoint id, host)


class Changes(Applied):
    """What an update changed: the gateway's (``Applied``), and what became of the recording
    policy (``recording_change``)."""

    recording: str


def recording_change(before: Spec | None, after: Spec) -> str:
    """What became of a route's resolved recording policy: ``enabled``, ``disabled``,
    ``policy`` (another of its settings) or ``""`` (as it was)."""
    old = before.recording if before is not None else RECORDING_DEFAULTS
    new = after.recording
    if old == new:
        return ""
    if bool(old.enabled) != bool(new.enabled):
        return "enabled" if new.enabled else "disabled"
    return "policy"


def _with_recording(applied: Applied, before: Spec | None, after: Spec) -> Changes:
    return Changes(**applied, recording=recording_change(before, after))


def _listening(spec: Spec) -> list[tuple[str, str, int]]:
    """``listen_addresses``, or none for a stored spec this castway no longer parses (it shows
    as failed, and claims nothing)."""
    try:
        return listen_addresses(spec)
    except native_errors.CastwayError:
        return []


def written_files(spec: Spec, media: MediaRoot | None) -> list[tuple[str, str]]:
    """``(endpoint id, file)`` of every file output of ``spec``: the path it resolves to in the
    media root (whose paths hold no ``..`` and whose links are refused), so that two names of
    one file are one claim. Without a media root, none (the data plane's claims still refuse a
    second writer of a running route). An output this castway does not parse claims nothing (it
    fails at start anyway)."""
    if media is None:
        return []
    out = []
    for i, e in enumerate(spec.outputs):
        if not is_file_uri(e.uri):
            continue
        try:
            f = parse_file_uri(e.uri, "output", f"outputs[{i}]")
        except ControlError:
            continue
        out.append((e.id, str(media.path.joinpath(*f.parts))))
    return out


def shared_endpoints(spec: Spec) -> set[tuple[str, str]]:
    """``(group, endpoint id)`` of every ``srt-shared://`` endpoint of ``spec``."""
    return {
        (group, e.id)
        for group in ("inputs", "outputs")
        for e in getattr(spec, group)
        if is_shared_uri(e.uri)
    }


class Resolved(dict[str, Spec]):
    """Every route's resolved spec, with an index of the ports they listen on and of the files
    they write, so a clash is found by looking up each port or file of one route rather than by
    comparing every pair."""

    def __init__(self, media: MediaRoot | None = None) -> None:
        super().__init__()
        self.media = media
        self.ports: dict[int, list[Claim]] = {}
        self.files: dict[str, list[tuple[str, str]]] = {}  # file: [(route, endpoint id)]

    def __setitem__(self, name: str, spec: Spec) -> None:
        self._unindex(name)
        super().__setitem__(name, spec)
        for ep, host, port in _listening(spec):
            self.ports.setdefault(port, []).append((name, ep, host))
        for ep, path in written_files(spec, self.media):
            self.files.setdefault(path, []).append((name, ep))

    def __delitem__(self, name: str) -> None:
        self._unindex(name)
        super().__delitem__(name)

    def pop(self, name: str, default: Any = None) -> Any:
        self._unindex(name)
        return super().pop(name, default)

    def _unindex(self, name: str) -> None:
        old = self.get(name)
        if old is None:
            return
        for _, _, port in _listening(old):
            claims = [c for c in self.ports.get(port, []) if c[0] != name]
            if claims:
                self.ports[port] = claims
            else:
                self.ports.pop(port, None)
        for _, path in written_files(old, self.media):
            writers = [w for w in self.files.get(path, []) if w[0] != name]
            if writers:
                self.files[path] = writers
            else:
                self.files.pop(path, None)


@dataclass(frozen=True)
class RouteView:
    """A route as the API shows it: stored record, resolved spec, live status."""

    record: RouteRecord
    resolved: Spec
    state: str
    error: str = ""
    stats: RouteStats | None = None


@dataclass(frozen=True)
class TemplateView:
    record: TemplateRecord
    used_by: list[str] = field(default_factory=list)


# What each error of the data plane is to an API caller (docs/control-plane.md, Errors).
REFUSED: dict[type[native_errors.CastwayError], Callable[[str], ControlError]] = {
    native_errors.InvalidUriError: lambda m: InvalidArgument("spec", m),
    native_errors.ConfigError: lambda m: InvalidArgument("spec", m),
    native_errors.AddressInUseError: FailedPrecondition,
    native_errors.NotFoundError: NotFound,
    native_errors.AlreadyExistsError: AlreadyExists,
    native_errors.MissingElementError: FailedPrecondition,
    native_errors.PipelineError: Internal,
    native_errors.NetworkError: Unavailable,
    native_errors.ClosedError: Unavailable,
    native_errors.EventsLostError: OutOfRange,
    native_errors.TimedOutError: DeadlineExceeded,
}


def _refused(e: native_errors.CastwayError) -> ControlError:
    """What the data plane refused, as the API reports it; an error about one field of the
    spec names its path (``spec.outputs[2].uri``)."""
    field = native_errors.field_of(e)
    if field is not None and isinstance(
        e, native_errors.InvalidUriError | native_errors.ConfigError
    ):
        return refused("spec", e)
    make = REFUSED.get(type(e), FailedPrecondition)
    return make(str(e))


def _owner(owner: str) -> tuple[str, str]:
    """``(route, endpoint id)`` of a claim's owner ``route/id`` (names hold no ``/``)."""
    route, _, ep = owner.partition("/")
    return route, ep


class Control:
    """Routes and templates, durable in ``store``, running in ``gateway``. Thread-safe."""

    def __init__(
        self,
        store: Store,
        media: MediaRoot | None,
        gateway: Gateway | None = None,
        limits: Limits | None = None,
    ) -> None:
        """``media``: where ``file:`` endpoints live (None: they take absolute paths, as in the
        notebook API; ``castway serve`` always gives one)."""
        self._store = store
        self.media = media
        self.limits = limits or Limits()
        self._gw = gateway or Gateway()
        # The files each route's endpoints opened in the media root, by (group, id, uri), and
        # which of them the running route uses (the others are closed).
        self._files: dict[str, dict[tuple[str, str, str], Opened]] = {}
        self._applied: dict[str, set[tuple[str, str, str]]] = {}
        self._lock = threading.RLock()
        self._routes = {r.name: r for r in store.routes()}
        self._templates = {t.name: t for t in store.templates()}
        self._resolved = Resolved(media)
        # Desired running, not running: why.
        self._errors: dict[str, str] = {}
        for r in self._routes.values():
            try:
                self._resolved[r.name] = self._resolve(r.name, r.spec)
            except ControlError as e:
                self._errors[r.name] = str(e)
        # GetSnapshot calls waiting for a picture (each holds a worker thread meanwhile).
        self._max_snapshots = max(1, min(self.limits.max_snapshots, self.limits.workers // 2))
        self._snapshots = threading.BoundedSemaphore(self._max_snapshots)
        self._stop = threading.Event()
        self._retry = threading.Thread(target=self._retry_loop, name="castway-retry", daemon=True)

    @property
    def gateway(self) -> Gateway:
        return self._gw

    def emit(self, kind: EventKind, **fields: str | None) -> None:
        """Adds a control-plane event to the gateway's sequence (``record_change``)."""
        record_change(self._gw, kind, **fields)

    def recording_policies(self) -> dict[str, Recording]:
        """Each route's recording policy as it runs (template merged in, defaults filled)."""
        with self._lock:
            return {name: spec.recording for name, spec in self._resolved.items()}

    # Lifecycle

    def stats(self) -> list[RouteStats]:
        """Every running route's stats (for metrics); takes no lock of the control plane."""
        return self._gw.stats()

    def restore(self) -> None:
        """Starts every route whose desired state is running, then keeps retrying failures."""
        with self._lock:
            for r in self._routes.values():
                if r.desired == "running":
                    self._try_start(r)
        if not self._retry.is_alive():
            self._retry.start()

    def close(self) -> None:
        self._stop.set()
        if self._retry.is_alive():
            self._retry.join(timeout=10)
        self._gw.close()
        with self._lock:
            self._applied.clear()
            for name in list(self._files):
                self._close_unused(name)

    def _retry_loop(self) -> None:
        while not self._stop.wait(RETRY_S):
            with self._lock:
                for name in list(self._errors):
                    r = self._routes.get(name)
                    if r is not None and r.desired == "running" and name in self._resolved:
                        self._try_start(r)

    # Routes

    def create_route(self, name: str, spec: Spec, desired: Desired = "running") -> RouteView:
        check_name("route", name)
        self._check_size("route", spec)
        with self._lock:
            if name in self._routes:
                raise AlreadyExists(f"route {name!r} already exists")
            if len(self._routes) >= self.limits.max_routes:
                raise ResourceExhausted(
                    f"there are {len(self._routes)} routes, the most this server keeps "
                    "(limits.max_routes); delete one first"
                )
            spec = normalize("route", name, spec, media=self.media)
            resolved = self._checked(name, spec)
            record = RouteRecord(name, spec, desired, 1, "", now(), now())
            if desired == "running":
                self._start(record, resolved)
            self._commit(record, resolved, undo=lambda: self._stop_route(name))
            self.emit("route_created", route=name)
            return self.get_route(name)

    def get_route(self, name: str) -> RouteView:
        with self._lock:
            record = self._route(name)
            resolved = self._resolved.get(name, Spec())
            error = self._errors.get(name, "")
        stats = self._stats(name)
        state: str
        if stats is not None:
            state = stats["state"]
        elif record.desired == "running":
            state = "failed"
        else:
            state = "stopped"
        return RouteView(record, resolved, state, error, stats)

    def list_routes(
        self, template: str = "", page_size: int = 0, page_token: str = ""
    ) -> tuple[list[RouteView], str]:
        """One page of routes in name order, and the token of the next page ("" at the end).
        ``page_size`` 0 is the default page size; above the maximum, the maximum."""
        size = min(page_size or self.limits.default_page_size, self.limits.max_page_size)
        after = ""
        if page_token:
            try:
                after = base64.urlsafe_b64decode(page_token.encode()).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                after = ""
            if not after.startswith("r:"):
                raise InvalidArgument("page_token", "is not a token this server gave out")
            after = after[2:]
        with self._lock:
            names = sorted(
                n
                for n, r in self._routes.items()
                if (not template or r.spec.template == template) and n > after
            )
        page, more = names[:size], len(names) > size
        views = []
        for n in page:
            try:
                views.append(self.get_route(n))
            except NotFound:  # deleted meanwhile
                continue
        token = base64.urlsafe_b64encode(f"r:{page[-1]}".encode()).decode() if more else ""
        return views, token

    def update_route(
        self, name: str, spec: Spec, version: int | None = None
    ) -> tuple[RouteView, Changes]:
        self._check_size("route", spec)
        with self._lock:
            old = self._route(name)
            self._check_version(old, version)
            spec = normalize("route", name, spec, old.spec, self.media)
            resolved = self._checked(name, spec)
            before = self._resolved.get(name)
            changes = (
                _with_recording(self._reconfigure(name, before, resolved), before, resolved)
                if old.desired == "running"
                else Changes(**NO_CHANGES, recording="")
            )
            locked = (
                old.locked_input if any(e.id == old.locked_input for e in resolved.inputs) else ""
            )
            record = replace(
                old, spec=spec, version=old.version + 1, locked_input=locked, updated=now()
            )
            self._commit(
                record, resolved, undo=lambda: before and self._reconfigure(name, resolved, before)
            )
            self.emit("route_updated", route=name, reason="spec")
            return self.get_route(name), changes

    def delete_route(self, name: str, version: int | None = None) -> None:
        with self._lock:
            record = self._route(name)
            self._check_version(record, version)
            self._store.delete_route(name)
            self._stop_route(name)
            del self._routes[name]
            self._resolved.pop(name, None)
            self._errors.pop(name, None)
            self.emit("route_deleted", route=name)

    def start_route(self, name: str) -> RouteView:
        with self._lock:
            old = self._route(name)
            if old.desired == "running":
                return self.get_route(name)
            record = replace(old, desired="running", version=old.version + 1, updated=now())
            resolved = self._resolved.get(name) or self._resolve(name, old.spec)
            self._start(record, resolved)
            self._commit(record, resolved, undo=lambda: self._stop_route(name))
            self.emit("route_updated", route=name, reason="started")
            return self.get_route(name)

    def stop_route(self, name: str) -> RouteView:
        with self._lock:
            old = self._route(name)
            if old.desired == "stopped":
                return self.get_route(name)
            record = replace(old, desired="stopped", version=old.version + 1, updated=now())
            self._commit(record, self._resolved.get(name, Spec()))
            self._stop_route(name)
            self._errors.pop(name, None)
            self.emit("route_updated", route=name, reason="stopped")
            return self.get_route(name)

    def switch_input(self, name: str, input_id: str) -> RouteView:
        """Holds route ``name`` on input ``input_id`` (kept across restarts); "" for automatic."""
        with self._lock:
            old = self._route(name)
            resolved = self._resolved.get(name, Spec())
            if input_id and not any(e.id == input_id for e in resolved.inputs):
                raise NotFound(f"input {input_id!r} of route {name!r} not found")
            if self._stats(name) is not None:
                route = self._gw.route(name)
                if input_id:
                    route.switch_to(input_id)
                else:
                    route.auto()
            record = replace(old, locked_input=input_id, version=old.version + 1, updated=now())
            self._commit(record, resolved)
            if input_id:
                self.emit("route_updated", route=name, reason="locked", input=input_id)
            else:
                self.emit("route_updated", route=name, reason="unlocked")
            return self.get_route(name)

    def snapshot(self, name: str, input_id: str = "", format: str = "jpeg",
                 size: tuple[int, int] | None = None, timeout_s: float = 5.0) -> Image:
        """The current picture of running route ``name`` (of its input ``input_id`` if given),
        from its next keyframe; waits up to ``timeout_s`` without holding the control plane's
        lock."""
        with self._lock:
            self._route(name)
        if self._stats(name) is None:
            raise FailedPrecondition(f"route {name!r} is not running")
        if not self._snapshots.acquire(blocking=False):
            raise ResourceExhausted(
                f"{self._max_snapshots} snapshots are being taken already (max_snapshots)"
            )
        try:
            route = self._gw.route(name)
            image = route.snapshot(input_id or None, format="png" if format == "png" else "jpeg",
                                   size=size, timeout=timeout_s)
        except native_errors.ConfigError as e:
            raise InvalidArgument("width", str(e)) from None
        except native_errors.CastwayError as e:
            raise _refused(e) from None
        finally:
            self._snapshots.release()
        # Room for the reply's other fields within the message limit.
        if len(image.data) > self.limits.max_message_bytes - 1024:
            raise ResourceExhausted(
                f"the picture is {len(image.data)} bytes, over max_message_bytes "
                f"({self.limits.max_message_bytes}): ask for JPEG or a smaller size"
            )
        return image

    def add_output(
        self, name: str, output: Endpoint, version: int | None = None
    ) -> tuple[RouteView, Changes]:
        with self._lock:
            old = self._route(name)
            self._check_version(old, version)
            template = self._templates.get(old.spec.template)
            inherited = template.spec.outputs if template else ()
            if output.id and any(e.id == output.id for e in (*old.spec.outputs, *inherited)):
                raise AlreadyExists(f"output {output.id!r} of route {name!r} already exists")
            return self.update_route(name, replace(old.spec, outputs=(*old.spec.outputs, output)))

    def remove_output(
        self, name: str, output_id: str, version: int | None = None
    ) -> tuple[RouteView, Changes]:
        with self._lock:
            old = self._route(name)
            self._check_version(old, version)
            outputs = tuple(e for e in old.spec.outputs if e.id != output_id)
            if len(outputs) == len(old.spec.outputs):
                template = self._templates.get(old.spec.template)
                if template and any(e.id == output_id for e in template.spec.outputs):
                    raise FailedPrecondition(
                        f"output {output_id!r} of route {name!r} comes from template "
                        f"{template.name!r}; change the template instead"
                    )
                raise NotFound(f"output {output_id!r} of route {name!r} not found")
            return self.update_route(name, replace(old.spec, outputs=outputs))

    # Templates

    def create_template(self, name: str, spec: Spec) -> TemplateView:
        check_name("template", name)
        self._check_size("template", spec)
        with self._lock:
            if name in self._templates:
                raise AlreadyExists(f"template {name!r} already exists")
            if len(self._templates) >= self.limits.max_templates:
                raise ResourceExhausted(
                    f"there are {len(self._templates)} templates, the most this server keeps "
                    "(limits.max_templates); delete one first"
                )
            spec = normalize("template", name, spec, media=self.media)
            record = TemplateRecord(name, spec, 1, now(), now())
            self._store.put_template(record)
            self._templates[name] = record
            self.emit("template_created", name=name)
            return TemplateView(record, [])

    def get_template(self, name: str) -> TemplateView:
        with self._lock:
            record = self._template(name)
            return TemplateView(record, self._users(name))

    def list_templates(self) -> list[TemplateView]:
        with self._lock:
            return [
                TemplateView(t, self._users(t.name)) for _, t in sorted(self._templates.items())
            ]

    def update_template(
        self, name: str, spec: Spec, version: int | None = None
    ) -> tuple[TemplateView, list[tuple[str, Changes]]]:
        """Replaces template ``name`` and applies it to every running route that uses it, by
        difference. Every route must still resolve and keep its own ports, or nothing changes."""
        self._check_size("template", spec)
        with self._lock:
            old = self._template(name)
            self._check_version(old, version)
            spec = normalize("template", name, spec, old.spec, self.media)
            users = self._users(name)
            new: dict[str, Spec] = {}
            for route in users:
                try:
                    new[route] = resolve(route, self._routes[route].spec, spec)
                    self._check_counts(route, new[route])
                    check_resolved(route, new[route], self.media)
                except InvalidArgument as e:
                    raise InvalidArgument(f"{e.field} (of route {route!r})", str(e)) from None
            for route, resolved in new.items():
                self._check_shared_port(route, resolved)
                self._check_claims(route, resolved, new)
            record = replace(old, spec=spec, version=old.version + 1, updated=now())
            self._store.put_template(record)
            self._templates[name] = record
            self.emit("template_updated", name=name)
            applied: list[tuple[str, Changes]] = []
            for route in users:
                before, after = self._resolved.get(route), new[route]
                self._resolved[route] = after
                if self._routes[route].desired != "running":
                    continue
                try:
                    applied.append(
                        (route, _with_recording(self._reconfigure(route, before, after), before,
                                                after))
                    )
                except ControlError as e:
                    # The template is stored; this route waits for the retry loop.
                    self._stop_route(route)
                    self._errors[route] = str(e)
                    log.warning(
                        "route %s did not take template %s: %s", route, name, e, extra=about(route)
                    )
            return TemplateView(record, users), applied

    def delete_template(self, name: str) -> None:
        with self._lock:
            self._template(name)
            users = self._users(name)
            if users:
                raise FailedPrecondition(
                    f"template {name!r} is used by route(s) {', '.join(users)}; "
                    "change or delete them first"
                )
            self._store.delete_template(name)
            del self._templates[name]
            self.emit("template_deleted", name=name)

    # Helpers (called with the lock held)

    def _route(self, name: str) -> RouteRecord:
        record = self._routes.get(name)
        if record is None:
            raise NotFound(f"route {name!r} not found")
        return record

    def _template(self, name: str) -> TemplateRecord:
        record = self._templates.get(name)
        if record is None:
            raise NotFound(f"template {name!r} not found")
        return record

    def _users(self, template: str) -> list[str]:
        return sorted(n for n, r in self._routes.items() if r.spec.template == template)

    @staticmethod
    def _check_version(record: RouteRecord | TemplateRecord, version: int | None) -> None:
        if version is not None and version != record.version:
            raise Aborted(
                f"{record.name!r} is at version {record.version}, not {version}; "
                "read it again and retry"
            )

    def _resolve(self, name: str, spec: Spec) -> Spec:
        template = None
        if spec.template:
            record = self._templates.get(spec.template)
            if record is None:
                raise NotFound(f"spec.template: template {spec.template!r} not found")
            template = record.spec
        return resolve(name, spec, template)

    def _check_size(self, kind: str, spec: Spec) -> None:
        """Sizes and counts, before anything parses the spec."""
        lim = self.limits
        for group, most in (("inputs", lim.max_inputs), ("outputs", lim.max_outputs)):
            endpoints = getattr(spec, group)
            if len(endpoints) > most:
                raise InvalidArgument(
                    f"spec.{group}",
                    f"{len(endpoints)} {group}; a {kind} has at most {most} "
                    f"(limits.max_{group})",
                )
            for i, e in enumerate(endpoints):
                size = len(e.uri.encode())
                if size > lim.max_uri_bytes:
                    raise InvalidArgument(
                        f"spec.{group}[{i}].uri",
                        f"{size} bytes; a URI has at most {lim.max_uri_bytes} "
                        "(limits.max_uri_bytes)",
                    )
        size = len(json.dumps(spec.to_dict()).encode())
        if size > lim.max_spec_bytes:
            raise InvalidArgument(
                "spec", f"{size} bytes as JSON; a spec has at most {lim.max_spec_bytes} "
                "(limits.max_spec_bytes)"
            )

    def _check_counts(self, name: str, resolved: Spec) -> None:
        """A route with its template's endpoints stays within the limits too."""
        lim = self.limits
        for group, most in (("inputs", lim.max_inputs), ("outputs", lim.max_outputs)):
            n = len(getattr(resolved, group))
            if n > most:
                raise InvalidArgument(
                    f"resolved.{group}",
                    f"route {name!r} would have {n} {group} with its template; at most {most} "
                    f"(limits.max_{group})",
                )

    def _checked(self, name: str, spec: Spec) -> Spec:
        resolved = self._resolve(name, spec)
        self._check_counts(name, resolved)
        check_resolved(name, resolved, self.media)
        self._check_shared_port(name, resolved)
        self._check_claims(name, resolved)
        return resolved

    def _check_shared_port(self, name: str, resolved: Spec) -> None:
        """Refuses a new ``srt-shared://`` endpoint while the server has no shared SRT port (no
        peer could ever reach it). One the route had already (stored while the server had the
        port) is kept: it loads, and its stats say why nothing connects (``last_error``)."""
        if self._gw.srt_port_stats() is not None:
            return
        before = self._resolved.get(name)
        had = shared_endpoints(before) if before is not None else set()
        new = sorted(shared_endpoints(resolved) - had)
        if new:
            group, ep = new[0]
            role = "input" if group == "inputs" else "output"
            raise FailedPrecondition(
                f"{role} {ep} of route {name!r} is srt-shared://, a place on the shared SRT "
                "port, and this server has none: start `castway serve` with --srt-listen "
                "(or `srt_listen` in its config) to use srt-shared://"
            )

    def _check_claims(
        self, name: str, resolved: Spec, pending: dict[str, Spec] | None = None
    ) -> None:
        """Refuses a listening port that the route itself or another stored route (running or
        not) already binds. Which binds clash is the data plane's rule (``find_clash``); the
        index of claimed ports picks the few binds to ask about."""
        mine = [(f"{name}/{ep}", host, port) for ep, host, port in listen_addresses(resolved)]
        clash = _castway.find_clash(mine, [])
        if clash is not None:
            (_, ep), (_, other_ep), port = _owner(clash[0]), _owner(clash[1]), clash[2]
            raise InvalidArgument(
                f"spec ({ep})", f"listens on port {port} like {other_ep} of the same route"
            )
        pending = pending or {}
        ports = {port for _, _, port in mine}
        # The pending specs replace those routes' stored ones.
        held = [
            (f"{other}/{ep}", host, port)
            for port in ports
            for other, ep, host in self._resolved.ports.get(port, [])
            if other != name and other not in pending
        ]
        for other, spec in pending.items():
            if other != name:
                held += [
                    (f"{other}/{ep}", host, port)
                    for ep, host, port in listen_addresses(spec)
                    if port in ports
                ]
        clash = _castway.find_clash(mine, held)
        if clash is not None:
            (_, ep), (other, other_ep), port = _owner(clash[0]), _owner(clash[1]), clash[2]
            raise FailedPrecondition(
                f"{ep} of route {name!r} listens on port {port}, which {other_ep} "
                f"of route {other!r} already claims"
            )
        self._check_files(name, resolved, pending)

    def _shown(self, path: str) -> str:
        """A claimed file as a spec names it (``file:///dir/x.ts`` in the media root)."""
        if self.media is not None:
            root = str(self.media.path).rstrip("/") + "/"
            if path.startswith(root):
                return "file:///" + path[len(root):]
        return "file://" + path

    def _check_files(self, name: str, resolved: Spec, pending: dict[str, Spec]) -> None:
        """Refuses a file output that an output of another stored route (running or not)
        already writes: two writers would interleave two streams in it."""
        for ep, path in written_files(resolved, self.media):
            writers = [
                (other, other_ep)
                for other, other_ep in self._resolved.files.get(path, [])
                if other != name and other not in pending
            ]
            for other, spec in pending.items():
                if other != name:
                    writers += [(other, e) for e, p in written_files(spec, self.media) if p == path]
            if writers:
                other, other_ep = writers[0]
                raise FailedPrecondition(
                    f"{ep} of route {name!r} writes {self._shown(path)}, which {other_ep} "
                    f"of route {other!r} already claims"
                )

    def _start(self, record: RouteRecord, resolved: Spec) -> None:
        try:
            spec, used = self._native(record.name, resolved)
            try:
                route = self._gw.add_route(**spec)
            except native_errors.CastwayError as e:
                raise _refused(e) from None
            self._applied[record.name] = used
        finally:
            self._close_unused(record.name)
        if record.locked_input:
            try:
                route.switch_to(record.locked_input)
            except native_errors.CastwayError as e:
                log.warning(
                    "route %s: lock on %s not restored: %s", record.name, record.locked_input, e,
                    extra=about(record.name),
                )
        self._errors.pop(record.name, None)

    def _try_start(self, record: RouteRecord) -> None:
        if self._stats(record.name) is not None:
            return
        try:
            self._start(record, self._resolved[record.name])
            log.info("route %s started", record.name, extra=about(record.name))
        except (ControlError, KeyError) as e:
            if self._errors.get(record.name) != str(e):
                log.warning(
                    "route %s cannot start (retrying every %.0f s): %s", record.name, RETRY_S, e,
                    extra=about(record.name),
                )
            self._errors[record.name] = str(e)

    def _stop_route(self, name: str) -> None:
        try:
            self._gw.remove_route(name)
        except native_errors.NotFoundError:
            pass
        self._applied.pop(name, None)
        self._close_unused(name)

    def _native(self, name: str, resolved: Spec) -> tuple[NativeSpec, set[tuple[str, str, str]]]:
        """The route's arguments for the gateway, with each ``file:`` endpoint opened in the
        media root (or kept open: an unchanged endpoint keeps its file and its native URI, so a
        difference leaves it alone). Also returns which files it uses: the caller records them
        in ``_applied`` once the gateway took the spec, and calls ``_close_unused`` after."""
        spec = native(name, resolved)
        used: set[tuple[str, str, str]] = set()
        if self.media is None:
            return spec, used
        opened = self._files.setdefault(name, {})
        for group, role in (("inputs", "input"), ("outputs", "output")):
            endpoints: dict[str, str] = spec[group]  # type: ignore[literal-required]
            for i, (ep_id, uri) in enumerate(list(endpoints.items())):
                if not is_file_uri(uri):
                    continue
                key = (group, ep_id, uri)
                if key not in opened:
                    opened[key] = self.media.open(uri, role, f"resolved.{group}[{i}] ({ep_id})")
                endpoints[ep_id] = opened[key].native_uri
                used.add(key)
        return spec, used

    def _close_unused(self, name: str) -> None:
        """Closes the files of ``name`` that its running route does not use (after the gateway
        let go of them: closing sooner could hand their fd numbers to another file)."""
        opened = self._files.get(name, {})
        applied = self._applied.get(name, set())
        for key in [k for k in opened if k not in applied]:
            opened.pop(key).close()
        if not opened:
            self._files.pop(name, None)

    def _reconfigure(self, name: str, before: Spec | None, after: Spec) -> Applied:
        """Makes the running route match ``after``; on refusal puts ``before`` back."""
        if self._stats(name) is None:
            # Desired running but failed so far: the new spec may start.
            record = self._routes.get(name)
            if record is not None:
                self._resolved[name] = after
                self._try_start(record)
            return NO_CHANGES
        try:
            spec, used = self._native(name, after)
            try:
                applied = self._gw.update_route(**spec)
            except native_errors.CastwayError as e:
                if before is not None:
                    try:
                        self._apply_native(name, before)
                    except (native_errors.CastwayError, ControlError) as again:
                        self._errors[name] = str(again)
                raise _refused(e) from None
            self._applied[name] = used
            return applied
        finally:
            self._close_unused(name)

    def _apply_native(self, name: str, resolved: Spec) -> None:
        spec, used = self._native(name, resolved)
        if self._stats(name) is None:
            self._gw.add_route(**spec)
        else:
            self._gw.update_route(**spec)
        self._applied[name] = used

    def _commit(self, record: RouteRecord, resolved: Spec, undo: Any = None) -> None:
        """Stores ``record``; if that fails, runs ``undo`` so the gateway matches the store."""
        try:
            self._store.put_route(record)
        except Exception:
            if undo is not None:
                undo()
            raise
        self._routes[record.name] = record
        self._resolved[record.name] = resolved

    def _stats(self, name: str) -> RouteStats | None:
        try:
            return self._gw.route(name).stats()
        except native_errors.NotFoundError:
            return None
