"""The pack studio: where the creative team edits packs (the "Edit packs" section of the Pack gallery tab).

A pack shows as a form (title, description, classes, and per class a table of prompts with add / remove / move
controls) or, under "Advanced: YAML", as its file; switching views carries the edits across. Saving either view
goes through the same checks (`packs.loader.parse_pack`) and keeps a version that can be reverted; a refused form
save names the class, row and column and marks the row. Editors also upload a cover, make real images of one
prompt on a trained tune of theirs, and see per prompt how many images it made, its likes and their likeness.

Every event checks the caller's role itself (`ctx.editor`): the section is hidden from others, and the events are
undocumented, not secret. Pure helpers (what a widget shows) come first and are tested without a browser.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import yaml

from packs.form import COLUMNS, PackForm, error_banner, form_data, mark_error, pack_form, prompt_frame
from packs.form import add_row as form_add_row
from packs.form import move_row as form_move_row
from packs.form import remove_row as form_remove_row
from packs.lint import lint_pack
from packs.loader import KNOWN_CLASSES, Pack, PackError, read_pack_text
from pipelines.errors import TunesError, ValidationError
from storage.records import PROMPT_FINISHED, PromptStatus, TuneStatus
from studio.errors import PermissionDeniedError, SignInRequiredError
from studio.packs import MAX_COVER_UPLOAD_BYTES
from studio.service import Studio
from ui.context import UIContext
from ui.feedback import FieldErrors, notify, user_errors
from ui.views import prompt_gallery

VERSION_HEADERS = ["version", "saved at", "saved by", "action"]
FORM_WIDTHS = ["4%", "28%", "18%", "6%", "7%", "6%", "9%", "12%", "10%"]
FORM_TYPES = ["number", "str", "str", "str", "str", "str", "str", "str", "str"]  # a blank number shows as 0
CHART_METRICS = {"images": "Images made", "likes": "Likes", "like rate": "Like rate", "likeness": "Mean likeness"}
POLL_EVERY_S = 1.5
STARTER_PROMPT = "portrait of {{subject}}, {{characteristics}}, soft window light"
NEW_PACK_TEMPLATE = """\
id: my-new-pack            # lowercase letters, digits and hyphens; cannot change later
title: My new pack
description: What the album looks like, in a sentence or two.
cover: null                # an image file in packs/library/covers/, or upload one once the pack is made
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
FORM_HELP = (
    "Click a row to pick it for the buttons below and for the preview. Blank cells take the default (4 images, "
    "30 steps, 1:1, the model's scheduler); `aspect` takes a ratio (`4:5`) or a size (`832x1216`); `more` holds the "
    'prompt\'s other keys as JSON (`{"cfg_scale": 6.5, "hires_fix": true}`, see `packs/SCHEMA.md`). Rows with '
    "every cell blank are left out."
)


# -- what the widgets show (plain functions of the service: tested without a browser) -------------------


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


def chart_frame(studio: Studio, pack: Pack) -> pd.DataFrame:
    """One row per prompt of the saved pack ("woman #3", numbered as on the pack's page): images made (all users),
    likes, like rate (likes per image made, 0 before any) and mean likeness of its images (0 when none measured)."""
    rows = []
    for stat in studio.pack_stats(pack.id):
        class_name, index = stat["prompt"].split("/")
        images, likes, likeness = stat.get("images", 0), stat.get("likes", 0), stat.get("likeness")
        rows.append(
            {
                "prompt": f"{class_name} #{int(index) + 1}",
                "class": class_name,
                "images": images,
                "likes": likes,
                "like rate": round(likes / images, 3) if images else 0.0,
                "likeness": round(likeness, 3) if likeness is not None else 0.0,
            }
        )
    return pd.DataFrame(rows, columns=["prompt", "class", *CHART_METRICS])


def tune_choices(studio: Studio, editor: str, pack: Pack) -> list[tuple[str, int]]:
    """The editor's own trained tunes of a class the pack supports, newest first, for the real-image preview."""
    tunes = studio.list_tunes(editor, limit=100)
    return [
        (f"{t.title} (#{t.id}, {t.name})", t.id)
        for t in tunes
        if t.status == TuneStatus.TRAINED and t.name in pack.classes
    ]


