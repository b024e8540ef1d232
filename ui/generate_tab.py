"""Generate: pick a trained tune, write a prompt (or pick a style), see the images with their seeds and likeness.

Likes, sorting by likeness, one-image and all-images (zip) downloads, and the history of the caller's prompts.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import gradio as gr

from pipelines.errors import TunesError
from pipelines.prompt_spec import ASPECT_RATIOS, FAMILY_SAMPLING, default_of, rule_of
from pipelines.registry import get_branch
from storage.records import PROMPT_FINISHED, TUNE_USABLE, Image, Prompt, PromptStatus, Tune, Visibility
from studio.requests import PromptCreate
from studio.service import Studio
from ui.context import UIContext
from ui.feedback import SHOWN_ERRORS, FieldErrors, notify, optional_int, user_errors
from ui.views import NEWEST, SORT_ORDERS, ordered_images, prompt_gallery, prompts_table

DEFAULT_PROMPT = "portrait photo of {{subject}}, soft studio lighting, 85mm, detailed skin"
DEFAULT_NEGATIVE = "blurry, lowres, deformed, extra fingers, watermark, text"
POLL_EVERY_S = 1.5
SD_SAMPLING = FAMILY_SAMPLING["sd15"]  # shown before a tune is picked
NEGATIVE_UNUSED = "FLUX is guidance-distilled: it does not use a negative prompt"
SHOWN = {
    Visibility.PUBLIC: "its avatars are on the showcase (hide single ones below the results)",
    Visibility.PRIVATE: "its avatars left the showcase and their public links stopped working",
}
BEST_OF_HELP = "Render this many and keep the ones most like your subject, as many as Images (person tunes)"
KEEP_ZIPS = 32  # "Download all" zips kept on disk; Gradio copies each into its own cache when it is shown


def zip_folder() -> Path:
    """The app's one folder of "Download all" zips, in the system temp folder (where Gradio may serve from)."""
    return Path(tempfile.gettempdir()) / "tune-studio-zips"


def zip_prompt_images(studio: Studio, owner: str, prompt: Prompt, *, keep: int = KEEP_ZIPS) -> str:
    """All images of a prompt in one zip, named by seed (the seed regenerates the image).

    Each prompt has one zip at a stable path, rewritten on every call (ids can be reused after a delete, so an
    old zip is never trusted); beyond `keep` zips the oldest are removed, so temp usage stays bounded.

    Returns:
        The zip's path.

    Raises:
        NotFoundError: an image file is gone (no partial zip is left behind).
    """
    folder = zip_folder()
    folder.mkdir(mode=0o700, exist_ok=True)
    archive = folder / f"prompt-{prompt.id}.zip"
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as partial:
        try:
            with zipfile.ZipFile(partial, "w") as bundle:
                for image in prompt.images:
                    bundle.write(studio.image_file(owner, image.id), f"prompt-{prompt.id}-seed-{image.seed}.png")
        except BaseException:
            os.unlink(partial.name)
            raise
    os.replace(partial.name, archive)  # a concurrent download never reads a half-written zip
    _remove_oldest(folder, keep=keep, current=archive)
    return str(archive)


def _remove_oldest(folder: Path, *, keep: int, current: Path) -> None:
    """Leave `current` and the newest others, `keep` zips in all (mtimes can tie: `current` is named)."""
    others = [path for path in folder.glob("prompt-*.zip") if path != current]
    for old in sorted(others, key=_modified, reverse=True)[max(keep - 1, 0) :]:
        old.unlink(missing_ok=True)


