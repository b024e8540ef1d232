"""Generation: one base pipeline per branch kept loaded, LoRAs as named adapters in a small LRU cache.

Adapters are shared state of a pipeline's UNet, so one generation runs at a time per pipeline (a lock);
switching tunes activates another adapter instead of reloading the base model. Face re-painting and the
hires/super-resolution passes reuse the same modules through image-to-image pipelines (no extra weights).

Prompts are encoded once per request with compel (`encode_prompts`): past CLIP's 77 tokens in 75-token
chunks rather than cut, with weighting syntax, and every pass of the request gets the same embeddings.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.device import Placement, pick_placement
from pipelines.errors import GenerationCancelledError, ValidationError
from pipelines.prompt_spec import MAX_SEED, MAX_SIDE, SCHEDULERS, PromptOptions, sampling_for
from pipelines.prompts import to_compel_syntax
from pipelines.registry import Branch, get_branch, load_pipeline, resolve_model_dir
from pipelines.settings import Settings
from pipelines.train import LORA_WEIGHTS_NAME
from pipelines.train_pti import EMBEDDINGS_NAME, load_pivotal, unload_pivotal

if TYPE_CHECKING:
    from PIL import Image

FACE_STRENGTH = 0.4  # enough to redraw features at the higher resolution, little enough to keep the pose
FACE_PADDING = 2.0  # crop side / face side: includes hair and chin, so the blend seam falls on skin/background
MAX_FACES = 4
HIRES_FACTOR, HIRES_STRENGTH = 1.5, 0.45
SUPER_RES_FACTOR, SUPER_RES_STRENGTH = 2.0, 0.25


@dataclass(frozen=True)
class LoraSpec:
    """A trained LoRA to apply: `name` is for people (a tune id), `path` the folder with the weights."""

    name: str
    path: Path
    weight: float = 1.0
    token: str | None = None  # the tune's token: a pivotal-tuning LoRA swaps it for its trained tokens

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not -2.0 <= self.weight <= 2.0:
            raise ValidationError(f"lora[{self.name}].weight", self.weight, "must be between -2 and 2")

    @property
    def weights_file(self) -> Path:
        return self.path / LORA_WEIGHTS_NAME if self.path.is_dir() else self.path

    @property
    def adapter_name(self) -> str:
        """Identifies the exact file version: a retrained tune gets a new adapter, not a stale cached one."""
        file = self.weights_file
        stamp = f"{file.resolve()}:{file.stat().st_mtime_ns}:{file.stat().st_size}"
        return "lora_" + hashlib.sha1(stamp.encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class GenerationRequest(PromptOptions):
    """One prompt's worth of images: the spec's fields (`pipelines.prompt_spec`) with `text` already rendered
    (see `pipelines.prompts`), and the LoRAs to apply."""

    loras: tuple[LoraSpec, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "loras", tuple(self.loras))
        if not self.text.strip():
            raise ValidationError("text", self.text, "must be non-empty text")

    def candidates(self) -> GenerationRequest:
        """The request for every image to render: its `best_of` candidates (the caller keeps the best), or as is."""
        return replace(self, num_images=self.images_rendered, best_of=None)


@dataclass(frozen=True)
class GeneratedImage:
    image: Image.Image
    seed: int


@dataclass(frozen=True)
class GenerationResult:
    images: list[GeneratedImage]
    prompt: str
    negative_prompt: str
    seconds: float

    @property
    def seeds(self) -> list[int]:
        return [item.seed for item in self.images]


@dataclass
class _Loaded:
    """A base pipeline kept in memory, its adapters (LRU order) and the lock that serialises its use."""

    pipe: Any
    branch: Branch
    base_scheduler_config: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: OrderedDict[str, str] = field(default_factory=OrderedDict)  # adapter name -> file
    img2img: Any = None
    lora_loads: int = 0
    fused: tuple[str, float] | None = None  # the one adapter merged into the base weights, at its weight
    pivotal: dict[str, list[str]] = field(default_factory=dict)  # adapter name -> its loaded token embeddings


StepCallback = Callable[[int, int], None]
PromptEmbeds = dict[str, Any]  # the `prompt_embeds=`... keyword arguments of a diffusers pipeline call


class Generator:
    """Generates images for every branch of one process; thread-safe.

    Args:
        settings: where models live and how many adapters to keep per pipeline.
        device: overrides `settings.device` ("auto", "cpu", "cuda", "cuda:N").
    """

    def __init__(self, settings: Settings, *, device: str | None = None):
        self.settings = settings
        self.device = device or settings.device
        self._placement: Placement | None = None  # resolved on first use: torch is imported only then
        self._loaded: dict[str, _Loaded] = {}
        self._loading = threading.Lock()
        self.base_loads = 0

    @property
    def placement(self) -> Placement:
        if self._placement is None:
            self._placement = pick_placement(self.device)
        return self._placement

    @property
    def loaded_branches(self) -> tuple[str, ...]:
        """The branches whose base pipeline is in memory (a worker prefers prompts on these)."""
        return tuple(self._loaded)

    def generate(
        self,
        branch_name: str,
        request: GenerationRequest,
        *,
        on_step: StepCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        """Generate `request.num_images` images; image i uses seed `seed + i` (same seed, same images).

        Raises:
            ValidationError: unknown branch, or a LoRA whose file is missing.
            ModelUnavailableError: the branch's base weights cannot be found.
            GenerationCancelledError: `should_cancel` returned True between steps.
        """
        started = time.monotonic()
        branch = get_branch(branch_name)
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
        seeds = [seed + i for i in range(request.num_images)]
        width, height = _fit(request.size_for(branch.resolution), branch.family)
        if branch.is_mock:
            images = [render_placeholder(request.text, s, width, height) for s in seeds]
        else:
            for spec in request.loras:
                if not spec.weights_file.exists():
                    raise ValidationError("loras", spec.name, "has no LoRA weights (its file is gone)")
            loaded = self._load(branch)
            with loaded.lock:
                images = self._run(loaded, request, seeds, width, height, on_step, should_cancel)
        results = [GeneratedImage(image, s) for image, s in zip(images, seeds, strict=True)]
        return GenerationResult(results, request.text, request.negative_prompt, time.monotonic() - started)

    def refine_faces(self, branch_name: str, images: list[Image.Image], request: GenerationRequest, seed: int) -> list:
        """Re-paint each detected face at the model's resolution with the request's LoRAs and blend it back."""
        loaded = self._load(get_branch(branch_name))
        request = _sampled(request, loaded.branch.family)
        with loaded.lock:
            self._activate(loaded, request.loras)
            self._use_scheduler(loaded, request.scheduler)
            text = _with_pivotal_tokens(loaded, request)
            embeds = encode_prompts(loaded.pipe, loaded.branch.family, text, request.negative_prompt)
            return [self._refine_faces_one(loaded, image, request, embeds, seed + i) for i, image in enumerate(images)]

    def loaded_adapters(self, branch_name: str) -> list[str]:
        """Adapter names cached on a branch's pipeline, least recently used first."""
        loaded = self._loaded.get(branch_name)
        return list(loaded.adapters) if loaded else []

    def lora_loads(self, branch_name: str) -> int:
        """How many times a LoRA file was read into the branch's pipeline (cache misses)."""
        loaded = self._loaded.get(branch_name)
        return loaded.lora_loads if loaded else 0

    # -- internals -------------------------------------------------------------------------------

    def _load(self, branch: Branch) -> _Loaded:
        with self._loading:
            if branch.name not in self._loaded:
                model_dir = resolve_model_dir(self.settings, branch)
                pipe = load_pipeline(model_dir, branch.family, self.placement)
                self._loaded[branch.name] = _Loaded(pipe, branch, dict(pipe.scheduler.config))
                self.base_loads += 1
            return self._loaded[branch.name]

    def _run(
        self,
        loaded: _Loaded,
        request: GenerationRequest,
        seeds: list[int],
        width: int,
        height: int,
        on_step: StepCallback | None,
        should_cancel: Callable[[], bool] | None,
    ) -> list[Image.Image]:
        # 1. Adapters and scheduler (the family's defaults where the request leaves them empty)
        request = _sampled(request, loaded.branch.family)
        self._activate(loaded, request.loras)
        self._use_scheduler(loaded, request.scheduler)
        # 2. Prompts, encoded once for every pass (after the adapters: a LoRA may carry text-encoder layers or,
        # from pivotal tuning, token embeddings that take the place of the tune's token)
        text = _with_pivotal_tokens(loaded, request)
        embeds = encode_prompts(loaded.pipe, loaded.branch.family, text, request.negative_prompt)
        # 3. Text to image, one generator per image so each seed reproduces its image alone
        pipe = loaded.pipe
        cancelled = False

        def step_end(pipeline: Any, step: int, timestep: Any, tensors: dict) -> dict:
            nonlocal cancelled
            if on_step is not None:
                on_step(step + 1, request.steps)
            if should_cancel is not None and should_cancel():
                cancelled = True
                pipeline._interrupt = True
            return tensors

        images = pipe(
            **embeds,
            num_images_per_prompt=len(seeds),
            width=width,
            height=height,
            num_inference_steps=request.steps,
            guidance_scale=request.cfg_scale,
            generator=[self._torch_generator(s) for s in seeds],
            callback_on_step_end=step_end,
        ).images
        if cancelled:
            raise GenerationCancelledError("generation was cancelled")
        # 4. Optional passes, each an image-to-image run of the same model with the same embeddings
        if request.hires_fix:
            images = self._upscale_pass(loaded, images, request, embeds, seeds, HIRES_FACTOR, HIRES_STRENGTH)
        if request.super_resolution:
            images = self._upscale_pass(loaded, images, request, embeds, seeds, SUPER_RES_FACTOR, SUPER_RES_STRENGTH)
        if request.inpaint_faces:
            images = [
                self._refine_faces_one(loaded, im, request, embeds, s) for im, s in zip(images, seeds, strict=True)
            ]
        return images

    def _activate(self, loaded: _Loaded, loras: tuple[LoraSpec, ...]) -> None:
        """Load missing adapters (evicting the least recently used), then enable exactly the requested ones.

        One LoRA alone is fused into the base weights (a tuned generation then costs what the base costs); it is
        unfused before anything else runs. Several run as separate, weighted adapters."""
        pipe = loaded.pipe
        wanted = [spec.adapter_name for spec in loras]
        fused = (wanted[0], loras[0].weight) if len(loras) == 1 else None
        if loaded.fused is not None and loaded.fused != fused:
            pipe.unfuse_lora()
            loaded.fused = None
        for spec, name in zip(loras, wanted, strict=True):
            if name not in loaded.adapters:
                self._evict(loaded, keep=set(wanted), room_for=1)
                pipe.load_lora_weights(str(spec.weights_file), adapter_name=name)
                loaded.adapters[name] = str(spec.weights_file)
                loaded.lora_loads += 1
                if (spec.path / EMBEDDINGS_NAME).is_file():  # pivotal tuning: its tokens, under names of its own
                    tokens = [f"<{name}_{i}>" for i in range(_token_count(spec.path))]
                    loaded.pivotal[name] = load_pivotal(pipe, spec.path, tokens=tokens)
            loaded.adapters.move_to_end(name)
        if loras:
            pipe.enable_lora()
            pipe.set_adapters(wanted, adapter_weights=[spec.weight for spec in loras])
            if fused is not None and loaded.fused is None:
                pipe.fuse_lora(adapter_names=wanted)
                loaded.fused = fused
        elif loaded.adapters:
            pipe.disable_lora()

    def _evict(self, loaded: _Loaded, *, keep: set[str], room_for: int) -> None:
        capacity = self.settings.lora_cache_size
        for name in list(loaded.adapters):
            if len(loaded.adapters) + room_for <= capacity:
                break
            if name not in keep:
                loaded.pipe.delete_adapters(name)
                del loaded.adapters[name]
                if name in loaded.pivotal:
                    unload_pivotal(loaded.pipe, loaded.pivotal.pop(name))

    def _use_scheduler(self, loaded: _Loaded, name: str) -> None:
        import diffusers

        class_name, extra = SCHEDULERS[name]
        scheduler = getattr(diffusers, class_name).from_config(loaded.base_scheduler_config, **extra)
        loaded.pipe.scheduler = scheduler
        if loaded.img2img is not None:
            loaded.img2img.scheduler = scheduler

    def _image_to_image(self, loaded: _Loaded) -> Any:
        if loaded.img2img is None:
            from diffusers import AutoPipelineForImage2Image

            loaded.img2img = AutoPipelineForImage2Image.from_pipe(loaded.pipe)
            loaded.img2img.set_progress_bar_config(disable=True)
        loaded.img2img.scheduler = loaded.pipe.scheduler
        return loaded.img2img

    def _img2img(
        self,
        loaded: _Loaded,
        image: Image.Image,
        request: GenerationRequest,
        embeds: PromptEmbeds,
        seed: int,
        strength: float,
    ) -> Image.Image:
        pipe = self._image_to_image(loaded)
        # FLUX's image-to-image resizes to its default 1024 px unless told the size
        size = {"width": image.width, "height": image.height} if loaded.branch.family == "flux" else {}
        return pipe(
            **embeds,
            **size,
            image=image,
            strength=strength,
            num_inference_steps=max(request.steps, round(1 / strength) + 1),
            guidance_scale=request.cfg_scale,
            generator=self._torch_generator(seed),
        ).images[0]

    def _upscale_pass(
        self,
        loaded: _Loaded,
        images: list[Image.Image],
        request: GenerationRequest,
        embeds: PromptEmbeds,
        seeds: list[int],
        factor: float,
        strength: float,
    ) -> list[Image.Image]:
        """Upscale (Lanczos) then a low-strength image-to-image pass that re-draws fine detail."""
        from PIL import Image

        out = []
        for image, seed in zip(images, seeds, strict=True):
            size = _fit(_scaled_size(image.size, factor), loaded.branch.family)
            if size == image.size:
                out.append(image)
                continue
            upscaled = image.resize(size, Image.Resampling.LANCZOS)
            out.append(self._img2img(loaded, upscaled, request, embeds, seed, strength))
        return out

    def _refine_faces_one(
        self, loaded: _Loaded, image: Image.Image, request: GenerationRequest, embeds: PromptEmbeds, seed: int
    ) -> Image.Image:
        from PIL import Image

        from pipelines.faces import detect_faces

        result = image.copy()
        resolution = loaded.branch.resolution
        for face in detect_faces(image, kind="human")[:MAX_FACES]:
            left, top, side = face.expanded_square(FACE_PADDING, image.size)
            crop = image.crop((left, top, left + side, top + side)).resize(
                (resolution, resolution), Image.Resampling.LANCZOS
            )
            painted = self._img2img(loaded, crop, request, embeds, seed, FACE_STRENGTH)
            painted = painted.resize((side, side), Image.Resampling.LANCZOS)
            result.paste(painted, (left, top), _feathered_mask(side))
        return result

    def _torch_generator(self, seed: int) -> Any:
        import torch

        # CPU generators give the same images on every device for a seed
        return torch.Generator("cpu").manual_seed(seed)


