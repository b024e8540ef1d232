"""DreamBooth LoRA training on the denoiser of SD-1.5, SDXL (UNet) and FLUX.1 (transformer) models, with peft.

Fast by design: VAE latents (their mean and std) and text embeddings are computed once before the loop
and the frozen VAE and text encoders are then freed, so a step is one denoiser forward and backward. Every
random draw of step `k` comes from a generator seeded by `(seed, k)`, so a run resumed from a checkpoint
continues exactly as the uninterrupted run would have.

The loop, checkpoints, progress and metadata are shared; what differs between architectures (which module
is trained, how captions are encoded, the noise and loss, the LoRA file's layout) is a `DenoiserFamily`:
`_UNetFamily` here for SD-1.5/SDXL, `FluxFamily` in `pipelines.train_flux`. SDXL pivotal tuning
(`model_type="pti"`: new token embeddings beside the UNet LoRA) runs its own loop in `pipelines.train_pti`.

Output folder after success:
    pytorch_lora_weights.safetensors   standard diffusers LoRA (`pipe.load_lora_weights(folder)`)
    lora_metadata.json                 branch, base model, token, class, steps, rank, seed, loss curve
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipelines.device import Placement, pick_placement
from pipelines.errors import TrainingCancelledError, ValidationError
from pipelines.registry import PIPELINE_CLASSES, Branch, load_pipeline

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from pipelines.photos import TrainingImage

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
METADATA_NAME = "lora_metadata.json"
CHECKPOINT_NAME = "checkpoint.pt"
LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
TRAINABLE_FAMILIES = ("sd15", "sdxl", "flux")
MODEL_TYPES = ("lora", "pti")
# settings of pivotal tuning only: left out of a LoRA run's fingerprint, so its checkpoints resume as before
_PTI_FIELDS = ("model_type", "num_new_tokens", "train_text_encoder_ti_frac", "ti_learning_rate")
_MAX_LOSS_POINTS = 1000
# Below this much GPU memory (GiB) gradient checkpointing is switched on: it costs ~25% speed.
_CHECKPOINTING_BELOW_GIB = {"sd15": 10, "sdxl": 22, "flux": 64}


@dataclass(frozen=True)
class TrainConfig:
    """What to train. Built by the caller from the branch defaults and the request; validated here."""

    branch: str
    family: str
    base_model: str
    token: str
    class_name: str
    steps: int
    learning_rate: float
    rank: int
    resolution: int
    seed: int = 0
    batch_size: int = 1
    random_flip: bool = True
    prior_preservation: bool = False
    prior_loss_weight: float = 1.0
    num_class_images: int = 100
    checkpoint_every: int = 100
    cache_latents: bool = True
    gradient_checkpointing: bool | None = None  # None: only when GPU memory requires it
    # "lora": a LoRA on the denoiser; "pti" (SDXL): pivotal tuning, new tokens + a UNet LoRA (pipelines.train_pti)
    model_type: str = "lora"
    num_new_tokens: int = 2  # pti: tokens <s0>, <s1>, ... added to both text encoders
    train_text_encoder_ti_frac: float = 0.5  # pti: the share of the steps (the first ones) that trains them
    ti_learning_rate: float = 3e-4  # pti: AdamW rate of the new token embeddings

    def __post_init__(self) -> None:
        if self.family not in TRAINABLE_FAMILIES:
            raise ValidationError("branch", self.branch, f"has no trainer for the {self.family!r} family yet")
        if self.model_type not in MODEL_TYPES:
            raise ValidationError("model_type", self.model_type, f"must be one of {', '.join(MODEL_TYPES)}")
        if self.model_type == "pti":
            self._check_pivotal()
        _check_range("steps", self.steps, 1, 20_000)
        _check_range("rank", self.rank, 1, 256)
        _check_range("batch_size", self.batch_size, 1, 64)
        _check_range("checkpoint_every", self.checkpoint_every, 1, 1_000_000)
        _check_range("num_class_images", self.num_class_images, 1, 1000)
        _check_range("seed", self.seed, 0, 2**32 - 1)
        if self.resolution % 8 or not 64 <= self.resolution <= 2048:
            raise ValidationError("resolution", self.resolution, "must be a multiple of 8 between 64 and 2048")
        if self.family == "flux" and self.resolution % 16:
            # the VAE downsamples 8x and FLUX packs 2x2 latent patches into one token
            raise ValidationError("resolution", self.resolution, "must be a multiple of 16 for FLUX")
        if not (0 < self.learning_rate <= 1e-2) or math.isnan(self.learning_rate):
            raise ValidationError("learning_rate", self.learning_rate, "must be in (0, 0.01]")
        if not self.token.strip() or not self.class_name.strip():
            raise ValidationError("token", (self.token, self.class_name), "and `class_name` must not be empty")

    def _check_pivotal(self) -> None:
        if self.family != "sdxl":
            raise ValidationError(
                "model_type", self.model_type, f"is only available on SDXL branches (sdxl1), not on {self.branch!r}"
            )
        _check_range("num_new_tokens", self.num_new_tokens, 1, 16)
        frac = self.train_text_encoder_ti_frac
        if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 < frac <= 1:
            raise ValidationError("train_text_encoder_ti_frac", frac, "must be in (0, 1]")
        if not (0 < self.ti_learning_rate <= 1e-2) or math.isnan(self.ti_learning_rate):
            raise ValidationError("ti_learning_rate", self.ti_learning_rate, "must be in (0, 0.01]")
        if not self.cache_latents:  # the pivotal loop re-encodes captions, never photos
            raise ValidationError("cache_latents", self.cache_latents, "must be true with model_type 'pti'")

    @classmethod
    def for_branch(cls, branch: Branch, *, class_name: str, base_model: str, **overrides: Any) -> TrainConfig:
        """The branch's defaults (token, steps, learning rate, rank, resolution) with `overrides` on top.

        Overrides set to None keep the default, so optional request fields can be passed straight through.
        """
        values: dict[str, Any] = {
            "branch": branch.name,
            "family": branch.family,
            "base_model": base_model,
            "class_name": class_name,
            "token": branch.token,
            "steps": branch.steps,
            "learning_rate": branch.learning_rate,
            "rank": branch.rank,
            "resolution": branch.resolution,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    @property
    def instance_caption(self) -> str:
        return f"{self.token} {self.class_name}"


@dataclass(frozen=True)
class TrainProgress:
    """A progress report; `phase` is "preparing", "training" or "saving"."""

    phase: str
    step: int
    total_steps: int
    loss: float | None = None
    eta_seconds: float | None = None
    message: str = ""


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    lora_path: Path
    metadata: dict[str, Any]
    resumed_from_step: int | None = None


ProgressCallback = Callable[[TrainProgress], None]


@dataclass
class _Batches:
    """Training data, cached as latent distributions + embeddings, or as pixels re-encoded each step."""

    captions: list[str]  # one per sample
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    latent_mean: torch.Tensor | None = None
    latent_std: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    cond: dict[str, torch.Tensor] = field(default_factory=dict)  # caption index -> rows by sample

    def __len__(self) -> int:
        return len(self.captions)


def train_lora(
    config: TrainConfig,
    images: Sequence[TrainingImage],
    output_dir: Path,
    *,
    model_dir: Path | None = None,
    pipeline: Any = None,
    class_images_dir: Path | None = None,
    device: str = "auto",
    on_progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a DreamBooth LoRA on the denoiser (UNet or FLUX transformer) and write it to `output_dir`.

    Args:
        config: what to train (branch defaults merged with the request).
        images: prepared training images (square, at `config.resolution`) with their captions.
        output_dir: where the LoRA, its metadata and the resumable checkpoint go.
        model_dir: a diffusers folder of the base model (or pass `pipeline`).
        pipeline: an already built pipeline of the family; the trainer takes ownership (frees parts of it).
        class_images_dir: cache of generated class images for prior preservation.
        device: "auto", "cpu", "cuda" or "cuda:N".
        on_progress: called at each phase and step with a `TrainProgress`.
        should_cancel: polled every step; when it returns True a checkpoint is saved and training stops.

    Returns:
        A `TrainResult` with the LoRA path and metadata.

    Raises:
        ValidationError: bad config or no images.
        TrainingCancelledError: `should_cancel` returned True; resume by calling again with the same inputs.
    """
    import torch

    report = on_progress or (lambda progress: None)
    # 1. Check inputs
    if not images:
        raise ValidationError("images", 0, "must contain at least one training image")
    for i, item in enumerate(images):
        if item.image.size != (config.resolution, config.resolution):
            raise ValidationError(f"images[{i}]", item.image.size, f"must be {config.resolution}x{config.resolution}")
    if pipeline is None and model_dir is None:
        raise ValidationError("model_dir", None, "or `pipeline` must be given")
    if config.prior_preservation and class_images_dir is None:
        raise ValidationError("class_images_dir", None, "is required with prior_preservation")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # the metadata marks a finished folder: drop a stale one so a crash below never pairs it with new weights
    (output_dir / METADATA_NAME).unlink(missing_ok=True)
    placement = pick_placement(device)
    family = denoiser_family(config.family, model_type=config.model_type)
    if config.model_type == "pti":  # the token embeddings train beside the LoRA: a loop of its own
        from pipelines.train_pti import train_pivotal  # imports this module: resolved at call time

        return train_pivotal(
            config,
            images,
            output_dir,
            family=family,
            placement=placement,
            model_dir=model_dir,
            pipeline=pipeline,
            class_images_dir=class_images_dir,
            on_progress=report,
            should_cancel=should_cancel,
        )
    started = time.monotonic()

    # 2. Load the base model (the denoiser may stay on the CPU until the encoders are freed)
    report(TrainProgress("preparing", 0, config.steps, message="loading base model"))
    pipe = pipeline if pipeline is not None else family.load(model_dir, placement)
    family.place(pipe, placement, whole=config.prior_preservation)
    fingerprint = _fingerprint(config, images)

    # 3. Class images for prior preservation (generated once per base model and class, then cached)
    class_images: list[Image.Image] = []
    if config.prior_preservation:
        report(TrainProgress("preparing", 0, config.steps, message="generating class images"))
        class_images = ensure_class_images(pipe, config, Path(class_images_dir), placement)

    # 4. Encode once: latents and text embeddings
    report(TrainProgress("preparing", 0, config.steps, message="encoding photos and captions"))
    encoder = _Encoder(pipe, config, placement, family)
    cache = config.cache_latents
    instance = _prepare_batches(encoder, [i.image for i in images], [i.caption for i in images], cache_latents=cache)
    prior = None
    if class_images:
        class_captions = [config.class_name] * len(class_images)
        prior = _prepare_batches(encoder, class_images, class_captions, cache_latents=cache)

    # 5. Free what the loop does not need
    denoiser = family.denoiser(pipe)
    noise_scheduler = family.training_scheduler(pipe)
    if cache:
        _free_encoders(pipe, placement)
        encoder = None
    denoiser.to(placement.device)  # FLUX's transformer joins the GPU only now, after the encoders left it

    # 6. LoRA on the denoiser's attention projections
    params = _add_lora(denoiser, config, placement, family)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=1e-2)
    scaler = torch.amp.GradScaler("cuda") if placement.dtype == torch.float16 and placement.is_cuda else None

    # 7. Resume from the last checkpoint of the same run, if any
    checkpoint_path = output_dir / CHECKPOINT_NAME
    start_step, losses = _load_checkpoint(checkpoint_path, fingerprint, denoiser, optimizer)
    resumed_from = start_step or None
    if resumed_from:
        report(TrainProgress("preparing", start_step, config.steps, message=f"resuming from step {start_step}"))

    # 8. The loop
    loop_started = time.monotonic()
    denoiser.train()
    for step in range(start_step, config.steps):
        if should_cancel is not None and should_cancel():
            _save_checkpoint(checkpoint_path, fingerprint, step, denoiser, optimizer, losses)
            raise TrainingCancelledError(step)
        loss = _train_step(
            family, denoiser, noise_scheduler, optimizer, scaler, config, instance, prior, encoder, step, placement
        )
        losses.append(loss)
        done = step + 1
        per_step = (time.monotonic() - loop_started) / (done - start_step)
        report(TrainProgress("training", done, config.steps, loss=loss, eta_seconds=per_step * (config.steps - done)))
        if done % config.checkpoint_every == 0 and done < config.steps:
            _save_checkpoint(checkpoint_path, fingerprint, done, denoiser, optimizer, losses)

    # 9. Save the LoRA in the diffusers format, then the metadata that marks the folder complete
    report(TrainProgress("saving", config.steps, config.steps, loss=losses[-1] if losses else None))
    lora_path = _save_lora(denoiser, family, output_dir)
    metadata = _metadata(config, images, losses, time.monotonic() - started, placement, resumed_from, family)
    _write_json_atomically(output_dir / METADATA_NAME, metadata)
    checkpoint_path.unlink(missing_ok=True)
    del pipe, denoiser, params, optimizer
    _release_memory(placement)
    return TrainResult(output_dir, lora_path, metadata, resumed_from)


