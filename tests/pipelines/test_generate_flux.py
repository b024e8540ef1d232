"""Generation on the tiny FLUX model (`tiny-flux`): its flow-match sampler and guidance defaults, LoRAs (one fused,
several as weighted adapters), the extra passes, and a clear error for a sampler FLUX cannot run."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.errors import ValidationError
from pipelines.generate import GenerationRequest, Generator, LoraSpec
from pipelines.prompt_spec import FAMILY_SAMPLING
from pipelines.registry import get_branch
from pipelines.settings import Settings
from pipelines.train import TrainConfig, train_lora
from tests.conftest import Sample, subject_image


def same(a, b) -> bool:
    return a.size == b.size and np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 1


@pytest.fixture(scope="module")
def flux_settings(tmp_path_factory, tiny_flux_dir) -> Settings:
    data = tmp_path_factory.mktemp("flux-data")
    (data / "models").mkdir()
    (data / "models" / "tiny-flux").symlink_to(tiny_flux_dir, target_is_directory=True)
    return Settings(data_dir=data, device="cpu")


@pytest.fixture(scope="module")
def generator(flux_settings) -> Generator:
    return Generator(flux_settings)


@pytest.fixture(scope="module")
def flux_loras(tmp_path_factory, tiny_flux_dir) -> list[LoraSpec]:
    """Two different LoRAs of the tiny FLUX model."""
    specs = []
    for seed in (1, 2):
        config = TrainConfig.for_branch(
            get_branch("tiny-flux"), class_name="thing", base_model="tiny-flux", steps=6, seed=seed, checkpoint_every=99
        )
        out = tmp_path_factory.mktemp(f"flux-lora{seed}")
        train_lora(
            config, [Sample(subject_image(i + seed), "ohwx thing") for i in range(4)], out, model_dir=tiny_flux_dir
        )
        specs.append(LoraSpec(f"tune-{seed}", out))
    return specs


def request(**changes) -> GenerationRequest:
    return GenerationRequest(**{"text": "ohwx thing", "num_images": 1, "steps": 3, "seed": 7, **changes})


def test_flux_generates_with_its_own_sampler_and_guidance_and_the_same_seed_gives_the_same_image(generator):
    first = generator.generate("tiny-flux", request(num_images=2))
    again = generator.generate("tiny-flux", request(seed=8))
    assert [im.image.size for im in first.images] == [(128, 128)] * 2 and first.seeds == [7, 8]
    assert same(first.images[1].image, again.images[0].image), "image i reproduces alone by its seed"
    flux = FAMILY_SAMPLING["flux"]
    explicit = generator.generate(
        "tiny-flux", request(scheduler=flux.scheduler, cfg_scale=flux.cfg_scale, num_images=2)
    )
    assert same(first.images[0].image, explicit.images[0].image), "empty fields mean FLUX's own defaults"
    assert type(generator._loaded["tiny-flux"].pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"


def test_a_sampler_flux_cannot_run_is_refused_naming_the_one_it_can(generator):
    with pytest.raises(ValidationError) as caught:
        generator.generate("tiny-flux", request(scheduler="dpm++2m_karras"))
    assert caught.value.field == "scheduler" and "flow_match_euler" in str(caught.value)


def test_hires_super_resolution_and_face_passes_keep_flux_sizes(generator):
    assert generator.generate("tiny-flux", request(hires_fix=True)).images[0].image.size == (192, 192)
    assert generator.generate("tiny-flux", request(super_resolution=True)).images[0].image.size == (256, 256)
    assert generator.generate("tiny-flux", request(w=200, h=120)).images[0].image.size == (192, 112), "multiples of 16"
    assert generator.generate("tiny-flux", request(inpaint_faces=True)).images[0].image.size == (128, 128)


def test_flux_loras_one_fused_several_weighted_and_none_gives_back_the_base(generator, flux_loras):
    a, b = flux_loras
    base = generator.generate("tiny-flux", request()).images[0].image
    only_a = generator.generate("tiny-flux", request(loras=(a,))).images[0].image
    assert generator._loaded["tiny-flux"].fused is not None, "one LoRA alone runs fused into the base weights"
    both = generator.generate("tiny-flux", request(loras=(a, LoraSpec(b.name, b.path, weight=0.8)))).images[0].image
    a_with_b_off = generator.generate("tiny-flux", request(loras=(a, LoraSpec(b.name, b.path, 0.0)))).images[0].image
    base_again = generator.generate("tiny-flux", request()).images[0].image

    assert not same(base, only_a), "the LoRA changes the image"
    assert not same(only_a, both)
    assert same(only_a, a_with_b_off), "fused alone and unfused beside a zero-weight LoRA draw the same image"
    assert same(base, base_again), "unfusing gives back the plain base model"
