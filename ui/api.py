"""The named Gradio API: every user action as an endpoint a program can call with `gradio_client`.

JSON-only endpoints are plain typed functions (`gr.api`). Endpoints that take or return files use
hidden components, so Gradio moves files through its upload cache and a client never names a server path.
Every endpoint acts as the signed-in caller and sees only the caller's records, and takes one request from
the caller's rate allowance (`TUNES_API_RATE_PER_MINUTE`, one bucket per user shared with the REST API).

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    tune = client.predict(photos=[handle_file("me1.jpg"), ...], title="Me", name="woman", api_name="/create_tune")
    client.predict(tune_id=tune["id"], api_name="/get_tune")
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipelines.errors import ValidationError
from storage.records import Tune
from studio.requests import PromptCreate, TuneCreate, check_id
from ui.context import UIContext
from ui.feedback import user_errors
from ui.uploads import read_uploads


def tune_json(tune: Tune, *, created: bool | None = None) -> dict[str, Any]:
    data = tune.to_dict()
    if created is not None:
        data["created"] = created  # False: an earlier tune with this title was returned (idempotent titles)
    return data


def build_api(ctx: UIContext) -> None:
    """Register the named endpoints in the enclosing `gr.Blocks`."""
    _json_endpoints(ctx)
    _file_endpoints(ctx)


def _json_endpoints(ctx: UIContext) -> None:
    studio = ctx.studio

    @user_errors
    def get_tune(tune_id: int, request: gr.Request) -> dict:
        """One of your tunes: status, progress, ETA, token, expiry."""
        return tune_json(studio.get_tune(ctx.acting_user(request), check_id(tune_id, "tune_id")))

    @user_errors
    def list_tunes(limit: int = 20, offset: int = 0, request: gr.Request = None) -> list:
        """Your tunes, newest first."""
        return [tune_json(t) for t in studio.list_tunes(ctx.acting_user(request), limit=limit, offset=offset)]

    @user_errors
    def delete_tune(tune_id: int, request: gr.Request) -> dict:
        """Delete a tune, its photos and its LoRA (its avatars are kept)."""
        studio.delete_tune(ctx.acting_user(request), check_id(tune_id, "tune_id"))
        return {"id": tune_id, "deleted": True}

    @user_errors
    def cancel_tune(tune_id: int, request: gr.Request) -> dict:
        """Stop a queued or training tune."""
        return tune_json(studio.cancel_tune(ctx.acting_user(request), check_id(tune_id, "tune_id")))

    @user_errors
    def create_prompt(
        tune_id: int,
        text: str,
        negative_prompt: str = "",
        num_images: int = 4,
        seed: int | None = None,
        w: int | None = None,
        h: int | None = None,
        cfg_scale: float = 7.0,
        steps: int = 30,
        scheduler: str = "dpm++2m_karras",
        super_resolution: bool = False,
        inpaint_faces: bool = False,
        hires_fix: bool = False,
        callback: str | None = None,
        request: gr.Request = None,
    ) -> dict:
        """Queue a prompt on a trained (or training) tune. `text` may use {{subject}}, {{token}}, {{class}}."""
        owner = ctx.acting_user(request)  # first: a refused request counts too
        prompt = PromptCreate(
            text=text,
            negative_prompt=negative_prompt,
            num_images=num_images,
            seed=seed,
            w=w,
            h=h,
            cfg_scale=cfg_scale,
            steps=steps,
            scheduler=scheduler,
            super_resolution=super_resolution,
            inpaint_faces=inpaint_faces,
            hires_fix=hires_fix,
            callback=callback,
        )
        return studio.create_prompt(owner, check_id(tune_id, "tune_id"), prompt).to_dict()

    @user_errors
    def list_prompts(tune_id: int | None = None, limit: int = 20, offset: int = 0, request: gr.Request = None) -> list:
        """Your prompts (of one tune, or all), newest first, with their images' ids and seeds."""
        owner = ctx.acting_user(request)
        tune_id = None if tune_id is None else check_id(tune_id, "tune_id")
        return [p.to_dict() for p in studio.list_prompts(owner, tune_id=tune_id, limit=limit, offset=offset)]

    @user_errors
    def delete_prompt(prompt_id: int, request: gr.Request) -> dict:
        """Delete a prompt and its images."""
        studio.delete_prompt(ctx.acting_user(request), check_id(prompt_id, "prompt_id"))
        return {"id": prompt_id, "deleted": True}

    @user_errors
    def like(image_id: int, liked: bool = True, request: gr.Request = None) -> dict:
        """Like (or with liked=false, unlike) one of your images."""
        owner, image_id = ctx.acting_user(request), check_id(image_id, "image_id")
        if not isinstance(liked, bool):
            raise ValidationError("liked", liked, "must be true or false")
        image = studio.like_image(owner, image_id) if liked else studio.unlike_image(owner, image_id)
        return image.to_dict()

    @user_errors
    def list_packs(class_name: str | None = None, request: gr.Request = None) -> list:
        """Published packs (optionally only those for one class) with their prompts and image counts."""
        ctx.acting_user(request)
        return [pack.to_dict() for pack in studio.list_packs(class_name or None)]

    for endpoint in (get_tune, list_tunes, delete_tune, cancel_tune, create_prompt, list_prompts, delete_prompt):
        gr.api(endpoint, api_name=endpoint.__name__)
    gr.api(like, api_name="like")
    gr.api(list_packs, api_name="list_packs")


