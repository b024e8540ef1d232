"""Typed requests of the service's use cases, validated once on construction (errors name the field)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from packs.loader import ASPECT_RATIOS
from pipelines.errors import ValidationError
from pipelines.generate import MAX_SEED, SCHEDULERS, GenerationRequest
from pipelines.photos import PhotoInput
from pipelines.prompts import check_characteristics, split_lora_tags

MAX_TITLE = 200
MAX_TUNES_PER_PAGE = 100
MAX_STEPS = 20_000  # the trainer's bound, checked here so a bad value never reaches the queue
MAX_PRESET = 60
MAX_ID = 2**63 - 1  # SQLite's largest INTEGER


@dataclass(frozen=True)
class PromptCreate:
    """A prompt to generate; `text` may use `{{subject}}`, `{{token}}`, `{{class}}` and characteristics,
    and up to 4 `<lora:TUNE_ID:WEIGHT>` tags that add other tunes of the caller (see `split_lora_tags`).

    `face_correct` is Astria's name for `inpaint_faces`: when True, `inpaint_faces` is set too.
    """

    text: str
    negative_prompt: str = ""
    num_images: int = 4
    seed: int | None = None
    w: int | None = None
    h: int | None = None
    aspect_ratio: str | None = None  # with no w/h: this shape at the tune's branch resolution
    cfg_scale: float = 7.0
    steps: int = 30
    scheduler: str = "dpm++2m_karras"
    super_resolution: bool = False
    inpaint_faces: bool = False
    hires_fix: bool = False
    callback: str | None = None
    pack_id: str | None = None  # set by the service for prompts that come from a pack
    pack_prompt: str | None = None  # "class/index" in that pack
    face_correct: bool = False

    def sized_for(self, resolution: int) -> PromptCreate:
        """This prompt with w/h set from `aspect_ratio` at a branch's resolution (same pixel count, multiples of 8)."""
        if self.aspect_ratio is None or (self.w and self.h):
            return self
        w, h = size_for_aspect(self.aspect_ratio, resolution)
        return replace(self, w=w, h=h)

    def __post_init__(self) -> None:
        # API clients may send any JSON: a type the generation request would trip over is named here
        if isinstance(self.cfg_scale, bool) or not isinstance(self.cfg_scale, int | float):
            raise ValidationError("cfg_scale", self.cfg_scale, "must be a number between 0 and 30")
        if not isinstance(self.scheduler, str):
            raise ValidationError("scheduler", self.scheduler, f"must be one of {', '.join(SCHEDULERS)}")
        # the generation request checks the numbers and names; build one with a placeholder prompt
        try:
            GenerationRequest(
                prompt="check",
                negative_prompt=self.negative_prompt,
                num_images=self.num_images,
                seed=self.seed,
                width=self.w,
                height=self.h,
                steps=self.steps,
                cfg_scale=self.cfg_scale,
                scheduler=self.scheduler,
            )
        except ValidationError as error:
            if error.field not in ("width", "height"):
                raise
            raise ValidationError(error.field[0], error.value, error.message) from None  # sent as `w` and `h`
        if self.aspect_ratio is not None and self.aspect_ratio not in ASPECT_RATIOS:
            raise ValidationError("aspect_ratio", self.aspect_ratio, f"must be one of {', '.join(ASPECT_RATIOS)}")
        for name in ("super_resolution", "inpaint_faces", "hires_fix", "face_correct"):
            if not isinstance(getattr(self, name), bool):
                raise ValidationError(name, getattr(self, name), "must be true or false")
        if self.face_correct:
            object.__setattr__(self, "inpaint_faces", True)
        split_lora_tags(self.text)  # the tags' syntax; the service checks the tunes they name
        if self.callback is not None and not isinstance(self.callback, str):
            raise ValidationError("callback", self.callback, "must be a URL")
        if not isinstance(self.negative_prompt, str) or len(self.negative_prompt) > 2000:
            raise ValidationError("negative_prompt", self.negative_prompt, "must be text of at most 2000 characters")


