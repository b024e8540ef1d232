"""The admin tab: the queue, the workers, tunes, prompts, users and credits, storage and expiries, the pack
prompts' likes and likeness, and the operator actions.

Callbacks are thin: widget values -> one `Operations` call -> widgets. Each one asks `ctx.admin(request)`
first, so the endpoints refuse non-admins even when called directly; all are left out of the API docs
(`api_visibility="undocumented"`). For non-admins the enclosing tab is hidden on page load (app.py can create
it with `visible=False` so it never flashes); without an enclosing tab they see a one-line notice.

The tables refresh when the tab is opened and after every action. An action's mistake (an empty id, a tune
that is not trained) is written by the actions, with its box marked, until that box changes. "Expire now" and
"Delete" cannot be undone, so each asks first; changing the id withdraws the question.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.context import Context

from admin.operations import RETRY_KINDS, TUNE_STATUSES, Operations, Overview
from pipelines.errors import TunesError
from studio.errors import PermissionDeniedError, SignInRequiredError
from ui.context import UIContext
from ui.feedback import FieldErrors, optional_int, required_int, user_errors

HIDDEN = "undocumented"  # callable (admins only), never listed in the API docs
ALL = "all"
NOTICE = "The admin tab is for operators named by `TUNES_ADMINS`."
WHERE_ID = "an id from the tables below"
WORKERS = (
    "### Workers\n"
    "A worker sends a heartbeat every {beat:g} s. **dead**: none for over {lease} s (`TUNES_WORKER_LEASE_SECONDS`); "
    "it was killed or hangs, and its job goes back to the queue for another worker (or its restart) to resume. "
    "**stopped**: it shut down."
)
PACK_PROMPTS = (
    "Pack prompts: images, likes, and how much the images look like their subject (likeness 0-1: 0.5 or more is "
    "the same person; a low p10 or median marks a prompt that loses the face)"
)
QUESTIONS = {
    "expire": "**Expire tune {id} now?** Its LoRA is deleted and its waiting prompts fail. This cannot be undone.",
    "delete": "**Delete tune {id}?** Its photos, LoRA and prompts are deleted{images}. This cannot be undone.",
}


@dataclass(frozen=True)
class Confirm:
    """The question a destructive action asks first: a row with the question, its "yes" buttons and "keep"."""

    row: gr.Row
    question: gr.Markdown
    expire: gr.Button
    delete: gr.Button
    keep: gr.Button

    @property
    def outputs(self) -> list[gr.components.Component | gr.Row]:
        return [self.row, self.question, self.expire, self.delete]

    def ask(self, action: str, tune_id: int, *, with_images: bool = False) -> dict[Any, Any]:
        images = " and so are its images" if with_images else " (its images stay)"
        return {
            self.row: gr.update(visible=True),
            self.question: QUESTIONS[action].format(id=tune_id, images=images),
            self.expire: gr.update(visible=action == "expire"),
            self.delete: gr.update(visible=action == "delete"),
        }

    def withdraw(self) -> dict[Any, Any]:
        return {
            self.row: gr.update(visible=False),
            self.question: "",
            self.expire: gr.update(),
            self.delete: gr.update(),
        }


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
            record_box = gr.Textbox(label="Tune or prompt id", placeholder=WHERE_ID, elem_id="admin-record-id")
            kind = gr.Radio(list(RETRY_KINDS), value="tune", label="Retry a")
            days = gr.Number(30, precision=0, label="Extend by (days)")
            delete_images = gr.Checkbox(label="Delete removes its images too")
        with gr.Row():
            cancel_button = gr.Button("Cancel")
            retry_button = gr.Button("Retry")
            extend_button = gr.Button("Extend")
            expire_button = gr.Button("Expire now…", elem_id="admin-expire")
            delete_button = gr.Button("Delete…", elem_id="admin-delete")
        with gr.Row(visible=False, elem_id="admin-confirm") as confirm_row:
            confirm = Confirm(
                confirm_row,
                gr.Markdown(),
                gr.Button("Yes, expire it", variant="stop", visible=False, elem_id="admin-confirm-expire"),
                gr.Button("Yes, delete it", variant="stop", visible=False, elem_id="admin-confirm-delete"),
                gr.Button("No, keep it"),
            )
        with gr.Row():
            user = gr.Textbox(label="User")
            tune_credits = gr.Textbox(label="Tune credits", placeholder="grant: 0 · set: unlimited")
            image_credits = gr.Textbox(label="Image credits", placeholder="grant: 0 · set: unlimited")
            grant_button = gr.Button("Grant credits")
            set_button = gr.Button("Set credits (empty: unlimited)")
        banner = gr.Markdown(visible=False, elem_classes=["error-banner"], elem_id="admin-error")
        status = gr.Markdown(elem_id="admin-status")
        queue = gr.Dataframe(label="Queue (position 0: running now)", interactive=False)
        lease = ctx.settings.worker_lease_s
        gr.Markdown(WORKERS.format(beat=round(lease / 3, 1), lease=lease))
        tables = [
            queue,
            gr.Dataframe(label="Workers", interactive=False, elem_id="admin-workers"),
            gr.Dataframe(label="Tunes", interactive=False, elem_id="admin-tunes"),
            gr.Dataframe(label="Prompts", interactive=False),
            gr.Dataframe(label="Users and credits", interactive=False),
            gr.Dataframe(label="Storage", interactive=False),
            gr.Dataframe(label="Expiries due", interactive=False),
            gr.Dataframe(label=PACK_PROMPTS, interactive=False, elem_id="admin-pack-prompts"),
        ]
    boxes = {"tune_id": record_box, "record_id": record_box, "days": days, "user": user}
    errors = FieldErrors(banner, {**boxes, "tunes": tune_credits, "images": image_credits})
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

    def inline(call: Callable[..., str]) -> Callable[..., dict[Any, Any]]:
        """What happened goes to the status line; a mistake to the banner and its box. A caller who is not an
        admin still gets an error (API callers too)."""

        @functools.wraps(call)
        def wrapped(*args: Any, **kwargs: Any) -> dict[Any, Any]:
            try:
                return {**errors.clear(), status: call(*args, **kwargs)}
            except (PermissionDeniedError, SignInRequiredError):
                raise
            except TunesError as error:
                return {**errors.show(error), status: ""}

        return user_errors(wrapped)

    @inline
    def cancel(tune_id: str | None, request: gr.Request) -> str:
        tune = operations.cancel(ctx.admin(request), required_int(tune_id, "tune_id", where=WHERE_ID))
        return f"Cancelled tune {tune.id} ({tune.title!r} of {tune.owner}); its queued prompts failed."

    @inline
    def retry(record_kind: str, record_id: str | None, request: gr.Request) -> str:
        admin, number = ctx.admin(request), required_int(record_id, "record_id", where=WHERE_ID)
        record = operations.retry(admin, record_kind, number)
        return f"Queued {record_kind} {record.id} of {record.owner} again."

    @inline
    def extend(tune_id: str | None, by_days: int | None, request: gr.Request) -> str:
        tune = operations.extend(ctx.admin(request), required_int(tune_id, "tune_id", where=WHERE_ID), by_days)
        return f"Tune {tune.id} of {tune.owner} now expires {tune.expires_at}."

    @inline
    def expire_now(tune_id: str | None, request: gr.Request) -> str:
        tune = operations.expire_now(ctx.admin(request), required_int(tune_id, "tune_id", where=WHERE_ID))
        return f"Expired tune {tune.id} of {tune.owner}: its LoRA is deleted and its waiting prompts failed."

    @inline
    def delete(tune_id: str | None, with_images: bool, request: gr.Request) -> str:
        number = required_int(tune_id, "tune_id", where=WHERE_ID)
        tune = operations.delete(ctx.admin(request), number, delete_images=with_images)
        return f"Deleted tune {tune.id} ({tune.title!r} of {tune.owner})" + (" and its images." if with_images else ".")

    @inline
    def grant_credits(user_id: str, tunes: str | None, images: str | None, request: gr.Request) -> str:
        admin, tunes_, images_ = ctx.admin(request), optional_int(tunes, "tunes"), optional_int(images, "images")
        credits = operations.grant_credits(admin, user_id, tunes_ or 0, images_ or 0)
        return f"Granted credits: {credits}."

    @inline
    def set_credits(user_id: str, tunes: str | None, images: str | None, request: gr.Request) -> str:
        admin, tunes_, images_ = ctx.admin(request), optional_int(tunes, "tunes"), optional_int(images, "images")
        credits = operations.set_credits(admin, user_id, tunes=tunes_, images=images_)
        return f"Set credits: {credits}."

    def asker(action: str) -> Callable[..., dict[Any, Any]]:
        """The first click of a destructive action: check the id, then ask (the second click acts)."""

        @user_errors
        def ask(tune_id: str | None, with_images: bool, request: gr.Request) -> dict[Any, Any]:
            ctx.admin(request)
            try:
                number = required_int(tune_id, "tune_id", where=WHERE_ID)
            except TunesError as error:
                return {**errors.show(error), **confirm.withdraw()}
            return {**errors.clear(), **confirm.ask(action, number, with_images=with_images)}

        return ask

    def action(
        button: gr.Button, fn: Callable[..., Any], inputs: list[gr.components.Component]
    ) -> gr.events.Dependency:
        """An action writes what happened to the status line (or its mistake by its box), then refreshes the tables."""
        event = button.click(
            fn, inputs, [*errors.outputs, status], api_name=f"admin_{fn.__name__}", api_visibility=HIDDEN
        )
        return event.success(refresh, filters, tables, api_visibility=HIDDEN)

    asked = [*errors.outputs, *confirm.outputs]
    gr.on(None, show, None, shown, api_name="admin_show", api_visibility=HIDDEN)
    if tab is not None:  # a tune created since the page loaded shows up when the tab is opened
        tab.select(refresh, filters, tables, api_visibility=HIDDEN, show_progress="hidden")
    refresh_button.click(refresh, filters, tables, api_name="admin_refresh", api_visibility=HIDDEN)
    tune_status.change(refresh, filters, tables, api_visibility=HIDDEN)
    action(cancel_button, cancel, [record_box])
    action(retry_button, retry, [kind, record_box])
    action(extend_button, extend, [record_box, days])
    expire_button.click(asker("expire"), [record_box, delete_images], asked, api_visibility=HIDDEN)
    delete_button.click(asker("delete"), [record_box, delete_images], asked, api_visibility=HIDDEN)
    for yes, fn, inputs in (
        (confirm.expire, expire_now, [record_box]),
        (confirm.delete, delete, [record_box, delete_images]),
    ):
        yes.click(confirm.withdraw, None, confirm.outputs, api_visibility=HIDDEN)
        action(yes, fn, inputs)
    gr.on(
        [confirm.keep.click, record_box.change, delete_images.change],  # the question was about other values
        confirm.withdraw,
        None,
        confirm.outputs,
        api_visibility=HIDDEN,
        show_progress="hidden",
    )
    action(grant_button, grant_credits, [user, tune_credits, image_credits])
    action(set_button, set_credits, [user, tune_credits, image_credits])
    errors.clear_on_change(api_visibility=HIDDEN)


def _frames(overview: Overview) -> list[Any]:
    return [
        overview.queue,
        overview.workers,
        overview.tunes,
        overview.prompts,
        overview.users,
        overview.storage,
        overview.expiries,
        overview.pack_prompts,
    ]
