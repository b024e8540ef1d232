"""FLUX.1 DreamBooth LoRA: the flux hooks of the shared trainer in `pipelines.train`.

As diffusers' `train_dreambooth_lora_flux.py` (the reference), with these choices:
- Flow matching: `x_t = (1 - sigma) * latents + sigma * noise`, the target is `noise - latents`. Timesteps are
  drawn uniformly from the training scheduler's 1000 (its `weighting_scheme="none"`, the reference's default),
  each with the scheduler's own sigma: FLUX.1 [dev]'s scheduler uses dynamic shifting, which applies at
  inference only, so training sigmas are unshifted; a scheduler configured with a static `shift` trains shifted.
  The loss is an unweighted MSE.
- The guidance embedding of the guidance-distilled FLUX.1 [dev] gets 1.0, as in the reference's README runs.
- T5 (512 tokens, the pipeline's default, so training sees the padding generation sees) and CLIP embeddings
  and the VAE latents are computed once; T5, CLIP and the VAE are then freed, and only then is the
  transformer moved to the GPU, so the peak holds either the encoders or the transformer, never both.
- LoRA on the attention projections of every block: `to_q/to_k/to_v/to_out.0` and the text stream's
  `add_q_proj/add_k_proj/add_v_proj/to_add_out` (the single blocks have only `to_q/to_k/to_v`).
  `FLUX_FEED_FORWARD_MODULES` lists the feed-forward layers the reference also targets by default; they
  roughly double the file for a face LoRA and are left out.
- Saved with `FluxPipeline.save_lora_weights(transformer_lora_layers=...)`: keys `transformer.<module>.lora_A/B`,
  which stock `FluxPipeline.load_lora_weights(folder)` loads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.device import Placement
from pipelines.registry import load_pipeline

if TYPE_CHECKING:
    import torch

    from pipelines.train import TrainConfig

FLUX_ATTENTION_MODULES = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
)
FLUX_FEED_FORWARD_MODULES = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
TRAINING_GUIDANCE_SCALE = 1.0
MAX_SEQUENCE_LENGTH = 512
WEIGHTING_SCHEME = "none"  # uniform timesteps, unweighted loss
_ENCODING_COMPONENTS = ("text_encoder", "text_encoder_2", "vae")


@dataclass(frozen=True)
class FluxFamily:
    """FLUX.1: flow matching on packed latents, LoRA on the transformer (see the module docstring)."""

    target_modules: tuple[str, ...] = FLUX_ATTENTION_MODULES

    def load(self, model_dir: Path, placement: Placement) -> Any:
        import torch

        # loaded on the CPU in the training dtype: `place` moves the parts in turn
        return load_pipeline(model_dir, "flux", replace(placement, device=torch.device("cpu")))

    def place(self, pipe: Any, placement: Placement, *, whole: bool) -> None:
        if whole:  # class images are generated with the full pipeline
            pipe.to(placement.device)
            return
        for name in _ENCODING_COMPONENTS:
            component = getattr(pipe, name, None)
            if component is not None:
                component.to(placement.device)

    def denoiser(self, pipe: Any) -> Any:
        return pipe.transformer

    def encode_captions(
        self, pipe: Any, captions: list[str], config: TrainConfig, placement: Placement
    ) -> dict[str, torch.Tensor]:
        """T5 hidden states and CLIP's pooled embedding (the text ids are all zeros: made in each step)."""
        embeds, pooled, _ = pipe.encode_prompt(
            captions, device=placement.device, max_sequence_length=MAX_SEQUENCE_LENGTH
        )
        return {"encoder_hidden_states": embeds.float(), "pooled_projections": pooled.float()}

    def training_scheduler(self, pipe: Any) -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)

    def prepare(self, denoiser: Any) -> None:
        pass  # FLUX's attention processor already uses SDPA

    def prediction_and_target(
        self,
        denoiser: Any,
        noise_scheduler: Any,
        latents: torch.Tensor,
        cond: dict[str, torch.Tensor],
        generator: torch.Generator,
        placement: Placement,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity prediction on packed 2x2 patches; both outputs are packed (the MSE does not mind the order)."""
        import torch
        from diffusers import FluxPipeline

        batch, channels, height, width = latents.shape
        device, dtype = placement.device, denoiser.dtype
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        u = torch.rand((batch,), generator=generator)
        indices = (u * noise_scheduler.config.num_train_timesteps).long()
        timesteps = noise_scheduler.timesteps[indices].to(device)
        sigmas = noise_scheduler.sigmas[indices].to(latents).view(batch, 1, 1, 1)
        noisy = (1.0 - sigmas) * latents + sigmas * noise
        packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
        target = FluxPipeline._pack_latents(noise - latents, batch, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, device, dtype)
        text_ids = torch.zeros(cond["encoder_hidden_states"].shape[1], 3, device=device, dtype=dtype)
        guidance = None
        if denoiser.config.guidance_embeds:
            guidance = torch.full((batch,), TRAINING_GUIDANCE_SCALE, device=device, dtype=torch.float32)

        with torch.autocast(device.type, dtype=placement.dtype, enabled=placement.is_cuda):
            prediction = denoiser(
                hidden_states=packed.to(dtype),
                timestep=timesteps / 1000,  # the transformer scales it back by 1000, as in the pipeline
                guidance=guidance,
                pooled_projections=cond["pooled_projections"].to(dtype),
                encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
                txt_ids=text_ids,
                img_ids=image_ids,
                return_dict=False,
            )[0]
        return prediction, target

    def lora_state_dict(self, denoiser: Any) -> dict[str, torch.Tensor]:
        from peft.utils import get_peft_model_state_dict

        return get_peft_model_state_dict(denoiser)  # already the diffusers layout for transformers

    def save_lora_weights(self, folder: Path, state: dict[str, torch.Tensor]) -> None:
        from diffusers import FluxPipeline

        FluxPipeline.save_lora_weights(folder, transformer_lora_layers=state, safe_serialization=True)

    def metadata(self) -> dict[str, Any]:
        return {
            "guidance_scale": TRAINING_GUIDANCE_SCALE,
            "weighting_scheme": WEIGHTING_SCHEME,
            "max_sequence_length": MAX_SEQUENCE_LENGTH,
        }