def encode_prompts(pipe: Any, family: str, prompt: str, negative_prompt: str = "") -> PromptEmbeds:
    """Encode a prompt and its negative with compel, for any number of tokens and with weighting syntax.

    CLIP reads 77 tokens; compel encodes longer prompts in 75-token chunks and concatenates them (the
    positive and negative padded to the same length), so the end of a long pack prompt still counts.
    Weights: `word+`/`word++`, `word-`, `(words)1.3` and `(words:1.3)`. SDXL's pooled embedding comes from
    the first chunk of its second encoder, as in diffusers. An empty negative prompt is encoded as "" on
    SD-1.5 and left to the pipeline on SDXL (zeros there), so short prompts give the images they gave
    before compel.

    Args:
        pipe: a loaded text-to-image pipeline (its tokenizers and text encoders are used).
        family: the branch family, "sd15", "sdxl" or "flux" (T5 reads up to 512 tokens; the negative is not used).
        prompt: the rendered prompt.
        negative_prompt: the rendered negative prompt, or "".

    Returns:
        keyword arguments for the pipeline and its image-to-image twin: `prompt_embeds`,
        `negative_prompt_embeds` and, for SDXL, `pooled_prompt_embeds`, `negative_pooled_prompt_embeds`; for FLUX
        `prompt_embeds` and `pooled_prompt_embeds`.

    Raises:
        ValidationError: `family` has no prompt encoder here.
    """
    from compel import CompelForFlux, CompelForSD, CompelForSDXL

    negative = to_compel_syntax(negative_prompt) if negative_prompt else None
    if family == "flux":  # guidance-distilled: no negative prompt; CLIP gives the pooled embedding, T5 the rest
        out = CompelForFlux(pipe)(to_compel_syntax(prompt))
        return {"prompt_embeds": out.embeds, "pooled_prompt_embeds": out.pooled_embeds}
    if family == "sdxl":
        out = CompelForSDXL(pipe)(to_compel_syntax(prompt), negative_prompt=negative)
        return {
            "prompt_embeds": out.embeds,
            "pooled_prompt_embeds": out.pooled_embeds,
            "negative_prompt_embeds": out.negative_embeds,
            "negative_pooled_prompt_embeds": out.negative_pooled_embeds,
        }
    if family == "sd15":
        out = CompelForSD(pipe)(to_compel_syntax(prompt), negative_prompt=negative or "")
        return {"prompt_embeds": out.embeds, "negative_prompt_embeds": out.negative_embeds}
    raise ValidationError("family", family, "has no prompt encoder; supported: sd15, sdxl, flux")


