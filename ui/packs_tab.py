"""Pack gallery: packs as cards (cover, title, classes, image count); open one to see its prompts as they
render for a subject, and "use this pack" to start a tune with it. The creative team edits packs here too:
the whole pack as YAML, checked against the schema on save (errors inline, naming the key and value), every
save kept as a version that can be reverted, prompts previewed as rendered.

Callbacks stay thin: widget values -> one service call -> widgets. Public events are private to the UI (the
named API is `ui/api.py`); editor events are undocumented and each checks the caller's role itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from html import escape
from typing import Any

import gradio as gr
import pandas as pd
import yaml
from PIL import Image

from packs.lint import lint_pack
from packs.loader import COVERS_DIR, Pack, read_pack_text
from packs.make_covers import draw_cover
from pipelines.errors import TunesError, ValidationError
from pipelines.registry import get_branch
from studio.errors import PermissionDeniedError, SignInRequiredError
from studio.service import Studio
from ui.context import UIContext
from ui.feedback import FieldErrors, notify, user_errors
from ui.views import CLASSES, likeness_text

ALL = "all"
CLASS_FILTER = (ALL, *CLASSES)
PROMPT_HEADERS = ["#", "prompt (for a sample subject)", "images", "aspect", "scheduler", "made", "likes", "likeness"]
PROMPT_WIDTHS = ["4%", "53%", "7%", "7%", "12%", "5%", "5%", "7%"]
NO_SAMPLES = (
    "\n\n*No sample images yet. The prompts below are what the pack generates, shown for a sample subject "
    "(`ohwx`, green eyes, short brown hair); your tune's token and details take their place.*"
)
VERSION_HEADERS = ["version", "saved at", "saved by", "action"]
NEW_PACK_TEMPLATE = """\
id: my-new-pack            # lowercase letters, digits and hyphens; cannot change later
title: My new pack
description: What the album looks like, in a sentence or two.
cover: null                # an image file in packs/library/covers/
classes: [woman]
default_branch: sdxl1
preset:
  face_crop: true
published: false           # a new pack is a draft: press Publish once it previews well
prompts:
  woman:
    - text: "portrait of {{subject}}, {{characteristics}}, soft window light"
      negative_prompt: "blurry, deformed hands"
      num_images: 4
      aspect_ratio: "4:5"
"""


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


def cover_image(pack: Pack) -> Image.Image:
    """The pack's cover, or a placeholder drawn from its id and title when it has none."""
    return pack_image(pack.cover) if pack.cover else _placeholder(pack.id, pack.title)


def pack_image(name: str) -> Image.Image:
    """A cover or sample image from `packs/library/covers/`, decoded once until the file changes.

    Images go to Gradio as pictures, not paths, so they show wherever the app was started from.
    """
    path = COVERS_DIR / name
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
    return [(cover_image(pack), card_caption(pack, wanted)) for pack in packs], [pack.id for pack in packs]


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


def pack_yaml(pack: Pack) -> str:
    """The pack as the team edits it."""
    return yaml.safe_dump(pack.to_file_data(), sort_keys=False, allow_unicode=True, width=100)


def editor_choices(studio: Studio) -> list[tuple[str, str]]:
    """Every pack, unpublished ones marked, for the editor's picker."""
    packs = studio.packs.list(include_unpublished=True)
    return [(pack.title if pack.published else f"{pack.title} (unpublished)", pack.id) for pack in packs]


def editor_status(studio: Studio, pack: Pack) -> str:
    versions = studio.pack_editor.versions(pack.id)
    state = "published" if pack.published else "**unpublished** (users do not see it)"
    kept = f"{len(versions)} saved version{'s' * (len(versions) != 1)}" if versions else "shipped file (not edited yet)"
    status = f"`{pack.id}` · {state} · {kept}"
    if studio.pack_editor.last_push_error:
        status += f"  \n⚠ Saved here but not pushed to the Hub: {studio.pack_editor.last_push_error}"
    for warning in lint_pack(pack):  # loads and runs, but reads badly: long prompts
        status += f"  \n⚠ {escape(warning.message, quote=False)}"
    return status


