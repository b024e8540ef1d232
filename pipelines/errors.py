"""One hierarchy of errors for Tune Studio.

Callers catch `TunesError` (or a subclass); library errors are translated into these in one place
(`raise ... from e`) so user-facing layers can show `str(error)` as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class TunesError(Exception):
    """Base class for every error Tune Studio raises on purpose."""


class ValidationError(TunesError, ValueError):
    """An input was wrong. `field` names it (dotted or indexed path), `value` is what was given."""

    def __init__(self, field: str, value: object, message: str):
        self.field = field
        self.value = value
        self.message = message
        super().__init__(f"`{field}` {message} (got {_short(value)})")


class PermissionDeniedError(TunesError):
    """The caller is signed in but lacks the role the action needs (admin, pack editor)."""


class SignInRequiredError(TunesError):
    """Nobody is signed in where the deployment requires it (a Space with Hugging Face sign-in)."""


class SettingsError(ValidationError):
    """An environment setting could not be parsed."""


@dataclass(frozen=True)
class PhotoProblem:
    """Why one uploaded photo was refused."""

    index: int
    name: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"photo {self.index + 1} ({self.name!r}): {self.message}"


class PhotoRejectedError(ValidationError):
    """One or more photos were refused; `problems` lists every one, so all can be fixed at once."""

    def __init__(self, problems: list[PhotoProblem]):
        self.problems = problems
        first = problems[0]
        super().__init__(f"images[{first.index}]", first.name, "; ".join(str(p) for p in problems))

    def __str__(self) -> str:  # the field/value prefix would repeat the first problem
        return "Some photos were refused: " + "; ".join(str(p) for p in self.problems)


class PromptTemplateError(ValidationError):
    """A `{{placeholder}}` in a prompt could not be filled."""


class ModelUnavailableError(TunesError):
    """The weights of a base model cannot be found or downloaded."""


class TrainingCancelledError(TunesError):
    """Training stopped because cancellation was requested; the last checkpoint is kept."""

    def __init__(self, step: int):
        self.step = step
        super().__init__(f"training was cancelled at step {step}")


class GenerationCancelledError(TunesError):
    """Generation stopped because cancellation was requested."""


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class NotFoundError(TunesError):
    """No record with this id belongs to the caller (another owner's records are "not found" too)."""

    def __init__(self, kind: str, record_id: object):
        self.kind = kind
        self.record_id = record_id
        super().__init__(f"{kind} {record_id} was not found")


class InsufficientCreditsError(TunesError):
    """The caller has not enough tune or image credits; nothing was queued."""


class ConflictError(TunesError):
    """The record is in a state that does not allow the action (e.g. a prompt on a failed tune)."""


class ArtifactError(TunesError):
    """A trained LoRA could not be stored, found, fetched or deleted; the message says where and why.

    `location` is the artifact's location string when known; `missing` is True when the artifact does not
    exist (never stored, deleted or expired), so callers can tell "gone" from "unreachable right now".
    Messages never contain the Hugging Face token.
    """

    def __init__(self, message: str, *, location: str | None = None, missing: bool = False):
        self.location = location
        self.missing = missing
        super().__init__(message)


class FetchError(ValidationError):
    """A user-given URL passed the checks but could not be fetched or delivered (DNS, network, status, size)."""


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


class ApiKeyLimitError(ConflictError):
    """The caller already holds as many unrevoked API keys as `TUNES_MAX_API_KEYS` allows; nothing was created."""

    def __init__(self, held: int, limit: int):
        self.held = held
        self.limit = limit
        super().__init__(
            f"You already hold {held} unrevoked API keys, the most allowed (TUNES_MAX_API_KEYS={limit}); "
            "revoke one you no longer use (Account tab) before creating another."
        )