def preview_line(studio: Studio, editor: str, prompt_id: int) -> tuple[str, bool]:
    """The queued preview prompt's status in a line, and whether it is finished."""
    prompt = studio.get_prompt(editor, prompt_id)
    line = {
        PromptStatus.QUEUED: "queued: it starts once the worker is free",
        PromptStatus.GENERATING: "generating…",
        PromptStatus.DONE: f"done: {len(prompt.images)} images",
        PromptStatus.FAILED: f"failed: {prompt.error}",
    }[prompt.status]
    return f"**Preview prompt #{prompt.id}** ({prompt.pack_prompt}) {line}", prompt.status in PROMPT_FINISHED


# -- the studio ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormWidgets:
    """The form view: pack fields, a table per known class (shown for the pack's classes) and the row picked."""

    title: gr.Textbox
    description: gr.Textbox
    classes: gr.CheckboxGroup
    tables: dict[str, gr.Dataframe]
    row_class: gr.Dropdown
    row_number: gr.Number

    @property
    def values(self) -> list[gr.components.Component]:
        """The inputs a form event reads, in `read`'s order."""
        return [self.title, self.description, self.classes, *self.tables.values()]

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [*self.values, self.row_class, self.row_number]

    def read(self, title: str | None, description: str | None, classes: list[str] | None, *frames: Any) -> PackForm:
        tables = {name: frame if isinstance(frame, pd.DataFrame) else prompt_frame([]) for name, frame in
                  zip(self.tables, frames, strict=True)}  # fmt: skip
        return PackForm(title or "", description or "", list(classes or []), tables)

    def show(self, form: PackForm) -> dict[gr.components.Component, Any]:
        """Every form widget showing `form`; tables of the pack's classes visible, the first row picked."""
        first = form.classes[0] if form.classes else None
        updates: dict[gr.components.Component, Any] = {
            self.title: gr.update(value=form.title, elem_classes=[]),
            self.description: gr.update(value=form.description, elem_classes=[]),
            self.classes: gr.update(value=form.classes, elem_classes=[]),
            self.row_class: gr.update(choices=list(form.classes), value=first),
            self.row_number: 1 if first else None,
        }
        for name, table in self.tables.items():
            frame = form.frames.get(name, prompt_frame([]))
            updates[table] = gr.update(value=frame, visible=name in form.classes, elem_classes=[])
        return updates

    def show_error(self, form: PackForm, error: PackError) -> dict[gr.components.Component, Any]:
        """The tables with the error on its row (`check` column, table marked); a pack field it names marked."""
        updates: dict[gr.components.Component, Any] = {}
        marked = mark_error(form.frames, error)
        spot_class = next((name for name in marked if error.path.startswith(f"prompts.{name}")), None)
        for name, table in self.tables.items():
            updates[table] = gr.update(value=marked[name], elem_classes=["field-error"] if name == spot_class else [])
        for key, widget in (("title", self.title), ("description", self.description), ("classes", self.classes)):
            updates[widget] = gr.update(elem_classes=["field-error"] if error.path.startswith(key) else [])
        return updates


