"""SDXL pivotal tuning (new tokens in both text encoders + a UNet LoRA) on a tiny model of the real SDXL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionXLPipeline
from safetensors.torch import load_file

from pipelines.errors import TrainingCancelledError, ValidationError
from pipelines.registry import get_branch
from pipelines.train import CHECKPOINT_NAME, LORA_WEIGHTS_NAME, METADATA_NAME, TrainConfig, TrainResult, train_lora
from pipelines.train_pti import EMBEDDINGS_NAME, load_pivotal, pivotal_prompt
from tests.conftest import Sample, subject_image

SIZE = 128
TOKENS = ["<s0>", "<s1>"]


def pti_config(**changes) -> TrainConfig:
    defaults = {
        "model_type": "pti",
        "resolution": SIZE,
        "steps": 4,
        "rank": 8,
        "learning_rate": 1e-2,  # a random model: high rates make learning visible in a few CPU steps
        "ti_learning_rate": 1e-2,
        "checkpoint_every": 1000,
    }
    branch = get_branch("sdxl1")
    return TrainConfig.for_branch(branch, class_name="thing", base_model="tiny-sdxl", **{**defaults, **changes})


def samples(count: int = 4, size: int = SIZE) -> list[Sample]:
    return [Sample(subject_image(i, size), "ohwx thing") for i in range(count)]


def stock_pipeline(model_dir: Path, lora_dir: Path | None = None) -> StableDiffusionXLPipeline:
    """Plain diffusers: the LoRA with `load_lora_weights` and the embeddings with `load_textual_inversion`."""
    pipe = StableDiffusionXLPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    if lora_dir is not None:
        pipe.load_lora_weights(lora_dir)
        state = load_file(lora_dir / EMBEDDINGS_NAME)
        pipe.load_textual_inversion(
            state["clip_l"], token=TOKENS, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
        )
        pipe.load_textual_inversion(
            state["clip_g"], token=TOKENS, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
        )
    return pipe


def latents(pipe: StableDiffusionXLPipeline, prompt: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return pipe(prompt, num_inference_steps=5, guidance_scale=1.0, generator=generator, output_type="latent").images


def denoising_error(pipe: StableDiffusionXLPipeline, prompt: str, draws: int = 8) -> float:
    """How well the model predicts the noise added to the subject's photos (the training objective, on fixed
    noise and timesteps): the lower, the more likely the subject is under the model."""
    generator = torch.Generator().manual_seed(1234)
    pixels = torch.from_numpy(np.stack([np.asarray(s.image, dtype=np.float32) for s in samples()]))
    with torch.no_grad():
        encoded = pipe.vae.encode(pixels.permute(0, 3, 1, 2) / 127.5 - 1).latent_dist.mean
        clean = (encoded * pipe.vae.config.scaling_factor).repeat(draws, 1, 1, 1)
        embeds, _, pooled, _ = pipe.encode_prompt([prompt] * len(clean), do_classifier_free_guidance=False)
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(0, 1000, (len(clean),), generator=generator)
        noisy = DDPMScheduler.from_config(pipe.scheduler.config).add_noise(clean, noise, timesteps)
        time_ids = torch.tensor([[SIZE, SIZE, 0, 0, SIZE, SIZE]], dtype=torch.float32).repeat(len(clean), 1)
        added = {"text_embeds": pooled, "time_ids": time_ids}
        prediction = pipe.unet(noisy, timesteps, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
    return ((prediction - noise) ** 2).mean().item()


@dataclass
class Trained:
    result: TrainResult
    encoders: list  # the text encoders of the pipeline the trainer was given


@pytest.fixture(scope="module")
def base_pipe(tiny_sdxl_dir) -> StableDiffusionXLPipeline:
    return stock_pipeline(tiny_sdxl_dir)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_sdxl_dir) -> Trained:
    """One 40-step pivotal run (20 steps of token embeddings + LoRA, 20 of LoRA alone), shared by the tests."""
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir)
    encoders = [pipe.text_encoder, pipe.text_encoder_2]
    result = train_lora(pti_config(steps=40), samples(), tmp_path_factory.mktemp("pti"), pipeline=pipe, device="cpu")
    return Trained(result, encoders)


@pytest.fixture(scope="module")
def tuned_pipe(trained, tiny_sdxl_dir) -> StableDiffusionXLPipeline:
    return stock_pipeline(tiny_sdxl_dir, trained.result.output_dir)


@pytest.mark.slow
def test_pivotal_tuning_learns_the_subject(trained, base_pipe, tuned_pipe):
    """The tuned model, loaded by stock diffusers and prompted with the new tokens, predicts the noise on the
    subject's photos better than the base model prompted with the rare token.

    Metric: mean squared error of the noise prediction on the 4 photos, 8 fixed (noise, timestep) draws each.
    Margin: the tuned error is at most 95% of the base one (measured 91%). On this random tiny SDXL the SD test's
    metric (distance of generated latents to the subject's) gets worse even after 100 steps, for a plain LoRA too:
    only the UNet's lower-resolution level has attention, so a LoRA cannot shape the full-resolution detail.
    The loss falls: the mean of the last 10 steps is below 95% of the first 10 (measured 92%).
    """
    losses = trained.result.metadata["loss_curve"]["values"]
    assert np.mean(losses[-10:]) < 0.95 * np.mean(losses[:10])
    base = denoising_error(base_pipe, "ohwx thing")
    tuned = denoising_error(tuned_pipe, "<s0><s1> thing")
    assert tuned < 0.95 * base, f"denoising error on the subject: tuned {tuned:.4f} vs base {base:.4f}"


def test_output_and_metadata(trained):
    folder = trained.result.output_dir
    assert trained.result.lora_path == folder / LORA_WEIGHTS_NAME
    assert all(k.startswith("unet.") for k in load_file(folder / LORA_WEIGHTS_NAME))
    embeddings = load_file(folder / EMBEDDINGS_NAME)
    assert {k: tuple(v.shape) for k, v in embeddings.items()} == {"clip_l": (2, 32), "clip_g": (2, 32)}
    metadata = json.loads((folder / METADATA_NAME).read_text())
    assert metadata == trained.result.metadata
    assert (metadata["model_type"], metadata["pti_tokens"], metadata["ti_steps"]) == ("pti", TOKENS, 20)
    assert metadata["instance_prompt"] == "<s0><s1> thing" and metadata["token"] == "ohwx"
    assert not (folder / CHECKPOINT_NAME).exists()


def test_only_the_new_token_rows_are_trained(trained, base_pipe):
    embeddings = load_file(trained.result.output_dir / EMBEDDINGS_NAME)
    base_encoders = [base_pipe.text_encoder, base_pipe.text_encoder_2]
    for key, base, tuned in zip(("clip_l", "clip_g"), base_encoders, trained.encoders, strict=True):
        before, after = base.get_input_embeddings().weight, tuned.get_input_embeddings().weight
        assert after.shape[0] == before.shape[0] + 2, key
        assert torch.equal(after[: before.shape[0]], before), f"{key}: a row of an existing token changed"
        assert torch.equal(after[before.shape[0] :], embeddings[key]), f"{key}: the tables hold the saved rows"
        for name, parameter in tuned.named_parameters():  # the rest of the encoder did not train either
            if "token_embedding" not in name:
                assert torch.equal(parameter, dict(base.named_parameters())[name]), name


def test_stock_diffusers_and_load_pivotal_generate_the_tuned_subject(trained, base_pipe, tuned_pipe, tiny_sdxl_dir):
    folder = trained.result.output_dir
    base = latents(base_pipe, "ohwx thing")
    tuned = latents(tuned_pipe, "<s0><s1> thing")
    assert not torch.allclose(base, tuned, atol=1e-4), "the LoRA and embeddings had no effect on generation"

    pipe = stock_pipeline(tiny_sdxl_dir)
    pipe.load_lora_weights(folder)
    lora_only = latents(pipe, "<s0><s1> thing")
    tokens = load_pivotal(pipe, folder)
    assert tokens == TOKENS
    prompt = pivotal_prompt("ohwx thing", "ohwx", tokens)
    assert prompt == "<s0><s1> thing"
    torch.testing.assert_close(latents(pipe, prompt), tuned)
    assert not torch.allclose(lora_only, tuned, atol=1e-4), "the embeddings had no effect on generation"
    load_pivotal(pipe, folder)  # tokens of the same names (another tune's) are replaced, not refused
    torch.testing.assert_close(latents(pipe, prompt), tuned)


def test_resuming_inside_and_after_the_embedding_phase_matches_an_uninterrupted_run(tmp_path, tiny_sdxl_dir):
    """4 steps, the first 2 train the embeddings: stop after step 1 (inside that phase), then after step 3."""
    config = pti_config(steps=4, seed=3, resolution=64)  # a cancelled run saves a checkpoint where it stops
    photos = samples(2, size=64)
    straight = train_lora(config, photos, tmp_path / "straight", model_dir=tiny_sdxl_dir)

    folder = tmp_path / "resumed"
    saved_rows = {}
    for stop in (1, 3):
        steps = []
        with pytest.raises(TrainingCancelledError) as cancelled:
            train_lora(
                config,
                photos,
                folder,
                model_dir=tiny_sdxl_dir,
                on_progress=lambda p, steps=steps: p.phase == "training" and steps.append(p.step),
                should_cancel=lambda steps=steps, stop=stop: bool(steps) and steps[-1] >= stop,
            )
        assert cancelled.value.step == stop and not (folder / LORA_WEIGHTS_NAME).exists()
        saved_rows[stop] = torch.load(folder / CHECKPOINT_NAME, weights_only=True)["embeddings"]
    resumed = train_lora(config, photos, folder, model_dir=tiny_sdxl_dir)

    assert resumed.resumed_from_step == 3
    for name in (LORA_WEIGHTS_NAME, EMBEDDINGS_NAME):
        expected, got = load_file(straight.output_dir / name), load_file(folder / name)
        assert expected.keys() == got.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-6)
    assert resumed.metadata["loss_curve"]["values"] == pytest.approx(straight.metadata["loss_curve"]["values"], 1e-4)
    final = load_file(folder / EMBEDDINGS_NAME)
    assert not torch.allclose(saved_rows[1]["clip_l"], final["clip_l"]), "the embeddings train until the pivot"
    torch.testing.assert_close(saved_rows[3]["clip_g"], final["clip_g"])  # and are frozen after it


@pytest.mark.parametrize(
    ("branch", "changes", "field"),
    [
        ("tiny", {"model_type": "pti"}, "model_type"),
        ("sd15", {"model_type": "pti"}, "model_type"),
        ("sdxl1", {"model_type": "dora"}, "model_type"),
        ("sdxl1", {"model_type": "pti", "train_text_encoder_ti_frac": 0.0}, "train_text_encoder_ti_frac"),
        ("sdxl1", {"model_type": "pti", "num_new_tokens": 0}, "num_new_tokens"),
        ("sdxl1", {"model_type": "pti", "cache_latents": False}, "cache_latents"),
    ],
)
def test_bad_pivotal_settings_are_refused_with_the_field_named(branch, changes, field):
    with pytest.raises(ValidationError) as error:
        TrainConfig.for_branch(get_branch(branch), class_name="man", base_model="x", **changes)
    assert error.value.field == field and f"`{field}`" in str(error.value)
    if field == "model_type":
        assert repr(changes["model_type"]) in str(error.value)


def test_pivotal_prompt_replaces_the_whole_word_token_only():
    assert (
        pivotal_prompt("photo of OHWX man, ohwx's smile", "ohwx", TOKENS) == "photo of <s0><s1> man, <s0><s1>'s smile"
    )
    assert pivotal_prompt("ohwxy and xohwx", "ohwx", TOKENS) == "ohwxy and xohwx"
