"""The real Stable Diffusion 1.5 architecture with random weights, built in memory from its configs.

The configs are those of `stable-diffusion-v1-5/stable-diffusion-v1-5` (UNet, VAE, CLIP ViT-L/14 text
encoder, PNDM scheduler). Only the tokenizer differs: the byte-level CLIP tokenizer of `pipelines.tiny`,
whose ids (below 514) are valid in the real 49,408-token vocabulary. Step times and memory depend on the
shapes, not on the weights, so training this model measures what training the real one costs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

VOCAB_SIZE = 49408
SCHEDULER = {  # SD-1.5's scheduler/scheduler_config.json
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def build_sd15_arch(*, seed: int = 0) -> Any:
    """A `StableDiffusionPipeline` with SD-1.5's shapes and random fp32 weights (about 4.3 GB in memory)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from pipelines.tiny import write_byte_level_tokenizer

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="bench-tokenizer-") as folder:
        write_byte_level_tokenizer(Path(folder))
        tokenizer = CLIPTokenizer.from_pretrained(folder)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
        scaling_factor=0.18215,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=768,
            layer_norm_eps=1e-5,
            # the pooled output is read at the tokenizer's end-of-text id
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameter_counts(pipe: Any) -> dict[str, int]:
    """Parameters per trainable-architecture component of a pipeline."""
    return {
        name: sum(p.numel() for p in getattr(pipe, name).parameters())
        for name in ("unet", "vae", "text_encoder")
        if getattr(pipe, name, None) is not None
    }
