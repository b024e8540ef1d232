"""The admin tab: an ops dashboard (plots of the last day or week), the records' tables, and actions on a record
picked in them.

Callbacks are thin: widget values -> one `Operations` call -> widgets. Each one asks `ctx.admin(request)`
first, so the endpoints refuse non-admins even when called directly; all are left out of the API docs
(`api_visibility="undocumented"`). For non-admins the enclosing tab is hidden on page load (app.py can create
it with `visible=False` so it never flashes); without an enclosing tab they see a one-line notice.

The plots and tables refresh when the tab is opened, after every action, and every `TUNES_ADMIN_REFRESH_SECONDS`
while the tab is open: the `gr.Timer` lives inside the tab, and Gradio runs a timer only while it is shown (never
for a non-admin, whose tab is hidden; the refresh refuses them anyway). Clicking a row of the queue, tunes,
prompts, users or expiries selects that record for the actions. Cancel, expire and delete cannot be undone, so each
first says what would be lost and asks; changing the selection withdraws the question. Every table can be downloaded
as CSV.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from gradio.context import Context

from admin.dashboard import WINDOWS, Dashboard
from admin.operations import RETRY_KINDS, TUNE_STATUSES, Operations, Overview
from pipelines.errors import TunesError, ValidationError
from studio.errors import PermissionDeniedError, SignInRequiredError
from ui.context import UIContext
from ui.feedback import FieldErrors, optional_int, required_int, user_errors

HIDDEN = "undocumented"  # callable (admins only), never listed in the API docs
ALL = "all"
NOTICE = "The admin tab is for operators named by `TUNES_ADMINS`."
WHERE_ID = "an id from the tables below, or click its row"
NOTHING_SELECTED = "*Nothing selected: click a row of the queue, tunes, prompts, users or expiries below.*"
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
KIND_COLORS = {"training": "#4c78a8", "generation": "#f58518"}  # the same colours in every plot
PERCENTILE_COLORS = {"p50": "#72b7b2", "p95": "#e45756"}
CREDIT_COLORS = {"tune credits": "#54a24b", "image credits": "#b279a2"}
YES = {"cancel": "Yes, cancel it", "expire": "Yes, expire it", "delete": "Yes, delete it"}
EXPORT_DIR = Path(tempfile.gettempdir()) / "tune-studio-exports"
EXPORT_KEEP_S = 3600  # exported CSV files are removed an hour later (Gradio serves its own copy meanwhile)


@dataclass(frozen=True)
class Confirm:
    """The question a destructive action asks first: a row with what would be lost, a "yes" button per action
    (only the one asked shows) and "keep"."""

    row: gr.Row
    question: gr.Markdown
    yes: dict[str, gr.Button]
    keep: gr.Button

    @property
    def outputs(self) -> list[gr.components.Component | gr.Row]:
        return [self.row, self.question, *self.yes.values()]

    def ask(self, action: str, question: str) -> dict[Any, Any]:
        buttons = {button: gr.update(visible=name == action) for name, button in self.yes.items()}
        return {self.row: gr.update(visible=True), self.question: question, **buttons}

    def withdraw(self) -> dict[Any, Any]:
        return {self.row: gr.update(visible=False), self.question: "", **{b: gr.update() for b in self.yes.values()}}


@dataclass(frozen=True)
class Plots:
    """The dashboard's widgets, in the order `figures` fills them."""

    summary: gr.Markdown
    updated: gr.Markdown
    finished: gr.BarPlot
    queue_depth: gr.LinePlot
    wait: gr.BarPlot
    run: gr.BarPlot
    times: gr.Dataframe
    failures: gr.BarPlot
    storage: gr.LinePlot
    credits: gr.LinePlot

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [getattr(self, field.name) for field in fields(self)]

    @staticmethod
    def figures(dashboard: Dashboard, every_s: int) -> list[Any]:
        updated = f"Updated {dashboard.end:%Y-%m-%d %H:%M:%S} UTC · refreshes every {every_s} s while this tab is open"
        return [
            dashboard.summary,
            updated,
            dashboard.finished,
            dashboard.queue_depth,
            dashboard.wait_bars,
            dashboard.run_bars,
            dashboard.times,
            dashboard.failures,
            dashboard.storage,
            dashboard.credits,
        ]