def _with_pivotal_tokens(loaded: _Loaded, request: GenerationRequest) -> str:
    """The prompt with each pivotal-tuning LoRA's tune token replaced by its loaded token embeddings."""
    pivotal = [
        (spec.token, loaded.pivotal[spec.adapter_name])
        for spec in request.loras
        if spec.token and loaded.pivotal.get(spec.adapter_name)
    ]
    return pivotal_text(request.text, pivotal)


def pivotal_text(text: str, tunes: Sequence[tuple[str, Sequence[str]]]) -> str:
    """`text` with each tune's token replaced by its trained tokens.

    Tunes that share a token (every tune is `ohwx` by default) take its occurrences in turn, in the order of the
    prompt's `<lora:…>` tags: "<lora:1:1> ohwx man and <lora:2:1> ohwx woman" gives the first `ohwx` to tune 1
    and the second to tune 2; any further occurrence goes to the last of them.

    Args:
        text: the prompt, its `<lora:…>` tags already taken out.
        tunes: `(token, trained tokens)` per pivotal-tuning LoRA, in tag order.
    """
    by_token: dict[str, list[str]] = {}
    for token, tokens in tunes:
        by_token.setdefault(token.casefold(), []).append("".join(tokens))
    for token, choices in by_token.items():
        text = re.sub(rf"(?<!\w){re.escape(token)}(?!\w)", _in_turn(choices), text, flags=re.IGNORECASE)
    return text


