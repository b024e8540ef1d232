"""FLUX.1 DreamBooth LoRA training on a tiny model of the real FLUX architecture (transformer, CLIP, T5, VAE)."""

from __future__ import annotations

import gc
import json
import weakref

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from safetensors.torch import load_file

from pipelines.device import Placement
from pipelines.errors import TrainingCancelledError, ValidationError
from pipelines.registry import get_branch, resolve_model_dir
from pipelines.settings import Settings
from pipelines.tiny import TINY_RESOLUTION
from pipelines.train import CHECKPOINT_NAME, LORA_WEIGHTS_NAME, METADATA_NAME, TrainConfig, train_lora
from pipelines.train_flux import FLUX_ATTENTION_MODULES, FluxFamily
from tests.conftest import Sample, subject_image

PROMPT = "ohwx thing"


@pytest.fixture
def flux_samples() -> list[Sample]:
    return [Sample(subject_image(i), PROMPT) for i in range(4)]


def flux_config(**changes) -> TrainConfig:
    defaults = {"steps": 4, "checkpoint_every": 1000}
    branch = get_branch("tiny-flux")
    return TrainConfig.for_branch(branch, class_name="thing", base_model="tiny-flux", **{**defaults, **changes})


def stock_flux_latents(model_dir, lora_dir=None, *, seeds=(0, 1, 2, 3)) -> torch.Tensor:
    """Generate with plain diffusers code only and return the final (packed) latents.

    Guidance 1.0, as in training: the tiny model is random, so there is no distilled guidance to exploit.
    """
    pipe = FluxPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    if lora_dir is not None:
        pipe.load_lora_weights(lora_dir)
    return pipe(
        [PROMPT] * len(seeds),
        height=TINY_RESOLUTION,
        width=TINY_RESOLUTION,
        num_inference_steps=10,
        guidance_scale=1.0,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        output_type="latent",
    ).images


def test_flux_lora_loads_in_a_stock_flux_pipeline_and_changes_its_output(tmp_path, tiny_flux_dir, flux_samples):
    result = train_lora(flux_config(steps=3), flux_samples, tmp_path / "lora", model_dir=tiny_flux_dir, device="cpu")

    assert result.lora_path == tmp_path / "lora" / LORA_WEIGHTS_NAME
    keys = load_file(result.lora_path).keys()
    assert keys and all(k.startswith("transformer.") for k in keys)
    for module in ("attn.to_q", "attn.to_out.0", "attn.add_k_proj", "attn.to_add_out"):
        assert any(f".transformer_blocks.0.{module}.lora_A." in k for k in keys), module
    assert any(k.startswith("transformer.single_transformer_blocks.0.attn.to_v.lora_B.") for k in keys)
    base = stock_flux_latents(tiny_flux_dir, seeds=(0,))
    tuned = stock_flux_latents(tiny_flux_dir, tmp_path / "lora", seeds=(0,))
    assert not torch.allclose(base, tuned, atol=1e-4), "the LoRA had no effect on generation"
    assert not (tmp_path / "lora" / CHECKPOINT_NAME).exists(), "a finished run must not leave its checkpoint"

    metadata = json.loads((tmp_path / "lora" / METADATA_NAME).read_text())
    assert metadata == result.metadata
    assert (metadata["branch"], metadata["family"], metadata["token"]) == ("tiny-flux", "flux", "ohwx")
    assert metadata["instance_prompt"] == PROMPT and len(metadata["loss_curve"]["values"]) == 3
    assert metadata["target_modules"] == list(FLUX_ATTENTION_MODULES)
    assert metadata["guidance_scale"] == 1.0 and metadata["max_sequence_length"] == 512


@pytest.mark.slow
def test_flux_training_learns_the_subject(tmp_path, tiny_flux_dir, flux_samples):
    """The tuned model's samples for "ohwx thing" land nearer the subject than the base model's.

    As the SD test: mean squared distance between generated latents (4 seeds, 10 flow-match steps, guidance
    1.0) and the packed mean latent of the training images; the LoRA's distance is at most 80% of the base
    model's (measured about 67%). The loss falls: the mean of the last 20 steps is below 90% of the mean of
    the first 20 (measured about 81%; the flow-matching loss keeps a floor near 1, the noise it cannot know).
    """
    result = train_lora(flux_config(steps=100), flux_samples, tmp_path, model_dir=tiny_flux_dir, device="cpu")

    losses = result.metadata["loss_curve"]["values"]
    assert np.mean(losses[-20:]) < 0.9 * np.mean(losses[:20])
    vae = FluxPipeline.from_pretrained(tiny_flux_dir).vae
    pixels = torch.from_numpy(np.stack([np.asarray(s.image, dtype=np.float32) for s in flux_samples]))
    with torch.no_grad():
        encoded = vae.encode(pixels.permute(0, 3, 1, 2) / 127.5 - 1).latent_dist.mean.mean(0, keepdim=True)
    scaled = (encoded - vae.config.shift_factor) * vae.config.scaling_factor
    target = FluxPipeline._pack_latents(scaled, 1, *scaled.shape[1:])
    base = ((stock_flux_latents(tiny_flux_dir) - target) ** 2).mean().item()
    tuned = ((stock_flux_latents(tiny_flux_dir, tmp_path) - target) ** 2).mean().item()
    assert tuned < 0.8 * base, f"distance to subject: tuned {tuned:.3f} vs base {base:.3f}"


