"""Generation with a pivotal-tuning LoRA (SDXL `model_type: pti`): the generator loads its token embeddings beside
the UNet LoRA, under names of its own, and puts them in the place of the tune's token; evicting the adapter takes
the tokens out again."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipelines.generate import GenerationRequest, Generator, LoraSpec, pivotal_text
from pipelines.train import train_lora
from tests.pipelines.test_train_pti import pti_config, samples


def same(a, b) -> bool:
    return a.size == b.size and np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 1


@pytest.fixture(scope="module")
def pti_loras(tmp_path_factory, tiny_sdxl_dir) -> list[LoraSpec]:
    specs = []
    for seed in (1, 2):
        out = tmp_path_factory.mktemp(f"pti-lora{seed}")
        train_lora(pti_config(steps=4, seed=seed), samples(), out, model_dir=tiny_sdxl_dir)
        specs.append(LoraSpec(f"tune-{seed}", out, token="ohwx"))
    return specs


def request(**changes) -> GenerationRequest:
    return GenerationRequest(**{"text": "ohwx thing", "num_images": 1, "steps": 3, "seed": 3, "w": 128, "h": 128,
                                **changes})  # fmt: skip


def test_a_pivotal_tune_generates_with_its_tokens_in_place_of_its_token(settings, tiny_sdxl_dir, pti_loras):
    a, b = pti_loras
    generator = Generator(settings.with_overrides(base_model_sdxl1=str(tiny_sdxl_dir), lora_cache_size=1))
    with_tokens = generator.generate("sdxl1", request(loras=(a,))).images[0].image
    loaded = generator._loaded["sdxl1"]
    tokens_a = loaded.pivotal[a.adapter_name]
    assert len(tokens_a) == 2 and all(t in loaded.pipe.tokenizer_2.get_vocab() for t in tokens_a)
    token_unknown = generator.generate("sdxl1", request(loras=(LoraSpec(a.name, a.path),))).images[0].image
    assert not same(with_tokens, token_unknown), "the trained tokens, not the word `ohwx`, carry the subject"

    generator.generate("sdxl1", request(loras=(b,)))  # a cache of one: tune-1 leaves, and its tokens with it
    assert list(loaded.pivotal) == [b.adapter_name]
    for tokenizer in (loaded.pipe.tokenizer, loaded.pipe.tokenizer_2):
        assert not set(tokens_a) & set(tokenizer.get_vocab()) and set(loaded.pivotal[b.adapter_name]) <= set(
            tokenizer.get_vocab()
        )
    again = generator.generate("sdxl1", request(loras=(a,))).images[0].image
    assert same(with_tokens, again), "reloaded, the tune draws what it drew"


def test_two_pivotal_tunes_sharing_a_token_take_its_occurrences_in_tag_order():
    a, b = (("ohwx", ["<a_0>", "<a_1>"]), ("OHWX", ["<b_0>", "<b_1>"]))
    text = "ohwx man and Ohwx woman, ohwx again; sks dog"
    assert pivotal_text(text, [a, b]) == "<a_0><a_1> man and <b_0><b_1> woman, <b_0><b_1> again; sks dog"
    assert pivotal_text(text, [b, a]) == "<b_0><b_1> man and <a_0><a_1> woman, <a_0><a_1> again; sks dog"
    assert (
        pivotal_text(text, [a, ("sks", ["<c_0>"])])
        == "<a_0><a_1> man and <a_0><a_1> woman, <a_0><a_1> again; <c_0> dog"
    )


def test_a_prompt_with_two_pivotal_tunes_loads_both_token_sets(settings, tiny_sdxl_dir, pti_loras):
    a, b = pti_loras
    generator = Generator(settings.with_overrides(base_model_sdxl1=str(tiny_sdxl_dir), lora_cache_size=2))
    both = request(text="ohwx thing and ohwx thing", loras=(a, b))
    first = generator.generate("sdxl1", both).images[0].image
    loaded = generator._loaded["sdxl1"]
    assert set(loaded.pivotal) == {a.adapter_name, b.adapter_name}
    swapped = generator.generate("sdxl1", replace(both, loras=(b, a))).images[0].image
    assert not same(first, swapped), "which tune's tokens stand where follows the tag order"
