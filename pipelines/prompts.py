"""Prompt rendering: the tune's token and class, and `{{key}}` placeholders from its characteristics.

Rendering is one pass over the template, so text inserted from characteristics is never rendered again
(a characteristic whose value contains `{{...}}` cannot inject a placeholder). `<lora:ID:weight>` tags
(Astria's way to combine tunes in one prompt) are parsed and taken out of the text by `split_lora_tags`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pipelines.errors import PromptTemplateError, ValidationError

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_ANY_BRACES = re.compile(r"\{\{|\}\}|\{%|%\}")  # `{% %}` too: this is not Jinja, say so
_EMPTY_LIST_ITEMS = re.compile(r"\s*,(\s*,)+\s*")
_KEY = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
MAX_PROMPT_CHARS = 2000
MAX_CHARACTERISTIC_CHARS = 100
RESERVED_KEYS = ("token", "class", "name", "subject", "characteristics")
# anything that starts like a tag is checked, so a typo is an error rather than words sent to the model
_LORA_LIKE = re.compile(r"<\s*lora\b[^>]*>?", re.IGNORECASE)
_LORA_TAG = re.compile(r"<lora:([1-9][0-9]{0,17})(?::([0-9]+(?:\.[0-9]+)?|\.[0-9]+))?>")
_LORA_TAG_BEFORE_PUNCTUATION = re.compile(r"[ \t]*" + _LORA_TAG.pattern + r"(?=[,.;:!?)])")
MAX_LORA_TAGS = 4
MAX_LORA_WEIGHT = 2.0


@dataclass(frozen=True)
class LoraTag:
    """One `<lora:ID:weight>` tag: the tune it names, its weight (1.0 when not written) and the tag as written."""

    tune_id: int
    weight: float
    tag: str


def split_lora_tags(text: str, *, field: str = "text") -> tuple[str, tuple[LoraTag, ...]]:
    """Take `<lora:ID>` / `<lora:ID:WEIGHT>` tags out of a prompt.

    A tag is exactly `<lora:` + a positive integer id + optionally `:` and a decimal weight in (0, 2] +
    `>` (lowercase, no spaces, no sign or exponent). At most 4 tags, each naming a different id. Anything
    else that starts like a tag (`<lora`, any case) is refused. The tags are removed (with the spaces before
    them when punctuation follows, else replaced by a space) and runs of spaces collapsed. Text that is
    not a string is returned unchanged (rendering reports it).

    Returns:
        (the text without tags, the tags in the order written).

    Raises:
        ValidationError: naming `field` and the offending tag: malformed, weight out of range, an id
            named twice, or more than 4 tags.
    """
    if not isinstance(text, str) or "<" not in text:
        return text, ()
    tags = tuple(_lora_tag(match.group(0), field) for match in _LORA_LIKE.finditer(text))
    if len(tags) > MAX_LORA_TAGS:
        raise ValidationError(field, f"{len(tags)} <lora:...> tags", f"may combine at most {MAX_LORA_TAGS} tunes")
    seen: set[int] = set()
    for tag in tags:
        if tag.tune_id in seen:
            raise ValidationError(field, tag.tag, f"names tune {tag.tune_id} a second time; use one tag per tune")
        seen.add(tag.tune_id)
    if not tags:
        return text, ()
    stripped = _LORA_TAG.sub(" ", _LORA_TAG_BEFORE_PUNCTUATION.sub("", text))
    return re.sub(r" {2,}", " ", stripped).strip(), tags


def _lora_tag(written: str, field: str) -> LoraTag:
    match = _LORA_TAG.fullmatch(written)
    if match is None:
        raise ValidationError(field, written, "is not a LoRA tag; write <lora:TUNE_ID> or <lora:TUNE_ID:WEIGHT>")
    weight = float(match.group(2)) if match.group(2) is not None else 1.0
    if not 0.0 < weight <= MAX_LORA_WEIGHT:
        raise ValidationError(field, written, f"has a weight that must be above 0 and at most {MAX_LORA_WEIGHT:g}")
    return LoraTag(tune_id=int(match.group(1)), weight=weight, tag=written)


def check_characteristics(characteristics: Mapping[str, object]) -> dict[str, str]:
    """Validate a tune's characteristics (e.g. `{"eye_color": "blue"}`); returns a clean copy.

    Raises:
        ValidationError: a key is not snake_case or reserved, or a value is not a short plain string.
    """
    clean: dict[str, str] = {}
    for key, value in characteristics.items():
        field = f"characteristics.{key}"
        if not isinstance(key, str) or not _KEY.match(key) or key in RESERVED_KEYS:
            raise ValidationError(
                field, key, f"must be a snake_case name of up to 40 characters, not one of {RESERVED_KEYS}"
            )
        if not isinstance(value, str) or len(value) > MAX_CHARACTERISTIC_CHARS:
            raise ValidationError(field, value, f"must be text of at most {MAX_CHARACTERISTIC_CHARS} characters")
        if _ANY_BRACES.search(value) or any(c in value for c in "\n\r\t"):
            raise ValidationError(field, value, "must not contain `{{`, `}}`, `{%`, `%}` or line breaks")
        clean[key] = value.strip()
    return clean


def render_prompt(
    text: str,
    *,
    token: str,
    class_name: str,
    characteristics: Mapping[str, str] | None = None,
    field: str = "text",
    add_subject: bool = True,
) -> str:
    """Fill a prompt template for one tune.

    `{{token}}`, `{{class}}`/`{{name}}` and `{{subject}}` (= "token class") are always known;
    `{{characteristics}}` is all characteristic values joined ("blue eyes, short hair", or nothing);
    other `{{key}}` come from `characteristics`. When the rendered text does not mention the token and
    `add_subject` is set, the subject is put in front (`"ohwx woman, ..."`), since a prompt without it
    would not show the tune (negative prompts pass `add_subject=False`).

    Raises:
        PromptTemplateError: an unknown placeholder or stray braces; the message names them.
        ValidationError: empty or over-long text.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValidationError(field, text, "must be a non-empty prompt")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValidationError(field, f"{len(text)} characters", f"must be at most {MAX_PROMPT_CHARS} characters")
    subject = f"{token} {class_name}"
    joined = ", ".join(value for value in (characteristics or {}).values() if value)
    values = {
        "token": token,
        "class": class_name,
        "name": class_name,
        "subject": subject,
        "characteristics": joined,
        **(characteristics or {}),
    }
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - values.keys())
    if unknown:
        known = ", ".join(sorted(values))
        raise PromptTemplateError(field, text, f"uses unknown placeholder(s) {', '.join(unknown)}; known: {known}")
    if _ANY_BRACES.search(_PLACEHOLDER.sub("", text)):
        raise PromptTemplateError(field, text, "has `{{`, `}}`, `{%` or `%}` that is not a `{{name}}` placeholder")
    rendered = _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
    rendered = _EMPTY_LIST_ITEMS.sub(", ", rendered).strip().strip(",").strip()  # an empty {{characteristics}}
    if add_subject and not re.search(rf"(?<!\w){re.escape(token)}(?!\w)", rendered):
        rendered = f"{subject}, {rendered}"
    return rendered


