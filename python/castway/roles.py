"""The roles of API keys, in one place: the API's enum (``castway.v1.Role``) names them, in
rank order (admin ⊇ operator ⊇ viewer). The server and the CLI both read them from here."""

from __future__ import annotations

from castway.v1 import key_pb2


def role_name(role: key_pb2.Role.ValueType) -> str:
    """``ROLE_VIEWER`` -> ``viewer``."""
    return key_pb2.Role.Name(role).removeprefix("ROLE_").lower()


# By rank, lowest first (the enum's order).
ROLES: tuple[str, ...] = tuple(
    role_name(r) for r in sorted(key_pb2.Role.values()) if r != key_pb2.ROLE_UNSPECIFIED
)


def role_pb(name: str) -> key_pb2.Role.ValueType:
    """``viewer`` -> ``ROLE_VIEWER``; ``ROLE_UNSPECIFIED`` for a name that is no role."""
    if name not in ROLES:
        return key_pb2.ROLE_UNSPECIFIED
    return key_pb2.Role.Value(f"ROLE_{name.upper()}")


def allows(role: str, needed: str) -> bool:
    """Whether a key of ``role`` may do what needs ``needed``: admin ⊇ operator ⊇ viewer."""
    return ROLES.index(role) >= ROLES.index(needed)
