"""One hierarchy of errors for Tune Studio, rooted at `TunesError`; this module holds the model core's.

Callers catch `TunesError` (or a subclass); library errors are translated into these in one place
(`raise ... from e`) so user-facing layers can show `str(error)` as is. Errors of inputs, photos, prompts,
models, artifacts and fetches live here (pipelines/ and storage/ raise them); errors of records, accounts,
credits and access live with the service, in `studio.errors`.
"""

from __future__ import annotations

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
