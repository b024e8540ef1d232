"""The Astria-compatible REST API: FastAPI routes that call the service, as the Gradio tabs do.

    curl -H "Authorization: Bearer $TUNES_KEY" $TUNES_URL/tunes

Bodies come as JSON (`{"tune": {...}}`), multipart with bracketed fields (`tune[images][]` files) or
url-encoded forms. Every route acts as the key's owner; another owner's id answers 404. Errors are JSON:
422 naming each bad field, 401, 403, 404, 409, 402 (credits), 429 (rate limit), 503 (database busy, data
folder read-only), 507 (disk full), never a stack trace.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Annotated, Any

import pydantic
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.errors import TunesError, ValidationError
from pipelines.prompt_spec import FIELDS, rule_of
from rest.forms import nest_fields
from rest.schemas import (
    ErrorOut,
    ImageChange,
    ImageChangeBody,
    ImageOut,
    PackTuneBody,
    PackTuneFields,
    PromptBody,
    PromptFields,
    PromptOut,
    TuneBody,
    TuneChange,
    TuneChangeBody,
    TuneFields,
    TuneOut,
)
from rest.security import UploadedFilesOnly, UrlSigner, bearer_key
from rest.shapes import Shapes
from rest.showcase import add_showcase_routes
from rest.signin import SignInThrottle
from studio import outages
from studio.errors import (
    ConflictError,
    InsufficientCreditsError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
)
from studio.requests import MAX_ID, PromptCreate, TuneCreate, prompts_from
from studio.service import Studio

log = logging.getLogger(__name__)
_STATUS = {
    ValidationError: 422,
    NotFoundError: 404,
    PermissionDeniedError: 403,
    ConflictError: 409,
    InsufficientCreditsError: 402,
    RateLimitedError: 429,
}
_ERRORS = {code: {"model": ErrorOut} for code in (401, 404, 422, 429, 503, 507)}  # 503/507: studio.outages
_BODY_ERRORS = _ERRORS | {code: {"model": ErrorOut} for code in (402, 409, 415)}  # credits, a tagged tune, type
Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]  # beyond SQLite's INTEGER a query would overflow: 422, not 500
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]
_UPLOAD_SLACK = 5  # a few files over the limit still reach the service, whose error names the exact bounds


class ApiError(Exception):
    """An HTTP error with a JSON body (401, 415)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        self.status, self.message, self.headers = status, message, headers or {}


def build_rest_api(studio: Studio) -> FastAPI:
    """The REST routes as a FastAPI app; `app.py` mounts the Gradio Blocks beside them."""
    api = FastAPI(
        title="Tune Studio REST API",
        version="1",
        description="Astria-compatible tunes, prompts and packs. Authenticate with `Authorization: Bearer <key>`.",
    )
    signer = UrlSigner(studio.settings.data_dir)
    _add_error_handlers(api)
    api.add_middleware(UploadedFilesOnly)  # Gradio, mounted in this app, takes files only from uploads
    api.add_middleware(SignInThrottle, allowed=studio.settings.login_failures)  # Gradio's `POST /login`
    _add_tune_routes(api, studio, signer)
    _add_prompt_routes(api, studio, signer)
    _add_pack_routes(api, studio, signer)
    _add_file_routes(api, studio, signer)
    add_showcase_routes(api, studio)  # public: no key
    api.openapi = lambda: _openapi(api)  # type: ignore[method-assign]
    return api


# -- who is calling --------------------------------------------------------------------------------


def _caller(request: Request, studio: Studio) -> str:
    """The owner of the request's API key, once one request is taken from the owner's allowance.

    Raises:
        ApiError: no key, or an invalid or revoked one (401).
        RateLimitedError: the owner is over `TUNES_API_RATE_PER_MINUTE` (429 with Retry-After).
    """
    key = bearer_key(request.headers.get("authorization"))
    found = studio.api_key(key) if key else None
    if found is None:
        message = "missing API key: send Authorization: Bearer <key>" if not key else "invalid or revoked API key"
        raise ApiError(401, message, {"WWW-Authenticate": "Bearer"})
    owner, request.state.key_id = found  # links in the answer are signed for this key (`_shapes`)
    studio.check_rate(owner)  # one bucket per user, whatever the key, shared with the Gradio API
    return owner


