"""A prompt's generation fields, defined once: each field's type, default, range and meaning.

`PromptOptions` is the spec. Everything else is derived from it or checked against it:
- the REST body (`rest.schemas.PromptFields`) and its form-data documentation,
- the Gradio API's `create_prompt` parameters (`ui.api`),
- the keys a pack prompt may set (`packs.loader`, which adds pack-only rules),
- the service's `PromptCreate` and the worker's `GenerationRequest` (both subclasses),
- the prompt record's columns (`STORED_FIELDS`; `tests/pipelines/test_prompt_spec.py` checks the record and table).

Adding a field means adding it here, plus a storage migration when it is stored. No torch imports: the
web process reads this module.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, MISSING, dataclass, field, fields
from typing import Any

from pipelines.errors import ValidationError

DEFAULT_SCHEDULER = "dpm++2m_karras"
# name -> (diffusers scheduler class, extra config); the names are the `scheduler` field's choices
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),  # as SD-1.5 ships it; PRK steps fail below ~5 steps
    "unipc": ("UniPCMultistepScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    DEFAULT_SCHEDULER: ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "dpm++2m_sde_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
    ),
    "lcm": ("LCMScheduler", {}),
    "flow_match_euler": ("FlowMatchEulerDiscreteScheduler", {}),  # FLUX's own, the only one it runs
}
FLOW_MATCH_SCHEDULERS = ("flow_match_euler",)


@dataclass(frozen=True)
class Sampling:
    """A model family's samplers: its default scheduler and guidance, and the schedulers it can run."""

    scheduler: str
    cfg_scale: float
    schedulers: tuple[str, ...]


_DIFFUSION_SCHEDULERS = tuple(name for name in SCHEDULERS if name not in FLOW_MATCH_SCHEDULERS)
FAMILY_SAMPLING: dict[str, Sampling] = {
    "sd15": Sampling(DEFAULT_SCHEDULER, 7.0, _DIFFUSION_SCHEDULERS),
    "sdxl": Sampling(DEFAULT_SCHEDULER, 7.0, _DIFFUSION_SCHEDULERS),
    # FLUX.1 [dev] is guidance-distilled: `cfg_scale` is its guidance embedding (3.5 as in diffusers), no negative
    "flux": Sampling("flow_match_euler", 3.5, FLOW_MATCH_SCHEDULERS),
}
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1),
    "4:5": (4, 5),
    "5:4": (5, 4),
    "2:3": (2, 3),
    "3:2": (3, 2),
    "9:16": (9, 16),
    "16:9": (16, 9),
}
MAX_IMAGES = 8
MIN_SIDE, MAX_SIDE = 64, 2048
MAX_SEED = 2**32 - 1 - MAX_IMAGES  # image i uses seed + i
MAX_STEPS = 150
MAX_CFG = 30
MAX_TEXT_CHARS = 4000
MAX_NEGATIVE_CHARS = 2000