def build_pack_studio(ctx: UIContext, *, refresh: tuple[Callable[..., Any], gr.Radio, list]) -> gr.Accordion:
    """Add the creative team's studio (hidden until `app.py` shows it to editors) and its events.

    Args:
        ctx: the service, settings and roles.
        refresh: (function, input, outputs) that redraws the gallery's cards after a change.

    Returns:
        The section, for `app.py` to show to editors and admins only.
    """
    studio = ctx.studio
    # 1. The layout
    with gr.Accordion("Edit packs (creative team)", open=False, visible=False, elem_id="pack-studio") as box:
        gr.Markdown(
            "The pack studio. Edit a pack in the form, or as YAML under **Advanced: YAML** (the keys are described "
            "in `packs/SCHEMA.md`). **Save** checks it and keeps every saved version; a shipped pack is saved as a "
            "team copy that overrides it. New packs and copies are drafts until you **Publish** them. Prompts use "
            "`{{subject}}`, `{{token}}`, `{{class}}` and `{{characteristics}}`."
        )
        with gr.Row():
            # choices arrive when an editor opens the section (unpublished titles are not for everyone's page);
            # the service checks every id
            pack_id = gr.Dropdown([], label="Pack", scale=3, allow_custom_value=True, elem_id="pack-studio-pack")
            new = gr.Button("New pack from a template", scale=1)
        status = gr.Markdown()
        with gr.Tabs():
            with gr.Tab("Form", id="form") as form_tab:
                form, row_buttons, save_form = _form_section()
            with gr.Tab("Advanced: YAML", id="yaml") as yaml_tab:
                text = gr.Code(language="yaml", lines=20, max_lines=40, label="Pack file (YAML)")
                with gr.Row():
                    save = gr.Button("Save", variant="primary")
                    create = gr.Button("Create as a new pack")
        banner = gr.Markdown(visible=False, elem_classes=["error-banner"], elem_id="pack-studio-banner")
        charts = _charts_section()
        with gr.Row():
            publish = gr.Button("Publish")
            unpublish = gr.Button("Unpublish")
        with gr.Row():
            copy_id = gr.Textbox(label="Id of the copy", placeholder="corporate-headshots-winter")
            copy_title = gr.Textbox(label="Title of the copy (optional)")
            duplicate = gr.Button("Duplicate", scale=0, min_width=120)
        cover, cover_file, set_cover = _cover_section()
        preview = _preview_section()
        versions = gr.Dataframe(
            headers=VERSION_HEADERS, interactive=False, label="Saved versions", elem_id="pack-studio-versions"
        )
        with gr.Row():
            version = gr.Number(None, label="Version (click a row above)", precision=0, elem_id="pack-studio-version")
            revert = gr.Button("Revert to this version", scale=0, min_width=200, elem_id="pack-studio-revert")

    # 2. What every change shows: the pack as saved, in both views, with its cover, tunes and charts
    errors = FieldErrors(banner, {})
    view_outputs = [*errors.outputs, pack_id, status, text, versions, version, preview.klass]
    view_outputs += [*form.outputs, cover, preview.tune, *charts.values()]

    def view(chosen: str, editor: str, message: str | None = None) -> dict:
        pack = studio.packs.get(chosen, include_unpublished=True)
        if message:
            notify(message)
        stats = chart_frame(studio, pack)
        order = list(stats["prompt"])
        tunes = tune_choices(studio, editor, pack)
        return {
            **errors.clear(),
            pack_id: gr.update(choices=editor_choices(studio), value=pack.id),
            status: editor_status(studio, pack),
            text: pack_yaml(pack),
            versions: versions_table(studio, pack.id),
            version: None,
            preview.klass: gr.update(choices=list(pack.classes), value=pack.classes[0]),
            **form.show(pack_form(pack.to_file_data(), source=pack.id)),
            cover: _cover_picture(studio, pack),
            preview.tune: gr.update(choices=tunes, value=tunes[0][1] if tunes else None),
            **{plot: gr.BarPlot(value=stats, sort=order) for plot in charts.values()},
        }

    def inline(action: Callable[..., Any]) -> Callable[..., Any]:
        """Show a refused edit in the banner; a caller without the role still gets an error (API callers too)."""

        @functools.wraps(action)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return action(*args, **kwargs)
            except (PermissionDeniedError, SignInRequiredError):
                raise
            except TunesError as error:
                return errors.show(error)

        return user_errors(wrapped)

    # 3. The pack file's events (YAML), publishing, copies, versions
    @user_errors
    def open_choices(chosen: str | None, request: gr.Request):
        ctx.editor(request)
        return gr.update(choices=editor_choices(studio), value=chosen)

    @inline
    def load(chosen: str | None, request: gr.Request):
        editor = ctx.editor(request)
        return view(_required(chosen), editor)

    @user_errors
    def template(request: gr.Request):
        ctx.editor(request)
        hint = "A new pack: edit it under **Advanced: YAML**, then **Create as a new pack**."
        return {**errors.clear(), text: NEW_PACK_TEMPLATE, status: hint}

    @inline
    def save_edit(chosen: str | None, source: str | None, request: gr.Request):
        editor, chosen = ctx.editor(request), _required(chosen)
        data = read_pack_text(source or "", source=f"edit of {chosen}")
        pack = studio.pack_editor.edit(chosen, data, editor=editor)
        return view(pack.id, editor, f"Saved {pack.title}.")

    @inline
    def save_new(source: str | None, request: gr.Request):
        editor = ctx.editor(request)
        pack = studio.pack_editor.create(read_pack_text(source or "", source="new pack"), editor=editor)
        return view(pack.id, editor, f"Created {pack.title} as a draft; users see it once you press Publish.")

    @inline
    def publish_pack(chosen: str | None, request: gr.Request):
        editor = ctx.editor(request)
        pack = studio.pack_editor.set_published(_required(chosen), True, editor=editor)
        return view(pack.id, editor, f"{pack.title} is published.")

    @inline
    def unpublish_pack(chosen: str | None, request: gr.Request):
        editor = ctx.editor(request)
        pack = studio.pack_editor.set_published(_required(chosen), False, editor=editor)
        return view(pack.id, editor, f"{pack.title} is unpublished; users no longer see it.")

    @inline
    def copy(chosen: str | None, new_id: str | None, title: str | None, request: gr.Request):
        editor, chosen = ctx.editor(request), _required(chosen)
        title = (title or "").strip() or None
        pack = studio.pack_editor.duplicate(chosen, (new_id or "").strip(), editor=editor, title=title)
        return view(pack.id, editor, f"Copied to {pack.id} (unpublished).")

    @inline
    def go_back(chosen: str | None, number: float | None, request: gr.Request):
        editor, chosen = ctx.editor(request), _required(chosen)
        if number is None:
            raise ValidationError("version", number, "is empty; type a version number from the table")
        pack = studio.pack_editor.revert(chosen, int(number), editor=editor)
        return view(pack.id, editor, f"Reverted {pack.title} to version {int(number)}.")

    @inline
    def show_prompt(chosen: str | None, class_name: str | None, index: float | None, request: gr.Request):
        ctx.editor(request)
        wanted = int(index) if index is not None else None
        rendered_text, _ = studio.preview_pack_prompt(_required(chosen), class_name or "", wanted)
        return {**errors.clear(), preview.rendered: rendered_text}

    # 4. The form's events: save, rows, classes, the two views kept in step
    @user_errors
    def save_from_form(request: gr.Request, chosen: str | None, source: str | None, *values: Any):
        editor, chosen = ctx.editor(request), _required(chosen)
        where = f"edit of {chosen}"
        filled = form.read(*values)
        try:
            base = read_pack_text(source or "", source=where)
            pack = studio.pack_editor.edit(chosen, form_data(filled, base, source=where), editor=editor)
        except PackError as error:
            shown = gr.update(value=f"**Could not save.** {escape(error_banner(error), quote=False)}", visible=True)
            return {**errors.clear(), banner: shown, **form.show_error(filled, error)}
        except TunesError as error:
            return errors.show(error)
        return view(pack.id, editor, f"Saved {pack.title}.")

    def row_action(
        change: Callable[[pd.DataFrame, int | None], tuple[pd.DataFrame, int | None]],
    ) -> Callable[..., Any]:
        @user_errors
        def act(request: gr.Request, class_name: str | None, number: float | None, *frames: Any):
            ctx.editor(request)
            if class_name not in form.tables:
                raise ValidationError("class", class_name, "is not picked; click a row of a table first")
            frame = dict(zip(form.tables, frames, strict=True))[class_name]
            frame, index = change(frame if isinstance(frame, pd.DataFrame) else prompt_frame([]), _row(number))
            return {form.tables[class_name]: frame, form.row_number: None if index is None else index + 1}

        return act

    @user_errors
    def classes_picked(request: gr.Request, classes: list[str] | None, *frames: Any):
        ctx.editor(request)
        updates = {}
        for (name, table), frame in zip(form.tables.items(), frames, strict=True):
            shown = name in (classes or [])
            empty = not isinstance(frame, pd.DataFrame) or frame.empty
            starter = prompt_frame([{"text": STARTER_PROMPT}]) if shown and empty else gr.update()
            updates[table] = gr.update(value=starter, visible=shown) if shown and empty else gr.update(visible=shown)
        updates[form.row_class] = gr.update(choices=list(classes or []))
        return updates

    def picker(name: str) -> Callable[..., Any]:
        @user_errors
        def pick_row(event: gr.SelectData, request: gr.Request):
            ctx.editor(request)
            row = event.index[0] if isinstance(event.index, list | tuple) else event.index
            if not isinstance(row, int):
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return gr.update(value=name), row + 1, gr.update(value=name), row

        return pick_row

    @inline
    def to_yaml(request: gr.Request, chosen: str | None, source: str | None, *values: Any):
        ctx.editor(request)
        where = f"edit of {chosen or 'a pack'}"
        data = form_data(form.read(*values), read_pack_text(source or "", source=where), source=where)
        return {**errors.clear(), text: yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)}

    @inline
    def to_form(chosen: str | None, source: str | None, request: gr.Request):
        ctx.editor(request)
        where = f"edit of {chosen or 'a pack'}"
        return {**errors.clear(), **form.show(pack_form(read_pack_text(source or "", source=where), source=where))}

    # 5. Cover, real-image preview
    @inline
    def upload_cover(chosen: str | None, path: str | None, request: gr.Request):
        editor, chosen = ctx.editor(request), _required(chosen)
        upload = _read_upload(path)
        pack = studio.pack_editor.set_cover(chosen, upload, editor=editor, filename=Path(path or "").name)
        return {**view(pack.id, editor, f"New cover for {pack.title}."), cover_file: None}

    @inline
    def make_images(chosen: str | None, class_name: str | None, index: float | None, tune: float | None,
                    request: gr.Request):  # fmt: skip
        editor, chosen = ctx.editor(request), _required(chosen)
        if tune is None:
            raise ValidationError("tune_id", tune, "is not chosen; train a tune of a class this pack supports first")
        wanted = int(index) if index is not None else None
        rendered, queued = studio.preview_pack_prompt(chosen, class_name or "", wanted, owner=editor, tune_id=int(tune))
        line, _ = preview_line(studio, editor, queued.id)
        return {
            **errors.clear(),
            preview.rendered: rendered,
            preview.prompt: queued.id,
            preview.status: line,
            preview.gallery: [],
            preview.timer: gr.Timer(active=True),
        }

    @user_errors
    def follow(prompt_id: float | None, request: gr.Request):
        editor = ctx.editor(request)
        if prompt_id is None:
            return "", [], gr.Timer(active=False)
        line, finished = preview_line(studio, editor, int(prompt_id))
        images = prompt_gallery(studio, ctx.files, editor, [studio.get_prompt(editor, int(prompt_id))])
        return line, images, gr.Timer(active=not finished)

    # 6. Wiring: editor events undocumented, each checks the role; the gallery redraws after a change
    team = {"api_visibility": "undocumented"}
    quiet = {**team, "show_progress": "hidden"}
    show_cards, class_filter, cards = refresh
    box.expand(open_choices, pack_id, pack_id, **team, api_name="pack_editor_choices")
    pack_id.input(load, pack_id, view_outputs, **team, api_name="pack_editor_open")
    new.click(template, None, [*errors.outputs, text, status], **team, api_name="pack_editor_template")
    form_inputs = [pack_id, text, *form.values]
    row_inputs = [form.row_class, form.row_number, *form.tables.values()]
    row_outputs = [*form.tables.values(), form.row_number]
    add, remove, up, down = row_buttons
    changes = [
        save.click(save_edit, [pack_id, text], view_outputs, **team, api_name="pack_editor_save"),
        create.click(save_new, text, view_outputs, **team, api_name="pack_editor_create"),
        publish.click(publish_pack, pack_id, view_outputs, **team, api_name="pack_editor_publish"),
        unpublish.click(unpublish_pack, pack_id, view_outputs, **team, api_name="pack_editor_unpublish"),
        duplicate.click(copy, [pack_id, copy_id, copy_title], view_outputs, **team, api_name="pack_editor_duplicate"),
        revert.click(go_back, [pack_id, version], view_outputs, **team, api_name="pack_editor_revert"),
        save_form.click(save_from_form, form_inputs, view_outputs, **team, api_name="pack_studio_save"),
        set_cover.click(
            upload_cover, [pack_id, cover_file], [*view_outputs, cover_file], **team, api_name="pack_studio_cover"
        ),
    ]
    add.click(row_action(form_add_row), row_inputs, row_outputs, **quiet, api_name="pack_studio_add_row")
    remove.click(row_action(_remove), row_inputs, row_outputs, **quiet, api_name="pack_studio_remove_row")
    up.click(row_action(_move(-1)), row_inputs, row_outputs, **quiet, api_name="pack_studio_move_up")
    down.click(row_action(_move(+1)), row_inputs, row_outputs, **quiet, api_name="pack_studio_move_down")
    form.classes.input(
        classes_picked,
        [form.classes, *form.tables.values()],
        [*form.tables.values(), form.row_class],
        **quiet,
        api_name="pack_studio_classes",
    )
    picked = [form.row_class, form.row_number, preview.klass, preview.index]
    for name, table in form.tables.items():
        table.select(picker(name), None, picked, **quiet, api_name=f"pack_studio_pick_{name}")
    yaml_tab.select(to_yaml, form_inputs, [*errors.outputs, text], **quiet, api_name="pack_studio_to_yaml")
    form_outputs = [*errors.outputs, *form.outputs]
    form_tab.select(to_form, [pack_id, text], form_outputs, **quiet, api_name="pack_studio_to_form")

    def pick_version(event: gr.SelectData) -> int:
        return int(event.row_value[0])

    versions.select(pick_version, None, version, api_visibility="private")
    for event in changes:  # the editor's own gallery shows what just changed
        event.then(show_cards, class_filter, cards, api_visibility="private")
    preview_inputs = [pack_id, preview.klass, preview.index]
    preview_outputs = [*errors.outputs, preview.rendered]
    preview.show.click(show_prompt, preview_inputs, preview_outputs, **team, api_name="pack_editor_preview")
    live_outputs = [*preview_outputs, preview.prompt, preview.status, preview.gallery, preview.timer]
    preview.make.click(
        make_images, [*preview_inputs, preview.tune], live_outputs, **team, api_name="pack_studio_preview"
    )
    followed = [preview.status, preview.gallery, preview.timer]
    preview.timer.tick(follow, preview.prompt, followed, **quiet, api_name="pack_studio_preview_status")
    preview.refresh.click(follow, preview.prompt, followed, **quiet, api_name="pack_studio_preview_refresh")
    return box


