"""``with`` for the classes that hold something to close (a gateway, a client channel)."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """Closes on leaving a ``with`` block, whatever ended it."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
