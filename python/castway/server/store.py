"""The durable store: one SQLite file in the data dir.

Every write commits (WAL, ``synchronous=FULL``) before the call returns, so a mutation the
server has replied to survives ``kill -9`` and power loss. The schema moves forward through
numbered migrations recorded in ``PRAGMA user_version``; a database written by a newer castway
is refused rather than guessed at.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from castway.server.specs import Spec, spec_from_dict

KEY_FILE = "admin.key"
Desired = Literal["running", "stopped"]
Role = Literal["viewer", "operator", "admin"]

# Migration n (1-based) takes the schema from version n-1 to n. Append only; never edit one that
# shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE routes (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        desired TEXT NOT NULL CHECK (desired IN ('running', 'stopped')),
        version INTEGER NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE templates (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        version INTEGER NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        hash TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        revoked REAL
    );
    """,
    # The manual input lock survives restarts.
    "ALTER TABLE routes ADD COLUMN locked_input TEXT NOT NULL DEFAULT '';",
    # The output files castway created in the media root (so it may write over them again).
    """
    CREATE TABLE media_outputs (
        path TEXT PRIMARY KEY,
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        created REAL NOT NULL
    );
    """,
    # Webhooks: where events are POSTed. The secret signs deliveries, so it is kept as given
    # (the data dir is the owner's alone); the API never returns it.
    """
    CREATE TABLE webhooks (
        name TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        kinds TEXT NOT NULL,
        routes TEXT NOT NULL,
        secret TEXT NOT NULL,
        version INTEGER NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    """,
    # The recordings catalog: one row per closed segment (docs/recording.md), found by route
    # and time through the index, never a directory scan.
    """
    CREATE TABLE segments (
        path TEXT PRIMARY KEY,
        route TEXT NOT NULL,
        format TEXT NOT NULL,
        start REAL NOT NULL,
        end REAL NOT NULL,
        duration REAL NOT NULL,
        bytes INTEGER NOT NULL,
        psi INTEGER NOT NULL,
        switch INTEGER NOT NULL,
        gap INTEGER NOT NULL,
        repaired INTEGER NOT NULL,
        keyframes TEXT NOT NULL,
        open INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX segments_by_route ON segments (route, start);
    CREATE INDEX segments_by_start ON segments (start);
    """,
    # Segments longer than the catalog's MAX_SEGMENT_S (a source without keyframes, a repaired
    # one): few, and found through their own index, so no range query misses one.
    """
    CREATE INDEX segments_long ON segments (route, start) WHERE end - start > 7200.0;
    """,
    # Each recording route's retention limits as last seen: a route deleted goes on being
    # pruned by them while segments of it are left (docs/recording.md).
    """
    CREATE TABLE retention (
        route TEXT PRIMARY KEY,
        max_age_s INTEGER,
        max_bytes INTEGER
    );
    """,
)


class StoreError(Exception):
    """The store cannot be opened or written."""


@dataclass(frozen=True)
class RouteRecord:
    name: str
    spec: Spec
    desired: Desired
    version: int
    locked_input: str
    created: float
    updated: float


@dataclass(frozen=True)
class TemplateRecord:
    name: str
    spec: Spec
    version: int
    created: float
    updated: float


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    role: Role
    hash: str
    created: float
    revoked: float | None


@dataclass(frozen=True)
class WebhookRecord:
    name: str
    url: str
    kinds: tuple[str, ...]
    routes: tuple[str, ...]
    secret: str
    version: int
    created: float
    updated: float


def now() -> float:
    return time.time()


