"""Pack gallery: packs as cards (cover, title, classes, image count); open one to see its prompts as they
render for a subject, and "use this pack" to start a tune with it. The creative team edits packs here too, in
the pack studio (`ui.pack_studio`): a form or YAML, checked on save, versioned, with covers, previews and stats.

Callbacks stay thin: widget values -> one service call -> widgets. Public events are private to the UI (the
named API is `ui/api.py`); editor events are undocumented and each checks the caller's role itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image

from packs.loader import COVERS_DIR, Pack, find_image
from packs.make_covers import draw_cover
from pipelines.registry import get_branch
from studio.service import Studio
from ui.context import UIContext
from ui.feedback import user_errors
from ui.pack_studio import (  # noqa: F401 (the editor's helpers, as this module named them before the studio)
    NEW_PACK_TEMPLATE,
    VERSION_HEADERS,
    build_pack_studio,
    editor_choices,
    editor_status,
    pack_yaml,
    versions_table,
)
from ui.views import CLASSES, likeness_text

ALL = "all"
CLASS_FILTER = (ALL, *CLASSES)
PROMPT_HEADERS = ["#", "prompt (for a sample subject)", "images", "aspect", "scheduler", "made", "likes", "likeness"]
PROMPT_WIDTHS = ["4%", "53%", "7%", "7%", "12%", "5%", "5%", "7%"]
NO_SAMPLES = (
    "\n\n*No sample images yet. The prompts below are what the pack generates, shown for a sample subject "
    "(`ohwx`, green eyes, short brown hair); your tune's token and details take their place.*"
)


@dataclass(frozen=True)
class PacksTab:
    """What `app.py` wires to.

    Attributes:
        use_pack: "Use this pack" on an open pack; `chosen_pack` already holds its id when it is clicked.
        chosen_pack: the id of the pack open in the tab (None before one is opened).
        chosen_class: the class whose prompts the user is looking at (the gallery filter's class when the
            pack supports it, else the pack's first class).
        editor_only: blocks to show only to pack editors and admins (their events check the role too).
    """

    use_pack: gr.Button
    chosen_pack: gr.State
    chosen_class: gr.State
    editor_only: list[gr.blocks.Block]


# -- what the widgets show (plain functions of the service: tested without a browser) -------------------


def card_caption(pack: Pack, class_name: str | None = None) -> str:
    """`Title · classes · N images`; N for `class_name`, else for each class (a range when they differ)."""
    counts = sorted({pack.images_for(name) for name in ([class_name] if class_name else pack.classes)})
    images = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{pack.title} · {', '.join(pack.classes)} · {images} images"


def cover_image(pack: Pack, dirs: tuple[Path, ...] | None = None) -> Image.Image:
    """The pack's cover, or a placeholder drawn from its id and title when it has none.

    Args:
        pack: the pack.
        dirs: the folders its images are in (`PackLibrary.cover_dirs`: the team's uploads, then the shipped
            covers); default the shipped covers.
    """
    return pack_image(pack.cover, dirs) if pack.cover else _placeholder(pack.id, pack.title)


def pack_image(name: str, dirs: tuple[Path, ...] | None = None) -> Image.Image:
    """A cover or sample image from the first of `dirs` that has it (default `packs/library/covers/`), decoded
    once until the file changes.

    Images go to Gradio as pictures, not paths, so they show wherever the app was started from.

    Raises:
        FileNotFoundError: no folder has it (the loader checks every name a pack gives, so only a file removed
            since).
    """
    path = find_image(name, dirs or (COVERS_DIR,))
    if path is None:
        raise FileNotFoundError(f"no image {name!r} in {', '.join(str(d) for d in dirs or (COVERS_DIR,))}")
    return _load_image(str(path), path.stat().st_mtime)


@functools.lru_cache(maxsize=128)
def _load_image(path: str, _mtime: float) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


@functools.lru_cache(maxsize=64)
def _placeholder(pack_id: str, title: str) -> Image.Image:
    return draw_cover(pack_id, title)


def pack_cards(studio: Studio, class_name: str | None) -> tuple[list[tuple[Image.Image, str]], list[str]]:
    """Gallery items (cover, caption) for published packs supporting `class_name` (all for None/"all"),
    and the pack ids in the same order (the gallery's select event gives an index)."""
    wanted = None if class_name in (None, "", ALL) else class_name
    packs = studio.list_packs(wanted)
    dirs = studio.packs.cover_dirs
    return [(cover_image(pack, dirs), card_caption(pack, wanted)) for pack in packs], [pack.id for pack in packs]


def pack_about(pack: Pack, *, branch: str) -> str:
    """The pack's page header: title, description, classes with their image counts, training preset.

    Args:
        pack: the pack.
        branch: the base model a tune made here starts with (the Create tab's, this server's default branch).
    """
    per_class = ", ".join(f"{name} ({pack.images_for(name)} images)" for name in pack.classes)
    steps = f"{pack.preset_steps} training steps" if pack.preset_steps else "the model's default training steps"
    face = "face crop on" if pack.preset_face_crop else "face crop off"
    samples = "" if pack.samples else NO_SAMPLES
    return (
        f"## {pack.title}\n{pack.description}\n\n"
        f"**Classes:** {per_class}  \n{model_line(pack, branch)} · {steps} · {face}{samples}"
    )


def model_line(pack: Pack, branch: str) -> str:
    """The base model a tune from this pack trains on here, or why it cannot train. "Use this pack" keeps the
    Create tab's Base model (this server's default), so that, not the branch the pack was written for, is used."""
    here = get_branch(branch)
    written = "" if branch == pack.default_branch else f" (the pack was written for `{pack.default_branch}`)"
    if here.is_mock:
        return f"**Model here:** `{branch}`, a mock: placeholder images, no training{written}"
    if not here.trainable:
        return f"**Model here:** `{branch}` cannot train yet; pick another under Create tune › Base model{written}"
    return f"**Model here:** `{branch}`{written}"


def prompt_table(studio: Studio, pack: Pack, class_name: str) -> pd.DataFrame:
    """One row per prompt of `class_name`: the text as rendered for a sample subject, its parameters, how many
    images it has made, how many of them users liked and their mean likeness to their subject (blank: none
    measured)."""
    stats = {row["prompt"]: row for row in studio.pack_stats(pack.id)}
    rows = []
    for index, prompt in enumerate(pack.prompts[class_name]):
        text, _ = studio.preview_pack_prompt(pack.id, class_name, index)
        made = stats.get(f"{class_name}/{index}", {})
        aspect = f"{prompt.w}x{prompt.h}" if prompt.w and prompt.h else prompt.aspect_ratio or "1:1"
        counts = [made.get("images", 0), made.get("likes", 0), likeness_text(made.get("likeness"))]
        rows.append([index + 1, text, prompt.num_images, aspect, prompt.scheduler, *counts])
    return pd.DataFrame(rows, columns=PROMPT_HEADERS)


# -- the tab -----------------------------------------------------------------------------------------


def build_packs_tab(ctx: UIContext) -> PacksTab:
    """Add the gallery, the pack page and the team's editor to the enclosing tab.

    Args:
        ctx: the service, settings and roles.

    Returns:
        The button and state `app.py` wires to the create-tune flow, and the editor-only blocks.
    """
    studio = ctx.studio
    private = {"api_visibility": "private"}

    hint = "Which subject you will train. Click a card to open its pack."
    class_filter = gr.Radio(list(CLASS_FILTER), value=ALL, label="Packs for", info=hint, elem_id="pack-filter")
    gallery = gr.Gallery(
        label="Packs",
        show_label=False,
        columns=4,
        height="auto",
        object_fit="cover",
        allow_preview=False,
        fit_columns=False,
        buttons=[],
        elem_classes=["pack-card"],
        elem_id="pack-cards",
    )
    card_ids = gr.State([])
    chosen_pack = gr.State(None)
    chosen_class = gr.State(None)

    with gr.Column(visible=False) as page:
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                cover = gr.Image(show_label=False, interactive=False, buttons=[], height=320)
                samples = gr.Gallery(label="Sample images", columns=3, height="auto", visible=False)
            with gr.Column(scale=2):
                about = gr.Markdown(elem_id="pack-about")
                use_pack = gr.Button("Use this pack", variant="primary", elem_id="use-pack")
        page_class = gr.Radio([], label="Prompts for")
        prompts = gr.Dataframe(
            headers=PROMPT_HEADERS, interactive=False, wrap=True, column_widths=PROMPT_WIDTHS, elem_id="pack-prompts"
        )

    @user_errors
    def show_cards(class_name: str | None):
        return pack_cards(studio, class_name)

    @user_errors
    def open_pack(ids: list[str], class_name: str | None, event: gr.SelectData):
        pack = studio.get_pack(ids[event.index])
        chosen = class_name if class_name in pack.classes else pack.classes[0]
        return {
            page: gr.update(visible=True),
            cover: cover_image(pack, studio.packs.cover_dirs),
            samples: gr.update(
                value=[pack_image(name, studio.packs.cover_dirs) for name in pack.samples], visible=bool(pack.samples)
            ),
            about: pack_about(pack, branch=ctx.settings.default_branch),
            page_class: gr.update(choices=list(pack.classes), value=chosen),
            prompts: prompt_table(studio, pack, chosen),
            chosen_pack: pack.id,
            chosen_class: chosen,
        }

    @user_errors
    def pick_class(pack_id: str | None, class_name: str):
        if not pack_id:
            return gr.update(), None
        return prompt_table(studio, studio.get_pack(pack_id), class_name), class_name

    # on page load too, so packs the team published since the app started show up
    gr.on(None, show_cards, class_filter, [gallery, card_ids], **private)
    gallery.select(
        open_pack,
        [card_ids, class_filter],
        [page, cover, samples, about, page_class, prompts, chosen_pack, chosen_class],
        scroll_to_output=True,
        **private,
    )
    page_class.input(pick_class, [chosen_pack, page_class], [prompts, chosen_class], **private)

    editor_box = build_pack_studio(ctx, refresh=(show_cards, class_filter, [gallery, card_ids]))
    return PacksTab(use_pack=use_pack, chosen_pack=chosen_pack, chosen_class=chosen_class, editor_only=[editor_box])
