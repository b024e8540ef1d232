"""Pack lint: prompts past what their branch reads well are warned about (never refused), naming the pack,
class, prompt and token count; the shipped packs lint clean."""

from __future__ import annotations

import copy

import pytest
from transformers import CLIPTokenizer

from packs.lint import CHUNK_TOKENS, MAX_CHUNKS, estimate_clip_tokens, lint_pack, tokenizer_counter
from packs.loader import LIBRARY_DIR, load_library, parse_pack
from pipelines.errors import ValidationError

LONG = "portrait of {{subject}}, " + "soft window light, " * 16 + "sharp focus on the eyes"
PACK = {
    "id": "long-prompts",
    "title": "Long prompts",
    "description": "One long prompt among short ones.",
    "classes": ["man", "woman"],
    "default_branch": "tiny",
    "prompts": {
        "man": [{"text": "photo of {{subject}}"}, {"text": LONG}],
        "woman": [{"text": "photo of {{subject}}", "negative_prompt": "blurry"}],
    },
}


def pack(**changes):
    data = copy.deepcopy(PACK)
    data.update(changes)
    return parse_pack(data, source="long-prompts.yaml")


@pytest.fixture(scope="module")
def tiny_counter(tiny_sd15_dir):
    return tokenizer_counter(CLIPTokenizer.from_pretrained(tiny_sd15_dir / "tokenizer"))


def test_a_prompt_past_three_chunks_is_warned_about_naming_pack_class_prompt_and_tokens(tiny_counter):
    [warning] = lint_pack(pack(), count_tokens=tiny_counter)  # a token per character in the tiny tokenizer

    assert (warning.pack_id, warning.class_name, warning.index, warning.field) == ("long-prompts", "man", 1, "text")
    assert warning.limit == CHUNK_TOKENS * MAX_CHUNKS < warning.tokens
    assert warning.prompt.startswith("portrait of ohwx man, soft window light")
    message = warning.message
    assert "long-prompts: prompts.man[1].text" in message and f"has {warning.tokens} CLIP tokens" in message
    assert "branch tiny" in message and "portrait of ohwx man" in message
    assert warning.to_dict()["path"] == "prompts.man[1].text"


def test_negative_prompts_are_checked_too(tiny_counter):
    long_negative = {"text": "photo of {{subject}}", "negative_prompt": "blurry, lowres, " * 20}
    warnings = lint_pack(pack(prompts={**PACK["prompts"], "woman": [long_negative]}), count_tokens=tiny_counter)
    assert [(w.class_name, w.field) for w in warnings] == [("man", "text"), ("woman", "negative_prompt")]


def test_weighting_syntax_is_not_counted(tiny_counter):
    plain = {"text": "photo of {{subject}}, " + "soft light, " * 25}
    weighted = {"text": "photo of {{subject}}, " + "(soft light)1.2, " * 25}
    counts = [
        lint_pack(pack(prompts={"man": [item], "woman": [item]}), count_tokens=tiny_counter)[0].tokens
        for item in (plain, weighted)
    ]
    assert counts[0] == counts[1]


def test_each_branch_has_its_own_budget(tiny_counter):
    assert lint_pack(pack(default_branch="fast"), count_tokens=tiny_counter) == []  # the mock reads no text
    assert lint_pack(pack(), branch="flux1", count_tokens=tiny_counter) == []  # T5 reads 512 tokens
    [warning] = lint_pack(pack(default_branch="flux1"), branch="sdxl1", count_tokens=tiny_counter)
    assert warning.branch == "sdxl1"
    with pytest.raises(ValidationError, match="branch"):
        lint_pack(pack(), branch="sd3")


def test_the_estimate_counts_words_digits_and_punctuation():
    assert estimate_clip_tokens("a photo, 85mm lens at f/4") == 11  # a photo , 8 5 mm lens at f / 4
    assert estimate_clip_tokens("photorealistic") == 3  # long words count as several tokens (it errs high)


def test_the_shipped_packs_lint_clean_on_their_branches():
    for shipped in load_library(LIBRARY_DIR).values():
        assert lint_pack(shipped) == [], shipped.id