@dataclass(frozen=True)
class TuneCreate:
    """A new tune: photos (files and/or URLs) of one subject, and optionally prompts to run once trained.

    The Astria compatibility fields are checked, stored (`Tune.api_fields`) and echoed back:
    `model_type` (only "lora"), `preset` (a label of at most 60 characters), `base_tune_id` and
    `training_face_correct`. The last two have no effect on training here: the base model is chosen by
    `branch`, and no face-restoration weights ship with the studio. `prompt_callback` is the callback of
    every prompt created with this request (its `prompts`, or a pack's) that has none of its own.
    """

    title: str
    name: str
    images: Sequence[PhotoInput] = ()
    image_urls: Sequence[str] = ()
    branch: str | None = None
    token: str | None = None
    steps: int | None = None
    face_crop: bool = True
    characteristics: Mapping[str, str] = field(default_factory=dict)
    callback: str | None = None
    prompts_callback: str | None = None
    auto_extend: bool = False
    seed: int = 0
    prompts: Sequence[PromptCreate] = ()
    base_tune_id: int | None = None
    model_type: str | None = None
    preset: str | None = None
    training_face_correct: bool = False
    prompt_callback: str | None = None

    def __post_init__(self) -> None:
        self._check_api_fields()
        if not isinstance(self.title, str) or not self.title.strip() or len(self.title) > MAX_TITLE:
            raise ValidationError("title", self.title, f"must be non-empty text of at most {MAX_TITLE} characters")
        object.__setattr__(self, "title", self.title.strip())
        if not isinstance(self.characteristics, Mapping):
            example = '{"eye_color": "green"}'
            raise ValidationError("characteristics", self.characteristics, f"must map names to texts, e.g. {example}")
        object.__setattr__(self, "characteristics", check_characteristics(dict(self.characteristics)))
        for name in ("face_crop", "auto_extend"):
            if not isinstance(getattr(self, name), bool):
                raise ValidationError(name, getattr(self, name), "must be true or false")
        object.__setattr__(self, "images", tuple(self.images))
        object.__setattr__(self, "image_urls", tuple(self.image_urls))
        object.__setattr__(self, "prompts", tuple(self.prompts))
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS
        ):
            raise ValidationError("steps", self.steps, f"must be an integer between 1 and {MAX_STEPS}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ValidationError("seed", self.seed, f"must be an integer between 0 and {MAX_SEED}")
        if len(self.prompts) > 64:
            raise ValidationError("prompts_attributes", len(self.prompts), "must hold at most 64 prompts")

    def _check_api_fields(self) -> None:
        if self.base_tune_id is not None and (
            isinstance(self.base_tune_id, bool) or not isinstance(self.base_tune_id, int) or self.base_tune_id < 1
        ):
            raise ValidationError("base_tune_id", self.base_tune_id, "must be a positive integer")
        if self.model_type not in (None, "lora"):
            raise ValidationError("model_type", self.model_type, "only lora tunes are supported")
        if self.preset == "":
            object.__setattr__(self, "preset", None)
        if self.preset is not None and (
            not isinstance(self.preset, str) or len(self.preset) > MAX_PRESET or not self.preset.isprintable()
        ):
            raise ValidationError("preset", self.preset, f"must be text of at most {MAX_PRESET} characters")
        if not isinstance(self.training_face_correct, bool):
            raise ValidationError("training_face_correct", self.training_face_correct, "must be true or false")
        if self.prompt_callback is not None and not isinstance(self.prompt_callback, str):
            raise ValidationError("prompt_callback", self.prompt_callback, "must be a URL")

    @property
    def api_fields(self) -> dict[str, object]:
        """The Astria compatibility fields as stored on the tune (`model_type` is always "lora")."""
        return {
            "base_tune_id": self.base_tune_id,
            "model_type": "lora",
            "preset": self.preset,
            "training_face_correct": self.training_face_correct,
        }


def size_for_aspect(aspect_ratio: str, resolution: int) -> tuple[int, int]:
    """(w, h) with the pixel count of a `resolution`-square image in the given shape, multiples of 8."""
    rw, rh = ASPECT_RATIOS[aspect_ratio]
    scale = (resolution * resolution / (rw * rh)) ** 0.5
    return max(64, round(rw * scale / 8) * 8), max(64, round(rh * scale / 8) * 8)


def check_id(value: object, field: str) -> int:
    """A record id as a client sent it: an integer from 1 to `MAX_ID` (larger ones overflow SQLite's INTEGER).

    Raises:
        ValidationError: anything else (text, a float, a list, a bool), naming `field`.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise ValidationError(field, value, f"must be a record id: an integer from 1 to {MAX_ID}")
    return value


def check_page(limit: int, offset: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_TUNES_PER_PAGE:
        raise ValidationError("limit", limit, f"must be an integer between 1 and {MAX_TUNES_PER_PAGE}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValidationError("offset", offset, "must be a non-negative integer")
