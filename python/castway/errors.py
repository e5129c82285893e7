"""castway's exceptions. Every error raised by castway is a :class:`CastwayError`.

An error about one field of a route spec says which: its message starts with the path
(``outputs[2].uri: invalid URI …``), and :func:`field_of` returns it.
"""

from __future__ import annotations

from castway._castway import (
    AddressInUseError,
    AlreadyExistsError,
    CastwayError,
    ClosedError,
    ConfigError,
    InvalidUriError,
    MissingElementError,
    NetworkError,
    NotFoundError,
    PipelineError,
    TimedOutError,
)

__all__ = [
    "AddressInUseError",
    "AlreadyExistsError",
    "CastwayError",
    "ClosedError",
    "ConfigError",
    "EventsLostError",
    "InvalidUriError",
    "MissingElementError",
    "NetworkError",
    "NotFoundError",
    "PipelineError",
    "TimedOutError",
    "field_of",
    "reason_of",
]


class EventsLostError(CastwayError, LookupError):
    """Events asked for are no longer kept: the gateway's history (``event_history`` events)
    moved past them, or the number is beyond the latest event (a restarted server counts
    from 1 again). ``oldest`` is the first event still kept; read again from ``oldest - 1``
    to go on with what is there."""

    def __init__(self, message: str, *, after: int = 0, oldest: int = 0, latest: int = 0) -> None:
        super().__init__(message)
        self.after, self.oldest, self.latest = after, oldest, latest

    @classmethod
    def reading(cls, after: int, oldest: int, latest: int) -> EventsLostError:
        """The error of a read of events numbered above ``after`` when the log keeps
        ``oldest`` to ``latest``."""
        if after > latest:
            why = f"no event after #{after} can come: the latest is #{latest}"
        else:
            why = f"events #{after + 1}..#{oldest - 1} are no longer kept"
        return cls(f"{why}; the oldest kept is #{oldest}", after=after, oldest=oldest,
                   latest=latest)


def field_of(error: BaseException) -> str | None:
    """The path in the route spec that ``error`` is about (``outputs[2].uri``), if any."""
    value = getattr(error, "field", None)
    return value if isinstance(value, str) else None


def reason_of(error: BaseException) -> str:
    """The error's message without the field path in front."""
    value = getattr(error, "reason", None)
    return value if isinstance(value, str) else str(error)

