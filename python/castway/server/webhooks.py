"""Webhooks: each event that passes a webhook's filters is POSTed to its URL as JSON, signed.

A delivery is one event, the body being the event's JSON (docs/events.md). Its headers:

- ``X-Castway-Timestamp``: Unix seconds when this attempt was signed;
- ``X-Castway-Signature``: ``sha256=`` and the hex HMAC-SHA256, keyed with the webhook's
  secret, of ``TIMESTAMP + "." + BODY`` (the bytes as sent);
- ``X-Castway-Event``: the event's kind; ``X-Castway-Delivery``: ``RUN:SEQ``, the same for
  every attempt at one event (``RUN`` is new at each server start), for receivers that drop
  repeats.

A receiver recomputes the HMAC over the timestamp and the raw body, compares in constant time,
and refuses a timestamp more than ``REPLAY_WINDOW_S`` (300 s) away from its own clock: a
captured delivery cannot be replayed later, and one cannot be re-signed without the secret.

Each webhook has its own queue (``QUEUE`` events; beyond, events are dropped and counted) and
thread: a receiver that is slow or down holds up nothing but its own deliveries. An attempt
that fails (no connection, a timeout, 408, 429, a 5xx) is retried after ``BACKOFF_S`` seconds,
doubling, at most ``ATTEMPTS`` attempts in all; other answers (3xx, 4xx) are final. Every
attempt is signed afresh.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from castway import __version__
from castway.gateway import Event
from castway.server.errors import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from castway.server.events import EventHub, QueuedSink, check_kinds, check_routes, matches, to_json
from castway.server.specs import check_name
from castway.server.store import Store, WebhookRecord, now

log = logging.getLogger("castway.webhooks")

QUEUE = 1000
ATTEMPTS = 5
BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
TIMEOUT_S = 5.0
REPLAY_WINDOW_S = 300
MIN_SECRET_CHARS = 16
MAX_URL_BYTES = 2048
RETRIED = frozenset({408, 429})


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Castway-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, window_s: float = REPLAY_WINDOW_S
) -> bool:
    """What a receiver checks (a reference for receivers written in Python): the signature,
    in constant time, and that ``timestamp`` is within ``window_s`` of this clock."""
    try:
        age = abs(time.time() - int(timestamp))
    except ValueError:
        return False
    return age <= window_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def check_url(url: str, field: str = "url") -> str:
    """An http(s) URL with a host; anything else is INVALID_ARGUMENT naming ``field``."""
    if len(url.encode()) > MAX_URL_BYTES:
        raise InvalidArgument(field, f"longer than {MAX_URL_BYTES} bytes")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise InvalidArgument(field, f"not a URL: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(field, f"must be an http:// or https:// URL, not {url!r}")
    if not parts.hostname:
        raise InvalidArgument(field, f"{url!r} has no host")
    if parts.username or parts.password:
        raise InvalidArgument(field, "must not carry a user or password (sign with the secret)")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidArgument(field, "must not contain spaces or control characters")
    return url


def check_secret(secret: str, field: str = "secret") -> str:
    if len(secret) < MIN_SECRET_CHARS:
        raise InvalidArgument(
            field,
            f"{len(secret)} characters; a webhook secret has at least {MIN_SECRET_CHARS} "
            "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')",
        )
    return secret


@dataclass(frozen=True)
class Delivery:
    """How one attempt went."""

    ok: bool
    # Worth another attempt (no connection, a timeout, 408, 429, 5xx).
    retry: bool
    error: str = ""


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = TIMEOUT_S) -> Delivery:
    """One POST, following no redirect and no proxy."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            host, parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        response.read(64 * 1024)
        status = response.status
    except (OSError, http.client.HTTPException) as e:
        return Delivery(False, True, f"{type(e).__name__}: {e}")
    finally:
        conn.close()
    if 200 <= status < 300:
        return Delivery(True, False)
    retry = status in RETRIED or status >= 500
    return Delivery(False, retry, f"HTTP {status}")


