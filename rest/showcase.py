"""The public showcase pages and image links: no sign-in, no API key, nothing but public avatars.

- `GET /showcase`: everyone's recent public avatars, by kind.
- `GET /showcase/{user}`: one user's, by tune and kind.
- `GET /showcase/images/{id}.png?v=…`: a public avatar's file, checked on every request (`Showcase.file`): a
  private, hidden, blocked or deleted one, or a link from before the tune was last made public, is a 404.

The pages are HTML for people (left out of the OpenAPI document); a bad filter is shown on the page (422).
Answers are not cached by browsers or proxies, so a tune made private disappears at the next load.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from pipelines.errors import ValidationError
from studio.errors import NotFoundError
from studio.service import Studio
from studio.showcase import PAGE_SIZE
from ui.showcase import page_html

NO_STORE = {"Cache-Control": "no-store"}
MAX_PAGES = 1000


def add_showcase_routes(api: FastAPI, studio: Studio) -> None:
    """Add the public showcase routes to the REST app (before the Gradio app is mounted at `/`)."""
    showcase = studio.showcase

    @api.get("/showcase/images/{image_id}.png", include_in_schema=False)
    def public_image(image_id: str, v: str | None = None):
        try:
            path = showcase.file(int(image_id) if image_id.isdigit() else 0, v)
        except NotFoundError:
            return Response("Not found", status_code=404, headers=NO_STORE, media_type="text/plain")
        return FileResponse(path, media_type="image/png", headers=NO_STORE)

    @api.get("/showcase", response_class=HTMLResponse, include_in_schema=False)
    def everyone(request: Request):
        return _page(request, None)

    @api.get("/showcase/{user}", response_class=HTMLResponse, include_in_schema=False)
    def of_user(request: Request, user: str):
        return _page(request, user)

    def _page(request: Request, user: str | None) -> HTMLResponse:
        query = request.query_params
        tune_id, kind, page = None, query.get("kind") or None, 1
        try:
            tune_id = _number("tune", query.get("tune"), 1, 2**62)
            page = _number("page", query.get("page"), 1, MAX_PAGES) or 1
            items = showcase.items(user=user, tune_id=tune_id, kind=kind, offset=(page - 1) * PAGE_SIZE)
            tunes = showcase.tunes(user) if user else []
            error, status = None, 200
        except ValidationError as problem:
            items, tunes, error, status = [], [], str(problem), 422
        html = page_html(items, user=user, tunes=tunes, tune_id=tune_id, kind=kind, page=page, error=error)
        return HTMLResponse(html, status_code=status, headers=NO_STORE)


def _number(field: str, text: str | None, low: int, high: int) -> int | None:
    if text is None or text == "":
        return None
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise ValidationError(field, text, f"must be a whole number between {low} and {high}")
    return int(text)
