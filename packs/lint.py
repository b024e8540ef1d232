"""Pack lint: what an editor should fix although the pack loads and runs (the loader refuses what cannot run).

One check so far: prompts longer than their branch's text encoder reads well. SD-1.5, SDXL and `tiny`
encode long prompts in 75-token chunks (`pipelines.generate.encode_prompts`), so nothing is cut, but past
three chunks every phrase weighs less; FLUX's T5 reads 512 tokens and drops the rest. See packs/SCHEMA.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from packs.loader import Pack
from pipelines.prompts import plain_prompt_text, render_prompt
from pipelines.registry import get_branch

CHUNK_TOKENS = 75  # CLIP reads 77 tokens: the start and end markers and 75 of the prompt
MAX_CHUNKS = 3
SAMPLE_TOKEN = "ohwx"  # as the editor's preview renders prompts
_PREVIEW_CHARS = 80
# CLIP's pre-tokenizer splits letters, single digits and punctuation runs; a word of up to 6 letters is about
# one token and a longer one splits. Against the CLIP vocabulary this never undercounts the shipped packs'
# prompts and overcounts by 11% on average, so a warning comes a little early rather than never.
_CLIP_PIECE = re.compile(r"[^\W\d_]+|\d|[^\w\s]+|_+")
_LETTERS_PER_TOKEN = 6

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class PromptBudget:
    """How many tokens a branch family reads well, and what happens past that (said in the warning)."""

    tokens: int
    past_it: str


# by branch family; a family not here (the mock `fast`) has no text encoder and no budget
BUDGETS = {
    "sd15": PromptBudget(
        CHUNK_TOKENS * MAX_CHUNKS,
        f"it is encoded in {CHUNK_TOKENS}-token chunks and past {MAX_CHUNKS} every phrase weighs less",
    ),
    "sdxl": PromptBudget(
        CHUNK_TOKENS * MAX_CHUNKS,
        f"it is encoded in {CHUNK_TOKENS}-token chunks and past {MAX_CHUNKS} every phrase weighs less",
    ),
    "flux": PromptBudget(512, "FLUX's T5 encoder reads 512 tokens and drops the rest"),
}


@dataclass(frozen=True)
class PackWarning:
    """One prompt over its branch's budget. `prompt` is the rendered text (token `ohwx`, no characteristics)."""

    pack_id: str
    class_name: str
    index: int
    field: str  # "text" or "negative_prompt"
    prompt: str
    tokens: int
    limit: int
    branch: str
    past_it: str

    @property
    def path(self) -> str:
        return f"prompts.{self.class_name}[{self.index}].{self.field}"

    @property
    def message(self) -> str:
        shown = self.prompt if len(self.prompt) <= _PREVIEW_CHARS else self.prompt[: _PREVIEW_CHARS - 1] + "…"
        return (
            f"{self.pack_id}: {self.path} has {self.tokens} CLIP tokens, more than the {self.limit} that branch "
            f"{self.branch} reads well ({self.past_it}); shorten it: {shown!r}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"pack_id": self.pack_id, "path": self.path, "tokens": self.tokens, "message": self.message}


def estimate_clip_tokens(text: str) -> int:
    """CLIP tokens of `text` (without start/end markers), estimated without a tokenizer (errs high).

    Args:
        text: plain prompt text (weighting syntax already taken out).

    Returns:
        the estimated token count.
    """
    pieces = _CLIP_PIECE.findall(text.lower())
    return sum(1 + (len(piece) - 1) // _LETTERS_PER_TOKEN if piece[0].isalpha() else 1 for piece in pieces)


def tokenizer_counter(tokenizer: Any) -> TokenCounter:
    """An exact counter from a branch's CLIP tokenizer (`pipe.tokenizer`, or one loaded from its folder).

    Args:
        tokenizer: a transformers tokenizer.

    Returns:
        a function giving the tokens of a text, start and end markers not counted.
    """
    return lambda text: len(tokenizer(text, add_special_tokens=False, truncation=False).input_ids)


def lint_pack(pack: Pack, *, branch: str | None = None, count_tokens: TokenCounter | None = None) -> list[PackWarning]:
    """Warnings for `pack`'s prompts (and negative prompts) longer than the branch reads well.

    Prompts are rendered as the editor previews them (token `ohwx`, no characteristics; a tune's
    characteristics add to the count) and weighting syntax is not counted.

    Args:
        pack: a loaded pack.
        branch: the branch to check for; default the pack's `default_branch`.
        count_tokens: counts a text's tokens; default `estimate_clip_tokens` (pass `tokenizer_counter(...)`
            with the branch's tokenizer for exact counts).

    Returns:
        one warning per prompt over the budget, in pack order; empty when all fit.

    Raises:
        ValidationError: `branch` is not a branch name.
    """
    chosen = get_branch(branch or pack.default_branch)
    budget = BUDGETS.get(chosen.family)
    if budget is None:
        return []
    count = count_tokens or estimate_clip_tokens
    warnings = []
    for class_name, index, field, prompt in _rendered_prompts(pack):
        tokens = count(plain_prompt_text(prompt))
        if tokens > budget.tokens:
            where = (pack.id, class_name, index, field, prompt)
            warnings.append(PackWarning(*where, tokens, budget.tokens, chosen.name, budget.past_it))
    return warnings


def _rendered_prompts(pack: Pack) -> Iterator[tuple[str, int, str, str]]:
    """(class, index, field, rendered text) of every non-empty prompt and negative prompt, in pack order."""
    for class_name, items in pack.prompts.items():
        for index, item in enumerate(items):
            for field, template in (("text", item.text), ("negative_prompt", item.negative_prompt)):
                if template:
                    rendered = render_prompt(
                        template, token=SAMPLE_TOKEN, class_name=class_name, field=field, add_subject=field == "text"
                    )
                    yield class_name, index, field, rendered
