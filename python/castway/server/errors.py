"""What the control plane refuses, and why. Each class is one gRPC status code; domain code
raises these and never imports grpc (the servicers translate)."""

from __future__ import annotations


class ControlError(Exception):
    """A refused call. ``code`` names its gRPC status code."""

    code = "FAILED_PRECONDITION"


class InvalidArgument(ControlError):
    """A bad field; ``field`` is its path, e.g. ``spec.inputs[1].uri``."""

    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(ControlError):
    code = "NOT_FOUND"


class AlreadyExists(ControlError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(ControlError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(ControlError):
    """A limit reached: too many routes, templates or keys."""

    code = "RESOURCE_EXHAUSTED"


class Aborted(ControlError):
    """An update against a stale version."""

    code = "ABORTED"


class OutOfRange(ControlError):
    """Events asked for are no longer kept (or not made yet)."""

    code = "OUT_OF_RANGE"


class Unavailable(ControlError):
    """The gateway is shutting down: try again (on the next server)."""

    code = "UNAVAILABLE"


class DeadlineExceeded(ControlError):
    """Something waited for on the caller's behalf (a picture) did not come in time."""

    code = "DEADLINE_EXCEEDED"


class Internal(ControlError):
    """The media framework failed on the server's side (not the caller's input)."""

    code = "INTERNAL"


class Unauthenticated(ControlError):
    code = "UNAUTHENTICATED"


class PermissionDenied(ControlError):
    code = "PERMISSION_DENIED"
