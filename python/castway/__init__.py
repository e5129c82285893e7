"""castway: a live-video gateway. SRT, UDP, file and test streams through an isolating hub."""

from castway import errors
from castway._castway import __version__, check_uri, element_available, gstreamer_version
from castway.errors import CastwayError
from castway.gateway import EndpointStats, Gateway, Route, RouteStats, SwitchEvent, SwitchStats

__all__ = [
    "CastwayError",
    "EndpointStats",
    "Gateway",
    "Route",
    "RouteStats",
    "SwitchEvent",
    "SwitchStats",
    "__version__",
    "check_uri",
    "element_available",
    "errors",
    "gstreamer_version",
]