# -- sections --------------------------------------------------------------------------------------------


def _form_section() -> tuple[FormWidgets, tuple[gr.Button, ...], gr.Button]:
    """The form view: the pack's fields, a table per class (hidden unless ticked), row buttons and Save."""
    with gr.Row():
        title = gr.Textbox(label="Title", scale=2, elem_id="pack-form-title")
        classes = gr.CheckboxGroup(list(KNOWN_CLASSES), label="Classes", scale=3, elem_id="pack-form-classes")
    description = gr.Textbox(label="Description", lines=2, elem_id="pack-form-description")
    gr.Markdown(FORM_HELP)
    tables = {
        name: gr.Dataframe(
            value=prompt_frame([]),
            headers=list(COLUMNS),
            datatype=FORM_TYPES,
            label=f"Prompts for {name}",
            interactive=True,
            wrap=True,
            column_widths=FORM_WIDTHS,
            static_columns=[0, len(COLUMNS) - 1],
            max_height=380,
            visible=False,
            elem_id=f"pack-form-{name}",
        )
        for name in KNOWN_CLASSES
    }
    with gr.Row(equal_height=True):
        row_class = gr.Dropdown(
            [], label="Picked row: class", scale=1, allow_custom_value=True, elem_id="pack-form-row-class"
        )
        row_number = gr.Number(None, label="Row (#)", precision=0, minimum=1, scale=1, elem_id="pack-form-row")
        add = gr.Button("Add row below", scale=1, elem_id="pack-form-add")
        remove = gr.Button("Remove row", scale=1, elem_id="pack-form-remove")
        up = gr.Button("Move up", scale=1, elem_id="pack-form-up")
        down = gr.Button("Move down", scale=1, elem_id="pack-form-down")
    save = gr.Button("Save", variant="primary", elem_id="pack-form-save")
    form = FormWidgets(title, description, classes, tables, row_class, row_number)
    return form, (add, remove, up, down), save


