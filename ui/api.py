"""The named Gradio API: every user action as an endpoint a program can call with `gradio_client`.

JSON-only endpoints are plain typed functions (`gr.api`). Endpoints that take or return files use
hidden components, so Gradio moves files through its upload cache and a client never names a server path.
Every endpoint acts as the signed-in caller and sees only the caller's records, and takes one request from
the caller's rate allowance (`TUNES_API_RATE_PER_MINUTE`, one bucket per user shared with the REST API).
The JSON reads that programs poll (`get_tune`, `list_tunes`, `list_prompts`, `list_packs`) need no queue slot
(`POLL_OPTIONS`); `get_prompt` stays queued: it copies images into Gradio's file cache on every call.

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    tune = client.predict(photos=[handle_file("me1.jpg"), ...], title="Me", name="woman", api_name="/create_tune")
    client.predict(tune_id=tune["id"], api_name="/get_tune")
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import MISSING
from typing import Any

import gradio as gr

from pipelines.errors import ValidationError
from pipelines.prompt_spec import FIELDS, default_of, rule_of
from pipelines.settings import Settings
from storage.records import Tune
from studio.requests import PromptCreate, TuneCreate, check_id, prompts_from
from ui.context import UIContext
from ui.feedback import user_errors
from ui.uploads import read_uploads

# Polls: plain reads that programs repeat every few seconds while a tune trains. Off the queue for HTTP callers
# (`POST /gradio_api/run/get_tune`, JavaScript's @gradio/client); gradio_client 2.x joins the queue for every
# endpoint whatever its config says, so they have no concurrency limit either: a poll waits for no other call of
# its endpoint, only for one of Gradio's `max_threads` slots, which it holds for the milliseconds of its read.
POLL_OPTIONS: dict[str, Any] = {"queue": False, "concurrency_limit": None}


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

    create_prompt = _create_prompt_endpoint(ctx)

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
    def set_visibility(tune_id: int, visibility: str, request: gr.Request) -> dict:
        """Make one of your tunes public (its avatars go on the showcase) or private (they leave it at once)."""
        owner = ctx.acting_user(request)
        return tune_json(studio.set_visibility(owner, check_id(tune_id, "tune_id"), visibility))

    @user_errors
    def hide_image(image_id: int, hidden: bool = True, request: gr.Request = None) -> dict:
        """Keep one of your avatars off the showcase (hidden=false shows it again)."""
        owner = ctx.acting_user(request)
        return studio.hide_image(owner, check_id(image_id, "image_id"), hidden=hidden).to_dict()

    @user_errors
    def list_packs(class_name: str | None = None, request: gr.Request = None) -> list:
        """Published packs (optionally only those for one class) with their prompts and image counts."""
        ctx.acting_user(request)
        return [pack.to_dict() for pack in studio.list_packs(class_name or None)]

    polls = {get_tune, list_tunes, list_prompts}
    for endpoint in (get_tune, list_tunes, delete_tune, cancel_tune, create_prompt, list_prompts, delete_prompt):
        gr.api(endpoint, api_name=endpoint.__name__, **(POLL_OPTIONS if endpoint in polls else {}))
    gr.api(like, api_name="like")
    gr.api(set_visibility, api_name="set_visibility")
    gr.api(hide_image, api_name="hide_image")
    gr.api(list_packs, api_name="list_packs", **POLL_OPTIONS)


def _create_prompt_endpoint(ctx: UIContext) -> Callable[..., dict]:
    """`create_prompt(tune_id, text, …)`: its parameters are the prompt spec's fields (`pipelines.prompt_spec`),
    with their types and defaults, plus `callback`; the spec checks the values, as it does for REST."""
    parameters = [
        inspect.Parameter("tune_id", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=int),
        *(_spec_parameter(name) for name in FIELDS),
        inspect.Parameter("callback", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=str | None),
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request),
    ]
    signature = inspect.Signature(parameters, return_annotation=dict)

    def create_prompt(*args: Any, **kwargs: Any) -> dict:
        values = signature.bind(*args, **kwargs).arguments
        owner = ctx.acting_user(values.pop("request", None))  # first: a refused request counts too
        tune_id = check_id(values.pop("tune_id"), "tune_id")
        return ctx.studio.create_prompt(owner, tune_id, PromptCreate(**values)).to_dict()

    create_prompt.__signature__ = signature  # type: ignore[attr-defined]
    create_prompt.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": dict}
    create_prompt.__doc__ = (
        "Queue a prompt on a trained (or training) tune. `text` may use {{subject}}, {{token}}, {{class}}; "
        "the other fields are those of REST's `POST /tunes/{id}/prompts`."
    )
    return user_errors(create_prompt)


def _spec_parameter(name: str) -> inspect.Parameter:
    rule, default = rule_of(name), default_of(name)
    return inspect.Parameter(
        name,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=inspect.Parameter.empty if default is MISSING else default,
        annotation=rule.kind | None if rule.optional else rule.kind,
    )


# The Gradio API's tune fields, in parameter order (the first twelve as they have always been); the same as
# REST's `tune` fields (tests/test_api_parity.py), except that photos are uploaded as `photos`.
TUNE_PARAMETERS = (
    "photos", "title", "name", "branch", "steps", "token", "face_crop", "characteristics", "callback",
    "prompts_callback", "auto_extend", "styles", "image_urls", "prompts_attributes", "prompt_attributes",
    "base_tune_id", "model_type", "preset", "training_face_correct", "visibility",
)  # fmt: skip


def _tune_components() -> dict[str, gr.components.Component]:
    return {
        "photos": gr.File(label="photos", file_count="multiple", type="filepath", value=[]),
        "title": gr.Textbox(label="title", value=""),
        "name": gr.Textbox(label="name", value="", info="the class: man, woman, boy, girl, couple, cat, dog…"),
        "branch": gr.Textbox(label="branch", value=""),
        "steps": gr.Number(label="steps", value=0, precision=0, info="0: the branch default"),
        "token": gr.Textbox(label="token", value=""),
        "face_crop": gr.Checkbox(label="face_crop", value=True),
        "characteristics": gr.JSON(label="characteristics", value={}),
        "callback": gr.Textbox(label="callback", value=""),
        "prompts_callback": gr.Textbox(label="prompts_callback", value=""),
        "auto_extend": gr.Checkbox(label="auto_extend", value=False),
        "styles": gr.JSON(label="styles", value=[]),
        "image_urls": gr.JSON(label="image_urls", value=[]),
        "prompts_attributes": gr.JSON(label="prompts_attributes", value=[]),
        "prompt_attributes": gr.JSON(label="prompt_attributes", value={}),
        "base_tune_id": gr.Number(label="base_tune_id", value=0, precision=0, info="0: none"),
        "model_type": gr.Textbox(label="model_type", value="", info="lora or pti (sdxl1); empty: the branch's default"),
        "preset": gr.Textbox(label="preset", value=""),
        "training_face_correct": gr.Checkbox(label="training_face_correct", value=False),
        "visibility": gr.Textbox(label="visibility", value="private", info="private, or public: on the showcase"),
    }


def _tune_request(values: dict[str, Any], settings: Settings) -> TuneCreate:
    """A tune request from the Gradio API's values (empty texts and 0 mean "not given", as the boxes show them)."""
    attributes = values["prompt_attributes"] or {}
    if not isinstance(attributes, Mapping):
        raise ValidationError("prompt_attributes", attributes, 'must be an object, e.g. {"callback": "https://…"}')
    return TuneCreate(
        title=values["title"],
        name=values["name"],
        images=read_uploads(values["photos"], settings),
        image_urls=values["image_urls"] or [],
        branch=values["branch"] or None,
        token=values["token"] or None,
        steps=int(values["steps"]) if values["steps"] else None,  # 0 or empty: the branch default
        face_crop=values["face_crop"],
        characteristics=values["characteristics"] or {},
        callback=values["callback"] or None,
        prompts_callback=values["prompts_callback"] or None,
        auto_extend=values["auto_extend"],
        styles=values["styles"] or [],
        prompts=prompts_from(values["prompts_attributes"] or []),
        prompt_callback=attributes.get("callback"),
        base_tune_id=int(values["base_tune_id"]) if values["base_tune_id"] else None,
        model_type=values["model_type"] or None,
        preset=values["preset"] or None,
        training_face_correct=values["training_face_correct"],
        visibility=values["visibility"] or None,
    )