def test_flux_cancel_and_resume_matches_an_uninterrupted_run(tmp_path, tiny_flux_dir, flux_samples):
    config = flux_config(steps=6, checkpoint_every=2, seed=3)
    straight = train_lora(config, flux_samples, tmp_path / "straight", model_dir=tiny_flux_dir)

    steps_seen = []
    with pytest.raises(TrainingCancelledError) as cancelled:
        train_lora(
            config,
            flux_samples,
            tmp_path / "resumed",
            model_dir=tiny_flux_dir,
            on_progress=lambda p: p.phase == "training" and steps_seen.append(p.step),
            should_cancel=lambda: len(steps_seen) >= 4,
        )
    assert cancelled.value.step == 4 and (tmp_path / "resumed" / CHECKPOINT_NAME).exists()
    assert not (tmp_path / "resumed" / LORA_WEIGHTS_NAME).exists(), "a cancelled run must not look finished"

    resumed_steps = []
    resumed = train_lora(
        config,
        flux_samples,
        tmp_path / "resumed",
        model_dir=tiny_flux_dir,
        on_progress=lambda p: p.phase == "training" and resumed_steps.append(p.step),
    )
    assert resumed.resumed_from_step == 4 and resumed_steps == [5, 6]
    expected, got = load_file(straight.lora_path), load_file(resumed.lora_path)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-6)
    assert resumed.metadata["loss_curve"]["values"] == pytest.approx(straight.metadata["loss_curve"]["values"], 1e-4)


def test_text_encoders_and_vae_are_freed_before_the_loop_and_never_called_in_it(tmp_path, tiny_flux_dir, flux_samples):
    pipe = FluxPipeline.from_pretrained(tiny_flux_dir)
    names = ("text_encoder", "text_encoder_2", "vae")
    alive = {name: weakref.ref(getattr(pipe, name)) for name in names}
    phase = ["none"]
    calls = []
    _record_encoder_calls(pipe, calls, phase)
    alive_in_loop = {}

    def on_progress(progress) -> None:
        phase[0] = progress.phase
        if progress.phase == "training" and not alive_in_loop:
            gc.collect()
            alive_in_loop.update({name: ref() is not None for name, ref in alive.items()})

    train_lora(flux_config(steps=3), flux_samples, tmp_path, pipeline=pipe, device="cpu", on_progress=on_progress)

    assert {name for name, _ in calls} == set(names), "control: the encoders did run, before the loop"
    assert all(when == "preparing" for _, when in calls), calls
    assert alive_in_loop == dict.fromkeys(names, False), "T5, CLIP and the VAE must be freed before the first step"


def test_the_transformer_stays_on_the_cpu_while_the_encoders_run_on_the_device(tiny_flux_dir):
    """Peak GPU memory holds T5 + CLIP + VAE, then the transformer, never both ("meta" stands in for the GPU)."""
    device = Placement(torch.device("meta"), torch.float32)
    pipe = FluxFamily().load(tiny_flux_dir, device)
    assert pipe.transformer.device.type == "cpu" and pipe.text_encoder_2.device.type == "cpu"

    FluxFamily().place(pipe, device, whole=False)
    assert {pipe.text_encoder.device.type, pipe.text_encoder_2.device.type, pipe.vae.device.type} == {"meta"}
    assert pipe.transformer.device.type == "cpu"


def _record_encoder_calls(pipe, calls: list, phase: list) -> None:
    """Append (component, current phase) to `calls` whenever a text encoder or the VAE encoder runs.

    A function, so that no local variable of the test holds a module and keeps it alive.
    """
    pipe.text_encoder.register_forward_pre_hook(lambda *_: calls.append(("text_encoder", phase[0])))
    pipe.text_encoder_2.register_forward_pre_hook(lambda *_: calls.append(("text_encoder_2", phase[0])))
    pipe.vae.encoder.register_forward_pre_hook(lambda *_: calls.append(("vae", phase[0])))


def test_flux_trains_with_prior_preservation_and_without_the_latent_cache(tmp_path, tiny_flux_dir, flux_samples):
    """Class images come from the FLUX pipeline itself; without the cache (the benchmark's comparison) the
    encoders run every step, prior captions included."""
    config = flux_config(steps=2, prior_preservation=True, num_class_images=1, cache_latents=False)
    cache = tmp_path / "class_images"
    result = train_lora(config, flux_samples, tmp_path / "lora", model_dir=tiny_flux_dir, class_images_dir=cache)

    assert len(list(cache.rglob("*.png"))) == 1 and result.metadata["prior_preservation"] is True
    assert len(result.metadata["loss_curve"]["values"]) == 2 and result.lora_path.exists()


def test_flux_branches_defaults_and_tiny_flux_is_built_on_first_use(tmp_path):
    config = TrainConfig.for_branch(get_branch("flux1"), class_name="man", base_model="black-forest-labs/FLUX.1-dev")
    assert (config.family, config.token, config.resolution) == ("flux", "ohwx", 1024)
    assert (config.rank, config.learning_rate, config.steps) == (16, 1e-4, 1000)

    with pytest.raises(ValidationError, match="`resolution` must be a multiple of 16 for FLUX"):
        flux_config(resolution=136)

    settings = Settings(data_dir=tmp_path)
    folder = resolve_model_dir(settings, get_branch("tiny-flux"))
    assert folder == tmp_path / "models" / "tiny-flux" and (folder / "transformer").is_dir()
    assert resolve_model_dir(settings, get_branch("tiny-flux")) == folder