def _cover_section() -> tuple[gr.Image, gr.File, gr.Button]:
    with gr.Row():
        cover = gr.Image(label="Cover", interactive=False, buttons=[], height=200, scale=1)
        with gr.Column(scale=2):
            upload = gr.File(label="New cover (PNG, JPEG or WebP)", file_types=["image"], type="filepath")
            save = gr.Button("Use as the cover", elem_id="pack-studio-cover")
    return cover, upload, save


@dataclass(frozen=True)
class PreviewWidgets:
    klass: gr.Dropdown
    index: gr.Number
    show: gr.Button
    rendered: gr.Textbox
    tune: gr.Dropdown
    make: gr.Button
    prompt: gr.Number
    refresh: gr.Button
    status: gr.Markdown
    gallery: gr.Gallery
    timer: gr.Timer


def _preview_section() -> PreviewWidgets:
    """Preview one prompt of the saved pack: as rendered for a sample subject, or as images on a tune."""
    gr.Markdown("### Preview a prompt (the saved version)")
    with gr.Row():
        klass = gr.Dropdown([], label="Class", allow_custom_value=True, elem_id="pack-preview-class")
        index = gr.Number(0, label="Prompt index (as in prompts.<class>[index])", precision=0, minimum=0)
        show = gr.Button("Preview text", scale=0, min_width=140)
    rendered = gr.Textbox(label="Rendered prompt (saved version, sample subject)", lines=3, interactive=False)
    with gr.Row(equal_height=True):
        # choices arrive with the pack (the editor's own tunes); the service checks the id is theirs
        tune = gr.Dropdown(
            [], label="Your trained tune", info="Of a class this pack supports", scale=3, allow_custom_value=True
        )
        make = gr.Button("Make images on this tune", variant="primary", scale=1, elem_id="pack-preview-make")
        prompt = gr.Number(None, label="Preview prompt id", precision=0, interactive=False, scale=1)
        refresh = gr.Button("Refresh", scale=0, min_width=100)
    status = gr.Markdown(elem_id="pack-preview-status")
    gallery = gr.Gallery(label="Preview images", columns=4, height="auto", elem_id="pack-preview-gallery")
    timer = gr.Timer(POLL_EVERY_S, active=False)
    return PreviewWidgets(klass, index, show, rendered, tune, make, prompt, refresh, status, gallery, timer)


