"""Generation on the tiny branch: seeds, LoRA adapters and their cache, schedulers, extra passes."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image
from skimage import data

from pipelines.errors import GenerationCancelledError, ModelUnavailableError, ValidationError
from pipelines.faces import detect_faces
from pipelines.generate import GenerationRequest, Generator, LoraSpec
from pipelines.prompt_spec import FAMILY_SAMPLING
from pipelines.registry import get_branch
from pipelines.train import TrainConfig, train_lora
from tests.conftest import Sample, settings_with_tiny, subject_image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.abs(pixels(a) - pixels(b)).max() <= 1


@pytest.fixture(scope="module")
def two_loras(tmp_path_factory, tiny_sd15_dir):
    """Two different LoRAs of the tiny model (a few steps each)."""
    folders = []
    for seed in (1, 2):
        config = TrainConfig.for_branch(
            get_branch("tiny"), class_name="thing", base_model="tiny", steps=8, seed=seed, checkpoint_every=99
        )
        samples = [Sample(subject_image(i + seed), "sks thing") for i in range(4)]
        out = tmp_path_factory.mktemp(f"lora{seed}")
        train_lora(config, samples, out, model_dir=tiny_sd15_dir)
        folders.append(out)
    return [LoraSpec(f"tune-{i}", folder) for i, folder in enumerate(folders)]


@pytest.fixture(scope="module")
def shared_generator(tmp_path_factory, tiny_sd15_dir) -> Generator:
    """One generator for tests that do not count loads: the base pipeline is loaded once."""
    return Generator(settings_with_tiny(tmp_path_factory.mktemp("shared"), tiny_sd15_dir))


def request(**changes) -> GenerationRequest:
    return GenerationRequest(**{"text": "sks thing", "num_images": 1, "steps": 4, "seed": 11, **changes})


def test_same_seed_same_images_and_each_image_reproduces_alone_by_its_seed(settings):
    generator = Generator(settings)
    first = generator.generate("tiny", request(num_images=3))
    again = generator.generate("tiny", request(num_images=3))
    single = generator.generate("tiny", request(seed=12))

    assert first.seeds == [11, 12, 13]
    assert all(im.image.size == (128, 128) for im in first.images)
    assert all(same(a.image, b.image) for a, b in zip(first.images, again.images, strict=True))
    assert same(first.images[1].image, single.images[0].image)
    assert not same(first.images[0].image, first.images[1].image)


def test_without_a_seed_one_is_chosen_and_reported(settings):
    result = Generator(settings).generate("tiny", request(seed=None, num_images=2))
    assert result.seeds[1] == result.seeds[0] + 1
    again = Generator(settings).generate("tiny", request(seed=result.seeds[0], num_images=1))
    assert same(again.images[0].image, result.images[0].image)


def test_switching_tunes_reuses_the_base_and_cached_adapters(settings, two_loras):
    a, b = two_loras
    generator = Generator(settings)
    base = generator.generate("tiny", request())
    with_a = generator.generate("tiny", request(loras=(a,)))
    with_b = generator.generate("tiny", request(loras=(b,)))
    with_a_again = generator.generate("tiny", request(loras=(a,)))
    base_again = generator.generate("tiny", request())

    assert generator.base_loads == 1
    assert generator.lora_loads("tiny") == 2, "switching back to a cached tune must not re-read its file"
    assert not same(base.images[0].image, with_a.images[0].image)
    assert not same(with_a.images[0].image, with_b.images[0].image)
    assert same(with_a.images[0].image, with_a_again.images[0].image)
    assert same(base.images[0].image, base_again.images[0].image), "no LoRA must mean the plain base model"


def test_the_adapter_cache_evicts_the_least_recently_used(settings, two_loras):
    a, b = two_loras
    generator = Generator(settings.with_overrides(lora_cache_size=1))
    with_a = generator.generate("tiny", request(loras=(a,)))
    generator.generate("tiny", request(loras=(b,)))
    assert generator.loaded_adapters("tiny") == [b.adapter_name]
    with_a_again = generator.generate("tiny", request(loras=(a,)))

    assert generator.lora_loads("tiny") == 3
    assert same(with_a.images[0].image, with_a_again.images[0].image)


def test_two_loras_combine_with_weights(settings, two_loras):
    a, b = two_loras
    generator = Generator(settings)
    only_a = generator.generate("tiny", request(loras=(a,)))
    both = generator.generate("tiny", request(loras=(a, LoraSpec(b.name, b.path, weight=0.8))))
    a_with_b_off = generator.generate("tiny", request(loras=(a, LoraSpec(b.name, b.path, weight=0.0))))

    assert not same(only_a.images[0].image, both.images[0].image)
    assert same(only_a.images[0].image, a_with_b_off.images[0].image)


def test_concurrent_generations_on_one_pipeline_do_not_mix_adapters(settings, two_loras):
    a, b = two_loras
    generator = Generator(settings)
    expected = {
        "a": generator.generate("tiny", request(loras=(a,))).images[0].image,
        "b": generator.generate("tiny", request(loras=(b,))).images[0].image,
    }
    results: dict[str, list[Image.Image]] = {"a": [], "b": []}

    def worker(key: str, spec: LoraSpec) -> None:
        for _ in range(3):
            results[key].append(generator.generate("tiny", request(loras=(spec,))).images[0].image)

    threads = [threading.Thread(target=worker, args=args) for args in (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for key, images in results.items():
        assert len(images) == 3 and all(same(image, expected[key]) for image in images)


@pytest.mark.parametrize("scheduler", FAMILY_SAMPLING["sd15"].schedulers)
def test_every_scheduler_generates(shared_generator, scheduler):
    result = shared_generator.generate("tiny", request(scheduler=scheduler, steps=3))
    assert result.images[0].image.size == (128, 128)
    assert pixels(result.images[0].image).std() > 0


def test_width_and_height_and_hires_and_super_resolution_sizes(shared_generator):
    generator = shared_generator
    wide = generator.generate("tiny", request(w=192, h=128))
    hires = generator.generate("tiny", request(hires_fix=True))
    both = generator.generate("tiny", request(hires_fix=True, super_resolution=True))

    assert wide.images[0].image.size == (192, 128)
    assert hires.images[0].image.size == (192, 192)
    assert both.images[0].image.size == (384, 384)


def test_inpaint_faces_repaints_the_face_and_leaves_the_rest(shared_generator):
    photo = Image.fromarray(data.astronaut()).resize((256, 256))
    (face,) = detect_faces(photo)
    [painted] = shared_generator.refine_faces("tiny", [photo], request(text="sks woman"), seed=3)

    diff = np.abs(pixels(painted) - pixels(photo)).sum(-1)
    inside = diff[face.y + face.h // 4 : face.y + 3 * face.h // 4, face.x + face.w // 4 : face.x + 3 * face.w // 4]
    left, top, side = face.expanded_square(2.0, photo.size)
    outside = np.ones_like(diff, dtype=bool)
    outside[top : top + side, left : left + side] = False
    assert inside.mean() > 20, "the face region was not re-painted"
    assert diff[outside].max() == 0, "pixels away from the face changed"


def test_inpaint_faces_without_faces_changes_nothing(shared_generator):
    generator = shared_generator
    plain = generator.generate("tiny", request())
    inpainted = generator.generate("tiny", request(inpaint_faces=True))
    assert same(plain.images[0].image, inpainted.images[0].image)


def test_generation_can_be_cancelled_between_steps(shared_generator):
    steps = []
    with pytest.raises(GenerationCancelledError):
        shared_generator.generate(
            "tiny", request(steps=10), on_step=lambda s, n: steps.append(s), should_cancel=lambda: len(steps) >= 2
        )
    assert steps == [1, 2]


def test_fast_branch_returns_placeholders_without_loading_a_model(settings):
    generator = Generator(settings)
    result = generator.generate("fast", request(num_images=2, w=256, h=320))
    assert generator.base_loads == 0
    assert [im.image.size for im in result.images] == [(256, 320), (256, 320)]
    assert not same(result.images[0].image, result.images[1].image)


def test_sdxl_branch_generates_from_a_local_folder(settings, tiny_sdxl_dir):
    generator = Generator(settings.with_overrides(base_model_sdxl1=str(tiny_sdxl_dir)))
    result = generator.generate("sdxl1", request(text="ohwx thing", w=128, h=128))
    assert result.images[0].image.size == (128, 128)


def test_an_unreachable_base_model_says_how_to_provide_it(settings):
    with pytest.raises(ModelUnavailableError, match="TUNES_BASE_MODEL_SD15"):
        Generator(settings).generate("sd15", request())


def test_a_missing_lora_file_is_a_clear_error(settings, tmp_path):
    with pytest.raises(ValidationError, match="has no LoRA weights"):
        Generator(settings).generate("tiny", request(loras=(LoraSpec("gone", tmp_path / "nothing"),)))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"w": 500}, "w"),
        ({"h": 4096}, "h"),
        ({"num_images": 9}, "num_images"),
        ({"num_images": 0}, "num_images"),
        ({"steps": 0}, "steps"),
        ({"seed": -5}, "seed"),
        ({"cfg_scale": 99}, "cfg_scale"),
        ({"scheduler": "k_lms_fancy"}, "scheduler"),
        ({"text": "   "}, "text"),
    ],
)
def test_bad_generation_requests_name_the_field(change, field):
    with pytest.raises(ValidationError) as error:
        request(**change)
    assert error.value.field == field and repr(change[field])[:20] in str(error.value)