def secure_data_dir(data_dir: Path) -> None:
    """Creates the data dir 0700, or refuses one that others can read or that belongs to
    someone else (as PostgreSQL does): it holds key hashes and SRT passphrases."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = data_dir.stat()
    except OSError as e:
        raise StoreError(f"cannot use the data dir {data_dir}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"the data dir {data_dir} is not a directory")
    if st.st_uid != os.geteuid():
        raise StoreError(
            f"the data dir {data_dir} belongs to uid {st.st_uid}, not to the user castway runs "
            f"as (uid {os.geteuid()}); run castway as its owner or use another --data-dir"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise StoreError(
            f"the data dir {data_dir} can be read by others (mode {mode:04o}); it holds API key "
            f"hashes and SRT passphrases. Fix it with: chmod 700 {data_dir}"
        )


class Store:
    """The routes, templates, keys and webhooks in ``DATA_DIR/castway.db``. Thread-safe."""

    FILE = "castway.db"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / self.FILE
        secure_data_dir(data_dir)
        try:
            # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm the same mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
        except OSError as e:
            raise StoreError(f"cannot use the data dir {data_dir}: {e.strerror}") from None
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the store {self.path}: {e}") from None
        self._lock = threading.Lock()
        self.migrate()
        self.restrict()

    def restrict(self) -> None:
        """Every file in the data dir readable by its owner only (a store an older castway made
        0644 is put right here)."""
        for p in self.data_dir.iterdir():
            if p.is_file() and not p.is_symlink():
                os.chmod(p, 0o600)

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Brings the schema to the latest version, one migration per transaction."""
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {current}, newer than this castway knows "
                f"({len(MIGRATIONS)}); use a newer castway or another --data-dir"
            )
        for n in range(current + 1, len(MIGRATIONS) + 1):
            with self._tx() as db:
                for statement in MIGRATIONS[n - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {n}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise StoreError(f"store {self.path}: {e}") from None
                raise

    def _query(self, sql: str, *args: object) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # Routes

    def routes(self) -> list[RouteRecord]:
        return [
            RouteRecord(
                name=r["name"],
                spec=spec_from_dict(json.loads(r["spec"])),
                desired=r["desired"],
                version=r["version"],
                locked_input=r["locked_input"],
                created=r["created"],
                updated=r["updated"],
            )
            for r in self._query("SELECT * FROM routes ORDER BY name")
        ]

    def put_route(self, r: RouteRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO routes "
                "(name, spec, desired, version, locked_input, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    r.name,
                    json.dumps(r.spec.to_dict()),
                    r.desired,
                    r.version,
                    r.locked_input,
                    r.created,
                    r.updated,
                ),
            )

    def delete_route(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM routes WHERE name = ?", (name,))

    # Templates

    def templates(self) -> list[TemplateRecord]:
        return [
            TemplateRecord(
                name=r["name"],
                spec=spec_from_dict(json.loads(r["spec"])),
                version=r["version"],
                created=r["created"],
                updated=r["updated"],
            )
            for r in self._query("SELECT * FROM templates ORDER BY name")
        ]

    def put_template(self, t: TemplateRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO templates (name, spec, version, created, updated) "
                "VALUES (?, ?, ?, ?, ?)",
                (t.name, json.dumps(t.spec.to_dict()), t.version, t.created, t.updated),
            )

    def delete_template(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM templates WHERE name = ?", (name,))

    # Keys

    def keys(self) -> list[KeyRecord]:
        return [
            KeyRecord(
                id=r["id"],
                name=r["name"],
                role=r["role"],
                hash=r["hash"],
                created=r["created"],
                revoked=r["revoked"],
            )
            for r in self._query("SELECT * FROM keys ORDER BY created, id")
        ]

    def put_key(self, k: KeyRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO keys (id, name, role, hash, created, revoked) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (k.id, k.name, k.role, k.hash, k.created, k.revoked),
            )

    # Webhooks

    def webhooks(self) -> list[WebhookRecord]:
        return [
            WebhookRecord(
                name=r["name"],
                url=r["url"],
                kinds=tuple(json.loads(r["kinds"])),
                routes=tuple(json.loads(r["routes"])),
                secret=r["secret"],
                version=r["version"],
                created=r["created"],
                updated=r["updated"],
            )
            for r in self._query("SELECT * FROM webhooks ORDER BY name")
        ]

    def put_webhook(self, w: WebhookRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO webhooks "
                "(name, url, kinds, routes, secret, version, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    w.name,
                    w.url,
                    json.dumps(list(w.kinds)),
                    json.dumps(list(w.routes)),
                    w.secret,
                    w.version,
                    w.created,
                    w.updated,
                ),
            )

    def delete_webhook(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM webhooks WHERE name = ?", (name,))

    # Output files in the media root

    def known_output(self, path: str, dev: int, ino: int) -> bool:
        rows = self._query("SELECT dev, ino FROM media_outputs WHERE path = ?", path)
        return bool(rows) and (rows[0]["dev"], rows[0]["ino"]) == (dev, ino)

    def remember_output(self, path: str, dev: int, ino: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO media_outputs (path, dev, ino, created) "
                "VALUES (?, ?, ?, ?)",
                (path, dev, ino, now()),
            )

    def files(self) -> list[Path]:
        """Every file of the store: the database, its WAL and shared memory, the key file."""
        db = self.path
        return [db, *(db.with_name(db.name + s) for s in ("-wal", "-shm")), db.with_name(KEY_FILE)]

    def close(self) -> None:
        with self._lock:
            self._db.close()