def ensure_class_images(pipe: Any, config: TrainConfig, cache_root: Path, placement: Placement) -> list[Image.Image]:
    """Generate (once) and return `num_class_images` images of the plain class for prior preservation."""
    import torch
    from PIL import Image

    folder = cache_root / _safe_name(config.base_model) / f"{_safe_name(config.class_name)}-{config.resolution}"
    folder.mkdir(parents=True, exist_ok=True)
    images: list[Image.Image] = []
    for index in range(config.num_class_images):
        path = folder / f"{index:04d}.png"
        if not path.exists():
            generator = torch.Generator("cpu").manual_seed(index)
            image = pipe(
                config.class_name,
                height=config.resolution,
                width=config.resolution,
                num_inference_steps=25,
                generator=generator,
            ).images[0]
            tmp = path.with_suffix(".tmp.png")
            image.save(tmp)
            os.replace(tmp, path)
        images.append(Image.open(path).convert("RGB"))
    return images


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(name, value, f"must be an integer between {low} and {high}")


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80] or "_"


def _fingerprint(config: TrainConfig, images: Sequence[TrainingImage]) -> str:
    """Identifies a run: a checkpoint is only resumed by the same config on the same images."""
    digest = hashlib.sha256()
    fields_ = {k: v for k, v in asdict(config).items() if k != "checkpoint_every"}
    if config.model_type == "lora":
        fields_ = {k: v for k, v in fields_.items() if k not in _PTI_FIELDS}
    digest.update(json.dumps(fields_, sort_keys=True).encode())
    for item in images:
        digest.update(item.caption.encode())
        digest.update(item.image.tobytes())
    return digest.hexdigest()


