"""From uploaded photos to a trained LoRA folder: the model-level steps of one tune, composed.

The service (records, queue, callbacks) calls these; so does the app until that exists. Checking is
separate from training so a caller can show the quality report before spending GPU time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import PhotoProblem, ValidationError
from pipelines.identity import Subject
from pipelines.photos import (
    Photo,
    PhotoInput,
    PhotoReport,
    TrainingImage,
    check_photo_count,
    check_photo_set,
    load_each_photo,
    load_photos,
    prepare_training_images,
)
from pipelines.registry import BRANCHES, Branch, get_branch, model_reference, resolve_model_dir
from pipelines.settings import Settings
from pipelines.train import MODEL_TYPES, ProgressCallback, TrainConfig, TrainResult, train_lora

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
PIVOTAL_FAMILIES = ("sdxl",)  # where "pti" trains: new tokens in both CLIP encoders (pipelines.train_pti)


def model_types(branch: Branch) -> tuple[str, ...]:
    """What a branch can train: "lora" everywhere, and "pti" (pivotal tuning) on the SDXL family."""
    return MODEL_TYPES if branch.family in PIVOTAL_FAMILIES else ("lora",)


def check_model_type(branch: Branch, model_type: str | None) -> str:
    """The model type a tune of `branch` trains: `model_type`, or the branch's default when None.

    Raises:
        ValidationError: `model_type` is not one the branch can train; the message lists those it can.
    """
    if model_type is None:
        return branch.model_type
    allowed = model_types(branch)
    if model_type not in allowed:
        message = f"must be {' or '.join(allowed)} on branch {branch.name}"
        if "pti" not in allowed:
            pivotal = ", ".join(name for name, b in BRANCHES.items() if b.family in PIVOTAL_FAMILIES)
            message += f"; pti (pivotal tuning) trains on SDXL branches only ({pivotal})"
        raise ValidationError("model_type", model_type, message)
    return model_type


@dataclass(frozen=True)
class TuneRequest:
    """What a user asks for when training; None means the branch default."""

    class_name: str
    branch: str = "tiny"
    token: str | None = None
    steps: int | None = None
    face_crop: bool = True
    seed: int = 0
    prior_preservation: bool = False
    model_type: str | None = None  # "lora" or "pti" (SDXL only); None: the branch's default (`Branch.model_type`)

    def __post_init__(self) -> None:
        name = self.class_name.strip().lower() if isinstance(self.class_name, str) else self.class_name
        if not isinstance(name, str) or not name or len(name) > 40 or not all(c.isalpha() or c == " " for c in name):
            raise ValidationError("class_name", self.class_name, "must be a word such as man, woman, cat or dog")
        object.__setattr__(self, "class_name", name)
        branch = get_branch(self.branch)
        if not branch.trainable:
            raise ValidationError("branch", self.branch, "cannot be trained here")
        if self.token is not None and not (2 <= len(self.token) <= 12 and set(self.token) <= _TOKEN_CHARS):
            raise ValidationError("token", self.token, "must be 2-12 lowercase letters or digits, e.g. ohwx")
        check_model_type(branch, self.model_type)

    @property
    def branch_info(self) -> Branch:
        return get_branch(self.branch)

    @property
    def resolved_token(self) -> str:
        return self.token or self.branch_info.token

    @property
    def resolved_model_type(self) -> str:
        return check_model_type(self.branch_info, self.model_type)


@dataclass(frozen=True)
class CheckedPhotos:
    """Accepted photos and their quality report (warnings shown to the user before training).

    `refused` lists the uploads that could not be read as photos; only `preview_photos` leaves any there
    (`check_photos` raises instead).
    """

    photos: list[Photo]
    reports: list[PhotoReport]
    refused: list[PhotoProblem] = field(default_factory=list)
    subject: Subject | None = None  # who the photos are of (person classes, identity checks on); biometric
    identity_off: str | None = None  # why identity checks are off, when they are

    @property
    def usable_count(self) -> int:
        return sum(report.usable for report in self.reports)

    def dropped(self) -> list[str]:
        """Each upload left out of training and why, in upload order: "photo 5 ('5.jpg') is nearly the same as …"."""
        skipped = [
            (r.index, f"photo {r.index + 1} ({r.name!r}) {r.skipped_because}") for r in self.reports if not r.usable
        ]
        refused = [(p.index, str(p)) for p in self.refused]
        return [text for _, text in sorted(skipped + refused)]

    def require_usable(self, minimum: int) -> None:
        """Raises ValidationError (`images`, the usable count) naming every photo left out and why, when fewer
        than `minimum` photos are usable."""
        usable = self.usable_count
        if usable >= minimum:
            return
        total = len(self.reports) + len(self.refused)
        message = f"must include at least {minimum} usable photos; {usable} of {total} can be used"
        dropped = self.dropped()
        if dropped:
            message += ": " + "; ".join(dropped)
        raise ValidationError("images", usable, f"{message}. Add {minimum - usable} or more different, sharp photos")


def check_photos(settings: Settings, inputs: Sequence[PhotoInput], *, class_name: str) -> CheckedPhotos:
    """Load and quality-check uploads.

    Raises:
        ValidationError: wrong number of photos. PhotoRejectedError: unusable files, all listed.
    """
    photos = load_photos(inputs, settings)
    checked = check_photo_set(photos, class_name=class_name)
    return CheckedPhotos(photos, checked.reports, subject=checked.subject, identity_off=checked.identity_off)


def preview_photos(settings: Settings, inputs: Sequence[PhotoInput], *, class_name: str) -> CheckedPhotos:
    """Like `check_photos`, for a report shown while the user is still choosing: files that are not usable
    photos are listed in `refused` instead of raising, and fewer photos than the minimum are fine.

    Raises:
        ValidationError: more photos than the maximum.
    """
    check_photo_count(len(inputs), settings, minimum=0)
    photos, refused = load_each_photo(inputs, settings)
    checked = check_photo_set(photos, class_name=class_name)
    return CheckedPhotos(photos, checked.reports, refused, checked.subject, checked.identity_off)


def training_images(checked: CheckedPhotos, request: TuneRequest) -> list[TrainingImage]:
    """The square, captioned crops the trainer sees (full crops, plus face crops with `face_crop`)."""
    return prepare_training_images(
        checked.photos,
        checked.reports,
        resolution=request.branch_info.resolution,
        token=request.resolved_token,
        class_name=request.class_name,
        face_crop=request.face_crop,
    )


def train_tune(
    settings: Settings,
    checked: CheckedPhotos,
    request: TuneRequest,
    output_dir: Path,
    *,
    on_progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train the LoRA of one tune into `output_dir` (resuming its checkpoint if one is there).

    Raises:
        ValidationError: bad request or no usable photo. ModelUnavailableError: base weights missing.
        TrainingCancelledError: `should_cancel` returned True.
    """
    images = training_images(checked, request)
    return train_on_images(settings, images, request, output_dir, on_progress=on_progress, should_cancel=should_cancel)


def train_on_images(
    settings: Settings,
    images: Sequence[TrainingImage],
    request: TuneRequest,
    output_dir: Path,
    *,
    on_progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train on crops already prepared (`training_images`), such as a training set read back from the Hub.

    Raises:
        as `train_tune`.
    """
    if not images:
        raise ValidationError("images", 0, "no training image to train on")
    branch = request.branch_info
    config = TrainConfig.for_branch(
        branch,
        class_name=request.class_name,
        base_model=model_reference(settings, branch),
        token=request.resolved_token,
        steps=request.steps,
        seed=request.seed,
        prior_preservation=request.prior_preservation,
        checkpoint_every=settings.checkpoint_every,
        model_type=request.resolved_model_type,
    )
    return train_lora(
        config,
        images,
        output_dir,
        model_dir=resolve_model_dir(settings, branch),
        class_images_dir=settings.data_dir / "class_images",
        device=settings.device,
        on_progress=on_progress,
        should_cancel=should_cancel,
    )