def _shapes(request: Request, signer: UrlSigner) -> Shapes:
    """Response shapes whose links are signed for the caller's key (set by `_caller`)."""
    return Shapes(str(request.base_url), signer, request.state.key_id)


# -- bodies ----------------------------------------------------------------------------------------


async def _read_body(request: Request, root: str, model: type[pydantic.BaseModel], studio: Studio):
    """The `root` object of a JSON, multipart or url-encoded body as `model`, and the uploaded files.

    Raises:
        ValidationError: a missing root object, wrong types (the first bad field is named), too many files.
        ApiError: an unsupported content type (415).
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    files: list[UploadFile] = []
    if kind == "application/json":
        try:
            data = await request.json()
            json.dumps(data, ensure_ascii=False).encode()  # a lone surrogate ("\ud800") could not be stored
        except (ValueError, RecursionError):  # RecursionError: nested thousands of levels deep
            raise ValidationError(root, "(body)", "must be valid JSON of UTF-8 text") from None
    elif kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        settings = studio.settings
        try:
            form = await request.form(max_files=settings.max_photos + _UPLOAD_SLACK, max_fields=2000)
        except StarletteHTTPException as error:  # malformed multipart: a bad body, as with malformed JSON
            raise ValidationError(root, "(body)", f"must be a valid {kind} body: {error.detail}") from None
        data = nest_fields(form.multi_items())
    else:
        raise ApiError(415, "send application/json, multipart/form-data or application/x-www-form-urlencoded")
    fields = data.get(root) if isinstance(data, dict) else None
    if not isinstance(fields, dict):
        got = NOTHING if fields is None else type(fields).__name__
        raise ValidationError(root, got, f"is required: send {{{root!r}: {{...}}}} or {root}[...] fields")
    images = fields.pop("images", [])
    if isinstance(images, list) and all(isinstance(item, UploadFile) for item in images):
        files = images
    elif images:
        raise ValidationError("images", "(not files)", "must be uploaded files (multipart); or send image_urls")
    try:
        return model.model_validate(fields), files
    except pydantic.ValidationError as error:
        raise _field_error(error.errors()[0], prompt=model is PromptFields) from None


class _Nothing:
    """The value a missing field was given, as its error shows it: "(got nothing)"."""

    def __repr__(self) -> str:
        return "nothing"


NOTHING = _Nothing()


def _field_error(first: Any, *, prompt: bool) -> ValidationError:
    """The first pydantic error as ours: the field and its value. For a missing field pydantic's input is the
    whole enclosing object, which would read "(got {'name': 'woman', ...})" under a field that was not sent.
    A prompt field of the wrong type gets the prompt spec's message, as the Gradio API says it."""
    loc = first["loc"]
    if first["type"] == "missing":
        return ValidationError(_dotted(loc), NOTHING, "is required")
    in_prompt = prompt or (len(loc) == 3 and loc[0] == "prompts_attributes")
    if in_prompt and loc[-1] in FIELDS:
        return ValidationError(_dotted(loc), first.get("input"), rule_of(str(loc[-1])).expected)
    return ValidationError(_dotted(loc), first.get("input"), first["msg"].lower())


async def _photos(files: list[UploadFile], studio: Studio) -> list[tuple[str, bytes]]:
    """Uploaded photos as (base name, contents); the size limit is checked before a file is read."""
    limit = studio.settings.max_photo_bytes
    photos = []
    for index, upload in enumerate(files):
        name = Path(upload.filename or f"photo-{index}").name  # never a client-chosen path
        if upload.size is not None and upload.size > limit:
            raise ValidationError(f"images[{index}]", name, f"is larger than {limit} bytes")
        photos.append((name, await upload.read(limit + 1)))
        if len(photos[-1][1]) > limit:
            raise ValidationError(f"images[{index}]", name, f"is larger than {limit} bytes")
    return photos


