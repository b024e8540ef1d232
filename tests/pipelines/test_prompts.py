"""Prompt rendering fills the token, the class and the tune's characteristics, nothing else."""

from __future__ import annotations

import pytest

from pipelines.errors import PromptTemplateError, ValidationError
from pipelines.prompts import check_characteristics, render_prompt


def render(text: str, **characteristics: str) -> str:
    return render_prompt(text, token="ohwx", class_name="woman", characteristics=characteristics)


def test_token_class_and_characteristics_are_filled():
    text = "portrait of {{token}} {{class}} with {{ eye_color }} eyes, {{subject}} smiling"
    assert render(text, eye_color="green") == "portrait of ohwx woman with green eyes, ohwx woman smiling"


def test_a_prompt_that_already_names_the_subject_is_kept_as_written():
    assert render("ohwx woman as a knight, oil painting") == "ohwx woman as a knight, oil painting"


def test_a_prompt_without_the_token_gets_the_subject_in_front():
    assert render("as a knight, oil painting") == "ohwx woman, as a knight, oil painting"
    assert render("ohwxy is not the token") == "ohwx woman, ohwxy is not the token"


def test_an_unknown_placeholder_is_named():
    with pytest.raises(PromptTemplateError, match="unknown placeholder\\(s\\) hair_color"):
        render("{{subject}} with {{hair_color}} hair")


def test_values_are_inserted_once_and_never_rendered_again():
    assert render("{{subject}} in {{place}}", place="token land") == "ohwx woman in token land"
    with pytest.raises(ValidationError, match=r"characteristics\.place"):
        check_characteristics({"place": "{{token}}"})


@pytest.mark.parametrize("text", ["{{ 7*7 }}", "{% if x %}", "{{subject}} }}", "{{"])
def test_stray_or_template_syntax_is_refused(text):
    with pytest.raises(ValidationError):
        render(text)


@pytest.mark.parametrize(
    "characteristics",
    [{"Eye Color": "blue"}, {"token": "x"}, {"eye_color": 3}, {"eye_color": "x" * 101}, {"eye_color": "a\nb"}],
)
def test_bad_characteristics_name_the_key(characteristics):
    with pytest.raises(ValidationError, match="characteristics"):
        check_characteristics(characteristics)


def test_empty_and_huge_prompts_are_refused():
    with pytest.raises(ValidationError, match="`text` must be a non-empty prompt"):
        render("  ")
    with pytest.raises(ValidationError, match="at most 2000 characters"):
        render("a" * 2001)


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("a close-up photo, 85mm", "a close-up photo, 85mm"),  # no weighting: taken as it is, parser skipped
        ("(freckles:1.3) face, soft light", "freckles face, soft light"),
        ("a red++ scarf, blurry- background", "a red scarf, blurry background"),
    ],
)
def test_plain_prompt_text_takes_out_weighting_and_keeps_hyphenated_words(text, plain):
    from pipelines.prompts import plain_prompt_text

    assert plain_prompt_text(text).split() == plain.split()
