"""Domain errors of the service layer: what went wrong, in words, without HTTP.

The API maps each class to a status code once (app.api.errors); the CLI and benchmarks see
plain exceptions. ``body()`` is what a client is told: a sentence, or an object when the
error carries per-file or per-line detail.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error a workflow raises on purpose."""

    def __init__(self, message: str, detail: dict | None = None) -> None:
        super().__init__(message)
        self._detail = detail

    def body(self) -> str | dict:
        return self._detail if self._detail is not None else str(self)


class NotFound(ServiceError, LookupError):
    """A real set, batch or classification that does not exist (any more)."""


class Conflict(ServiceError):
    """The stored state does not allow it now: a concurrent change, bytes gone, no pixels."""


class InvalidInput(ServiceError, ValueError):
    """The request is well-formed but cannot be carried out as asked."""


class TooLarge(ServiceError, ValueError):
    """Over a configured limit."""


class Unavailable(ServiceError):
    """A resource the workflow needs is not available now (a model artifact, hash workers)."""


class Busy(Unavailable):
    """The process is at a capacity limit now; the same request may succeed a little later."""

    #: Seconds a client is told to wait before retrying (the Retry-After header).
    retry_after_s = 5