def _modified(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:  # removed by a concurrent download meanwhile
        return 0


def tune_picker(studio: Studio, owner: str, chosen: int | None = None) -> dict:
    """An update for the tune picker: the owner's tunes that can take prompts, with `chosen` (else the newest)
    picked. Other tabs use it to open this one with a tune chosen."""
    usable = [t for t in studio.list_tunes(owner, limit=100) if t.status in TUNE_USABLE]
    choices = [(f"{t.title} (#{t.id}, {t.name}, {t.status})", t.id) for t in usable]
    ids = [tune_id for _, tune_id in choices]
    return gr.update(choices=choices, value=chosen if chosen in ids else (ids[0] if ids else None))


def intro_text(tune: Tune | None) -> str:
    """The tab's heading: what `{{subject}}` becomes for the chosen tune (its own token and class)."""
    becomes = "it becomes your tune's token and class"
    if tune is not None:
        becomes = f"for this tune it becomes `{tune.token} {tune.name}`"
    return f"## Generate avatars\nUse `{{{{subject}}}}` where your subject goes ({becomes})."


def build_generate_tab(ctx: UIContext, app: gr.Blocks) -> gr.Dropdown:
    """Add the tab's widgets and events; returns the tune picker (other tabs may preselect a tune)."""
    studio = ctx.studio
    current = gr.State(None)  # the prompt id shown in the gallery
    selected = gr.State(None)  # the image id picked in the gallery

    intro = gr.Markdown(intro_text(None), elem_id="generate-intro")
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                tune = gr.Dropdown([], label="Tune", info="Your trained tunes", scale=2, elem_id="generate-tune")
                style = gr.Dropdown([], label="Style", info="Fill the prompt from a pack prompt", scale=3)
            visibility = gr.Radio(
                list(Visibility),
                value=Visibility.PRIVATE,
                label="This tune's avatars",
                info="public: on the showcase for every visitor, until you make it private again",
                interactive=False,
                elem_id="generate-visibility",
            )
            prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt", lines=3, elem_id="generate-prompt")
            negative = gr.Textbox(DEFAULT_NEGATIVE, label="Negative prompt", lines=2)
            with gr.Row():
                num_images = _slider("num_images", "Images", step=1)
                seed = gr.Textbox(
                    label="Seed", placeholder="random", info="Empty: random; the same seed gives the same image"
                )
                aspect = gr.Dropdown(list(ASPECT_RATIOS), value="1:1", label="Shape")
            with gr.Accordion("Advanced options", open=False):
                with gr.Row():
                    steps = _slider("steps", "Steps", step=1)
                    cfg = _slider("cfg_scale", "CFG scale", step=0.5, value=SD_SAMPLING.cfg_scale)
                    scheduler = gr.Dropdown(
                        list(SD_SAMPLING.schedulers), value=SD_SAMPLING.scheduler, label="Scheduler"
                    )
                with gr.Row():
                    inpaint_faces = gr.Checkbox(label="Re-paint faces", info="Sharper faces in wide shots")
                    hires_fix = gr.Checkbox(label="Hires fix", info="Render larger, then refine")
                    super_resolution = gr.Checkbox(label="Super resolution", info="2x upscale")
                # a text box, as for the seed: Gradio's number box shows an empty value as 0
                best_of = gr.Textbox(
                    label="Keep the best of",
                    placeholder="off",
                    info=f"{BEST_OF_HELP}; empty or 0: keep all",
                    elem_id="generate-best-of",
                )
            run = gr.Button("Generate", variant="primary", elem_id="generate-run")
            banner = gr.Markdown(visible=False, elem_classes=["error-banner"], elem_id="generate-banner")
        with gr.Column(scale=4):
            status = gr.Markdown(elem_id="generate-status")
            gallery = gr.Gallery(label="Results", columns=4, height=420, elem_id="generate-gallery")
            sort_by = gr.Radio(list(SORT_ORDERS), value=NEWEST, label="Sort by", elem_id="generate-sort")
            with gr.Row():
                like = gr.Button("♥ Like / unlike", size="sm")
                hide = gr.Button("Hide from / show on the showcase", size="sm", elem_id="generate-hide")
                download_one = gr.DownloadButton("Download this image", size="sm")
                download_all = gr.DownloadButton("Download all (zip)", size="sm")
    gr.Markdown("### Your prompts")
    history = gr.Dataframe(
        label="History (select a row to see its images)", interactive=False, wrap=True, elem_id="generate-history"
    )
    timer = gr.Timer(POLL_EVERY_S, active=False)
    errors = FieldErrors(
        banner,
        {
            "tune_id": tune,
            "text": prompt,
            "prompt": prompt,
            "negative_prompt": negative,
            "num_images": num_images,
            "seed": seed,
            "steps": steps,
            "cfg_scale": cfg,
            "scheduler": scheduler,
            "best_of": best_of,
        },
    )

    def tunes_changed(chosen: int | None, request: gr.Request):
        """The picker's tunes now (the one chosen stays chosen) and the history."""
        owner = ctx.user(request)
        return tune_picker(studio, owner, chosen), prompts_table(studio.list_prompts(owner, limit=50))

    def tune_picked(tune_id: int | None, request: gr.Request):
        """The tune's styles and intro, and its model family's samplers and guidance (FLUX has its own)."""
        if tune_id is None:
            nothing = gr.update(value=Visibility.PRIVATE, interactive=False)
            return gr.update(choices=[], value=None), intro_text(None), gr.update(), gr.update(), gr.update(), nothing
        chosen = studio.get_tune(ctx.user(request), int(tune_id))
        family = get_branch(chosen.branch).family
        sampling = FAMILY_SAMPLING.get(family, SD_SAMPLING)
        return (
            gr.update(choices=studio.list_styles(chosen.name), value=None),
            intro_text(chosen),
            gr.update(choices=list(sampling.schedulers), value=sampling.scheduler),
            gr.update(value=sampling.cfg_scale),
            gr.update(info=NEGATIVE_UNUSED if family == "flux" else None),
            gr.update(value=chosen.visibility, interactive=True),
        )

    def style_picked(key: str | None):
        if not key:
            return gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        pack_id, class_name, index = key.split("/")
        item = studio.get_pack(pack_id).prompts[class_name][int(index)]
        scheduler_ = item.scheduler or gr.update()  # a pack prompt without one keeps the model's
        return item.text, item.negative_prompt, item.num_images, item.aspect_ratio or "1:1", item.steps, scheduler_

    def generate(tune_id, text, negative_, count, seed_, aspect_, steps_, cfg_, scheduler_, inpaint, hires, superres,
                 keep, request: gr.Request):  # fmt: skip
        try:
            owner = ctx.acting_user(request)
            if tune_id is None:
                raise TunesError("Pick a trained tune first (create one in the Create tune tab).")
            seed_ = optional_int(seed_, "seed")
            created = studio.create_prompt(
                owner,
                int(tune_id),
                PromptCreate(
                    text=text or "",
                    negative_prompt=negative_ or "",
                    num_images=int(count),
                    seed=None if seed_ is None or seed_ == -1 else seed_,  # -1: random, as the box once said
                    aspect_ratio=aspect_,
                    steps=int(steps_),
                    cfg_scale=float(cfg_),
                    scheduler=scheduler_,
                    inpaint_faces=bool(inpaint),
                    hires_fix=bool(hires),
                    super_resolution=bool(superres),
                    best_of=optional_int(keep, "best_of") or None,  # 0 (or empty): keep all
                ),
            )
        except SHOWN_ERRORS as error:
            return {**errors.show(error), current: gr.update(), timer: gr.Timer(active=False)}
        return {**errors.clear(), current: created.id, timer: gr.Timer(active=True)}

    def show(prompt_id: int | None, order: str, request: gr.Request):
        """The prompt's status and images (in `order`); stops polling once it is done or failed."""
        if prompt_id is None:
            return "", [], gr.Timer(active=False), gr.update(), gr.update(value=None)
        owner = ctx.user(request)
        shown = studio.get_prompt(owner, prompt_id)
        finished = shown.status in PROMPT_FINISHED
        line = {
            PromptStatus.QUEUED: "Queued: it starts once the GPU is free (or once the tune is trained).",
            PromptStatus.GENERATING: "Generating…",
            PromptStatus.DONE: f"Done: {len(shown.images)} images for `{shown.rendered_text}`",
            PromptStatus.FAILED: f"Failed: {shown.error}",
        }[shown.status]
        table = prompts_table(studio.list_prompts(owner, limit=50)) if finished else gr.update()
        archive = zip_prompt_images(studio, owner, shown) if finished and shown.images else None
        if archive:  # its copy goes with the prompt's images
            ctx.files.show(owner, archive, of=[studio.image_file(owner, image.id) for image in shown.images])
        return (
            f"**Prompt #{shown.id}.** {line}",
            prompt_gallery(studio, ctx.files, owner, [shown], order=order),
            gr.Timer(active=not finished),
            table,
            gr.update(value=archive),
        )

    def resort(prompt_id: int | None, order: str, request: gr.Request):
        """The shown prompt's images in the order picked under "Sort by"."""
        if prompt_id is None:
            return []
        owner = ctx.user(request)
        return prompt_gallery(studio, ctx.files, owner, [studio.get_prompt(owner, prompt_id)], order=order)

    def pick_image(event: gr.SelectData, prompt_id: int | None, order: str, request: gr.Request):
        owner = ctx.user(request)
        image = ordered_images([studio.get_prompt(owner, prompt_id)], order)[event.index]  # as the gallery shows
        return image.id, gr.update(value=ctx.files.show(owner, studio.image_file(owner, image.id)))

    def picked(owner: str, image_id: int | None, prompt_id: int | None, then: str) -> Image:
        """The image picked in the gallery (one of the shown prompt's)."""
        if image_id is None:
            raise TunesError(f"Click an image first, then {then}.")
        return next(i for i in studio.get_prompt(owner, prompt_id).images if i.id == image_id)

    def gallery_of(owner: str, prompt_id: int, order: str) -> list[tuple[str, str]]:
        return prompt_gallery(studio, ctx.files, owner, [studio.get_prompt(owner, prompt_id)], order=order)

    @user_errors
    def toggle_like(image_id: int | None, prompt_id: int | None, order: str, request: gr.Request):
        owner = ctx.user(request)
        image = picked(owner, image_id, prompt_id, "like it")
        (studio.unlike_image if image.liked else studio.like_image)(owner, image.id)
        return gallery_of(owner, prompt_id, order), prompts_table(studio.list_prompts(owner, limit=50))  # "liked" too

    @user_errors
    def change_visibility(tune_id: int | None, visibility: str, request: gr.Request):
        if tune_id is None:
            raise TunesError("Pick a tune first.")
        tune = studio.set_visibility(ctx.user(request), int(tune_id), visibility)
        notify(f"{tune.title!r} is {tune.visibility}: " + SHOWN[tune.visibility])
        return tune.visibility

    @user_errors
    def toggle_hidden(image_id: int | None, prompt_id: int | None, order: str, request: gr.Request):
        owner = ctx.user(request)
        image = picked(owner, image_id, prompt_id, "hide or show it")
        studio.hide_image(owner, image.id, hidden=not image.hidden)
        return gallery_of(owner, prompt_id, order)

    def history_picked(table, event: gr.SelectData):
        return int(table.iloc[event.index[0]]["id"])

    private = {"api_visibility": "private"}
    quiet = {**private, "show_progress": "hidden", "concurrency_limit": None}
    app.load(tunes_changed, tune, [tune, history], **private)
    tune.focus(tunes_changed, tune, [tune, history], **quiet)
    tune.change(tune_picked, tune, [style, intro, scheduler, cfg, negative, visibility], **private)
    visibility.input(change_visibility, [tune, visibility], visibility, **private)
    style.input(style_picked, style, [prompt, negative, num_images, aspect, steps, scheduler], **private)
    inputs = [tune, prompt, negative, num_images, seed, aspect, steps, cfg, scheduler, inpaint_faces, hires_fix]
    prompt_view = [status, gallery, timer, history, download_all]
    generated = run.click(generate, [*inputs, super_resolution, best_of], [*errors.outputs, current, timer], **private)
    generated.then(show, [current, sort_by], prompt_view, **quiet)
    timer.tick(show, [current, sort_by], prompt_view, **quiet)
    sort_by.change(resort, [current, sort_by], gallery, **quiet)
    gallery.select(pick_image, [current, sort_by], [selected, download_one], **private)
    like.click(toggle_like, [selected, current, sort_by], [gallery, history], **quiet)
    hide.click(toggle_hidden, [selected, current, sort_by], gallery, **quiet)
    errors.clear_on_change()
    history.select(history_picked, history, current, **private).then(show, [current, sort_by], prompt_view, **quiet)
    return tune


def _slider(name: str, label: str, *, step: float, value: float | None = None) -> gr.Slider:
    """A slider over a prompt spec field's range, at `value` (default: the field's), explained by its doc."""
    rule = rule_of(name)
    value = default_of(name) if value is None else value
    return gr.Slider(rule.low, rule.high, value=value, step=step, label=label, info=rule.doc)