def versions_table(studio: Studio, pack_id: str) -> pd.DataFrame:
    rows = [[v["version"], v["saved_at"], v["saved_by"], v["action"]] for v in studio.pack_editor.versions(pack_id)]
    return pd.DataFrame(rows, columns=VERSION_HEADERS)


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
        prompts = gr.Dataframe(headers=PROMPT_HEADERS, interactive=False, wrap=True, column_widths=PROMPT_WIDTHS)

    @user_errors
    def show_cards(class_name: str | None):
        return pack_cards(studio, class_name)

    @user_errors
    def open_pack(ids: list[str], class_name: str | None, event: gr.SelectData):
        pack = studio.get_pack(ids[event.index])
        chosen = class_name if class_name in pack.classes else pack.classes[0]
        return {
            page: gr.update(visible=True),
            cover: cover_image(pack),
            samples: gr.update(value=[pack_image(name) for name in pack.samples], visible=bool(pack.samples)),
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

    editor_box = _build_editor(ctx, refresh=(show_cards, class_filter, [gallery, card_ids]))
    return PacksTab(use_pack=use_pack, chosen_pack=chosen_pack, chosen_class=chosen_class, editor_only=[editor_box])


def _build_editor(ctx: UIContext, *, refresh: tuple[Any, gr.Radio, list]) -> gr.Accordion:
    """The creative team's editor; every event refuses callers who are not editors or admins."""
    studio = ctx.studio
    with gr.Accordion("Edit packs (creative team)", open=False, visible=False) as box:
        gr.Markdown(
            "Edit the whole pack as YAML (the keys are described in `packs/SCHEMA.md`). **Save** checks it and "
            "keeps every saved version; a shipped pack is saved as a team copy that overrides it. New packs and "
            "copies are drafts until you **Publish** them. Prompts use `{{subject}}`, `{{token}}`, `{{class}}` and "
            "`{{characteristics}}`."
        )
        with gr.Row():
            # choices arrive when an editor opens the section (unpublished titles are not for everyone's page);
            # the service checks every id
            pack_id = gr.Dropdown([], label="Pack", scale=3, allow_custom_value=True)
            new = gr.Button("New pack from a template", scale=1)
        status = gr.Markdown()
        text = gr.Code(language="yaml", lines=20, max_lines=40, label="Pack file (YAML)")
        banner = gr.Markdown(visible=False, elem_classes=["error-banner"])
        with gr.Row():
            save = gr.Button("Save", variant="primary")
            create = gr.Button("Create as a new pack")
            publish = gr.Button("Publish")
            unpublish = gr.Button("Unpublish")
        with gr.Row():
            copy_id = gr.Textbox(label="Id of the copy", placeholder="corporate-headshots-winter")
            copy_title = gr.Textbox(label="Title of the copy (optional)")
            duplicate = gr.Button("Duplicate", scale=0, min_width=120)
        with gr.Row():
            preview_class = gr.Dropdown([], label="Preview: class", allow_custom_value=True)
            preview_index = gr.Number(0, label="Prompt index (as in prompts.<class>[index])", precision=0, minimum=0)
            preview = gr.Button("Preview", scale=0, min_width=120)
        rendered = gr.Textbox(label="Rendered prompt (saved version, sample subject)", lines=3, interactive=False)
        versions = gr.Dataframe(headers=VERSION_HEADERS, interactive=False, label="Saved versions")
        with gr.Row():
            version = gr.Number(None, label="Version (click a row above)", precision=0)
            revert = gr.Button("Revert to this version", scale=0, min_width=200)

    errors = FieldErrors(banner, {})
    view_outputs = [*errors.outputs, pack_id, status, text, versions, version, preview_class]

    def view(chosen: str, message: str | None = None) -> dict:
        """Every editor widget showing pack `chosen` as saved."""
        pack = studio.packs.get(chosen, include_unpublished=True)
        if message:
            notify(message)
        return {
            **errors.clear(),
            pack_id: gr.update(choices=editor_choices(studio), value=pack.id),
            status: editor_status(studio, pack),
            text: pack_yaml(pack),
            versions: versions_table(studio, pack.id),
            version: None,
            preview_class: gr.update(choices=list(pack.classes), value=pack.classes[0]),
        }

    def inline(action):
        """Show a refused edit under the YAML; a caller without the role still gets an error (API callers too)."""

        @functools.wraps(action)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return action(*args, **kwargs)
            except (PermissionDeniedError, SignInRequiredError):
                raise
            except TunesError as error:
                return errors.show(error)

        return user_errors(wrapped)

    def required(chosen: str | None) -> str:
        if not chosen:
            raise ValidationError("pack", chosen, "is not chosen; pick a pack above first")
        return chosen

    @user_errors
    def open_choices(chosen: str | None, request: gr.Request):
        ctx.editor(request)
        return gr.update(choices=editor_choices(studio), value=chosen)

    @inline
    def load(chosen: str | None, request: gr.Request):
        ctx.editor(request)
        return view(required(chosen))

    @user_errors
    def template(request: gr.Request):
        ctx.editor(request)
        hint = "A new pack: edit it, then **Create as a new pack**."
        return {**errors.clear(), text: NEW_PACK_TEMPLATE, status: hint}

    @inline
    def save_edit(chosen: str | None, source: str | None, request: gr.Request):
        editor, chosen = ctx.editor(request), required(chosen)
        data = read_pack_text(source or "", source=f"edit of {chosen}")
        pack = studio.pack_editor.edit(chosen, data, editor=editor)
        return view(pack.id, f"Saved {pack.title}.")

    @inline
    def save_new(source: str | None, request: gr.Request):
        editor = ctx.editor(request)
        pack = studio.pack_editor.create(read_pack_text(source or "", source="new pack"), editor=editor)
        return view(pack.id, f"Created {pack.title} as a draft; users see it once you press Publish.")

    @inline
    def publish_pack(chosen: str | None, request: gr.Request):
        pack = studio.pack_editor.set_published(required(chosen), True, editor=ctx.editor(request))
        return view(pack.id, f"{pack.title} is published.")

    @inline
    def unpublish_pack(chosen: str | None, request: gr.Request):
        pack = studio.pack_editor.set_published(required(chosen), False, editor=ctx.editor(request))
        return view(pack.id, f"{pack.title} is unpublished; users no longer see it.")

    @inline
    def copy(chosen: str | None, new_id: str | None, title: str | None, request: gr.Request):
        editor, chosen = ctx.editor(request), required(chosen)
        title = (title or "").strip() or None
        pack = studio.pack_editor.duplicate(chosen, (new_id or "").strip(), editor=editor, title=title)
        return view(pack.id, f"Copied to {pack.id} (unpublished).")

    @inline
    def go_back(chosen: str | None, number: float | None, request: gr.Request):
        editor, chosen = ctx.editor(request), required(chosen)
        if number is None:
            raise ValidationError("version", number, "is empty; type a version number from the table")
        pack = studio.pack_editor.revert(chosen, int(number), editor=editor)
        return view(pack.id, f"Reverted {pack.title} to version {int(number)}.")

    @inline
    def show_prompt(chosen: str | None, class_name: str | None, index: float | None, request: gr.Request):
        ctx.editor(request)
        wanted = int(index) if index is not None else None
        rendered_text, _ = studio.preview_pack_prompt(required(chosen), class_name or "", wanted)
        return {**errors.clear(), rendered: rendered_text}

    team = {"api_visibility": "undocumented"}
    show_cards, class_filter, cards = refresh
    box.expand(open_choices, pack_id, pack_id, **team, api_name="pack_editor_choices")
    pack_id.input(load, pack_id, view_outputs, **team, api_name="pack_editor_open")
    new.click(template, None, [*errors.outputs, text, status], **team, api_name="pack_editor_template")
    changes = [
        save.click(save_edit, [pack_id, text], view_outputs, **team, api_name="pack_editor_save"),
        create.click(save_new, text, view_outputs, **team, api_name="pack_editor_create"),
        publish.click(publish_pack, pack_id, view_outputs, **team, api_name="pack_editor_publish"),
        unpublish.click(unpublish_pack, pack_id, view_outputs, **team, api_name="pack_editor_unpublish"),
        duplicate.click(copy, [pack_id, copy_id, copy_title], view_outputs, **team, api_name="pack_editor_duplicate"),
        revert.click(go_back, [pack_id, version], view_outputs, **team, api_name="pack_editor_revert"),
    ]

    def pick_version(event: gr.SelectData) -> int:
        return int(event.row_value[0])

    versions.select(pick_version, None, version, api_visibility="private")
    for event in changes:  # the editor's own gallery shows what just changed
        event.then(show_cards, class_filter, cards, api_visibility="private")
    preview.click(
        show_prompt,
        [pack_id, preview_class, preview_index],
        [*errors.outputs, rendered],
        **team,
        api_name="pack_editor_preview",
    )
    return box
