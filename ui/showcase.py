"""The showcase as people see it: public avatars as cards (image, prompt, tune, owner, kind, like), on the public
`/showcase` pages (`rest/showcase.py`, no sign-in) and in the app's Showcase tab.

Everything shown comes from `studio.showcase.Showcase`, which reads only public avatars; every text is escaped.
Images are `<img>` tags on the public links, so no private file, and no file at all, passes through Gradio's cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from urllib.parse import quote, urlencode

import gradio as gr
from gradio.context import Context

from pipelines.errors import TunesError
from studio.showcase import KINDS, PAGE_SIZE, ShowcaseItem
from ui.context import UIContext
from ui.feedback import user_errors

ALL_KINDS = "all"
KIND_LABELS = {"pack": "pack", "sample": "sample", "prompt": "free prompt"}
STYLE = """
<style>
.showcase-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:16px;margin:12px 0}
.showcase-card{margin:0;border:1px solid #ddd;border-radius:8px;overflow:hidden;background:#fff}
.showcase-card img{width:100%;height:auto;display:block;aspect-ratio:1/1;object-fit:cover;background:#eee}
.showcase-card figcaption{padding:8px 10px;font:14px/1.4 sans-serif;color:#222}
.showcase-card .meta{color:#666;font-size:12px;margin-top:4px}
.showcase-card .kind{display:inline-block;border:1px solid #bbb;border-radius:10px;padding:0 6px;font-size:11px}
.showcase-empty{font:15px sans-serif;color:#555;padding:24px 0}
</style>
"""


def cards_html(items: Sequence[ShowcaseItem], *, empty: str = "No public avatars yet.") -> str:
    """The avatars as a grid of cards (an HTML fragment)."""
    if not items:
        return f'{STYLE}<p class="showcase-empty">{escape(empty)}</p>'
    return STYLE + '<div class="showcase-grid">' + "".join(_card(item) for item in items) + "</div>"


def _card(item: ShowcaseItem) -> str:
    liked = ' · <span title="its owner likes it">♥ liked</span>' if item.liked else ""
    page = f"/showcase/{quote(item.owner, safe='')}"
    owner = f'<a href="{page}">{escape(item.owner)}</a>'
    tune = f'<a href="{page}?{urlencode({"tune": item.tune_id})}">{escape(item.title)}</a>'
    return (
        f'<figure class="showcase-card" data-image="{item.image_id}">'
        f'<img src="{escape(item.url)}" alt="{escape(item.text)}" width="{item.width}" height="{item.height}"'
        ' loading="lazy">'
        f"<figcaption>{escape(item.text)}"
        f'<div class="meta">#{item.image_id} · {tune} by {owner} · <span class="kind">{KIND_LABELS[item.kind]}</span>'
        f"{liked}</div>"
        "</figcaption></figure>"
    )


def page_html(
    items: Sequence[ShowcaseItem],
    *,
    user: str | None,
    tunes: Sequence[tuple[int, str]],
    tune_id: int | None,
    kind: str | None,
    page: int,
    error: str | None = None,
) -> str:
    """A whole public showcase page: a heading, the filters (a GET form), the cards and paging links."""
    heading = f"{escape(user)}'s public avatars" if user else "Recent public avatars"
    kinds = "".join(
        f'<option value="{value}"{" selected" if value == kind else ""}>{KIND_LABELS[value]}</option>'
        for value in KINDS
    )
    tune_options = "".join(
        f'<option value="{number}"{" selected" if number == tune_id else ""}>{escape(title)}</option>'
        for number, title in tunes
    )
    tune_select = (
        f'<label>Tune <select name="tune"><option value="">all</option>{tune_options}</select></label> ' if user else ""
    )
    form = (
        f'<form method="get" class="filters">{tune_select}'
        f'<label>Kind <select name="kind"><option value="">all</option>{kinds}</select></label> '
        '<button type="submit">Show</button></form>'
    )
    query = {key: value for key, value in (("tune", tune_id), ("kind", kind)) if value}
    pages = []
    if page > 1:
        pages.append(f'<a href="?{urlencode({**query, "page": page - 1})}">Newer</a>')
    if len(items) == PAGE_SIZE:
        pages.append(f'<a href="?{urlencode({**query, "page": page + 1})}">Older</a>')
    problem = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{heading} · Tune Studio</title></head>"
        "<body style='max-width:1200px;margin:24px auto;padding:0 16px;font-family:sans-serif'>"
        f"<p><a href='/'>Tune Studio</a> · <a href='/showcase'>Showcase</a></p><h1>{heading}</h1>{form}{problem}"
        f"{cards_html(items)}<p>{' · '.join(pages)}</p></body></html>"
    )


def build_showcase_tab(ctx: UIContext) -> None:
    """The Showcase tab: everyone's recent public avatars, or one user's, by tune and kind; anyone may look."""
    showcase = ctx.studio.showcase
    tab = Context.block
    gr.Markdown(
        "Avatars their owners made public. Make a tune's avatars public in **Generate** (or at creation); "
        "a public page for each user is at `/showcase/<user>`, no sign-in needed."
    )
    with gr.Row():
        user = gr.Textbox(label="User (empty: everyone)", elem_id="showcase-user", scale=2)
        tune = gr.Dropdown([], label="Tune", value=None, allow_custom_value=False, elem_id="showcase-tune", scale=2)
        choices = [(ALL_KINDS, ALL_KINDS), *((KIND_LABELS[value], value) for value in KINDS)]
        kind = gr.Radio(choices, value=ALL_KINDS, label="Kind", elem_id="showcase-kind", scale=3)
    cards = gr.HTML(elem_id="showcase-cards")

    @user_errors
    def show(who: str | None, tune_id: int | None, made_by: str) -> str:
        items = showcase.items(
            user=(who or "").strip() or None,
            tune_id=tune_id if who else None,
            kind=None if made_by == ALL_KINDS else made_by,
        )
        return cards_html(items)

    def tunes_of(who: str | None):
        try:
            choices = showcase.tunes(who.strip()) if who and who.strip() else []
        except TunesError:
            choices = []
        return gr.update(choices=[(title, number) for number, title in choices], value=None)

    private = {"api_visibility": "private", "show_progress": "hidden"}
    user.submit(tunes_of, user, tune, **private).then(show, [user, tune, kind], cards, **private)
    user.blur(tunes_of, user, tune, **private).then(show, [user, tune, kind], cards, **private)
    gr.on([tune.input, kind.change], show, [user, tune, kind], cards, **private)
    if isinstance(tab, gr.Tab):  # opened again: what was made public (or private) since shows
        tab.select(show, [user, tune, kind], cards, **private)
    gr.on(None, show, [user, tune, kind], cards, **private)  # page load: everyone's latest