class Deliverer(QueuedSink):
    """One webhook's queue and thread."""

    metered = False

    def __init__(
        self, record: WebhookRecord, run: str, *, attempts: int = ATTEMPTS,
        backoff_s: float = BACKOFF_S, send: Callable[..., Delivery] = post,
    ) -> None:
        super().__init__(f"webhook-{record.name}", QUEUE)
        self._record_lock = threading.Lock()
        self.record = record
        self.run = run
        self.attempts, self.backoff_s, self._send = attempts, backoff_s, send
        self.delivered = 0
        self.failed = 0
        self.retries = 0
        self.last_error = ""
        self.last_seq = 0

    def update(self, record: WebhookRecord) -> None:
        with self._record_lock:
            self.record = record

    def wants(self, event: Event) -> bool:
        with self._record_lock:
            r = self.record
        return matches(event, frozenset(r.kinds), frozenset(r.routes))

    def handle(self, event: Event) -> None:
        body = to_json(event).encode()
        delay = self.backoff_s
        for attempt in range(self.attempts):
            if attempt:
                # Stopping ends the wait (and gives the event up, uncounted).
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, MAX_BACKOFF_S)
                self.retries += 1
            with self._record_lock:
                url, secret = self.record.url, self.record.secret
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"castway/{__version__}",
                "X-Castway-Event": event["kind"],
                "X-Castway-Delivery": f"{self.run}:{event['seq']}",
                "X-Castway-Timestamp": timestamp,
                "X-Castway-Signature": sign(secret, timestamp, body),
            }
            result = self._send(url, body, headers)
            if result.ok:
                self.delivered += 1
                self.last_seq = event["seq"]
                return
            self.last_error = f"event #{event['seq']}: {result.error}"
            if not result.retry:
                break
        self.failed += 1
        log.warning("webhook %s: gave up on %s", self.record.name, self.last_error)

    def status(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "retries": self.retries,
            "dropped": self.dropped,
            "queued": self.queued,
            "last_error": self.last_error,
            "last_seq": self.last_seq,
        }


@dataclass(frozen=True)
class WebhookView:
    record: WebhookRecord
    status: dict[str, Any]


class Webhooks:
    """The webhooks of one store, each delivering from ``hub``. Thread-safe."""

    def __init__(self, store: Store, hub: EventHub, max_webhooks: int = 32) -> None:
        self._store, self._hub, self.max_webhooks = store, hub, max_webhooks
        self._lock = threading.Lock()
        # Identifies this server's run in X-Castway-Delivery (the run every event carries).
        self.run = hub.run
        self._running: dict[str, Deliverer] = {}
        for record in store.webhooks():
            self._start(record)

    def _start(self, record: WebhookRecord) -> None:
        deliverer = Deliverer(record, self.run)
        self._running[record.name] = deliverer
        self._hub.add_sink(deliverer)

    def _view(self, name: str) -> WebhookView:
        d = self._running.get(name)
        if d is None:
            raise NotFound(f"webhook {name!r} not found")
        return WebhookView(d.record, d.status())

    def create(
        self, name: str, url: str, kinds: tuple[str, ...], routes: tuple[str, ...], secret: str
    ) -> WebhookView:
        check_name("webhook", name)
        check_url(url)
        kinds = tuple(sorted(check_kinds(kinds)))
        routes = tuple(sorted(check_routes(routes)))
        check_secret(secret)
        with self._lock:
            if name in self._running:
                raise AlreadyExists(f"webhook {name!r} already exists")
            if len(self._running) >= self.max_webhooks:
                raise ResourceExhausted(
                    f"there are {len(self._running)} webhooks, the most this server keeps "
                    "(limits.max_webhooks); delete one first"
                )
            record = WebhookRecord(name, url, kinds, routes, secret, 1, now(), now())
            self._store.put_webhook(record)
            self._start(record)
            return self._view(name)

    def get(self, name: str) -> WebhookView:
        with self._lock:
            return self._view(name)

    def all(self) -> list[WebhookView]:
        with self._lock:
            return [self._view(n) for n in sorted(self._running)]

    def update(
        self, name: str, url: str, kinds: tuple[str, ...], routes: tuple[str, ...],
        secret: str | None = None, version: int | None = None,
    ) -> WebhookView:
        """Replaces URL and filters (and the secret when given); what is queued is delivered
        with the new settings."""
        check_url(url)
        kinds = tuple(sorted(check_kinds(kinds)))
        routes = tuple(sorted(check_routes(routes)))
        if secret is not None:
            check_secret(secret)
        with self._lock:
            old = self._view(name).record
            if version is not None and version != old.version:
                raise Aborted(
                    f"webhook {name!r} is at version {old.version}, not {version}; "
                    "read it again and retry"
                )
            record = replace(
                old, url=url, kinds=kinds, routes=routes, secret=secret or old.secret,
                version=old.version + 1, updated=now(),
            )
            if record == replace(old, version=record.version, updated=record.updated):
                return self._view(name)  # nothing changed
            self._store.put_webhook(record)
            self._running[name].update(record)
            return self._view(name)

    def delete(self, name: str) -> None:
        with self._lock:
            self._view(name)
            self._store.delete_webhook(name)
            deliverer = self._running.pop(name)
        self._hub.remove_sink(deliverer)

    def statuses(self) -> list[tuple[str, dict[str, Any]]]:
        """Each webhook's counters (for metrics)."""
        with self._lock:
            return [(n, d.status()) for n, d in sorted(self._running.items())]

    def close(self) -> None:
        with self._lock:
            running, self._running = self._running, {}
        # All told first, then each waited for: one stuck receiver holds the stop up once.
        for d in running.values():
            d._stop.set()
        for d in running.values():
            self._hub.remove_sink(d)
