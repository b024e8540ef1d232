"""Create tune: class and photo guidance, uploads with a per-photo quality report, then live training progress.

Callbacks stay thin: widget values -> a typed request -> one service call -> widget updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from pipelines.errors import ValidationError
from studio.requests import TuneCreate
from studio.service import Studio
from ui.context import UIContext
from ui.feedback import SHOWN_ERRORS, FieldErrors, user_errors
from ui.uploads import read_uploads
from ui.views import (
    CLASSES,
    USER_BRANCHES,
    branch_help,
    class_guidance,
    photo_report_table,
    progress_bar,
    prompt_gallery,
    tunes_table,
)

NO_PACK = "(no pack)"
WATCH_EVERY_S = 2.0


@dataclass
class CreateTab:
    """What other tabs wire to: the pack picker ("use this pack") and the class it needs."""

    studio: Studio
    class_name: gr.Radio
    guidance: gr.Markdown
    pack: gr.Dropdown
    styles: gr.Dropdown

    @property
    def pack_outputs(self) -> list[gr.components.Component]:
        return [self.class_name, self.guidance, self.pack, self.styles]

    def choose_pack(self, pack_id: str | None, class_name: str | None = None):
        """Updates for `pack_outputs`: the form with the pack and the class (one the pack supports) chosen."""
        if not pack_id:
            return gr.update(), gr.update(), gr.update(), gr.update()
        pack = self.studio.get_pack(pack_id)
        class_name = class_name if class_name in pack.classes else pack.classes[0]
        return class_name, *_class_updates(self.studio, class_name, pack=pack.id)


def parse_characteristics(text: str | None) -> dict[str, str]:
    """`key: value` lines (e.g. `eye_color: green eyes`) into a dict; blank lines are skipped.

    Raises:
        ValidationError: a line without a colon, named by its number.
    """
    values: dict[str, str] = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon or not key.strip():
            raise ValidationError("characteristics", line, f"line {number} must read `key: value`")
        values[key.strip()] = value.strip()
    return values


def _class_updates(studio: Studio, class_name: str, *, pack: str = NO_PACK) -> tuple:
    """(guidance, pack picker, style picker) updates for a class; `pack` is the pack left chosen."""
    return (
        class_guidance(class_name),
        gr.update(choices=_pack_choices(studio, class_name), value=pack),
        gr.update(choices=studio.list_styles(class_name), value=[]),
    )


def _pack_choices(studio: Studio, class_name: str) -> list[tuple[str, str]]:
    packs = [(f"{p.title} ({p.images_for(class_name)} images)", p.id) for p in studio.list_packs(class_name)]
    return [(NO_PACK, NO_PACK), *packs]


def build_create_tab(ctx: UIContext) -> CreateTab:
    """Add the tab's widgets and events to the enclosing `gr.Tab`."""
    studio, settings = ctx.studio, ctx.settings
    watched = gr.State(None)  # the tune this browser session follows

    gr.Markdown("## Create a tune\nUpload photos of one subject; Tune Studio learns it as a token you can prompt.")
    with gr.Row():
        with gr.Column(scale=3):
            class_name = gr.Radio(list(CLASSES), value="woman", label="Subject", info="Who or what is in the photos?")
            guidance = gr.Markdown(class_guidance("woman"))
            photos = gr.File(
                label=f"Photos ({settings.min_photos}-{settings.max_photos})",
                file_count="multiple",
                file_types=["image"],
                elem_id="tune-photos",
            )
            previews = gr.Gallery(label="Your photos", columns=6, height=200, allow_preview=False)
            report = gr.Dataframe(
                label="Photo check (before training)", interactive=False, wrap=True, elem_id="photo-report"
            )
        with gr.Column(scale=2):
            title = gr.Textbox(
                label="Title", placeholder="e.g. Me, summer 2026", info="Reusing a title returns that tune"
            )
            branch = gr.Dropdown(
                list(USER_BRANCHES), value=settings.default_branch, label="Base model", info="tiny runs on a CPU"
            )
            with gr.Accordion("About the base models", open=False):
                gr.Markdown(branch_help())
            with gr.Accordion("Advanced settings", open=False):
                steps = gr.Number(value=0, precision=0, label="Training steps", info="0: the base model's default")
                token = gr.Textbox(label="Token", placeholder="ohwx", info="2-12 lowercase letters or digits")
                face_crop = gr.Checkbox(value=True, label="Face crop", info="Also train on tight face crops")
                characteristics = gr.Textbox(
                    label="Characteristics",
                    lines=3,
                    placeholder="eye_color: green eyes\nhair: short brown hair",
                    info="`key: value` lines, used as {{key}} in prompts",
                )
            with gr.Accordion("Generate right after training", open=True):
                pack = gr.Dropdown(
                    _pack_choices(studio, "woman"), value=NO_PACK, label="Pack", info="A whole pack of avatars"
                )
                styles = gr.Dropdown(
                    studio.list_styles("woman"),
                    value=[],
                    multiselect=True,
                    max_choices=8,
                    label="Or up to 8 styles",
                    info="Pack prompts",
                )
            create = gr.Button("Create tune", variant="primary", elem_id="create-tune")
            banner = gr.Markdown(visible=False, elem_classes=["error-banner"])
    errors = FieldErrors(
        banner,
        {
            "title": title,
            "name": class_name,
            "images": photos,
            "branch": branch,
            "steps": steps,
            "token": token,
            "characteristics": characteristics,
            "styles": styles,
            "pack_id": pack,
        },
    )

    gr.Markdown("### Your tunes")
    progress = gr.HTML(elem_id="tune-progress")
    with gr.Row():
        cancel = gr.Button("Cancel this tune", size="sm")
        delete = gr.Button("Delete this tune", size="sm", variant="stop")
    avatars = gr.Gallery(label="Avatars of this tune", columns=6, height=300)
    tunes = gr.Dataframe(label="All your tunes (select one to follow it)", interactive=False)
    timer = gr.Timer(WATCH_EVERY_S)

    def class_changed(chosen: str):
        return _class_updates(studio, chosen)

    def photos_changed(paths: list[str] | None, chosen: str):
        if not paths:
            return [], None, errors.clear()[banner]
        try:
            checked = studio.check_photos(read_uploads(paths, settings), chosen)
        except SHOWN_ERRORS as error:
            return paths, None, errors.show(error)[banner]
        return paths, photo_report_table([r.to_dict() for r in checked.reports]), errors.clear()[banner]

    def create_tune(paths, title_, chosen, branch_, steps_, token_, face_crop_, characteristics_, pack_, styles_,
                    request: gr.Request):  # fmt: skip
        try:
            owner = ctx.acting_user(request)
            tune_request = TuneCreate(
                title=title_ or "",
                name=chosen,
                images=read_uploads(paths, settings),
                branch=branch_,
                token=(token_ or "").strip() or None,
                steps=int(steps_) if steps_ else None,
                face_crop=bool(face_crop_),
                characteristics=parse_characteristics(characteristics_),
                prompts=studio.style_prompts(styles_ or [], branch_),
            )
            if pack_ and pack_ != NO_PACK:
                [created] = studio.create_tune_from_pack(owner, pack_, tune_request)
            else:
                created = studio.create_tune(owner, tune_request)
        except SHOWN_ERRORS as error:
            return {**errors.show(error), watched: gr.update()}
        ctx.files.discard(owner, paths or [])  # the tune keeps its own copy; the uploads must not outlive it
        note = "" if created.created else " (a tune with this title already existed; showing it)"
        gr.Info(f"Tune #{created.tune.id} queued{note}.")
        return {**errors.clear(), photos: None, watched: created.tune.id}

    def refresh(tune_id: int | None, request: gr.Request):
        """The followed tune's progress and avatars, and the list; polling stops once nothing is in progress."""
        owner = ctx.user(request)
        mine = studio.list_tunes(owner, limit=50)
        if tune_id is None and mine:
            tune_id = mine[0].id
        current = next((t for t in mine if t.id == tune_id), None)
        if current is None:
            empty = "<p>No tune yet: upload photos and press <b>Create tune</b>.</p>"
            return None, empty, [], tunes_table(mine), gr.Timer(active=False)
        prompts = studio.list_prompts(owner, tune_id=current.id, limit=100)
        busy = any(t.status in ("queued", "training") for t in mine) or any(
            p.status in ("queued", "generating") for p in prompts
        )
        images = prompt_gallery(studio, ctx.files, owner, prompts)
        return current.id, progress_bar(current), images, tunes_table(mine), gr.Timer(active=busy)

    def follow(table, event: gr.SelectData):
        return int(table.iloc[event.index[0]]["id"])

    @user_errors
    def cancel_tune(tune_id: int | None, request: gr.Request):
        if tune_id is not None:
            tune = studio.cancel_tune(ctx.user(request), tune_id)
            gr.Info(f"Tune #{tune.id} is {tune.status}.")

    @user_errors
    def delete_tune(tune_id: int | None, request: gr.Request):
        if tune_id is not None:
            studio.delete_tune(ctx.user(request), tune_id)
            gr.Info(f"Tune #{tune_id} deleted; its avatars are kept.")
        return None

    private = {"api_visibility": "private"}
    watch_outputs = [watched, progress, avatars, tunes, timer]
    quiet = {**private, "show_progress": "hidden", "concurrency_limit": None}
    class_name.input(class_changed, class_name, [guidance, pack, styles], **private)
    photos.change(photos_changed, [photos, class_name], [previews, report, banner], **private)
    inputs = [photos, title, class_name, branch, steps, token, face_crop, characteristics, pack, styles]
    create.click(create_tune, inputs, [*errors.outputs, watched], **private).then(
        refresh, watched, watch_outputs, **quiet
    )
    timer.tick(refresh, watched, watch_outputs, **quiet)
    tunes.select(follow, tunes, watched, **private).then(refresh, watched, watch_outputs, **quiet)
    cancel.click(cancel_tune, watched, None, **private).then(refresh, watched, watch_outputs, **quiet)
    delete.click(delete_tune, watched, watched, **private).then(refresh, watched, watch_outputs, **quiet)
    return CreateTab(studio, class_name, guidance, pack, styles)
