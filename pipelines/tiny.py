"""Tiny random models with the real SD-1.5, SDXL and FLUX.1 architectures, built from configs (no download).

They are the CPU demo branches (`tiny`, `tiny-flux`) and the test fixtures: the same diffusers classes, the
same LoRA targets and the same pipelines as the real models, only narrow. The CLIP tokenizer is a generated
byte-level vocabulary (every byte, with and without the end-of-word marker), so any prompt tokenizes; the T5
tokenizer of FLUX is a unigram vocabulary of the printable ASCII characters (others map to `<unk>`).
"""

from __future__ import annotations

import json
import shutil
import string
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

TINY_RESOLUTION = 128  # the VAE downsamples 8x as in SD, so the UNet sees 16x16 latents
_DDIM_ONLY = ("clip_sample", "set_alpha_to_one")
# FLUX.1 [dev]'s scheduler config: the resolution-dependent shift is applied at inference only
_FLUX_SCHEDULER = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable-character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def write_byte_level_tokenizer(folder: Path, *, max_length: int = 77) -> int:
    """Write a CLIP tokenizer (vocab.json, merges.txt, configs) covering every byte. Returns vocab size."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(symbol, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    config = {
        "model_max_length": max_length,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "CLIPTokenizer",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return len(vocab)


def _text_config(vocab_size: int, *, hidden: int = 32, projection: int | None = None) -> dict[str, Any]:
    return {
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1,
        "hidden_size": hidden,
        "intermediate_size": 37,
        "layer_norm_eps": 1e-5,
        "num_attention_heads": 4,
        "num_hidden_layers": 5,
        "vocab_size": vocab_size,
        "max_position_embeddings": 77,
        "hidden_act": "gelu",
        "projection_dim": projection or hidden,
    }


def _vae(**changes: Any):
    from diffusers import AutoencoderKL

    config = {
        "block_out_channels": (32, 64, 64, 64),
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "latent_channels": 4,
        "sample_size": TINY_RESOLUTION,
    }
    return AutoencoderKL(**{**config, **changes})


def t5_vocabulary() -> list[tuple[str, float]]:
    """A unigram vocabulary (piece, log-probability) for T5: the specials, then each printable ASCII character
    at the start of a word (`▁x`) and inside one (`x`). Ids follow T5's layout: <pad>=0, </s>=1, <unk>=2."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    chars = [c for c in string.printable if not c.isspace()]
    return pieces + [("\u2581" + c, -3.0) for c in chars] + [(c, -4.0) for c in chars]


def build_tiny_sd15(folder: Path, *, seed: int = 0) -> Path:
    """Build an SD-1.5-shaped random pipeline into `folder` (about 8 MB). Returns the folder."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    def build(tmp: Path) -> None:
        torch.manual_seed(seed)
        vocab_size = write_byte_level_tokenizer(tmp / "_tok")
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=TINY_RESOLUTION // 8,
            in_channels=4,
            out_channels=4,
            # attention at the higher resolution and none at the lowest, as in SD-1.5's UNet
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(**_text_config(vocab_size)))
        pipe = StableDiffusionPipeline(
            vae=_vae(),
            text_encoder=text_encoder,
            tokenizer=CLIPTokenizer.from_pretrained(tmp / "_tok"),
            unet=unet,
            scheduler=DDIMScheduler(**_SCHEDULER),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(tmp)
        shutil.rmtree(tmp / "_tok")

    return _build_atomically(folder, build)


def build_tiny_sdxl(folder: Path, *, seed: int = 0) -> Path:
    """Build an SDXL-shaped random pipeline (two text encoders, text-time conditioning) into `folder`."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    def build(tmp: Path) -> None:
        torch.manual_seed(seed)
        vocab_size = write_byte_level_tokenizer(tmp / "_tok")
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=TINY_RESOLUTION // 8,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=6 * 8 + 32,
            cross_attention_dim=64,
        )
        text_config = CLIPTextConfig(**_text_config(vocab_size))
        tokenizer = CLIPTokenizer.from_pretrained(tmp / "_tok")
        pipe = StableDiffusionXLPipeline(
            vae=_vae(),
            text_encoder=CLIPTextModel(text_config),
            text_encoder_2=CLIPTextModelWithProjection(text_config),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=EulerDiscreteScheduler(**{k: v for k, v in _SCHEDULER.items() if k not in _DDIM_ONLY}),
        )
        pipe.save_pretrained(tmp)
        shutil.rmtree(tmp / "_tok")

    return _build_atomically(folder, build)


def build_tiny_flux(folder: Path, *, seed: int = 0) -> Path:
    """Build a FLUX.1-shaped random pipeline (MMDiT transformer with guidance embedding, CLIP + T5, a
    VAE with FLUX's shift and scale but 4 latent channels, flow-matching scheduler) into `folder` (about 6 MB).

    The transformer's `in_channels` is 4x the VAE's latent channels because FLUX packs 2x2 latent patches
    into one token. Returns the folder.
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

    latent_channels = 4

    def build(tmp: Path) -> None:
        torch.manual_seed(seed)
        vocab_size = write_byte_level_tokenizer(tmp / "_tok")
        t5_tokenizer = T5Tokenizer(vocab=t5_vocabulary(), extra_ids=0, model_max_length=512)
        t5 = T5EncoderModel(
            T5Config(
                vocab_size=len(t5_tokenizer),
                d_model=32,
                d_kv=8,
                d_ff=37,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                feed_forward_proj="gated-gelu",  # T5 v1.1, as FLUX's T5-XXL
            )
        )
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=4 * latent_channels,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,  # T5 width
            pooled_projection_dim=32,  # CLIP width
            axes_dims_rope=(4, 4, 8),  # sums to attention_head_dim
            guidance_embeds=True,  # FLUX.1 [dev] is guidance-distilled
        )
        pipe = FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(**_FLUX_SCHEDULER),
            # FLUX's VAE has no quant convs and shifts its latents
            vae=_vae(
                latent_channels=latent_channels,
                use_quant_conv=False,
                use_post_quant_conv=False,
                shift_factor=0.1159,
                scaling_factor=0.3611,
            ),
            text_encoder=CLIPTextModel(CLIPTextConfig(**_text_config(vocab_size))),
            tokenizer=CLIPTokenizer.from_pretrained(tmp / "_tok"),
            text_encoder_2=t5,
            tokenizer_2=t5_tokenizer,
            transformer=transformer,
        )
        pipe.save_pretrained(tmp)
        shutil.rmtree(tmp / "_tok")

    return _build_atomically(folder, build)


def _build_atomically(folder: Path, build) -> Path:
    """Build into a temporary sibling and rename, so a crash never leaves a half-written model."""
    folder = Path(folder)
    if (folder / "model_index.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        build(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first
            if not (folder / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def synthetic_subject(i: int, size: int = TINY_RESOLUTION) -> Image.Image:
    """A distinctive made-up subject for demos, tests and benchmarks of the tiny models.

    A red disc over a yellow band on blue, shifted a little per `i`, so several "photos" differ slightly.
    """
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (20, 40, 200))
    draw = ImageDraw.Draw(image)
    r = size * 34 // 128
    cx = size // 2 + (i % 3 - 1) * size // 20
    cy = size // 2 + (i // 3 % 3 - 1) * size // 20
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(230, 30, 30))
    draw.rectangle([0, size * 100 // 128, size, size], fill=(250, 220, 40))
    return image