def _in_turn(choices: list[str]) -> Callable[[re.Match], str]:
    count = itertools.count()
    return lambda _: choices[min(next(count), len(choices) - 1)]


def _token_count(lora_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(lora_dir / EMBEDDINGS_NAME), framework="pt") as file:
        return file.get_slice("clip_l").get_shape()[0]


def _sampled(request: GenerationRequest, family: str) -> GenerationRequest:
    """The request with its family's scheduler and guidance where it leaves them empty (`sampling_for`)."""
    scheduler, cfg_scale = sampling_for(family, request.scheduler, request.cfg_scale)
    return replace(request, scheduler=scheduler, cfg_scale=cfg_scale)


def _fit(size: tuple[int, int], family: str) -> tuple[int, int]:
    """FLUX packs 2x2 latent patches: its sides are multiples of 16 (others: of 8, as sized)."""
    if family != "flux":
        return size
    return tuple(max(16, side // 16 * 16) for side in size)  # type: ignore[return-value]


def _scaled_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """Scale by `factor`, keep multiples of 8, cap the long side at MAX_SIDE."""
    factor = min(factor, MAX_SIDE / max(size))
    return tuple(max(8, int(side * factor) // 8 * 8) for side in size)  # type: ignore[return-value]


def _feathered_mask(side: int) -> Image.Image:
    """An ellipse with a soft edge: the re-painted face blends into the original without a seam."""
    from PIL import Image, ImageDraw, ImageFilter

    mask = Image.new("L", (side, side), 0)
    inset = side // 8
    ImageDraw.Draw(mask).ellipse((inset, inset, side - inset, side - inset), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(radius=max(1, side // 16)))


def render_placeholder(prompt: str, seed: int, width: int, height: int) -> Image.Image:
    """The `fast` branch's image: a seed-coloured gradient with the prompt written on it."""
    import random
    import textwrap

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    top = tuple(rng.randrange(40, 216) for _ in range(3))
    bottom = tuple(rng.randrange(40, 216) for _ in range(3))
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(1, height - 1)
        draw.line([(0, y), (width, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    text = "\n".join(textwrap.wrap(prompt, width=max(10, width // 9))[:8]) + f"\n\nseed {seed}"
    draw.multiline_text((12, 12), text, fill=(255, 255, 255))
    return image