def _file_endpoints(ctx: UIContext) -> None:
    studio, settings = ctx.studio, ctx.settings
    with gr.Column(visible=False):
        photos = gr.File(label="photos", file_count="multiple", type="filepath", value=[])
        title = gr.Textbox(label="title", value="")
        name = gr.Textbox(label="name", value="", info="the class: man, woman, boy, girl, couple, cat, dog…")
        branch = gr.Textbox(label="branch", value="")
        steps = gr.Number(label="steps", value=0, precision=0, info="0: the branch default")
        token = gr.Textbox(label="token", value="")
        face_crop = gr.Checkbox(label="face_crop", value=True)
        characteristics = gr.JSON(label="characteristics", value={})
        callback = gr.Textbox(label="callback", value="")
        prompts_callback = gr.Textbox(label="prompts_callback", value="")
        auto_extend = gr.Checkbox(label="auto_extend", value=False)
        styles = gr.JSON(label="styles", value=[])
        pack_id = gr.Textbox(label="pack_id", value="")
        tune_ids = gr.JSON(label="tune_ids", value=[])
        prompt_id = gr.Number(label="prompt_id", precision=0)
        result = gr.JSON(label="result")
        images = gr.Gallery(label="images")
        triggers = [gr.Button() for _ in range(4)]

    def tune_request(photos, title, name, branch, steps, token, face_crop, characteristics, callback,
                     prompts_callback, auto_extend, styles) -> TuneCreate:  # fmt: skip
        branch = branch or None
        return TuneCreate(
            title=title,
            name=name,
            images=read_uploads(photos, settings),
            branch=branch,
            token=token or None,
            steps=int(steps) if steps else None,  # 0 or empty: the branch default
            face_crop=face_crop,
            characteristics=characteristics or {},
            callback=callback or None,
            prompts_callback=prompts_callback or None,
            auto_extend=auto_extend,
            prompts=studio.style_prompts(styles or [], branch or settings.default_branch),
        )

    tune_fields = [photos, title, name, branch, steps, token, face_crop, characteristics, callback, prompts_callback,
                   auto_extend, styles]  # fmt: skip

    @user_errors
    def create_tune(photos, title, name, branch, steps, token, face_crop, characteristics, callback, prompts_callback,
                    auto_extend, styles, request: gr.Request):  # fmt: skip
        """Upload 4-30 photos of one subject and queue the training; `styles` (up to 8 pack prompts) run after."""
        values = (photos, title, name, branch, steps, token, face_crop, characteristics, callback, prompts_callback,
                  auto_extend, styles)  # fmt: skip
        owner = ctx.acting_user(request)
        created = studio.create_tune(owner, tune_request(*values))
        ctx.files.discard(owner, photos or [])  # the tune keeps its own copy of the photos
        return tune_json(created.tune, created=created.created)

    @user_errors
    def create_tune_from_pack(pack_id, tune_ids, photos, title, name, branch, steps, token, face_crop, characteristics,
                              callback, prompts_callback, auto_extend, styles, request: gr.Request):  # fmt: skip
        """Train a tune with a pack's preset and generate the whole pack; or pass tune_ids to reuse trained tunes."""
        owner = ctx.acting_user(request)
        if tune_ids:
            tunes = studio.create_tune_from_pack(owner, pack_id, None, tune_ids=tune_ids)  # ids checked there
        else:
            values = (photos, title, name, branch, steps, token, face_crop, characteristics, callback,
                      prompts_callback, auto_extend, styles)  # fmt: skip
            tunes = studio.create_tune_from_pack(owner, pack_id, tune_request(*values))
            ctx.files.discard(owner, photos or [])
        return [tune_json(t.tune, created=t.created) for t in tunes]

    @user_errors
    def get_prompt(prompt_id: float | None, request: gr.Request):
        """One of your prompts with its images (downloaded by gradio_client), captioned with their seeds."""
        owner = ctx.acting_user(request)
        prompt = studio.get_prompt(owner, check_id(prompt_id, "prompt_id"))
        files = [ctx.files.show(owner, studio.image_file(owner, image.id)) for image in prompt.images]
        gallery = [(file, f"seed {image.seed}") for file, image in zip(files, prompt.images, strict=True)]
        return prompt.to_dict(), gallery

    @user_errors
    def check_photos(photos, name, request: gr.Request):
        """The quality report of photos before training: faces, sharpness, duplicates, which are used."""
        ctx.acting_user(request)
        checked = studio.check_photos(read_uploads(photos, settings), name)
        return [report.to_dict() for report in checked.reports]

    create, from_pack, fetch, check = triggers
    create.click(create_tune, tune_fields, result, api_name="create_tune")
    from_pack.click(create_tune_from_pack, [pack_id, tune_ids, *tune_fields], result, api_name="create_tune_from_pack")
    fetch.click(get_prompt, prompt_id, [result, images], api_name="get_prompt")
    check.click(check_photos, [photos, name], result, api_name="check_photos")