def build_admin_tab(ctx: UIContext, operations: Operations) -> None:
    """Add the admin widgets and events to the enclosing `gr.Tab` (app.py: `with gr.Tab("Admin"): ...`).

    Args:
        ctx: the caller's identity and roles.
        operations: the operator use cases.
    """
    tab = Context.block if isinstance(Context.block, gr.Tab) else None  # shown to admins only
    every_s = ctx.settings.admin_refresh_s
    notice = gr.Markdown(NOTICE)
    timer = gr.Timer(every_s)  # ticks only while the tab is shown
    with gr.Column(visible=False) as panel:
        with gr.Row():
            window = gr.Radio(list(WINDOWS), value="day", label="Dashboard: the last", elem_id="admin-window")
            tune_status = gr.Dropdown([ALL, *TUNE_STATUSES], value=ALL, label="Tunes with status")
            within_days = gr.Number(7, precision=0, label="Expiries due within (days)")
            refresh_button = gr.Button("Refresh", variant="secondary")
        plots, times_export = _build_plots()
        gr.Markdown("### Act on a record\nClick a row of the queue, tunes, prompts, users or expiries to select it.")
        selected = gr.Markdown(NOTHING_SELECTED, elem_id="admin-selected")
        with gr.Row():
            kind = gr.Radio(list(RETRY_KINDS), value="tune", label="Record", elem_id="admin-kind")
            record_box = gr.Textbox(label="Id", placeholder=WHERE_ID, elem_id="admin-record-id")
            days = gr.Number(30, precision=0, label="Extend by (days)")
            delete_images = gr.Checkbox(label="Delete removes its images too")
        with gr.Row():
            cancel_button = gr.Button("Cancel tune…", elem_id="admin-cancel")
            retry_button = gr.Button("Retry")
            extend_button = gr.Button("Extend")
            expire_button = gr.Button("Expire now…", elem_id="admin-expire")
            delete_button = gr.Button("Delete…", elem_id="admin-delete")
        with gr.Row(visible=False, elem_id="admin-confirm") as confirm_row:
            question = gr.Markdown(elem_id="admin-question")
            yes = {
                action: gr.Button(label, variant="stop", visible=False, elem_id=f"admin-confirm-{action}")
                for action, label in YES.items()
            }
            confirm = Confirm(confirm_row, question, yes, gr.Button("No, keep it", elem_id="admin-keep"))
        with gr.Row():
            user = gr.Textbox(label="User", elem_id="admin-user")
            tune_credits = gr.Textbox(label="Tune credits", placeholder="grant: 0 · set: unlimited")
            image_credits = gr.Textbox(label="Image credits", placeholder="grant: 0 · set: unlimited")
            grant_button = gr.Button("Grant credits")
            set_button = gr.Button("Set credits (empty: unlimited)")
        with gr.Row():
            image_box = gr.Textbox(label="Image id", placeholder="a showcase card's number", elem_id="admin-image")
            block_button = gr.Button("Take off the showcase", elem_id="admin-block")
            unblock_button = gr.Button("Allow on the showcase again")
        banner = gr.Markdown(visible=False, elem_classes=["error-banner"], elem_id="admin-error")
        status = gr.Markdown(elem_id="admin-status")
        lease = ctx.settings.worker_lease_s
        tables = {
            "queue": _table("Queue (position 0: running now)", "admin-queue"),
            "workers": _table("Workers", "admin-workers", header=WORKERS.format(beat=round(lease / 3, 1), lease=lease)),
            "tunes": _table("Tunes", "admin-tunes"),
            "prompts": _table("Prompts", "admin-prompts"),
            "users": _table("Users and credits", "admin-users"),
            "storage": _table("Storage", "admin-storage"),
            "expiries": _table("Expiries due", "admin-expiries"),
            "pack_prompts": _table(PACK_PROMPTS, "admin-pack-prompts"),
        }
    boxes = {"tune_id": record_box, "record_id": record_box, "days": days, "user": user, "kind": kind}
    boxes["image_id"] = image_box
    errors = FieldErrors(banner, {**boxes, "tunes": tune_credits, "images": image_credits})
    filters = [window, tune_status, within_days]
    table_widgets = [widget for widget, _ in tables.values()]
    refreshed = [*plots.outputs, *table_widgets]
    drawn = gr.State([])  # a digest of what each of `refreshed` shows: a refresh redraws only what changed
    shown = [notice, panel, *refreshed, drawn] + ([tab] if tab is not None else [])

    def show(request: gr.Request) -> list[Any]:
        """On page load: the tab, its panel, plots and tables for an admin; for anyone else only the notice."""
        try:
            admin = ctx.admin(request)
        except TunesError:
            nothing = [gr.update() for _ in refreshed]
            updates = [gr.update(visible=True), gr.update(visible=False), *nothing, []]
            return updates + ([gr.update(visible=False)] if tab is not None else [])
        values = [*Plots.figures(operations.dashboard(admin), every_s), *_frames(operations.overview(admin))]
        updates = [gr.update(visible=False), gr.update(visible=True), *_redraw(values, [])]
        return updates + ([gr.update(visible=True)] if tab is not None else [])

    @user_errors
    def refresh(
        period: str, status_filter: str, due_within: int | None, was: list[str], request: gr.Request
    ) -> list[Any]:
        """Every plot and table now; one that shows the same as before is left as it is (not redrawn)."""
        admin = ctx.admin(request)
        overview = operations.overview(
            admin, tune_status=None if status_filter == ALL else status_filter, within_days=due_within
        )
        values = [*Plots.figures(operations.dashboard(admin, window=period), every_s), *_frames(overview)]
        return _redraw(values, was)

    def redraw(period: str, status_filter: str, due_within: int | None, request: gr.Request) -> list[Any]:
        """The Refresh button (and the API's `admin_refresh`): every plot and table, drawn again."""
        return refresh(period, status_filter, due_within, [], request)

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
    def cancel(record_kind: str, tune_id: str | None, request: gr.Request) -> str:
        tune = operations.cancel(ctx.admin(request), _tune_id(record_kind, tune_id))
        return f"Cancelled tune {tune.id} ({tune.title!r} of {tune.owner}); its queued prompts failed."

    @inline
    def retry(record_kind: str, record_id: str | None, request: gr.Request) -> str:
        admin, number = ctx.admin(request), required_int(record_id, "record_id", where=WHERE_ID)
        record = operations.retry(admin, record_kind, number)
        return f"Queued {record_kind} {record.id} of {record.owner} again."

    @inline
    def extend(record_kind: str, tune_id: str | None, by_days: int | None, request: gr.Request) -> str:
        tune = operations.extend(ctx.admin(request), _tune_id(record_kind, tune_id), by_days)
        return f"Tune {tune.id} of {tune.owner} now expires {tune.expires_at}."

    @inline
    def expire_now(record_kind: str, tune_id: str | None, request: gr.Request) -> str:
        tune = operations.expire_now(ctx.admin(request), _tune_id(record_kind, tune_id))
        return f"Expired tune {tune.id} of {tune.owner}: its LoRA is deleted and its waiting prompts failed."

    @inline
    def delete(record_kind: str, tune_id: str | None, with_images: bool, request: gr.Request) -> str:
        number = _tune_id(record_kind, tune_id)
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

    @inline
    def block_image(image_id: str | None, request: gr.Request) -> str:
        number = required_int(image_id, "image_id", where="an image id")
        owner = operations.block_image(ctx.admin(request), number)
        return f"Image {number} of {owner} is off the showcase; its owner cannot put it back."

    @inline
    def unblock_image(image_id: str | None, request: gr.Request) -> str:
        number = required_int(image_id, "image_id", where="an image id")
        owner = operations.block_image(ctx.admin(request), number, blocked=False)
        return f"Image {number} of {owner} may be on the showcase again (while its tune is public)."

    def asker(action: str) -> Callable[..., dict[Any, Any]]:
        """The first click of a destructive action: say what would be lost and ask (the "yes" button acts)."""

        @user_errors
        def ask(record_kind: str, tune_id: str | None, with_images: bool, request: gr.Request) -> dict[Any, Any]:
            admin = ctx.admin(request)
            try:
                number = _tune_id(record_kind, tune_id)
                said = operations.question(admin, action, number, delete_images=with_images)
            except (PermissionDeniedError, SignInRequiredError):
                raise
            except TunesError as error:
                return {**errors.show(error), **confirm.withdraw()}
            return {**errors.clear(), **confirm.ask(action, said)}

        ask.__name__ = f"ask_{action}"
        return ask

    @user_errors
    def describe(record_kind: str, record_id: str | None, request: gr.Request) -> str:
        """The selected record in one line (after an action: its new state)."""
        admin = ctx.admin(request)
        try:
            return operations.describe(admin, record_kind, required_int(record_id, "record_id", where=WHERE_ID))
        except (PermissionDeniedError, SignInRequiredError):
            raise
        except TunesError as error:
            return f"*{error}*" if (record_id or "").strip() else NOTHING_SELECTED

    def action(button: gr.Button, fn: Callable[..., Any], inputs: list[Any]) -> None:
        """An action writes what happened to the status line (or its mistake by its box), then the selected
        record's line, then refreshes the plots and tables."""
        event = button.click(
            fn, inputs, [*errors.outputs, status], api_name=f"admin_{fn.__name__}", api_visibility=HIDDEN
        )
        event.success(describe, [kind, record_box], selected, api_visibility=HIDDEN, show_progress="hidden").then(
            refresh, [*filters, drawn], [*refreshed, drawn], api_visibility=HIDDEN
        )

    def selector(name: str) -> Callable[..., dict[Any, Any]]:
        """A click on a row of table `name` selects its record: its kind and id (or user) fill the action boxes."""

        @user_errors
        def select(event: gr.SelectData, request: gr.Request) -> dict[Any, Any]:
            admin = ctx.admin(request)
            row = event.row_value or []
            if name == "users":
                return {user: row[0] if row else ""}
            picked_kind, picked_id = _picked(name, row)
            if picked_id is None:
                return {}
            return {
                kind: picked_kind,
                record_box: str(picked_id),
                selected: operations.describe(admin, picked_kind, picked_id),
            }

        select.__name__ = f"select_{name}"
        return select

    def exporter(name: str) -> Callable[..., Any]:
        @user_errors
        def export(period: str, status_filter: str, due_within: int | None, request: gr.Request) -> Any:
            frame = operations.table(
                ctx.admin(request),
                name,
                tune_status=None if status_filter == ALL else status_filter,
                within_days=due_within,
                window=period,
            )
            return gr.update(value=_write_csv(name, frame), visible=True)

        export.__name__ = f"export_{name}"
        return export

    asked = [*errors.outputs, *confirm.outputs]
    gr.on(None, show, None, shown, api_name="admin_show", api_visibility=HIDDEN)
    if tab is not None:  # a tune created since the page loaded shows up when the tab is opened
        tab.select(refresh, [*filters, drawn], [*refreshed, drawn], api_visibility=HIDDEN, show_progress="hidden")
    timer.tick(refresh, [*filters, drawn], [*refreshed, drawn], api_visibility=HIDDEN, show_progress="hidden")
    refresh_button.click(redraw, filters, [*refreshed, drawn], api_name="admin_refresh", api_visibility=HIDDEN)
    gr.on([window.change, tune_status.change], refresh, [*filters, drawn], [*refreshed, drawn], api_visibility=HIDDEN)
    for name in ("queue", "tunes", "prompts", "users", "expiries"):
        widget = tables[name][0]
        widget.select(selector(name), None, [kind, record_box, selected, user], api_visibility=HIDDEN)
    for name, (_, (button, download)) in tables.items():
        button.click(exporter(name), filters, download, api_name=f"admin_export_{name}", api_visibility=HIDDEN)
    times_button, times_file = times_export
    times_button.click(exporter("times"), filters, times_file, api_name="admin_export_times", api_visibility=HIDDEN)
    action(retry_button, retry, [kind, record_box])
    action(extend_button, extend, [kind, record_box, days])
    for action_name, button in (("cancel", cancel_button), ("expire", expire_button), ("delete", delete_button)):
        button.click(asker(action_name), [kind, record_box, delete_images], asked, api_visibility=HIDDEN)
    for action_name, fn, inputs in (
        ("cancel", cancel, [kind, record_box]),
        ("expire", expire_now, [kind, record_box]),
        ("delete", delete, [kind, record_box, delete_images]),
    ):
        confirm.yes[action_name].click(confirm.withdraw, None, confirm.outputs, api_visibility=HIDDEN)
        action(confirm.yes[action_name], fn, inputs)
    gr.on(
        [confirm.keep.click, record_box.change, kind.change, delete_images.change],  # it asked about other values
        confirm.withdraw,
        None,
        confirm.outputs,
        api_visibility=HIDDEN,
        show_progress="hidden",
    )
    action(block_button, block_image, [image_box])
    action(unblock_button, unblock_image, [image_box])
    action(grant_button, grant_credits, [user, tune_credits, image_credits])
    action(set_button, set_credits, [user, tune_credits, image_credits])
    errors.clear_on_change(api_visibility=HIDDEN)


