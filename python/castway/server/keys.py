"""API keys: roles, creation (the secret is shown once), revocation and lookup.

A key is ``cw_<id>_<secret>``: 8 hex characters of id (shown in listings) and 32 random bytes.
Only its SHA-256 is stored. A salted slow hash buys nothing for 256-bit random secrets, and a
plain digest lets every call find its key with one dictionary lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
import threading
from dataclasses import replace
from typing import TextIO

from castway.server.errors import FailedPrecondition, InvalidArgument, NotFound
from castway.server.specs import check_name
from castway.server.store import KeyRecord, Role, Store, now

ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
ENV_KEY_NAME = "env"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def allows(role: Role, needed: Role) -> bool:
    """admin ⊇ operator ⊇ viewer."""
    return ROLES.index(role) >= ROLES.index(needed)


class Keys:
    """The keys of one store, with an in-memory index by hash."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._by_hash = {k.hash: k for k in store.keys()}

    def bootstrap(self, env_key: str | None, out: TextIO = sys.stderr) -> str | None:
        """Makes sure an admin can get in. ``env_key`` (``CASTWAY_ADMIN_KEY``) is registered as
        an admin key unless it is known already (a revoked one stays revoked). Without it, the
        first start creates an admin key and prints it once to ``out``. Returns the key created.
        """
        if env_key:
            if len(env_key) < 16:
                raise InvalidArgument("CASTWAY_ADMIN_KEY", "must be at least 16 characters")
            if digest(env_key) not in self._by_hash:
                self._add(ENV_KEY_NAME, "admin", env_key)
            return None
        if self._by_hash:
            return None
        _, secret = self.create("admin", "admin")
        print(
            "castway: created the first admin key; it is shown this once, store it now:\n"
            f"  {secret}",
            file=out,
            flush=True,
        )
        return secret

    def create(self, name: str, role: str) -> tuple[KeyRecord, str]:
        check_name("key", name)
        if role not in ROLES:
            raise InvalidArgument("role", f"must be one of {', '.join(ROLES)}")
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
            revoked = replace(record, revoked=now())
            self._store.put_key(revoked)
            self._by_hash[record.hash] = revoked
            return revoked

    def authenticate(self, secret: str) -> KeyRecord | None:
        """The live key with this secret, or None (unknown or revoked)."""
        record = self._by_hash.get(digest(secret))
        if record is None or record.revoked is not None:
            return None
        return record
