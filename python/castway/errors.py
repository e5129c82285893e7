"""castway's exceptions. Every error raised by castway is a :class:`CastwayError`."""

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
]