def _build_plots() -> tuple[Plots, tuple[gr.Button, gr.File]]:
    """The dashboard: a summary line, then the plots in pairs, with the wait and run times also as a table."""
    summary = gr.Markdown(elem_id="admin-summary")
    updated = gr.Markdown(elem_id="admin-updated", elem_classes=["hint"])
    common: dict[str, Any] = {"height": 260, "y_lim": [0, None]}  # counts and minutes start at 0
    kinds = {**common, "color": "kind", "color_map": KIND_COLORS}
    percentiles = {
        **common,
        "x": "bar",
        "y": "minutes",
        "color": "percentile",
        "color_map": PERCENTILE_COLORS,
        "sort": None,
        "x_title": "branch, job, percentile",
        "x_label_angle": -30,
    }
    with gr.Row():
        finished = gr.BarPlot(
            x="hour", y="jobs", title="Jobs finished per hour", elem_id="admin-plot-finished", **kinds
        )
        queue_depth = gr.LinePlot(
            x="time", y="waiting", title="Queue depth (waiting)", elem_id="admin-plot-queue", **kinds
        )
    with gr.Row():
        wait = gr.BarPlot(title="Wait before running (min)", elem_id="admin-plot-wait", **percentiles)
        run = gr.BarPlot(title="Run time (min)", elem_id="admin-plot-run", **percentiles)
    times, times_export = _table("Wait and run time per branch (jobs that finished well in the window)", "admin-times")
    with gr.Row():
        failures = gr.BarPlot(
            x="reason", y="failures", title="Failures by reason", elem_id="admin-plot-failures", sort="-y",
            x_label_angle=-20, **kinds,
        )  # fmt: skip
        storage = gr.LinePlot(
            x="time", y="MiB", color="kind", title="Storage by kind (MiB)", elem_id="admin-plot-storage", **common
        )
    credits = gr.BarPlot(
        x="time", y="spent", color="credits", title="Credits spent", elem_id="admin-plot-credits",
        color_map=CREDIT_COLORS, **common,
    )  # fmt: skip
    plots = Plots(summary, updated, finished, queue_depth, wait, run, times, failures, storage, credits)
    return plots, times_export  # the times table's CSV button and file


