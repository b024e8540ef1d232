"""The admin tab: the queue, tunes, prompts, users and credits, storage and expiries, and the operator actions.

Callbacks are thin: widget values -> one `Operations` call -> widgets. Each one asks `ctx.admin(request)`
first, so the endpoints refuse non-admins even when called directly; all are left out of the API docs
(`api_visibility="undocumented"`). For non-admins the enclosing tab is hidden on page load (app.py can create
it with `visible=False` so it never flashes); without an enclosing tab they see a one-line notice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr
from gradio.context import Context

from admin.operations import RETRY_KINDS, TUNE_STATUSES, Operations, Overview
from pipelines.errors import TunesError
from ui.context import UIContext
from ui.feedback import user_errors

HIDDEN = "undocumented"  # callable (admins only), never listed in the API docs
ALL = "all"
NOTICE = "The admin tab is for operators named by `TUNES_ADMINS`."


def build_admin_tab(ctx: UIContext, operations: Operations) -> None:
    """Add the admin widgets and events to the enclosing `gr.Tab` (app.py: `with gr.Tab("Admin"): ...`).

    Args:
        ctx: the caller's identity and roles.
        operations: the operator use cases.
    """
    tab = Context.block if isinstance(Context.block, gr.Tab) else None  # shown to admins only
    notice = gr.Markdown(NOTICE)
    with gr.Column(visible=False) as panel:
        with gr.Row():
            tune_status = gr.Dropdown([ALL, *TUNE_STATUSES], value=ALL, label="Tunes with status")
            within_days = gr.Number(7, precision=0, label="Expiries due within (days)")
            refresh_button = gr.Button("Refresh", variant="secondary")
        gr.Markdown("### Actions\nCancel, retry, extend, expire or delete a tune (retry: also a failed prompt).")
        with gr.Row():
            record_box = gr.Number(label="Tune or prompt id", precision=0)
            kind = gr.Radio(list(RETRY_KINDS), value="tune", label="Retry a")
            days = gr.Number(30, precision=0, label="Extend by (days)")
            delete_images = gr.Checkbox(label="Delete removes its images too")
        with gr.Row():
            cancel_button = gr.Button("Cancel")
            retry_button = gr.Button("Retry")
            extend_button = gr.Button("Extend")
            expire_button = gr.Button("Expire now", variant="stop")
            delete_button = gr.Button("Delete", variant="stop")
        with gr.Row():
            user = gr.Textbox(label="User")
            tune_credits = gr.Number(label="Tune credits", precision=0)
            image_credits = gr.Number(label="Image credits", precision=0)
            grant_button = gr.Button("Grant credits")
            set_button = gr.Button("Set credits (empty: unlimited)")
        status = gr.Markdown()
        tables = [
            gr.Dataframe(label="Queue (position 0: running now)", interactive=False),
            gr.Dataframe(label="Tunes", interactive=False, elem_id="admin-tunes"),
            gr.Dataframe(label="Prompts", interactive=False),
            gr.Dataframe(label="Users and credits", interactive=False),
            gr.Dataframe(label="Storage", interactive=False),
            gr.Dataframe(label="Expiries due", interactive=False),
        ]
    filters = [tune_status, within_days]

    shown = [notice, panel, *tables] + ([tab] if tab is not None else [])

    def show(request: gr.Request) -> list[Any]:
        """On page load: the tab, its panel and tables for an admin; for anyone else only the notice, no tab."""
        try:
            admin = ctx.admin(request)
        except TunesError:
            updates = [gr.update(visible=True), gr.update(visible=False), *[gr.update() for _ in tables]]
            return updates + ([gr.update(visible=False)] if tab is not None else [])
        updates = [gr.update(visible=False), gr.update(visible=True), *_frames(operations.overview(admin))]
        return updates + ([gr.update(visible=True)] if tab is not None else [])

    @user_errors
    def refresh(status_filter: str, due_within: int | None, request: gr.Request) -> list[Any]:
        overview = operations.overview(
            ctx.admin(request), tune_status=None if status_filter == ALL else status_filter, within_days=due_within
        )
        return _frames(overview)

    @user_errors
    def cancel(tune_id: int | None, request: gr.Request) -> str:
        tune = operations.cancel(ctx.admin(request), tune_id)
        return f"Cancelled tune {tune.id} ({tune.title!r} of {tune.owner}); its queued prompts failed."

    @user_errors
    def retry(record_kind: str, record_id: int | None, request: gr.Request) -> str:
        record = operations.retry(ctx.admin(request), record_kind, record_id)
        return f"Queued {record_kind} {record.id} of {record.owner} again."

    @user_errors
    def extend(tune_id: int | None, by_days: int | None, request: gr.Request) -> str:
        tune = operations.extend(ctx.admin(request), tune_id, by_days)
        return f"Tune {tune.id} of {tune.owner} now expires {tune.expires_at}."

    @user_errors
    def expire_now(tune_id: int | None, request: gr.Request) -> str:
        tune = operations.expire_now(ctx.admin(request), tune_id)
        return f"Expired tune {tune.id} of {tune.owner}: its LoRA is deleted and its waiting prompts failed."

    @user_errors
    def delete(tune_id: int | None, with_images: bool, request: gr.Request) -> str:
        tune = operations.delete(ctx.admin(request), tune_id, delete_images=with_images)
        return f"Deleted tune {tune.id} ({tune.title!r} of {tune.owner})" + (" and its images." if with_images else ".")

    @user_errors
    def grant_credits(user_id: str, tunes: int | None, images: int | None, request: gr.Request) -> str:
        credits = operations.grant_credits(ctx.admin(request), user_id, tunes or 0, images or 0)
        return f"Granted credits: {credits}."

    @user_errors
    def set_credits(user_id: str, tunes: int | None, images: int | None, request: gr.Request) -> str:
        credits = operations.set_credits(ctx.admin(request), user_id, tunes=tunes, images=images)
        return f"Set credits: {credits}."

    def action(button: gr.Button, fn: Callable[..., str], inputs: list[gr.components.Component]) -> None:
        """An action writes what happened to the status line, then (if it worked) refreshes the tables."""
        event = button.click(fn, inputs, status, api_name=f"admin_{fn.__name__}", api_visibility=HIDDEN)
        event.success(refresh, filters, tables, api_visibility=HIDDEN)

    gr.on(None, show, None, shown, api_name="admin_show", api_visibility=HIDDEN)
    refresh_button.click(refresh, filters, tables, api_name="admin_refresh", api_visibility=HIDDEN)
    tune_status.change(refresh, filters, tables, api_visibility=HIDDEN)
    action(cancel_button, cancel, [record_box])
    action(retry_button, retry, [kind, record_box])
    action(extend_button, extend, [record_box, days])
    action(expire_button, expire_now, [record_box])
    action(delete_button, delete, [record_box, delete_images])
    action(grant_button, grant_credits, [user, tune_credits, image_credits])
    action(set_button, set_credits, [user, tune_credits, image_credits])


def _frames(overview: Overview) -> list[Any]:
    return [overview.queue, overview.tunes, overview.prompts, overview.users, overview.storage, overview.expiries]
