"""The HTTP edge's request and response models (pydantic): what OpenAPI documents and what bodies are checked against.

Types are checked here (lax, so form strings such as "4" or "true" are accepted); ranges, names and URLs are
checked once by the service's typed requests, whose errors name the field. Unknown fields are ignored, as
Astria clients send options this server does not have.
"""

from __future__ import annotations

from dataclasses import MISSING
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model

from pipelines.prompt_spec import FIELDS, default_of, rule_of
from studio.requests import MAX_ID

_LAX = ConfigDict(extra="ignore", populate_by_name=True)
TuneId = Annotated[int, Field(ge=1, le=MAX_ID)]  # a larger id is refused (422) before it reaches a query


def _spec_field(name: str) -> tuple[Any, Any]:
    """One prompt spec field as a pydantic field: its type (lax), default, description and alias; its range is
    checked by the spec itself, so REST and the Gradio API refuse a value with the same error."""
    rule, default = rule_of(name), default_of(name)
    kind = rule.kind | None if rule.optional else rule.kind
    names = AliasChoices(name, rule.alias) if rule.alias else None  # documented by its name, the alias accepted
    return kind, Field(... if default is MISSING else default, validation_alias=names, description=rule.doc)


PromptFields = create_model(  # a prompt's body: the fields of `pipelines.prompt_spec`, plus its callback
    "PromptFields",
    __config__=_LAX,
    **{name: _spec_field(name) for name in FIELDS},
    callback=(str | None, Field(None, description="URL to POST the prompt to once its images are done.")),
)


class PromptAttributes(BaseModel):
    model_config = _LAX
    callback: str | None = Field(None, description="Callback for every prompt created with the tune.")


class TuneFields(BaseModel):
    model_config = _LAX
    title: str = Field(description="Idempotency key: the same title returns the existing tune.")
    name: str = Field(description="The class: man, woman, boy, girl, couple, cat, dog…")
    image_urls: list[str] = Field(default_factory=list, description="Photo URLs (or upload `tune[images][]` files).")
    callback: str | None = None
    branch: str | None = Field(None, description="sd15, sdxl1, flux1, fast (mock), tiny or tiny-flux (CPU demos)")
    steps: int | None = None
    token: str | None = None
    face_crop: bool | None = None
    training_face_correct: bool = False
    base_tune_id: TuneId | None = None
    model_type: str | None = Field(
        None,
        description="lora, or pti (pivotal tuning: new tokens + a LoRA, sdxl1 only); empty: pti on sdxl1, else lora.",
    )
    auto_extend: bool = False
    preset: str | None = None
    characteristics: dict[str, str] = Field(default_factory=dict)
    prompts_attributes: list[PromptFields] = Field(default_factory=list)
    prompt_attributes: PromptAttributes | None = None
    prompts_callback: str | None = Field(None, description="Called once when every prompt of the tune has ended.")
    styles: list[str] = Field(
        default_factory=list, description='Pack prompts to run after training, e.g. ["fantasy/woman/0"].'
    )
    visibility: str = Field(
        "private", description="private (the default: only you see its avatars) or public (they go on /showcase)."
    )


class PackTuneFields(TuneFields):
    title: str = ""
    name: str = ""
    tune_ids: list[TuneId] = Field(default_factory=list, description="Reuse these trained tunes instead of training.")


class TuneBody(BaseModel):
    tune: TuneFields


class PackTuneBody(BaseModel):
    tune: PackTuneFields


class PromptBody(BaseModel):
    prompt: PromptFields


class TuneOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # documented fields; the rest (characteristics, error…) pass through
    id: int
    title: str
    name: str
    token: str
    branch: str
    model_type: str
    steps: int | None
    face_crop: bool
    status: str
    progress: float
    eta: str | None
    trained_at: str | None
    started_training_at: str | None
    expires_at: str | None
    created_at: str
    updated_at: str
    url: str
    orig_images: list[str]
    ckpt_url: str | None
    ckpt_urls: list[str]
    visibility: str = Field(description="private or public (its avatars are on /showcase).")


class TuneChange(BaseModel):
    model_config = _LAX
    visibility: str = Field(description="private or public: public avatars appear on /showcase for every visitor.")


class TuneChangeBody(BaseModel):
    tune: TuneChange


class ImageChange(BaseModel):
    model_config = _LAX
    hidden: bool = Field(description="true keeps this avatar off the showcase although its tune is public.")


class ImageChangeBody(BaseModel):
    image: ImageChange


class ImageOut(BaseModel):
    id: int
    url: str
    seed: int
    width: int
    height: int
    liked: bool
    hidden: bool = Field(False, description="Kept off the showcase by you (PATCH /images/{id}).")
    likeness: float | None = Field(
        description="How much the image looks like the tune's subject, 0-1 (0.5 and more: the same person by "
        "dlib's threshold); null without a face, for non-person tunes, or with identity checks off."
    )


class PromptOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    tune_id: int
    text: str
    negative_prompt: str
    num_images: int
    seed: int | None
    steps: int
    cfg_scale: float
    status: str
    created_at: str
    trained_at: str | None
    images: list[str]
    image_details: list[ImageOut]


class ErrorOut(BaseModel):
    error: str
    errors: dict[str, list[str]] = Field(default_factory=dict)