def _table(label: str, elem_id: str, *, header: str | None = None) -> tuple[gr.Dataframe, tuple[gr.Button, gr.File]]:
    """A read-only table with a "Download CSV" button and the file it makes (shown once made)."""
    if header:
        gr.Markdown(header)
    frame = gr.Dataframe(label=label, interactive=False, elem_id=elem_id)
    with gr.Row():
        button = gr.Button("Download CSV", size="sm", scale=0, min_width=140, elem_id=f"{elem_id}-csv")
        download = gr.File(visible=False, label="CSV", elem_id=f"{elem_id}-file", scale=1)
    return frame, (button, download)


def _picked(name: str, row: list[Any]) -> tuple[str, int | None]:
    """The kind and id of the record in a clicked row of table `name` (queue rows are trainings or generations)."""
    if not row:
        return "tune", None
    if name == "queue":  # position, state, job, id, ...
        return ("tune" if row[2] == "train" else "prompt"), _whole(row[3])
    return ("prompt" if name == "prompts" else "tune"), _whole(row[0])


def _whole(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _tune_id(record_kind: str, record_id: str | None) -> int:
    """The id a tune action acts on; a selected prompt is refused rather than taken for a tune with its number."""
    if record_kind != "tune":
        raise ValidationError("kind", record_kind, "must be a tune: cancel, extend, expire and delete act on tunes")
    return required_int(record_id, "tune_id", where=WHERE_ID)


def _write_csv(name: str, frame: Any) -> str:
    """`frame` as a CSV file named after the table and the time (old exports are removed). The folder is shared
    temp space and an export holds every user's records: only this server's user may read it (0700 / 0600)."""
    EXPORT_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    EXPORT_DIR.chmod(0o700)
    cutoff = time.time() - EXPORT_KEEP_S
    for old in EXPORT_DIR.glob("*.csv"):
        if old.stat().st_mtime < cutoff:
            old.unlink(missing_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = EXPORT_DIR / f"{name.replace('_', '-')}-{stamp}-{secrets.token_hex(4)}.csv"
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", newline="") as file:
        frame.to_csv(file, index=False)
    return str(path)


def _redraw(values: list[Any], was: list[str]) -> list[Any]:
    """`values` for the refreshed widgets, with `gr.skip()` for each that would show what it shows already (`was`:
    their digests as last drawn), and the new digests last."""
    digests = [_digest(value) for value in values]
    same = [index < len(was) and was[index] == digest for index, digest in enumerate(digests)]
    return [*(gr.skip() if unchanged else value for value, unchanged in zip(values, same, strict=True)), digests]


def _digest(value: Any) -> str:
    text = value.to_json(date_format="iso") if isinstance(value, pd.DataFrame) else str(value)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
