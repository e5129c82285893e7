"""castway's exceptions. Every error raised by castway is a :class:`CastwayError`.

An error about one field of a route spec says which: its message starts with the path
(``outputs[2].uri: invalid URI …``), and :func:`field_of` returns it.
"""

from castway._castway import (
    AddressInUseError,
    AlreadyExistsError,
    CastwayError,
    ClosedError,
    ConfigError,
    InvalidUriError,
    MissingElementError,
    NotFoundError,
    PipelineError,
)

__all__ = [
    "AddressInUseError",
    "AlreadyExistsError",
    "CastwayError",
    "ClosedError",
    "ConfigError",
    "InvalidUriError",
    "MissingElementError",
    "NotFoundError",
    "PipelineError",
    "field_of",
    "reason_of",
]


def field_of(error: BaseException) -> str | None:
    """The path in the route spec that ``error`` is about (``outputs[2].uri``), if any."""
    value = getattr(error, "field", None)
    return value if isinstance(value, str) else None


def reason_of(error: BaseException) -> str:
    """The error's message without the field path in front."""
    value = getattr(error, "reason", None)
    return value if isinstance(value, str) else str(error)