def _to_pixels(images: Sequence[Image.Image]) -> torch.Tensor:
    import numpy as np
    import torch

    array = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


@dataclass
class _Encoder:
    """The frozen VAE and text encoders of a pipeline, used before the loop (or every step if not caching)."""

    pipe: Any
    config: TrainConfig
    placement: Placement
    family: DenoiserFamily

    def latent_distribution(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        vae = self.pipe.vae
        if vae.config.get("force_upcast", False) and vae.dtype != torch.float32:
            vae.to(dtype=torch.float32)  # the SDXL VAE overflows in fp16
        means, stds = [], []
        for chunk in pixels.split(4):
            dist = vae.encode(chunk.to(self.placement.device, vae.dtype)).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
        return torch.cat(means), torch.cat(stds)

    def captions(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Text conditioning per caption, as the family's denoiser takes it (fp32, one row per caption)."""
        return self.family.encode_captions(self.pipe, captions, self.config, self.placement)


class DenoiserFamily(Protocol):
    """What the shared loop needs to know about one architecture; `denoiser_family` picks the implementation."""

    target_modules: tuple[str, ...]

    def load(self, model_dir: Path, placement: Placement) -> Any:
        """Load the family's pipeline from a local diffusers folder."""

    def place(self, pipe: Any, placement: Placement, *, whole: bool) -> None:
        """Move what encoding needs to the device (everything when `whole`: class images are generated)."""

    def denoiser(self, pipe: Any) -> Any:
        """The module the LoRA is trained on."""

    def encode_captions(
        self, pipe: Any, captions: list[str], config: TrainConfig, placement: Placement
    ) -> dict[str, torch.Tensor]:
        """Text conditioning, one row per caption, keyed as `prediction_and_target` reads it."""

    def training_scheduler(self, pipe: Any) -> Any:
        """A fresh noise scheduler for training (the pipeline's own may have been used for sampling)."""

    def prepare(self, denoiser: Any) -> None:
        """Set up the frozen denoiser before the LoRA is added (attention processors)."""

    def prediction_and_target(
        self,
        denoiser: Any,
        noise_scheduler: Any,
        latents: torch.Tensor,
        cond: dict[str, torch.Tensor],
        generator: torch.Generator,
        placement: Placement,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise the latents (randomness from `generator` only), run the denoiser; return its output and target."""

    def lora_state_dict(self, denoiser: Any) -> dict[str, torch.Tensor]:
        """The trained LoRA weights, keyed as the family's `save_lora_weights` expects them."""

    def save_lora_weights(self, folder: Path, state: dict[str, torch.Tensor]) -> None:
        """Write `LORA_WEIGHTS_NAME` into `folder` with the stock pipeline's `save_lora_weights`."""

    def metadata(self) -> dict[str, Any]:
        """Family-specific entries for `lora_metadata.json`."""


@dataclass(frozen=True)
class _UNetFamily:
    """SD-1.5 and SDXL: DDPM noise, epsilon (or v) prediction, LoRA on the UNet's attention projections."""

    family: str
    target_modules: tuple[str, ...] = LORA_TARGET_MODULES

    def load(self, model_dir: Path, placement: Placement) -> Any:
        return load_pipeline(model_dir, self.family, placement)

    def place(self, pipe: Any, placement: Placement, *, whole: bool) -> None:
        pipe.to(placement.device)  # a UNet is small next to the GPU; no staging needed

    def denoiser(self, pipe: Any) -> Any:
        return pipe.unet

    def encode_captions(
        self, pipe: Any, captions: list[str], config: TrainConfig, placement: Placement
    ) -> dict[str, torch.Tensor]:
        """Hidden states, plus pooled embeds and time ids for SDXL."""
        import torch

        device = placement.device
        if self.family == "sd15":
            embeds, _ = pipe.encode_prompt(captions, device, 1, do_classifier_free_guidance=False)
            return {"encoder_hidden_states": embeds.float()}
        embeds, _, pooled, _ = pipe.encode_prompt(captions, device=device, do_classifier_free_guidance=False)
        size = config.resolution
        # (original size, crop top-left, target size): the photos were already cropped to a square
        time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32, device=device)
        return {
            "encoder_hidden_states": embeds.float(),
            "text_embeds": pooled.float(),
            "time_ids": time_ids.repeat(len(captions), 1),
        }

    def training_scheduler(self, pipe: Any) -> Any:
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(pipe.scheduler.config)

    def prepare(self, denoiser: Any) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        denoiser.set_attn_processor(AttnProcessor2_0())  # SDPA: fused attention kernels on GPU

    def prediction_and_target(
        self,
        denoiser: Any,
        noise_scheduler: Any,
        latents: torch.Tensor,
        cond: dict[str, torch.Tensor],
        generator: torch.Generator,
        placement: Placement,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        noise = torch.randn(latents.shape, generator=generator).to(latents)
        num_timesteps = noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, num_timesteps, (latents.shape[0],), generator=generator)
        timesteps = timesteps.to(placement.device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        if noise_scheduler.config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise

        with torch.autocast(placement.device.type, dtype=placement.dtype, enabled=placement.is_cuda):
            added = {k: cond[k] for k in ("text_embeds", "time_ids") if k in cond}
            prediction = denoiser(
                noisy.to(denoiser.dtype),
                timesteps,
                encoder_hidden_states=cond["encoder_hidden_states"].to(denoiser.dtype),
                added_cond_kwargs={k: v.to(denoiser.dtype) for k, v in added.items()} or None,
                return_dict=False,
            )[0]
        return prediction, target

    def lora_state_dict(self, denoiser: Any) -> dict[str, torch.Tensor]:
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        return convert_state_dict_to_diffusers(get_peft_model_state_dict(denoiser))

    def save_lora_weights(self, folder: Path, state: dict[str, torch.Tensor]) -> None:
        import diffusers

        pipeline_class = getattr(diffusers, PIPELINE_CLASSES[self.family])
        pipeline_class.save_lora_weights(folder, unet_lora_layers=state, safe_serialization=True)

    def metadata(self) -> dict[str, Any]:
        return {}


def denoiser_family(family: str, *, model_type: str = "lora") -> DenoiserFamily:
    """The training hooks of a branch family (and model type: "pti" is SDXL pivotal tuning).

    Raises:
        ValidationError: the family has no trainer, or none of that model type.
    """
    if model_type == "pti":
        if family != "sdxl":
            raise ValidationError("model_type", model_type, f"is only available on the sdxl family, not {family!r}")
        from pipelines.train_pti import SDXLPivotalFamily  # imports this module: resolved at call time

        return SDXLPivotalFamily()
    if family in ("sd15", "sdxl"):
        return _UNetFamily(family)
    if family == "flux":
        from pipelines.train_flux import FluxFamily  # imports this module: resolved at call time

        return FluxFamily()
    raise ValidationError("family", family, f"has no trainer; supported: {', '.join(TRAINABLE_FAMILIES)}")


def _prepare_batches(
    encoder: _Encoder, images: Sequence[Image.Image], captions: list[str], *, cache_latents: bool
) -> _Batches:
    """Encode images (and their mirror images) and captions once, or keep pixels when not caching."""
    import torch

    pixels = _to_pixels(images)
    if encoder.config.random_flip:
        pixels = torch.cat([pixels, pixels.flip(-1)])
        captions = captions + captions
    vae_config = encoder.pipe.vae.config
    batches = _Batches(
        captions=captions,
        scaling_factor=vae_config.scaling_factor,
        shift_factor=vae_config.get("shift_factor") or 0.0,
    )
    unique = sorted(set(captions))
    with torch.no_grad():
        embeddings = encoder.captions(unique)
        row = torch.tensor([unique.index(c) for c in captions], device=encoder.placement.device)
        batches.cond = {name: tensor[row] for name, tensor in embeddings.items()}
        if cache_latents:
            batches.latent_mean, batches.latent_std = encoder.latent_distribution(pixels)
        else:
            batches.pixels = pixels
    return batches


def _free_encoders(pipe: Any, placement: Placement) -> None:
    for name in ("vae", "text_encoder", "text_encoder_2"):
        if getattr(pipe, name, None) is not None:
            setattr(pipe, name, None)
    _release_memory(placement)


def _release_memory(placement: Placement) -> None:
    import torch

    gc.collect()
    if placement.is_cuda:
        torch.cuda.empty_cache()


def _add_lora(denoiser: Any, config: TrainConfig, placement: Placement, family: DenoiserFamily) -> list:
    """Freeze the denoiser, add a LoRA adapter on the family's target modules; return its (fp32) parameters."""
    import torch
    from peft import LoraConfig

    denoiser.requires_grad_(False)
    family.prepare(denoiser)
    with torch.random.fork_rng(devices=[]):  # the initial LoRA weights depend on the seed only
        torch.manual_seed(config.seed)
        denoiser.add_adapter(
            LoraConfig(
                r=config.rank,
                lora_alpha=config.rank,
                init_lora_weights="gaussian",
                target_modules=list(family.target_modules),
            )
        )
    params = [p for p in denoiser.parameters() if p.requires_grad]
    for p in params:  # LoRA weights train in fp32 even when the frozen base is half precision
        p.data = p.data.float()
    if _needs_gradient_checkpointing(config, placement):
        denoiser.enable_gradient_checkpointing()
    return params


def _needs_gradient_checkpointing(config: TrainConfig, placement: Placement) -> bool:
    if config.gradient_checkpointing is not None:
        return config.gradient_checkpointing
    if not placement.is_cuda:
        return False
    import torch

    total_gib = torch.cuda.get_device_properties(placement.device).total_memory / 2**30
    return total_gib < _CHECKPOINTING_BELOW_GIB.get(config.family, 0) * max(1, config.batch_size // 2)


def _step_generator(seed: int, step: int) -> torch.Generator:
    import torch

    return torch.Generator("cpu").manual_seed((seed * 1_000_003 + step) % 2**63)


def _sample_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Epoch-wise shuffling derived from (seed, epoch): every sample is seen once per epoch, no state kept."""
    import torch

    indices = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, position = divmod(k, n)
        order = torch.randperm(n, generator=torch.Generator("cpu").manual_seed(seed * 7919 + epoch))
        indices.append(int(order[position]))
    return indices


def _latents_and_cond(
    batches: _Batches, indices: list[int], generator: torch.Generator, encoder: _Encoder | None, device: torch.device
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Scaled latents (sampled from the cached distribution, or freshly encoded) and text conditioning."""
    import torch

    rows = torch.tensor(indices, device=device)
    cond = {name: tensor[rows] for name, tensor in batches.cond.items()}
    if batches.latent_mean is not None:
        mean, std = batches.latent_mean[rows], batches.latent_std[rows]
    else:  # the re-encoding path of the diffusers reference script; kept for the benchmark
        with torch.no_grad():
            mean, std = encoder.latent_distribution(batches.pixels[indices])
            cond = encoder.captions([batches.captions[i] for i in indices])
    latents = mean + std * torch.randn(mean.shape, generator=generator).to(mean)
    return (latents - batches.shift_factor) * batches.scaling_factor, cond


def _train_step(
    family: DenoiserFamily,
    denoiser: Any,
    noise_scheduler: Any,
    optimizer: Any,
    scaler: Any,
    config: TrainConfig,
    instance: _Batches,
    prior: _Batches | None,
    encoder: _Encoder | None,
    step: int,
    placement: Placement,
) -> float:
    """One optimisation step; all randomness comes from (seed, step)."""
    import torch
    import torch.nn.functional as F

    generator = _step_generator(config.seed, step)
    indices = _sample_indices(len(instance), config.batch_size, config.seed, step)
    latents, cond = _latents_and_cond(instance, indices, generator, encoder, placement.device)
    if prior is not None:
        prior_indices = _sample_indices(len(prior), config.batch_size, config.seed + 1, step)
        prior_latents, prior_cond = _latents_and_cond(prior, prior_indices, generator, encoder, placement.device)
        latents = torch.cat([latents, prior_latents])
        cond = {name: torch.cat([cond[name], prior_cond[name]]) for name in cond}
    prediction, target = family.prediction_and_target(denoiser, noise_scheduler, latents, cond, generator, placement)
    if prior is not None:
        prediction, prior_prediction = prediction.chunk(2)
        target, prior_target = target.chunk(2)
        loss = F.mse_loss(prediction.float(), target.float())
        loss = loss + config.prior_loss_weight * F.mse_loss(prior_prediction.float(), prior_target.float())
    else:
        loss = F.mse_loss(prediction.float(), target.float())

    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def _save_checkpoint(
    path: Path,
    fingerprint: str,
    step: int,
    denoiser: Any,
    optimizer: Any,
    losses: list[float],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the LoRA and optimizer state (and a trainer's `extra` state) atomically, so a crash mid-write keeps
    the previous checkpoint."""
    import torch
    from peft.utils import get_peft_model_state_dict

    state = {
        "fingerprint": fingerprint,
        "step": step,
        "lora": {k: v.detach().cpu() for k, v in get_peft_model_state_dict(denoiser).items()},
        "optimizer": optimizer.state_dict(),
        "losses": list(losses),
        **(extra or {}),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def _load_checkpoint(path: Path, fingerprint: str, denoiser: Any, optimizer: Any) -> tuple[int, list[float]]:
    """Restore a checkpoint of the same run. Returns (step to continue from, losses so far)."""
    import torch
    from peft.utils import set_peft_model_state_dict

    if not path.exists():
        return 0, []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a torn or foreign file: start over rather than fail the tune
        path.unlink(missing_ok=True)
        return 0, []
    if state.get("fingerprint") != fingerprint:
        path.unlink(missing_ok=True)
        return 0, []
    set_peft_model_state_dict(denoiser, state["lora"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), list(state["losses"])


def _save_lora(denoiser: Any, family: DenoiserFamily, output_dir: Path) -> Path:
    state = family.lora_state_dict(denoiser)
    state = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    staging = output_dir / ".saving"
    shutil.rmtree(staging, ignore_errors=True)
    family.save_lora_weights(staging, state)
    final = output_dir / LORA_WEIGHTS_NAME
    os.replace(staging / LORA_WEIGHTS_NAME, final)
    shutil.rmtree(staging, ignore_errors=True)
    return final


def _metadata(
    config: TrainConfig,
    images: Sequence[TrainingImage],
    losses: list[float],
    seconds: float,
    placement: Placement,
    resumed_from: int | None,
    family: DenoiserFamily,
) -> dict[str, Any]:
    stride = max(1, math.ceil(len(losses) / _MAX_LOSS_POINTS))
    return {
        "format": 1,
        "branch": config.branch,
        "family": config.family,
        "model_type": config.model_type,
        "base_model": config.base_model,
        "token": config.token,
        "class_name": config.class_name,
        "instance_prompt": config.instance_caption,
        "steps": config.steps,
        "rank": config.rank,
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "resolution": config.resolution,
        "prior_preservation": config.prior_preservation,
        "num_training_images": len(images),
        "target_modules": list(family.target_modules),
        "loss_curve": {"stride": stride, "values": [round(v, 6) for v in losses[::stride]]},
        "final_loss": losses[-1] if losses else None,
        "train_seconds": round(seconds, 3),
        "device": str(placement.device),
        "dtype": str(placement.dtype).removeprefix("torch."),
        "resumed_from_step": resumed_from,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **family.metadata(),
    }


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
