"""Records as dataclasses: what the database stores and what every interface returns (as JSON).

Timestamps are UTC ISO-8601 strings. JSON-valued columns (characteristics, reports, file lists) are
decoded here so callers never see raw column text.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar


class TuneStatus(StrEnum):
    """Where a tune is: `queued → training → trained → (expired)`; `failed` and `cancelled` are terminal.

    Members are strings ("queued" == TuneStatus.QUEUED), so records and JSON carry the plain value.
    """

    QUEUED = "queued"
    TRAINING = "training"
    TRAINED = "trained"
    EXPIRED = "expired"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PromptStatus(StrEnum):
    """Where a prompt is: `queued → generating → done | failed`."""

    QUEUED = "queued"
    GENERATING = "generating"
    DONE = "done"
    FAILED = "failed"


class DeliveryStatus(StrEnum):
    """Where a callback is: `pending` (retried with backoff) until `delivered` or `failed`."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class JobKind(StrEnum):
    """What the worker claims: a tune to train or a prompt to generate; also a callback's record kind."""

    TUNE = "tune"
    PROMPT = "prompt"


class Visibility(StrEnum):
    """Who sees a tune's avatars: only its owner (`private`, the default) or everyone, on the showcase (`public`)."""

    PRIVATE = "private"
    PUBLIC = "public"


def new_publication() -> str:
    """A tune's new publication key (`Tune.publication`), drawn each time it becomes public."""
    return secrets.token_hex(8)


class ShowcaseKind(StrEnum):
    """What made a showcased avatar: a pack's prompt, a prompt sent with the tune (a sample), or a later prompt."""

    PACK = "pack"
    SAMPLE = "sample"
    PROMPT = "prompt"


class DeliveryKind(StrEnum):
    """Which record a callback carries: a tune, a prompt, or a tune's prompts once none is pending."""

    TUNE = "tune"
    PROMPT = "prompt"
    PROMPTS = "prompts"


# the named sets of statuses; order is kept (they are bound into SQL as parameters)
TUNE_ACTIVE = (TuneStatus.QUEUED, TuneStatus.TRAINING)  # will have a LoRA unless it fails or is cancelled
TUNE_USABLE = (*TUNE_ACTIVE, TuneStatus.TRAINED)  # prompts may be queued on it
TUNE_UNUSABLE = (TuneStatus.FAILED, TuneStatus.CANCELLED, TuneStatus.EXPIRED)  # never (again) has a LoRA
TUNE_RETRYABLE = (TuneStatus.FAILED, TuneStatus.CANCELLED)  # an operator may queue it again
PROMPT_PENDING = (PromptStatus.QUEUED, PromptStatus.GENERATING)
PROMPT_FINISHED = (PromptStatus.DONE, PromptStatus.FAILED)


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else None


@dataclass
class Tune:
    id: int
    owner: str
    title: str
    name: str
    token: str
    branch: str
    base_model: str
    model_type: str
    steps: int | None
    face_crop: bool
    characteristics: dict[str, str]
    callback: str | None
    prompts_callback: str | None
    auto_extend: bool
    pack_id: str | None
    status: str  # a TuneStatus value, stored and published as the plain string
    progress: float
    eta_seconds: float | None
    error: str | None
    attempts: int
    seed: int
    created_at: str
    updated_at: str
    started_training_at: str | None
    trained_at: str | None
    expires_at: str | None
    artifact_location: str | None
    photo_report: list[dict[str, Any]] = field(default_factory=list)
    orig_images: list[str] = field(default_factory=list)
    api_fields: dict[str, Any] = field(default_factory=dict)  # Astria's fields, echoed back (see TuneCreate)
    job_id: str | None = None  # its Hugging Face Job, while or after it trained on one
    training_set: str | None = None  # the private dataset repo its job reads the photos from (deleted at the end)
    loss_curve: list[list[float]] = field(default_factory=list)  # [[step, loss], ...] while and after it trains
    visibility: str = Visibility.PRIVATE  # public: its avatars are on the showcase
    publication: str | None = None  # a new random key each time it becomes public: its public links name it

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("artifact_location")  # a storage detail: interfaces publish URLs, not paths
        data.pop("training_set")
        data.pop("publication")  # a signing input of its public links, not the owner's business
        return data


@dataclass
class Prompt:
    id: int
    tune_id: int
    owner: str
    text: str
    rendered_text: str
    negative_prompt: str
    num_images: int
    seed: int | None
    w: int | None
    h: int | None
    cfg_scale: float
    steps: int
    scheduler: str
    super_resolution: bool
    inpaint_faces: bool
    hires_fix: bool
    callback: str | None
    status: str
    error: str | None
    attempts: int
    created_at: str
    updated_at: str
    started_at: str | None
    completed_at: str | None
    pack_id: str | None = None
    pack_prompt: str | None = None  # "class/index" of the pack prompt it came from
    loras: list[dict[str, Any]] = field(default_factory=list)  # `<lora:…>` tags: [{"tune_id", "weight"}]
    best_of: int | None = None  # candidates rendered; the num_images most like the subject are kept
    images: list[Image] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["images"] = [image.to_dict() for image in self.images]
        return data


@dataclass
class Image:
    id: int
    prompt_id: int
    owner: str
    path: str
    seed: int
    width: int
    height: int
    liked: bool
    created_at: str
    likeness: float | None = None  # 0-1 likeness to the tune's subject (pipelines.identity); None: no face/check
    hidden: bool = False  # its owner keeps it off the showcase although the tune is public
    blocked: bool = False  # an admin took it off the showcase (its owner cannot put it back)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return data


@dataclass
class Delivery:
    """One callback to deliver (a tune, a prompt, or a tune's prompts), with its attempts."""

    id: int
    owner: str
    url: str
    kind: str  # a DeliveryKind value
    record_id: int
    status: str  # a DeliveryStatus value
    attempts: int
    next_attempt_at: str
    last_status: int | None
    last_error: str | None
    created_at: str
    delivered_at: str | None


@dataclass
class WorkerRecord:
    """A worker process as it last reported itself (`studio.worker`): alive while its heartbeat is recent."""

    id: str
    device: str
    pid: int | None
    host: str | None
    started_at: str
    heartbeat_at: str
    stopped_at: str | None
    job: str | None
    jobs_done: int
    branches: list[str] = field(default_factory=list)


_JSON_COLUMNS = {"characteristics", "photo_report", "orig_images", "api_fields", "loras", "branches", "loss_curve"}
_JSON_OBJECT_COLUMNS = {"characteristics", "api_fields"}  # the others are lists
_BOOL_COLUMNS = {
    "face_crop",
    "auto_extend",
    "super_resolution",
    "inpaint_faces",
    "hires_fix",
    "liked",
    "hidden",
    "blocked",
}
R = TypeVar("R")


def from_row(cls: type[R], row: sqlite3.Row) -> R:
    """Build a record from a row, decoding JSON and boolean columns."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key in row.keys():  # noqa: SIM118 (sqlite3.Row has no __iter__ over keys)
        if key not in names:
            continue
        value = row[key]
        if key in _JSON_COLUMNS:
            value = json.loads(value) if value else ({} if key in _JSON_OBJECT_COLUMNS else [])
        elif key in _BOOL_COLUMNS:
            value = bool(value)
        values[key] = value
    return cls(**values)