# `(words:1.2)` as most prompt guides write it (A1111); compel writes `(words)1.2`. Only weights written with
# a decimal point or 0-2 count, so `(aspect 4:5)` stays text rather than becoming a weight of 5.
_COLON_WEIGHT = re.compile(r"\(([^():]+):\s*(\d*\.\d+|[0-2])\s*\)")


def to_compel_syntax(text: str) -> str:
    """Rewrite `(words:1.2)` weights as compel's `(words)1.2`; compel's own syntax (`word++`, `(words)0.8`,
    `word-`) passes through unchanged.

    Args:
        text: a rendered prompt.

    Returns:
        the prompt in compel's weighting syntax.
    """
    return _COLON_WEIGHT.sub(r"(\1)\2", text)


# every compel construct (weights, blends, swaps) has one of these; a hyphen inside a word (close-up) is text
_WEIGHTING = re.compile(r"[()\[\]+]|(?<!\w)-|-(?!\w)")


@functools.lru_cache(maxsize=4096)
def plain_prompt_text(text: str) -> str:
    """The words a text encoder sees once the weighting syntax is taken out (to count tokens).

    compel's parser takes ~0.1 s a prompt, and the pack editor lints every prompt of a pack each time it shows
    one: text without any weighting character is returned as it is, and results are cached.

    Args:
        text: a rendered prompt, in either weighting syntax.

    Returns:
        the fragments' text joined by spaces (every part of a `.blend()`, the original side of a `.swap()`).
    """
    if not _WEIGHTING.search(text):
        return " ".join(text.split())
    from compel import Compel

    return " ".join(_fragment_texts(Compel.parse_prompt_string(to_compel_syntax(text))))


def _fragment_texts(node: object) -> list[str]:
    """Walk compel's parse tree (conjunctions, blends, flattened prompts, swaps) down to fragment text."""
    if isinstance(getattr(node, "text", None), str):
        return [node.text] if node.text.strip() else []  # type: ignore[attr-defined]
    for attribute in ("prompts", "children", "original"):
        parts = getattr(node, attribute, None)
        if isinstance(parts, list):
            return [text for part in parts for text in _fragment_texts(part)]
    return []
