"""Create tune: class and photo guidance, uploads with a per-photo quality report, then live training progress.

Callbacks stay thin: widget values -> a typed request -> one service call -> widget updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from packs.loader import Pack
from pipelines.errors import PhotoRejectedError, ValidationError
from pipelines.registry import BRANCHES
from pipelines.tuning import CheckedPhotos, model_types
from storage.records import PROMPT_PENDING, TUNE_ACTIVE, Tune, TuneStatus, Visibility
from studio.requests import TuneCreate
from studio.service import Studio
from ui.context import UIContext
from ui.feedback import SHOWN_ERRORS, FieldErrors, user_errors
from ui.generate_tab import tune_picker
from ui.uploads import read_uploads
from ui.views import (
    CLASSES,
    NEWEST,
    PHOTO_REPORT_WIDTHS,
    SORT_ORDERS,
    USER_BRANCHES,
    branch_help,
    class_guidance,
    identity_note,
    loss_frame,
    photo_report_table,
    progress_bar,
    tune_gallery,
    tunes_table,
)

NO_PACK = "(no pack)"
WATCH_EVERY_S = 2.0
TOAST_S = 5  # info toasts fade after this many seconds


@dataclass
class CreateTab:
    """What other tabs wire to: the pack picker ("use this pack"), the followed tune and "Generate with this tune".

    Attributes:
        class_name: the Subject radio (`choose_pack` takes its value: the user's choice wins).
        pack_outputs: what `choose_pack` updates.
        watched: the id of the tune this browser session follows (None before there is one).
        generate_with: "Generate with this tune"; `open_in_generate` gives the Generate tab's tune picker.
    """

    ctx: UIContext
    class_name: gr.Radio
    pack_outputs: list[gr.components.Component]
    watched: gr.State
    generate_with: gr.Button

    def choose_pack(self, pack_id: str | None, class_name: str | None):
        """Updates for `pack_outputs`: the pack chosen for the Subject the user chose (`class_name`, never changed
        here). A pack without prompts for it is not chosen: a note says which subjects it has, and the pack is
        chosen once the user picks one of them."""
        if not pack_id:
            return tuple(gr.update() for _ in self.pack_outputs)
        return _pack_updates(self.ctx.studio, class_name or "", pack_id)

    def open_in_generate(self, tune_id: int | None, request: gr.Request) -> dict:
        """The Generate tab's tune picker with the followed tune chosen (`ui.generate_tab.tune_picker`)."""
        return tune_picker(self.ctx.studio, self.ctx.user(request), tune_id)


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


def parse_steps(text: str | None) -> int | None:
    """The training steps typed by the user; empty means the base model's default (None).

    Raises:
        ValidationError: not a whole number.
    """
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValidationError("steps", text, "must be a whole number, e.g. 500, or empty for the default") from None


def _offers_pivotal(branch: str | None) -> bool:
    return branch in BRANCHES and "pti" in model_types(BRANCHES[branch])


def pivotal_box(branch: str | None) -> dict:
    """The "Pivotal tuning" checkbox for a branch: shown where pti trains (SDXL), ticked where it is the default."""
    offered = _offers_pivotal(branch)
    return gr.update(visible=offered, value=offered and BRANCHES[branch].model_type == "pti")


def chosen_model_type(branch: str | None, pivotal: bool) -> str | None:
    """What the form asks to train: on a branch that offers pivotal tuning, "pti" or "lora" as ticked; elsewhere
    None (the branch's own, a LoRA)."""
    if not _offers_pivotal(branch):
        return None
    return "pti" if pivotal else "lora"


def _pack_updates(studio: Studio, class_name: str, pack_id: str | None) -> tuple:
    """(guidance, pack picker, style picker, pack note, pending pack) for a class with `pack_id` asked for: chosen
    when it has prompts for the class; otherwise left pending, with a note that says why."""
    if pack_id is None or pack_id == NO_PACK:
        return (*_class_updates(studio, class_name), gr.update(value="", visible=False), None)
    pack = studio.get_pack(pack_id)
    if class_name in pack.classes:
        return (*_class_updates(studio, class_name, pack=pack.id), gr.update(value="", visible=False), None)
    return (
        *_class_updates(studio, class_name),
        gr.update(value=pack_class_note(pack, class_name), visible=True),
        pack.id,
    )


def pack_class_note(pack: Pack, class_name: str) -> str:
    """What the user reads when a pack has no prompts for their Subject."""
    subjects = ", ".join(f"**{name}**" for name in pack.classes)
    return (
        f"⚠ The pack **{pack.title}** has no prompts for *{class_name}*; it makes avatars of {subjects}. "
        "Pick one of those as Subject to use it, or choose another pack under *Generate right after training*."
    )


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
    pending_pack = gr.State(None)  # a pack asked for ("use this pack") that has no prompts for the Subject

    gr.Markdown("## Create a tune\nUpload photos of one subject; Tune Studio learns it as a token you can prompt.")
    with gr.Row():
        with gr.Column(scale=3):
            class_name = gr.Radio(
                list(CLASSES),
                value="woman",
                label="Subject",
                info="Who or what is in the photos?",
                elem_id="tune-subject",
            )
            pack_note = gr.Markdown(visible=False, elem_id="pack-note")
            guidance = gr.Markdown(class_guidance("woman"))
            photos = gr.File(
                label=f"Photos ({settings.min_photos}-{settings.max_photos})",
                file_count="multiple",
                file_types=["image"],
                elem_id="tune-photos",
            )
            previews = gr.Gallery(
                label="Your photos", columns=6, height=200, allow_preview=False, elem_id="photo-previews"
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
                # a text box: Gradio 6.31's number box shows an empty value as 0 (its frontend sets `value ??= 0`)
                steps = gr.Textbox(
                    label="Training steps",
                    placeholder="the base model's default",
                    info="A whole number; empty: the base model's default",
                )
                token = gr.Textbox(label="Token", placeholder="ohwx", info="2-12 lowercase letters or digits")
                face_crop = gr.Checkbox(value=True, label="Face crop", info="Also train on tight face crops")
                pivotal = gr.Checkbox(
                    value=pivotal_box(settings.default_branch)["value"],
                    visible=_offers_pivotal(settings.default_branch),
                    label="Pivotal tuning (new tokens + LoRA; best likeness on SDXL)",
                    info="Learns new tokens <s0><s1> in both text encoders besides the LoRA; untick for a plain LoRA",
                    elem_id="tune-pivotal",
                )
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
            visibility = gr.Radio(
                list(Visibility),
                value=Visibility.PRIVATE,
                label="Who sees its avatars",
                info="private: only you; public: every visitor of the showcase (change it later in Generate)",
                elem_id="create-visibility",
            )
            create = gr.Button("Create tune", variant="primary", elem_id="create-tune")
            banner = gr.Markdown(visible=False, elem_classes=["error-banner"], elem_id="create-banner")
    report = gr.Dataframe(  # the form's full width: the advice needs room, and short headers must not wrap
        photo_report_table([]),
        label="Photo check (before training)",
        interactive=False,
        wrap=True,
        column_widths=PHOTO_REPORT_WIDTHS,
        elem_id="photo-report",
    )
    identity = gr.Markdown(visible=False, elem_id="identity-note")  # says once when identity checks are off
    errors = FieldErrors(
        banner,
        {
            "title": title,
            "name": class_name,
            "images": photos,
            "branch": branch,
            "steps": steps,
            "token": token,
            "model_type": pivotal,
            "characteristics": characteristics,
            "styles": styles,
            "visibility": visibility,
            "pack_id": pack,
        },
    )
    errors.clear_on_change()  # a fixed field's error goes as soon as the field changes

    gr.Markdown("### Your tunes")
    progress = gr.HTML(elem_id="tune-progress")
    loss = gr.LinePlot(
        x="step", y="loss", title="Training loss", height=220, visible=False, elem_id="tune-loss", x_title="step"
    )
    with gr.Row():  # shown once there is a tune to act on (`_tune_view`)
        generate_with = gr.Button(
            "Generate with this tune", size="sm", variant="primary", visible=False, elem_id="generate-with-tune"
        )
        cancel = gr.Button("Cancel this tune", size="sm", visible=False)
        delete = gr.Button("Delete this tune", size="sm", variant="stop", visible=False)
    avatars = gr.Gallery(label="Avatars of this tune", columns=6, height=300, visible=False, elem_id="tune-avatars")
    avatar_order = gr.Radio(
        list(SORT_ORDERS), value=NEWEST, label="Sort avatars by", visible=False, elem_id="tune-avatars-sort"
    )
    tunes = gr.Dataframe(label="All your tunes (select one to follow it)", interactive=False)
    timer = gr.Timer(WATCH_EVERY_S)

    def class_changed(chosen: str, pending: str | None, chosen_pack: str | None):
        """The pack asked for (or chosen) stays chosen when it has prompts for the new Subject, else a note says so."""
        return _pack_updates(studio, chosen, pending or chosen_pack)

    def photos_changed(paths: list[str] | None, chosen: str):
        """(previews, report, banner, identity note) for the uploads as they stand."""
        no_note = gr.update(value="", visible=False)
        if not paths:
            return [], photo_report_table([]), errors.clear()[banner], no_note
        try:
            checked = studio.check_photos(read_uploads(paths, settings), chosen, preview=True)
        except SHOWN_ERRORS as error:
            return [], photo_report_table([]), errors.show(error)[banner], no_note
        previews = [(paths[photo.index], photo.name) for photo in checked.photos]  # refused files: no thumbnail
        table = photo_report_table([r.to_dict() for r in checked.reports], checked.refused)
        problem = _photo_problem(checked, settings.min_photos)
        note = identity_note(checked.identity_off)
        shown = (errors.clear() if problem is None else errors.show(problem))[banner]
        return previews, table, shown, gr.update(value=note, visible=bool(note))

    def create_tune(paths, title_, chosen, branch_, steps_, token_, face_crop_, characteristics_, pack_, styles_,
                    pivotal_, visibility_, request: gr.Request):  # fmt: skip
        try:
            owner = ctx.acting_user(request)
            tune_request = TuneCreate(
                title=title_ or "",
                name=chosen,
                images=read_uploads(paths, settings),
                branch=branch_,
                token=(token_ or "").strip() or None,
                steps=parse_steps(steps_),
                face_crop=bool(face_crop_),
                model_type=chosen_model_type(branch_, bool(pivotal_)),
                characteristics=parse_characteristics(characteristics_),
                prompts=studio.style_prompts(styles_ or [], branch_),
                visibility=visibility_,
            )
            if pack_ and pack_ != NO_PACK:
                [created] = studio.create_tune_from_pack(owner, pack_, tune_request)
            else:
                created = studio.create_tune(owner, tune_request)
        except SHOWN_ERRORS as error:
            return {**errors.show(error), watched: gr.update()}
        ctx.files.discard(owner, paths or [])  # the tune keeps its own copy; the uploads must not outlive it
        note = "" if created.created else " (a tune with this title already existed; showing it)"
        gr.Info(f"Tune #{created.tune.id} queued{note}.", duration=TOAST_S)
        return {**errors.clear(), photos: None, watched: created.tune.id}

    def refresh(tune_id: int | None, order: str, request: gr.Request):
        """The followed tune's progress and avatars (in `order`), and the list; polling stops once nothing is in
        progress."""
        owner = ctx.user(request)
        mine = studio.list_tunes(owner, limit=50)
        if tune_id is None and mine:
            tune_id = mine[0].id
        current = next((t for t in mine if t.id == tune_id), None)
        if current is None:
            empty = "<p>No tune yet: upload photos and press <b>Create tune</b>.</p>"
            return None, empty, *_tune_view(None, []), tunes_table(mine), gr.Timer(active=False), _loss_plot(None)
        prompts = studio.list_prompts(owner, tune_id=current.id, limit=100)
        busy = any(t.status in TUNE_ACTIVE for t in mine) or any(p.status in PROMPT_PENDING for p in prompts)
        images = tune_gallery(studio, ctx.files, owner, current.id, prompts, order=order)
        return (
            current.id,
            progress_bar(current, ahead=studio.jobs_ahead(owner, current.id)),
            *_tune_view(current, images),
            tunes_table(mine),
            gr.Timer(active=busy),
            _loss_plot(current),
        )

    def follow(table, event: gr.SelectData):
        return int(table.iloc[event.index[0]]["id"])

    @user_errors
    def cancel_tune(tune_id: int | None, request: gr.Request):
        if tune_id is not None:
            tune = studio.cancel_tune(ctx.user(request), tune_id)
            gr.Info(f"Tune #{tune.id} is {tune.status}.", duration=TOAST_S)

    @user_errors
    def delete_tune(tune_id: int | None, request: gr.Request):
        if tune_id is not None:
            studio.delete_tune(ctx.user(request), tune_id)
            gr.Info(f"Tune #{tune_id} deleted; its avatars are kept.", duration=TOAST_S)
        return None

    private = {"api_visibility": "private"}
    watch_outputs = [watched, progress, generate_with, cancel, delete, avatars, avatar_order, tunes, timer, loss]
    watch_inputs = [watched, avatar_order]
    quiet = {**private, "show_progress": "hidden", "concurrency_limit": None}
    pack_outputs = [guidance, pack, styles, pack_note, pending_pack]
    class_name.input(class_changed, [class_name, pending_pack, pack], pack_outputs, **private)
    pack.input(lambda: (gr.update(visible=False), None), None, [pack_note, pending_pack], **private)
    photos.change(photos_changed, [photos, class_name], [previews, report, banner, identity], **private)
    branch.change(pivotal_box, branch, pivotal, **private)
    inputs = [photos, title, class_name, branch, steps, token, face_crop, characteristics, pack, styles, pivotal]
    inputs += [visibility]
    create.click(create_tune, inputs, [*errors.outputs, watched], **private).then(
        refresh, watch_inputs, watch_outputs, **quiet
    )
    timer.tick(refresh, watch_inputs, watch_outputs, **quiet)
    avatar_order.change(refresh, watch_inputs, watch_outputs, **quiet)
    tunes.select(follow, tunes, watched, **private).then(refresh, watch_inputs, watch_outputs, **quiet)
    cancel.click(cancel_tune, watched, None, **private).then(refresh, watch_inputs, watch_outputs, **quiet)
    delete.click(delete_tune, watched, watched, **private).then(refresh, watch_inputs, watch_outputs, **quiet)
    return CreateTab(ctx, class_name, pack_outputs, watched, generate_with)


def _loss_plot(tune: Tune | None) -> dict:
    """The followed tune's loss curve, shown once it has points (while it trains, and after)."""
    frame = loss_frame(tune)
    return gr.update(value=frame, visible=not frame.empty)


def _photo_problem(checked: CheckedPhotos, minimum: int) -> ValidationError | None:
    """What would stop "Create tune" with these photos: too few usable ones (each left out named), refused files."""
    try:
        checked.require_usable(minimum)
    except ValidationError as error:
        return error
    return PhotoRejectedError(checked.refused) if checked.refused else None


def _tune_view(tune: Tune | None, images: list[tuple[str, str]]) -> tuple:
    """(generate-with, cancel, delete, avatars, avatar order) updates: actions only where they apply, no empty
    gallery (nor its "Sort avatars by")."""
    status = tune.status if tune is not None else None
    return (
        gr.update(visible=status == TuneStatus.TRAINED),
        gr.update(visible=status in TUNE_ACTIVE),
        gr.update(visible=tune is not None),
        gr.update(value=images, visible=bool(images)),
        gr.update(visible=bool(images)),
    )