def _charts_section() -> dict[str, gr.BarPlot]:
    """Per prompt: images made, likes, like rate and mean likeness (all users)."""
    gr.Markdown("### How each prompt does (all users; numbered as in the saved pack)")
    plots = {}
    names = list(CHART_METRICS)
    for pair in (names[:2], names[2:]):
        with gr.Row():
            for metric in pair:
                plots[metric] = gr.BarPlot(
                    x="prompt", y=metric, color="class", title=CHART_METRICS[metric], x_title="prompt",
                    y_title=metric, x_label_angle=-45, height=260, elem_id=f"pack-chart-{metric.replace(' ', '-')}",
                )  # fmt: skip
    return plots


# -- small helpers -----------------------------------------------------------------------------------------


def _required(chosen: str | None) -> str:
    if not chosen:
        raise ValidationError("pack", chosen, "is not chosen; pick a pack above first")
    return chosen


def _row(number: float | None) -> int | None:
    """The picked row (1-based in the form) as a 0-based index; None when none is picked."""
    return None if number is None else int(number) - 1


def _move(by: int) -> Callable[[pd.DataFrame, int | None], tuple[pd.DataFrame, int]]:
    def move(frame: pd.DataFrame, index: int | None) -> tuple[pd.DataFrame, int]:
        if index is None:
            raise ValidationError("row", index, "is not picked; click a row of a table first")
        return form_move_row(frame, index, by)

    return move


def _remove(frame: pd.DataFrame, index: int | None) -> tuple[pd.DataFrame, int | None]:
    if index is None:
        raise ValidationError("row", index, "is not picked; click a row of a table first")
    return form_remove_row(frame, index)


def _read_upload(path: str | None) -> bytes:
    """The uploaded file's bytes, refusing a file too large to be a cover before reading it."""
    if not path:
        raise ValidationError("cover", path, "is empty; choose an image file first")
    size = Path(path).stat().st_size
    if size > MAX_COVER_UPLOAD_BYTES:
        limit = f"{MAX_COVER_UPLOAD_BYTES // (1024 * 1024)} MB"
        raise ValidationError("cover", f"{Path(path).name}, {size} bytes", f"must be an image of at most {limit}")
    return Path(path).read_bytes()


def _cover_picture(studio: Studio, pack: Pack) -> Any:
    from ui.packs_tab import cover_image  # the gallery's own drawing of a card

    return cover_image(pack, studio.packs.cover_dirs)
