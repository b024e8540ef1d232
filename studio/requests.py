"""Typed requests of the service's use cases, validated once on construction (errors name the field)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from pipelines.errors import ValidationError
from pipelines.photos import PhotoInput
from pipelines.prompt_spec import FIELDS, MAX_SEED, PromptOptions, rule_of
from pipelines.prompts import check_characteristics, split_lora_tags
from pipelines.train import MODEL_TYPES
from storage.records import Visibility

MAX_TITLE = 200
MAX_TUNES_PER_PAGE = 100
MAX_STEPS = 20_000  # the trainer's bound, checked here so a bad value never reaches the queue
MAX_PRESET = 60
MAX_ID = 2**63 - 1  # SQLite's largest INTEGER


@dataclass(frozen=True, kw_only=True)
class PromptCreate(PromptOptions):
    """A prompt to generate: the spec's fields (`pipelines.prompt_spec`, where each is documented and checked)
    plus where its result goes. `text` may use `{{subject}}`, `{{token}}`, `{{class}}` and characteristics,
    and up to 4 `<lora:TUNE_ID:WEIGHT>` tags that add other tunes of the caller (see `split_lora_tags`).
    """

    callback: str | None = None
    pack_id: str | None = None  # set by the service for prompts that come from a pack
    pack_prompt: str | None = None  # "class/index" in that pack

    def __post_init__(self) -> None:
        super().__post_init__()
        split_lora_tags(self.text)  # the tags' syntax; the service checks the tunes they name
        if self.callback is not None and not isinstance(self.callback, str):
            raise ValidationError("callback", self.callback, "must be a URL")

    def sized_for(self, resolution: int) -> PromptCreate:
        """This prompt with w/h set from `aspect_ratio` at a branch's resolution (`PromptOptions.size_for`)."""
        if self.aspect_ratio is None or (self.w and self.h):
            return self
        w, h = self.size_for(resolution)
        return replace(self, w=w, h=h)


@dataclass(frozen=True)
class TuneCreate:
    """A new tune: photos (files and/or URLs) of one subject, and optionally prompts to run once trained.

    `model_type` is what trains: "lora", or "pti" (pivotal tuning: new tokens plus a LoRA, SDXL branches only);
    None is the branch's default (`pti` on sdxl1, as Astria does; `lora` elsewhere). The service checks it against
    the branch and stores it on the tune (`Tune.model_type`). The other Astria compatibility fields are checked,
    stored (`Tune.api_fields`) and echoed back: `preset` (a label of at most 60 characters), `base_tune_id` and
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
    styles: Sequence[str] = ()  # pack prompt keys ("pack/class/index", see `Studio.list_styles`) run after training
    visibility: str = "private"  # "public": its avatars go on the showcase (`storage.records.Visibility`)

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
        if isinstance(self.styles, str) or not isinstance(self.styles, Sequence):
            raise ValidationError("styles", self.styles, 'must be a list of style keys, e.g. ["fantasy/woman/0"]')
        object.__setattr__(self, "styles", tuple(self.styles))
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS
        ):
            raise ValidationError("steps", self.steps, f"must be an integer between 1 and {MAX_STEPS}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ValidationError("seed", self.seed, f"must be an integer between 0 and {MAX_SEED}")
        if len(self.prompts) > 64:
            raise ValidationError("prompts_attributes", len(self.prompts), "must hold at most 64 prompts")
        object.__setattr__(self, "visibility", check_visibility(self.visibility))

    def _check_api_fields(self) -> None:
        if self.base_tune_id is not None and (
            isinstance(self.base_tune_id, bool) or not isinstance(self.base_tune_id, int) or self.base_tune_id < 1
        ):
            raise ValidationError("base_tune_id", self.base_tune_id, "must be a positive integer")
        if self.model_type == "":
            object.__setattr__(self, "model_type", None)
        if self.model_type is not None and self.model_type not in MODEL_TYPES:
            raise ValidationError("model_type", self.model_type, f"must be one of {', '.join(MODEL_TYPES)}")
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
        """The Astria compatibility fields as stored on the tune (`model_type` has a column of its own)."""
        return {
            "base_tune_id": self.base_tune_id,
            "preset": self.preset,
            "training_face_correct": self.training_face_correct,
        }


def prompts_from(items: object, *, field: str = "prompts_attributes") -> tuple[PromptCreate, ...]:
    """Prompts sent as a list of objects (REST's `prompts_attributes`, the Gradio API's JSON): the spec's fields
    and `callback`; other keys are ignored, as Astria clients send options this server does not have.

    Raises:
        ValidationError: not a list of objects, or a bad field, named as sent (`prompts_attributes[1].num_images`).
    """
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        raise ValidationError(field, items, 'must be a list of prompts, e.g. [{"text": "{{subject}} as an astronaut"}]')
    prompts = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValidationError(f"{field}[{index}]", item, "must be an object with at least `text`")
        values = {name: item[name] for name in (*FIELDS, "callback") if name in item}
        for name in FIELDS:  # Astria's short names (`ar`)
            alias = rule_of(name).alias
            if alias and alias in item and name not in values:
                values[name] = item[alias]
        if "text" not in values:
            raise ValidationError(f"{field}[{index}].text", None, "is required")
        try:
            prompts.append(PromptCreate(**values))
        except ValidationError as error:
            raise ValidationError(f"{field}[{index}].{error.field}", error.value, error.message) from None
    return tuple(prompts)


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


def check_visibility(value: object) -> str:
    """A tune's visibility, "private" or "public" (None: private).

    Raises:
        ValidationError: anything else, naming `visibility`.
    """
    if value is None:
        return Visibility.PRIVATE
    if value not in tuple(Visibility):
        raise ValidationError("visibility", value, "must be private or public")
    return Visibility(value).value
