"""Long prompts: the end of a prompt past CLIP's 77 tokens still counts, weights change the encoding, and
short prompts encode as the pipelines themselves encode them (so they give the images they gave before).

The tiny models' tokenizer is byte-level (a token per character), so a few hundred characters are several
77-token windows.
"""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from pipelines.device import pick_placement
from pipelines.generate import SCHEDULERS, GenerationRequest, Generator, encode_prompts
from pipelines.prompt_spec import FAMILY_SAMPLING
from pipelines.prompts import plain_prompt_text, to_compel_syntax
from pipelines.registry import load_pipeline

PREFIX = "sks thing, portrait in soft window light, " * 6  # about 210 tokens of the tiny tokenizer
ENDINGS = ("sharp focus on the eyes", "blurry background, wide shot")
NEGATIVE = "cartoon, lowres"


@pytest.fixture(scope="module")
def pipes(tiny_sd15_dir, tiny_sdxl_dir) -> dict[str, object]:
    """The tiny SD-1.5 and SDXL text-to-image pipelines by family."""
    placement = pick_placement("cpu")
    return {
        "sd15": load_pipeline(tiny_sd15_dir, "sd15", placement),
        "sdxl": load_pipeline(tiny_sdxl_dir, "sdxl", placement),
    }


@pytest.fixture(scope="module")
def generator(tmp_path_factory, tiny_sd15_dir, tiny_sdxl_dir) -> Generator:
    from tests.conftest import settings_with_tiny

    settings = settings_with_tiny(tmp_path_factory.mktemp("long"), tiny_sd15_dir)
    return Generator(settings.with_overrides(base_model_sdxl1=str(tiny_sdxl_dir)))


def differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape != b.shape or not torch.allclose(a, b, atol=1e-5)


def stock_encoding(pipe, prompt: str, negative: str | None = None) -> tuple:
    """The pipeline's own `encode_prompt` (what generation used before compel)."""
    return pipe.encode_prompt(
        prompt=prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=negative
    )


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def request(prompt: str, **changes) -> GenerationRequest:
    return GenerationRequest(**{"text": prompt, "num_images": 1, "steps": 2, "seed": 5, "w": 128, "h": 128, **changes})


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_the_end_of_a_long_prompt_changes_the_embedding(pipes, family):
    pipe = pipes[family]
    assert len(pipe.tokenizer(PREFIX).input_ids) > 150  # the endings lie well past token 77
    first, second = (encode_prompts(pipe, family, PREFIX + ending, NEGATIVE) for ending in ENDINGS)

    assert differ(first["prompt_embeds"], second["prompt_embeds"])
    assert first["prompt_embeds"].shape[1] > 77  # several chunks, not one cut window
    assert first["negative_prompt_embeds"].shape == first["prompt_embeds"].shape
    # diffusers' own encoding cuts at 77 tokens: both endings were lost there
    cut = [stock_encoding(pipe, PREFIX + ending)[0] for ending in ENDINGS]
    assert not differ(*cut)


@pytest.mark.parametrize("branch", ["tiny", "sdxl1"])
def test_the_end_of_a_long_prompt_changes_the_image(generator, branch):
    first, second = (generator.generate(branch, request(PREFIX + ending)).images[0].image for ending in ENDINGS)
    assert np.abs(pixels(first) - pixels(second)).max() > 1


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_weighting_syntax_changes_the_embedding(pipes, family):
    def embeds(prompt: str) -> torch.Tensor:
        return encode_prompts(pipes[family], family, prompt)["prompt_embeds"]

    plain = embeds("sks thing, red hat, blue sky")
    assert differ(embeds("sks thing, (red hat)1.5, blue sky"), plain)
    assert differ(embeds("sks thing, red hat, blue++ sky"), plain)
    assert not differ(embeds("sks thing, (red hat:1.5), blue sky"), embeds("sks thing, (red hat)1.5, blue sky"))


@pytest.mark.parametrize("negative", ["", NEGATIVE])
@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_a_short_prompt_encodes_as_the_pipeline_encodes_it(pipes, family, negative):
    pipe = pipes[family]
    ours = encode_prompts(pipe, family, "sks thing, a photo", negative)
    theirs = stock_encoding(pipe, "sks thing, a photo", negative or None)
    names = ["prompt_embeds", "negative_prompt_embeds"]
    if family == "sdxl":
        names += ["pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
    for name, expected in zip(names, theirs, strict=True):
        if family == "sdxl" and not negative and name.startswith("negative"):
            assert ours[name] is None  # the pipeline puts zeros there, as it did for an empty negative prompt
        else:
            assert not differ(ours[name], expected), name


def test_a_short_prompt_gives_the_images_the_pipeline_gave_before(generator, pipes):
    ours = generator.generate("tiny", request("sks thing, a photo", negative_prompt=NEGATIVE, num_images=2))
    pipe = pipes["sd15"]
    class_name, extra = SCHEDULERS[FAMILY_SAMPLING["sd15"].scheduler]  # what a prompt without one runs with
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **extra)
    before = pipe(  # the call generate() made before compel: prompt strings, one per image
        prompt=["sks thing, a photo"] * 2,
        negative_prompt=[NEGATIVE] * 2,
        width=128,
        height=128,
        num_inference_steps=2,
        guidance_scale=7.0,
        generator=[torch.Generator("cpu").manual_seed(s) for s in (5, 6)],
    ).images
    for image, old in zip(ours.images, before, strict=True):
        assert np.abs(pixels(image.image) - pixels(old)).max() <= 1


@pytest.fixture
def img2img_calls(monkeypatch) -> list[dict]:
    """The keyword arguments of every image-to-image call (hires, super-resolution, face re-painting)."""
    calls: list[dict] = []
    real = Generator._image_to_image

    def recording(self, loaded):
        pipe = real(self, loaded)

        def call(**kwargs):
            calls.append(kwargs)
            return pipe(**kwargs)

        return call

    monkeypatch.setattr(Generator, "_image_to_image", recording)
    return calls


def test_hires_and_face_passes_get_the_long_prompt_embeddings(generator, img2img_calls):
    generator.generate("tiny", request(PREFIX + ENDINGS[0], hires_fix=True))
    photo = Image.fromarray(data.astronaut()).resize((256, 256))
    generator.refine_faces("tiny", [photo], request(PREFIX + ENDINGS[0]), seed=3)

    assert len(img2img_calls) == 2  # one hires pass, one face
    for kwargs in img2img_calls:
        assert "prompt" not in kwargs and kwargs["prompt_embeds"].shape[1] > 77
        assert kwargs["negative_prompt_embeds"].shape == kwargs["prompt_embeds"].shape


def test_colon_weights_become_compel_weights_and_ratios_stay_text():
    assert to_compel_syntax("a (red hat:1.2), (blue:.8) sky") == "a (red hat)1.2, (blue).8 sky"
    assert to_compel_syntax("aspect (4:5), (x:7)") == "aspect (4:5), (x:7)"
    assert plain_prompt_text("sks thing, (red hat:1.3), blue++ sky") == "sks thing, red hat , blue sky"
