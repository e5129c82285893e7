"""API keys: roles, creation (the secret is shown once), revocation and lookup.

A key is ``cw_<id>_<secret>``: 8 hex characters of id (shown in listings) and 32 random bytes.
Only its SHA-256 is stored. A salted slow hash buys nothing for 256-bit random secrets, and a
plain digest lets every call find its key with one dictionary lookup.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import sys
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import replace
from typing import TextIO

from castway.roles import ROLES
from castway.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from castway.server.specs import check_name
from castway.server.store import KEY_FILE, KeyRecord, Role, Store, now

ENV_KEY_NAME = "env"
MIN_ADMIN_KEY_CHARS = 24
MIN_ADMIN_KEY_DISTINCT = 12
MIN_ADMIN_KEY_BITS = 128


# The key of the call being served: set by the auth interceptor around each servicer, read by
# the servicers (what a viewer may see) and the control plane (who made a change).
acting_key: ContextVar[KeyRecord | None] = ContextVar("castway_key", default=None)


def current_key() -> KeyRecord | None:
    """The key of the call being served (None outside a call: the config file, Python)."""
    return acting_key.get()


def check_admin_key(key: str) -> None:
    """Refuses a short or low-entropy ``CASTWAY_ADMIN_KEY``: at least 24 characters, 12 of them
    different, and about 128 bits by the size of the character classes it draws from."""
    why = ""
    if len(key) < MIN_ADMIN_KEY_CHARS:
        why = f"is {len(key)} characters; it needs at least {MIN_ADMIN_KEY_CHARS}"
    elif len(set(key)) < MIN_ADMIN_KEY_DISTINCT:
        why = f"uses only {len(set(key))} different characters"
    else:
        alphabet = sum(
            size
            for size, present in (
                (26, any(c.islower() for c in key)),
                (26, any(c.isupper() for c in key)),
                (10, any(c.isdigit() for c in key)),
                (33, any(not c.isalnum() for c in key)),
            )
            if present
        )
        bits = len(key) * math.log2(max(alphabet, 2))
        if bits < MIN_ADMIN_KEY_BITS:
            why = f"has about {bits:.0f} bits of entropy; it needs {MIN_ADMIN_KEY_BITS}"
    if why:
        raise InvalidArgument(
            "CASTWAY_ADMIN_KEY",
            f"{why}; make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Keys:
    """The keys of one store, with an in-memory index by hash."""

    def __init__(
        self, store: Store, max_keys: int = 100, emit: Callable[..., None] | None = None,
        on_keys: Callable[[list[tuple[str, str]]], None] | None = None,
    ) -> None:
        """``emit(kind, **fields)`` reports each key created or revoked (an event);
        ``on_keys(live)`` gets every live key's hash and role, now and after each change (the
        shared SRT port takes keys as users: ``Gateway.set_srt_keys``)."""
        self._store = store
        self.max_keys = max_keys
        self._emit = emit
        self._on_keys = on_keys
        self._lock = threading.Lock()
        self._by_hash = {k.hash: k for k in store.keys()}
        with self._lock:
            self._keys_changed()

    def _keys_changed(self) -> None:
        """Tells ``on_keys`` the live keys; called under the lock."""
        if self._on_keys is not None:
            self._on_keys([(k.hash, k.role) for k in self._by_hash.values() if k.revoked is None])

    def bootstrap(self, env_key: str | None, out: TextIO = sys.stderr) -> str | None:
        """Makes sure an admin can get in. ``env_key`` (``CASTWAY_ADMIN_KEY``) must be long and
        varied (``check_admin_key``); it is registered as the admin key named ``env`` unless it
        is known already (a revoked one stays revoked), and replaces (revokes) the ``env`` key
        an earlier value registered. Without it, the first start creates an admin key and writes
        it to ``DATA_DIR/admin.key`` (mode 0600), not to the log. Returns the key created.
        """
        if env_key:
            check_admin_key(env_key)
            if digest(env_key) not in self._by_hash:
                added = self._add(ENV_KEY_NAME, "admin", env_key)
                for old in self.list():
                    if old.name == ENV_KEY_NAME and old.id != added.id and old.revoked is None:
                        with self._lock:
                            self._revoke(old)
                        print(
                            f"castway: CASTWAY_ADMIN_KEY changed: revoked the admin key {old.id} "
                            "it had registered before",
                            file=out,
                            flush=True,
                        )
            return None
        if self._by_hash:
            return None
        _, secret = self.create("admin", "admin")
        path = self._store.data_dir / KEY_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        print(
            f"castway: created the first admin key in {path} (mode 0600): use it with "
            f"`--key-file {path}` or copy it somewhere safe, then delete the file",
            file=out,
            flush=True,
        )
        return secret

    def create(self, name: str, role: str) -> tuple[KeyRecord, str]:
        check_name("key", name)
        if role not in ROLES:
            raise InvalidArgument("role", f"must be one of {', '.join(ROLES)}")
        with self._lock:
            live = sum(1 for k in self._by_hash.values() if k.revoked is None)
        if live >= self.max_keys:
            raise ResourceExhausted(
                f"there are {live} live keys, the most this server keeps (limits.max_keys); "
                "revoke one first"
            )
        key_id = secrets.token_hex(4)
        secret = f"cw_{key_id}_{secrets.token_urlsafe(32)}"
        return self._add(name, role, secret, key_id), secret  # type: ignore[arg-type]

    def _add(self, name: str, role: Role, secret: str, key_id: str | None = None) -> KeyRecord:
        record = KeyRecord(
            id=key_id or secrets.token_hex(4),
            name=name,
            role=role,
            hash=digest(secret),
            created=now(),
            revoked=None,
        )
        with self._lock:
            self._store.put_key(record)
            self._by_hash[record.hash] = record
            self._keys_changed()
        if self._emit is not None:
            self._emit("key_created", name=record.name, key=record.id)
        return record

    def list(self) -> list[KeyRecord]:
        with self._lock:
            return sorted(self._by_hash.values(), key=lambda k: (k.created, k.id))

    def revoke(self, key_id: str) -> KeyRecord:
        with self._lock:
            record = next((k for k in self._by_hash.values() if k.id == key_id), None)
            if record is None:
                raise NotFound(f"key {key_id!r} not found")
            if record.revoked is not None:
                return record
            admins = [k for k in self._by_hash.values() if k.role == "admin" and k.revoked is None]
            if record.role == "admin" and len(admins) == 1:
                raise FailedPrecondition(
                    f"key {key_id!r} is the last admin key; create another admin key first"
                )
            return self._revoke(record)

    def _revoke(self, record: KeyRecord) -> KeyRecord:
        revoked = replace(record, revoked=now())
        self._store.put_key(revoked)
        self._by_hash[record.hash] = revoked
        self._keys_changed()
        if self._emit is not None:
            self._emit("key_revoked", name=record.name, key=record.id)
        return revoked

    def authenticated(self, key_id: str) -> bool:
        """Whether the key with this id is still live (not revoked)."""
        with self._lock:
            return any(k.id == key_id and k.revoked is None for k in self._by_hash.values())

    def authenticate(self, secret: str) -> KeyRecord | None:
        """The live key with this secret, or None (unknown or revoked)."""
        record = self._by_hash.get(digest(secret))
        if record is None or record.revoked is not None:
            return None
        return record