@dataclass(frozen=True)
class Rule:
    """How one field is checked and documented.

    `kind` is the Python type (str, int, float or bool); `optional` allows None; `stored` says whether the
    prompt record keeps it as a column (`aspect_ratio` becomes w/h, `face_correct` becomes `inpaint_faces`);
    `alias` is the other name REST accepts (Astria's `ar`).
    """

    kind: type
    doc: str
    optional: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    multiple_of: int | None = None
    max_chars: int | None = None
    stored: bool = True
    alias: str | None = None

    @property
    def expected(self) -> str:
        """What a valid value is, as an error message says it ("must be an integer between 1 and 8")."""
        if self.choices:
            return f"must be one of {', '.join(self.choices)}"
        if self.kind is bool:
            return "must be true or false"
        if self.kind is str:
            return f"must be text of at most {self.max_chars} characters" if self.max_chars else "must be text"
        noun = "an integer" if self.kind is int else "a number"
        return f"must be {noun} between {_number(self.low)} and {_number(self.high)}"

    def check(self, name: str, value: object) -> None:
        """Raises ValidationError naming `name` and `value` when `value` breaks this rule."""
        if value is None and self.optional:
            return
        if not self._has_kind(value) or not self._in_range(value):
            raise ValidationError(name, value, self.expected)
        if self.multiple_of and value % self.multiple_of:  # type: ignore[operator]
            raise ValidationError(name, value, f"must be a multiple of {self.multiple_of}")

    def _has_kind(self, value: object) -> bool:
        if isinstance(value, bool):
            return self.kind is bool
        if self.kind is float:
            return isinstance(value, int | float)
        return isinstance(value, self.kind)

    def _in_range(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        if self.max_chars is not None:
            return len(value) <= self.max_chars
        if self.low is not None and value < self.low:
            return False
        return self.high is None or value <= self.high


def _number(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def spec(default: object, rule: Rule) -> Any:
    """A dataclass field of the spec: its default and its rule (kept in the field's metadata)."""
    return field(default=default, metadata={"rule": rule})


_SIDE = {"kind": int, "optional": True, "low": MIN_SIDE, "high": MAX_SIDE, "multiple_of": 8}


@dataclass(frozen=True)
class PromptOptions:
    """What to generate and how: the fields every way of making a prompt shares, checked on construction.
    `text` may be given by position; the others by name."""

    text: str = spec(
        MISSING,
        Rule(
            str,
            "What to draw; may use {{subject}}, {{token}}, {{class}} and <lora:ID:weight>.",
            max_chars=MAX_TEXT_CHARS,
        ),
    )
    _: KW_ONLY
    negative_prompt: str = spec("", Rule(str, "What to keep out of the images.", max_chars=MAX_NEGATIVE_CHARS))
    num_images: int = spec(4, Rule(int, "How many images to make.", low=1, high=MAX_IMAGES))
    seed: int | None = spec(
        None,
        Rule(
            int, "Seed of the first image (image i uses seed + i); empty: random.", optional=True, low=0, high=MAX_SEED
        ),
    )
    w: int | None = spec(None, Rule(doc="Width in pixels; empty: from aspect_ratio or the model's size.", **_SIDE))
    h: int | None = spec(None, Rule(doc="Height in pixels; empty: from aspect_ratio or the model's size.", **_SIDE))
    cfg_scale: float | None = spec(
        None,
        Rule(
            float,
            "How closely to follow the text (guidance); empty: the base model's (7 for SD, 3.5 for FLUX).",
            optional=True,
            low=0,
            high=MAX_CFG,
        ),
    )
    steps: int = spec(30, Rule(int, "Denoising steps.", low=1, high=MAX_STEPS))
    scheduler: str | None = spec(
        None,
        Rule(
            str,
            f"The sampler; empty: the base model's ({DEFAULT_SCHEDULER} for SD; FLUX runs only flow_match_euler).",
            optional=True,
            choices=tuple(SCHEDULERS),
        ),
    )
    super_resolution: bool = spec(False, Rule(bool, "Upscale the result 2x and refine it."))
    inpaint_faces: bool = spec(False, Rule(bool, "Redraw each face at a higher resolution."))
    hires_fix: bool = spec(False, Rule(bool, "Render larger, then refine."))
    aspect_ratio: str | None = spec(
        None,
        Rule(
            str,
            "The shape, at the model's pixel count, when w and h are not both given.",
            optional=True,
            choices=tuple(ASPECT_RATIOS),
            stored=False,
            alias="ar",
        ),
    )
    face_correct: bool = spec(False, Rule(bool, "Astria's name for inpaint_faces: true sets it.", stored=False))
    best_of: int | None = spec(
        None,
        Rule(
            int,
            "Render this many and keep the num_images most like the subject (person tunes); empty: keep all.",
            optional=True,
            low=2,
            high=MAX_IMAGES,
        ),
    )

    def __post_init__(self) -> None:
        for item in fields(PromptOptions):
            rule_of(item.name).check(item.name, getattr(self, item.name))
        if self.face_correct:
            object.__setattr__(self, "inpaint_faces", True)
        if self.best_of is not None and self.best_of <= self.num_images:
            raise ValidationError("best_of", self.best_of, f"must be more than num_images ({self.num_images})")

    @property
    def images_rendered(self) -> int:
        """How many images are made (and charged): the `best_of` candidates, or `num_images`."""
        return self.best_of or self.num_images

    def size_for(self, resolution: int) -> tuple[int, int]:
        """(w, h) to render at on a model of `resolution`: w and h when both are given, else `aspect_ratio` at
        the model's pixel count (multiples of 8), else each missing side at `resolution`."""
        if self.aspect_ratio is not None and not (self.w and self.h):
            return size_for_aspect(self.aspect_ratio, resolution)
        return self.w or resolution, self.h or resolution


_RULES: dict[str, Rule] = {item.name: item.metadata["rule"] for item in fields(PromptOptions)}
_DEFAULTS: dict[str, Any] = {item.name: item.default for item in fields(PromptOptions)}
FIELDS: tuple[str, ...] = tuple(_RULES)  # in the order interfaces list them
STORED_FIELDS: tuple[str, ...] = tuple(name for name, rule in _RULES.items() if rule.stored)  # the record's columns


def rule_of(name: str) -> Rule:
    """The rule of one spec field."""
    return _RULES[name]


def default_of(name: str) -> Any:
    """The default of one spec field (`MISSING` for `text`, which is required)."""
    return _DEFAULTS[name]


def option_values(source: object, names: tuple[str, ...] = FIELDS) -> dict[str, Any]:
    """The spec fields `names` read from any object that has them (a record, a pack prompt, a request)."""
    return {name: getattr(source, name) for name in names}


def size_for_aspect(aspect_ratio: str, resolution: int) -> tuple[int, int]:
    """(w, h) with the pixel count of a `resolution`-square image in the given shape, multiples of 8."""
    rw, rh = ASPECT_RATIOS[aspect_ratio]
    scale = (resolution * resolution / (rw * rh)) ** 0.5
    return max(MIN_SIDE, round(rw * scale / 8) * 8), max(MIN_SIDE, round(rh * scale / 8) * 8)


def sampling_for(
    family: str, scheduler: str | None, cfg_scale: float | None, *, field: str = "scheduler"
) -> tuple[str, float]:
    """The scheduler and guidance a prompt runs with on a model family: its own values, or the family's defaults.

    Raises:
        ValidationError: `field` names a scheduler the family cannot run (the message names those it can).
    """
    sampling = FAMILY_SAMPLING.get(family, FAMILY_SAMPLING["sd15"])
    if scheduler is not None and scheduler not in sampling.schedulers:
        raise ValidationError(field, scheduler, f"must be one of {', '.join(sampling.schedulers)} on {family} models")
    return scheduler or sampling.scheduler, sampling.cfg_scale if cfg_scale is None else cfg_scale
