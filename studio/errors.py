"""The service's errors: records, accounts, credits and access. Model-core errors are in `pipelines.errors`.

Every class here is a `TunesError`, so callers that catch `TunesError` (the UI, the REST error handler) catch
these too; user-facing layers show `str(error)` as is.
"""

from __future__ import annotations

import math

from pipelines.errors import TunesError


class NotFoundError(TunesError):
    """No record with this id belongs to the caller (another owner's records are "not found" too)."""

    def __init__(self, kind: str, record_id: object):
        self.kind = kind
        self.record_id = record_id
        super().__init__(f"{kind} {record_id} was not found")


class ConflictError(TunesError):
    """The record is in a state that does not allow the action (e.g. a prompt on a failed tune)."""


class InsufficientCreditsError(TunesError):
    """The caller has not enough tune or image credits; nothing was queued."""


class ApiKeyLimitError(ConflictError):
    """The caller already holds as many unrevoked API keys as `TUNES_MAX_API_KEYS` allows; nothing was created."""

    def __init__(self, held: int, limit: int):
        self.held = held
        self.limit = limit
        super().__init__(
            f"You already hold {held} unrevoked API keys, the most allowed (TUNES_MAX_API_KEYS={limit}); "
            "revoke one you no longer use (Account tab) before creating another."
        )


class RateLimitedError(TunesError):
    """The caller made more API requests than `TUNES_API_RATE_PER_MINUTE` allows (REST and Gradio API together).

    `retry_after` is the whole seconds to wait before the next request goes through (at least 1).
    """

    def __init__(self, per_minute: int, wait_s: float):
        self.per_minute = per_minute
        self.retry_after = max(1, math.ceil(wait_s))
        super().__init__(
            f"rate limit reached: at most {per_minute} API requests a minute per user, REST and the Gradio API "
            f"together (TUNES_API_RATE_PER_MINUTE); try again in {self.retry_after} s"
        )


class PermissionDeniedError(TunesError):
    """The caller is signed in but lacks the role the action needs (admin, pack editor)."""


class SignInRequiredError(TunesError):
    """Nobody is signed in where the deployment requires it (a Space with Hugging Face sign-in)."""