def _named_parameters(call: Callable[..., Any], names: tuple[str, ...]) -> Callable[..., Any]:
    """`call(*values, request)` as Gradio sees a function with these parameter names (and the caller's request)."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [*(inspect.Parameter(name, kind) for name in names), inspect.Parameter("request", kind)]
    call.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    call.__annotations__ = {"request": gr.Request}
    return user_errors(call)


def _file_endpoints(ctx: UIContext) -> None:
    studio, settings = ctx.studio, ctx.settings
    with gr.Column(visible=False):
        tune_fields = _tune_components()
        pack_id = gr.Textbox(label="pack_id", value="")
        tune_ids = gr.JSON(label="tune_ids", value=[])
        prompt_id = gr.Number(label="prompt_id", precision=0)
        photos, name = tune_fields["photos"], tune_fields["name"]
        result = gr.JSON(label="result")
        images = gr.Gallery(label="images")
        triggers = [gr.Button() for _ in range(4)]

    def create_tune(*args: Any) -> dict:
        """Upload 4-30 photos of one subject and queue the training; `styles` (up to 8 pack prompts) run after."""
        *args, request = args
        values = dict(zip(TUNE_PARAMETERS, args, strict=True))
        owner = ctx.acting_user(request)
        created = studio.create_tune(owner, _tune_request(values, settings))
        ctx.files.discard(owner, values["photos"] or [])  # the tune keeps its own copy of the photos
        return tune_json(created.tune, created=created.created)

    def create_tune_from_pack(pack_id: str, tune_ids: list, *args: Any) -> list:
        """Train a tune with a pack's preset and generate the whole pack; or pass tune_ids to reuse trained tunes."""
        *args, request = args
        values = dict(zip(TUNE_PARAMETERS, args, strict=True))
        owner = ctx.acting_user(request)
        if tune_ids:
            tunes = studio.create_tune_from_pack(owner, pack_id, None, tune_ids=tune_ids)  # ids checked there
        else:
            tunes = studio.create_tune_from_pack(owner, pack_id, _tune_request(values, settings))
            ctx.files.discard(owner, values["photos"] or [])
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
    fields = [tune_fields[name] for name in TUNE_PARAMETERS]
    create.click(_named_parameters(create_tune, TUNE_PARAMETERS), fields, result, api_name="create_tune")
    from_pack.click(
        _named_parameters(create_tune_from_pack, ("pack_id", "tune_ids", *TUNE_PARAMETERS)),
        [pack_id, tune_ids, *fields],
        result,
        api_name="create_tune_from_pack",
    )
    fetch.click(get_prompt, prompt_id, [result, images], api_name="get_prompt")
    check.click(check_photos, [photos, name], result, api_name="check_photos")
