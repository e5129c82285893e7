"""castway: a live-video gateway. SRT, UDP, file and test streams through an isolating hub."""

import ctypes

# libsrt unwinds its own C++ exceptions internally (e.g. when a listener closes). GStreamer links
# libunwind.so.8, which exports an incompatible `_Unwind_Resume`; once a plugin load makes it
# global (it happens as soon as grpc's C++ core is in the process too), libsrt's unwinding
# would resolve to it and abort the process. Putting libgcc_s in the global scope first keeps
# the GCC unwinder in charge.
try:
    ctypes.CDLL("libgcc_s.so.1", mode=ctypes.RTLD_GLOBAL)
except OSError:  # pragma: no cover - not a glibc system; nothing to protect
    pass

from castway import errors, notebook
from castway._castway import (
    __version__,
    check_uri,
    element_available,
    gstreamer_version,
    srt_probe,
)
from castway.errors import CastwayError
from castway.gateway import (
    EndpointStats,
    Event,
    EventKind,
    Gateway,
    Route,
    RouteStats,
    SwitchEvent,
    SwitchStats,
    TsAnalysis,
    event_kinds,
)

__all__ = [
    "CastwayError",
    "EndpointStats",
    "Event",
    "EventKind",
    "Gateway",
    "Route",
    "RouteStats",
    "SwitchEvent",
    "SwitchStats",
    "TsAnalysis",
    "__version__",
    "check_uri",
    "element_available",
    "errors",
    "event_kinds",
    "gstreamer_version",
    "notebook",
    "srt_probe",
]