def _prompt_request(fields: PromptFields) -> PromptCreate:
    return PromptCreate(**fields.model_dump())


def _tune_request(fields: TuneFields, photos: list[tuple[str, bytes]]) -> TuneCreate:
    prompt_callback = fields.prompt_attributes.callback if fields.prompt_attributes else None
    return TuneCreate(
        title=fields.title,
        name=fields.name,
        images=photos,
        image_urls=fields.image_urls,
        branch=fields.branch,
        token=fields.token,
        steps=fields.steps,
        face_crop=True if fields.face_crop is None else fields.face_crop,
        characteristics=fields.characteristics,
        callback=fields.callback,
        prompts_callback=fields.prompts_callback,
        auto_extend=fields.auto_extend,
        prompts=prompts_from([item.model_dump() for item in fields.prompts_attributes]),
        styles=fields.styles,
        base_tune_id=fields.base_tune_id,
        model_type=fields.model_type,
        preset=fields.preset,
        training_face_correct=fields.training_face_correct,
        prompt_callback=prompt_callback,
        visibility=fields.visibility,
    )


def _body_doc(model: type[pydantic.BaseModel], root: str, form_fields: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI request body: the JSON model, and the same fields as bracketed multipart / form fields."""
    form = {"type": "object", "properties": {f"{root}[{name}]": schema for name, schema in form_fields.items()}}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
                "multipart/form-data": {"schema": form},
                "application/x-www-form-urlencoded": {"schema": form},
            },
        }
    }


_TUNE_FORM = {
    "title": {"type": "string"},
    "name": {"type": "string"},
    "images][": {"type": "array", "items": {"type": "string", "format": "binary"}},
    "image_urls][": {"type": "array", "items": {"type": "string"}},
    "branch": {"type": "string"},
    "steps": {"type": "integer"},
    "token": {"type": "string"},
    "callback": {"type": "string"},
    "characteristics][eye_color": {"type": "string"},
    "prompts_attributes][][text": {"type": "string"},
    "prompt_attributes][callback": {"type": "string"},
    "prompts_callback": {"type": "string"},
    "styles][": {"type": "array", "items": {"type": "string"}},
    "visibility": {"type": "string", "enum": ["private", "public"]},
}
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}
_PROMPT_FORM = {name: {"type": _JSON_TYPES[rule_of(name).kind]} for name in FIELDS} | {"callback": {"type": "string"}}


# -- routes ----------------------------------------------------------------------------------------


def _add_tune_routes(api: FastAPI, studio: Studio, signer: UrlSigner) -> None:
    @api.get("/tunes", response_model=list[TuneOut], responses=_ERRORS, tags=["tunes"])
    def list_tunes(request: Request, limit: int = Query(20, ge=1, le=100), offset: Offset = 0):
        """Your tunes, newest first."""
        owner = _caller(request, studio)
        return [_shapes(request, signer).tune(t) for t in studio.list_tunes(owner, limit=limit, offset=offset)]

    @api.post(
        "/tunes",
        response_model=TuneOut,
        status_code=201,
        responses=_BODY_ERRORS,
        tags=["tunes"],
        openapi_extra=_body_doc(TuneBody, "tune", _TUNE_FORM),
    )
    async def create_tune(request: Request, response: Response):
        """Create a tune from 4-30 photos (files or URLs); the same title returns the existing tune (200)."""
        owner = _caller(request, studio)
        fields, files = await _read_body(request, "tune", TuneFields, studio)
        created = studio.create_tune(owner, _tune_request(fields, await _photos(files, studio)))
        response.status_code = 201 if created.created else 200
        return _shapes(request, signer).tune(created.tune)

    @api.get("/tunes/{tune_id}", response_model=TuneOut, responses=_ERRORS, tags=["tunes"])
    def get_tune(request: Request, tune_id: Id):
        """One of your tunes: status, progress, eta, and ckpt_url while its LoRA exists."""
        owner = _caller(request, studio)
        return _shapes(request, signer).tune(studio.get_tune(owner, tune_id))

    @api.patch(
        "/tunes/{tune_id}",
        response_model=TuneOut,
        responses=_BODY_ERRORS,
        tags=["tunes"],
        openapi_extra=_body_doc(TuneChangeBody, "tune", {"visibility": {"type": "string"}}),
    )
    async def change_tune(request: Request, tune_id: Id):
        """Make one of your tunes public (its avatars go on /showcase) or private (they leave it, and their public
        links stop working at once): `{"tune": {"visibility": "public"}}`."""
        owner = _caller(request, studio)
        change, _ = await _read_body(request, "tune", TuneChange, studio)
        return _shapes(request, signer).tune(studio.set_visibility(owner, tune_id, change.visibility))

    @api.patch(
        "/images/{image_id}",
        response_model=ImageOut,
        responses=_BODY_ERRORS,
        tags=["files"],
        openapi_extra=_body_doc(ImageChangeBody, "image", {"hidden": {"type": "boolean"}}),
    )
    async def change_image(request: Request, image_id: Id):
        """Keep one of your avatars off the showcase, or show it again: `{"image": {"hidden": true}}`."""
        owner = _caller(request, studio)
        change, _ = await _read_body(request, "image", ImageChange, studio)
        return _shapes(request, signer).image(studio.hide_image(owner, image_id, hidden=change.hidden))

    @api.delete("/tunes/{tune_id}", status_code=204, responses=_ERRORS, tags=["tunes"])
    def delete_tune(request: Request, tune_id: Id):
        """Delete a tune, its photos and LoRA (its images are kept)."""
        studio.delete_tune(_caller(request, studio), tune_id)
        return Response(status_code=204)


def _add_prompt_routes(api: FastAPI, studio: Studio, signer: UrlSigner) -> None:
    @api.post(
        "/tunes/{tune_id}/prompts",
        response_model=PromptOut,
        status_code=201,
        responses=_BODY_ERRORS,
        tags=["prompts"],
        openapi_extra=_body_doc(PromptBody, "prompt", _PROMPT_FORM),
    )
    async def create_prompt(request: Request, tune_id: Id):
        """Queue a prompt on a tune; `<lora:ID:weight>` tags in the text combine your other tunes."""
        owner = _caller(request, studio)
        fields, _ = await _read_body(request, "prompt", PromptFields, studio)
        prompt = studio.create_prompt(owner, tune_id, _prompt_request(fields))
        return _shapes(request, signer).prompt(prompt)

    @api.get("/tunes/{tune_id}/prompts", response_model=list[PromptOut], responses=_ERRORS, tags=["prompts"])
    def list_tune_prompts(request: Request, tune_id: Id, limit: int = Query(20, ge=1, le=100), offset: Offset = 0):
        """A tune's prompts, newest first."""
        owner = _caller(request, studio)
        studio.get_tune(owner, tune_id)  # 404 for a tune that is not the caller's
        prompts = studio.list_prompts(owner, tune_id=tune_id, limit=limit, offset=offset)
        return [_shapes(request, signer).prompt(p) for p in prompts]

    @api.get("/tunes/{tune_id}/prompts/{prompt_id}", response_model=PromptOut, responses=_ERRORS, tags=["prompts"])
    def get_prompt(request: Request, tune_id: Id, prompt_id: Id):
        """One prompt with its image URLs (signed links, valid for a week)."""
        owner = _caller(request, studio)
        return _shapes(request, signer).prompt(studio.get_prompt(owner, prompt_id, tune_id=tune_id))

    @api.delete("/tunes/{tune_id}/prompts/{prompt_id}", status_code=204, responses=_ERRORS, tags=["prompts"])
    def delete_prompt(request: Request, tune_id: Id, prompt_id: Id):
        """Delete a prompt and its images."""
        studio.delete_prompt(_caller(request, studio), prompt_id, tune_id=tune_id)
        return Response(status_code=204)

    @api.get("/prompts", response_model=list[PromptOut], responses=_ERRORS, tags=["prompts"])
    def list_prompts(request: Request, limit: int = Query(20, ge=1, le=100), offset: Offset = 0):
        """All your prompts, newest first."""
        owner = _caller(request, studio)
        return [_shapes(request, signer).prompt(p) for p in studio.list_prompts(owner, limit=limit, offset=offset)]

    @api.post("/prompts/{prompt_id}/likes", response_model=PromptOut, responses=_ERRORS, tags=["prompts"])
    def like(request: Request, prompt_id: Id):
        """Like a prompt's images (likes roll up to pack prompts for the creative team)."""
        owner = _caller(request, studio)
        return _shapes(request, signer).prompt(studio.like_prompt(owner, prompt_id, liked=True))

    @api.delete("/prompts/{prompt_id}/likes", response_model=PromptOut, responses=_ERRORS, tags=["prompts"])
    def unlike(request: Request, prompt_id: Id):
        """Take the like back."""
        owner = _caller(request, studio)
        return _shapes(request, signer).prompt(studio.like_prompt(owner, prompt_id, liked=False))


def _add_pack_routes(api: FastAPI, studio: Studio, signer: UrlSigner) -> None:
    @api.get("/packs", responses=_ERRORS, tags=["packs"])
    def list_packs(request: Request, class_name: str | None = Query(None, alias="class", max_length=40)):
        """Published packs (optionally those for one class), with prompts and image counts per class."""
        _caller(request, studio)
        return [Shapes.pack(pack) for pack in studio.list_packs(class_name)]

    @api.get("/p/{pack_id}", responses=_ERRORS, tags=["packs"])
    def get_pack(request: Request, pack_id: str):
        """One pack."""
        _caller(request, studio)
        return Shapes.pack(studio.get_pack(pack_id))

    @api.post(
        "/p/{pack_id}/tunes",
        status_code=201,
        responses=_BODY_ERRORS,
        tags=["packs"],
        openapi_extra=_body_doc(PackTuneBody, "tune", _TUNE_FORM),
    )
    async def create_tune_from_pack(request: Request, pack_id: str):
        """Train a tune with the pack's preset and generate the pack; with `tune_ids`, reuse trained tunes (a list)."""
        owner = _caller(request, studio)
        fields, files = await _read_body(request, "tune", PackTuneFields, studio)
        shapes = _shapes(request, signer)
        if fields.tune_ids:
            created = studio.create_tune_from_pack(owner, pack_id, None, tune_ids=fields.tune_ids)
            return [shapes.tune(item.tune) for item in created]
        [created] = studio.create_tune_from_pack(owner, pack_id, _tune_request(fields, await _photos(files, studio)))
        return JSONResponse(shapes.tune(created.tune), status_code=201 if created.created else 200)


# the parts of a signed link (owner, key id, expiry, signature); documented so clients and the fuzzer see them
LinkPart = Annotated[str | None, Query(max_length=200)]


def _has_link_parts(request: Request) -> bool:
    """Whether the request came by a signed link (any of its parts is in the query)."""
    return any(part in request.query_params for part in ("u", "k", "exp", "sig"))


def _add_file_routes(api: FastAPI, studio: Studio, signer: UrlSigner) -> None:
    def owner_of_link(request: Request, path: str, *, fresh: str) -> str:
        """The owner a signed link is for, while its key is unrevoked; without one, the API key's owner.

        Raises:
            ApiError: a link that was changed, has expired or whose key was revoked, with no API key (401; `fresh`
                says where a new link comes from).
        """
        query = request.query_params
        owner, key_id = query.get("u"), query.get("k")
        signed = owner and signer.verify(path, owner, key_id, query.get("exp"), query.get("sig"))
        if signed and studio.api_key_is_active(owner, int(key_id)):
            return owner
        if _has_link_parts(request) and not bearer_key(request.headers.get("authorization")):
            raise ApiError(401, f"this link is invalid or expired: {fresh} returns a fresh one (valid for a week)")
        return _caller(request, studio)  # no valid signature: the API key decides

    @api.get("/images/{image_id}", response_class=FileResponse, responses=_ERRORS, tags=["files"])
    def image(
        request: Request, image_id: Id, u: LinkPart = None, k: LinkPart = None, exp: LinkPart = None,
        sig: LinkPart = None,
    ):  # fmt: skip
        """An image (PNG): with the signed link from a prompt, or with your API key."""
        owner = owner_of_link(request, f"/images/{image_id}", fresh="GET /tunes/{tune_id}/prompts/{prompt_id}")
        return FileResponse(studio.image_file(owner, image_id), media_type="image/png")

    @api.get("/tunes/{tune_id}/ckpt", response_class=FileResponse, responses=_ERRORS, tags=["files"])
    def checkpoint(
        request: Request, tune_id: Id, u: LinkPart = None, k: LinkPart = None, exp: LinkPart = None,
        sig: LinkPart = None,
    ):  # fmt: skip
        """The tune's LoRA (`pytorch_lora_weights.safetensors`, diffusers format) while it exists."""
        owner = owner_of_link(request, f"/tunes/{tune_id}/ckpt", fresh=f"GET /tunes/{tune_id} (its ckpt_url)")
        path = studio.lora_file(owner, tune_id)
        return FileResponse(path, media_type="application/octet-stream", filename=f"tune-{tune_id}.safetensors")


# -- errors and docs -------------------------------------------------------------------------------


def _add_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(TunesError)
    def tunes_error(request: Request, error: TunesError):
        status = next((code for kind, code in _STATUS.items() if isinstance(error, kind)), 422)
        body: dict[str, Any] = {"error": str(error)}
        if isinstance(error, ValidationError):
            body["errors"] = {error.field: [error.message]}
        headers = {"Retry-After": str(error.retry_after)} if isinstance(error, RateLimitedError) else None
        return JSONResponse(body, status_code=status, headers=headers)

    @api.exception_handler(ApiError)
    def api_error(request: Request, error: ApiError):
        return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers)

    @api.exception_handler(RequestValidationError)
    def request_error(request: Request, error: RequestValidationError):
        errors: dict[str, list[str]] = {}
        for item in error.errors():
            errors.setdefault(_dotted(item["loc"][1:] or item["loc"]), []).append(item["msg"].lower())
        summary = "; ".join(f"`{field}` {', '.join(messages)}" for field, messages in errors.items())
        return JSONResponse({"error": summary, "errors": errors}, status_code=422)

    @api.exception_handler(StarletteHTTPException)
    def http_error(request: Request, error: StarletteHTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @api.exception_handler(Exception)
    def unexpected(request: Request, error: Exception):
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
        return JSONResponse({"error": "internal error; it was logged"}, status_code=500)

    # The server's own trouble, not the caller's: say what it is (without server paths) and when to try again.
    def outage(request: Request, error: Exception):
        found = outages.describe(error)
        if found is None:
            return unexpected(request, error)
        report = log.warning if found.retry_after else log.error  # a busy database passes; the others need a person
        report("%s on %s %s: %s", found.message, request.method, request.url.path, error)
        headers = {"Retry-After": str(found.retry_after)} if found.retry_after else None
        return JSONResponse({"error": found.message}, status_code=found.status, headers=headers)

    api.add_exception_handler(OSError, outage)
    api.add_exception_handler(sqlite3.OperationalError, outage)


def _dotted(loc: tuple | list) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def _openapi(api: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request-body models the hand-parsed routes reference."""
    if api.openapi_schema is None:
        schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (TuneBody, PackTuneBody, PromptBody):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        api.openapi_schema = json.loads(json.dumps(schema))
    return api.openapi_schema
