"""Errors the services raise; each carries a message a musician can act on.

None of them ever holds an API token: the client redacts headers before building them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class StudioError(Exception):
    """Base of every error shown to the user; `str(err)` is the user-facing message."""


@dataclass(frozen=True)
class FieldError:
    """One refused input: the model input name and what to change, in plain words."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class RequestInvalid(StudioError, ValueError):
    """The request was refused before anything was sent; lists every problem at once."""

    def __init__(self, errors: list[FieldError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))

    def for_field(self, name: str) -> list[FieldError]:
        return [e for e in self.errors if e.field == name]


class AudioError(StudioError):
    """An audio file could not be read, converted or accepted."""


class ApiError(StudioError):
    """An error answer from the Replicate API (RFC 7807 problem details)."""

    status: int = 0

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        title: str | None = None,
        invalid_fields: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ):
        if status is not None:
            self.status = status
        self.detail = detail
        self.title = title
        self.invalid_fields = invalid_fields or []
        self.retry_after = retry_after
        super().__init__(detail)


class Unauthenticated(ApiError):
    status = 401


class InsufficientCredit(ApiError):
    status = 402


class NotFound(ApiError):
    status = 404


class InvalidInput(ApiError):
    """422: the API refused the input (or the version); `invalid_fields` says which."""

    status = 422


class RateLimited(ApiError):
    status = 429


class ServerError(ApiError):
    """5xx from the API."""

    status = 500


class ConnectionFailed(StudioError):
    """The API could not be reached, or the connection broke."""


class CreateUnclear(ConnectionFailed):
    """A create got no clear answer and the account's listing could not settle whether it
    made a run; the studio looks for it again later (see GenerationService)."""


class SpendingLimit(StudioError):
    """A run refused before anything was sent: the visitor reached a spending limit."""


class OutputExpired(StudioError):
    """The run's output was removed by Replicate before it could be downloaded."""
