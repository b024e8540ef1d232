"""Tune Studio: assembles the Gradio tabs, the named Gradio API and the REST API, and serves them.

`python app.py` serves the REST routes (`rest/`) with the Gradio Blocks mounted beside them at `/`, and starts
the local worker processes that run the jobs. No logic lives here: the tabs and the routes call the service.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import gradio as gr
from fastapi import FastAPI

from admin.operations import Operations
from admin.scheduler import start_scheduler
from admin.tab import build_admin_tab
from pipelines.errors import SettingsError
from pipelines.settings import Settings
from rest.browser import BrowserHeaders, add_cross_site_guards, quiet_access_log
from rest.routes import build_rest_api
from studio.errors import SignInRequiredError
from studio.service import Studio
from ui.account_tab import build_account_tab
from ui.api import build_api
from ui.context import UIContext
from ui.create_tab import build_create_tab
from ui.feedback import CSS
from ui.generate_tab import build_generate_tab
from ui.guard import install_guard
from ui.packs_tab import build_packs_tab
from ui.showcase import build_showcase_tab

if TYPE_CHECKING:
    from studio.runtime import Runtime

HEADER = "# Tune Studio\nPersonal AI avatars: train a DreamBooth LoRA on your photos, then generate."


def build_app(ctx: UIContext, operations: Operations) -> gr.Blocks:
    """The app for one process. Every session shares the service; per-user state lives in `gr.State`."""
    with gr.Blocks(title="Tune Studio") as app:
        build_api(ctx)  # first: the public endpoint names (create_tune, …) go to the API, not to tab callbacks
        with gr.Row():
            gr.Markdown(HEADER)
            if ctx.settings.oauth_client_id:
                gr.LoginButton(scale=0)
        with gr.Tabs(selected="create") as tabs:
            with gr.Tab("Create tune", id="create"):
                create = build_create_tab(ctx)
            with gr.Tab("Generate", id="generate"):
                generate_tune = build_generate_tab(ctx, app)
            with gr.Tab("Pack gallery", id="packs"):
                packs = build_packs_tab(ctx)
            with gr.Tab("Showcase", id="showcase"):
                build_showcase_tab(ctx)
            with gr.Tab("Account", id="account"):
                build_account_tab(ctx, app)
            with gr.Tab("Admin", id="admin", visible=False) as admin_tab:
                build_admin_tab(ctx, operations)

        def roles(request: gr.Request):
            """Show the admin tab and the pack editor only to those who may use them (their events check too). A
            visitor who has not signed in (a Space with Hugging Face sign-in) lands on the showcase."""
            try:
                user = ctx.user(request)
            except SignInRequiredError:  # not signed in yet: show nothing extra
                user = None
            editor = user is not None and ctx.roles.is_editor(user)
            admin = user is not None and ctx.roles.is_admin(user)
            landing = gr.Tabs(selected="showcase") if user is None else gr.update()
            return [gr.update(visible=admin), *[gr.update(visible=editor) for _ in packs.editor_only], landing]

        private = {"api_visibility": "private"}
        # the Subject chosen on the create form wins; a pack without prompts for it is not chosen (a note says so)
        packs.use_pack.click(
            create.choose_pack, [packs.chosen_pack, create.class_name], create.pack_outputs, **private
        ).then(lambda: gr.Tabs(selected="create"), None, tabs, **private)
        create.generate_with.click(create.open_in_generate, create.watched, generate_tune, **private).then(
            lambda: gr.Tabs(selected="generate"), None, tabs, **private
        )
        app.load(roles, None, [admin_tab, *packs.editor_only, tabs], **private)
    return app


def launch_options(settings: Settings) -> dict[str, Any]:
    """Gradio mount/launch arguments from the settings: sign-in, the server's upload limit, the style.

    Gradio shows exception text to callers (its checks of their input say what was wrong); `ui.guard` takes the
    folders of this server out of those messages."""
    options: dict[str, Any] = {"max_file_size": settings.max_photo_bytes, "css": CSS}
    if settings.accounts:
        options["auth"] = settings.account_pairs
        options["auth_message"] = "Sign in to Tune Studio."
    return options


def build_server(studio: Studio, operations: Operations) -> FastAPI:
    """One ASGI app: the REST routes first, then the Gradio app (tabs and its API) mounted at `/`, behind the
    browser guards (`rest.browser`: other sites, cookies, frames; `ui.guard`: event streams and files per user)."""
    settings = studio.settings
    ctx = UIContext(studio, settings)
    server = build_rest_api(studio)
    blocks = build_app(ctx, operations).queue(default_concurrency_limit=8)
    server = gr.mount_gradio_app(server, blocks, path="/", **launch_options(settings))
    install_guard(server, ctx)
    server.add_middleware(BrowserHeaders, space_embed=settings.space_id is not None)
    add_cross_site_guards(server, settings)
    return server


@contextmanager
def serving(runtime: Runtime, *, host: str = "127.0.0.1") -> Iterator[str]:
    """The whole server (REST routes, Gradio app) of `runtime` on a free port in a background thread; yields its
    URL. For tests and benchmarks: `main` serves in the foreground."""
    import threading

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            build_server(runtime.studio, Operations(runtime.studio, runtime.store)),
            host=host,
            port=0,
            log_level="warning",
            timeout_graceful_shutdown=1,  # gradio_client keeps event streams open
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start (see the log above)")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}/"
    finally:
        quiet = _CancelledStreams()
        logging.getLogger("uvicorn.error").addFilter(quiet)
        server.should_exit = True
        thread.join(timeout=10)
        logging.getLogger("uvicorn.error").removeFilter(quiet)


class _CancelledStreams(logging.Filter):
    """At the end of `serving`, event streams still open (gradio_client's heartbeats) are cancelled after the
    grace period; uvicorn logs each as an error with a trace. Expected there, so dropped; other records pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        cancelled = record.exc_info is not None and isinstance(record.exc_info[1], asyncio.CancelledError)
        return not (cancelled or record.getMessage().startswith("Cancel "))


def main() -> None:
    """Serve the web (UI, Gradio API, REST) from this process and run the jobs in local worker processes, one per
    `TUNES_WORKER_DEVICES` entry (`studio.supervisor`): this process never trains, nor imports torch."""
    import os
    import threading

    import uvicorn

    from studio.callbacks import CallbackSender, deliver_in_background
    from studio.runtime import open_runtime
    from studio.supervisor import Supervisor

    settings = Settings.from_env()
    runtime = open_runtime(settings, start_worker=False)  # database and artifact store; the workers are processes
    workers = Supervisor(settings)
    workers.start()
    jobs = None
    if settings.train_on == "hf-jobs":  # trainings go to rented GPUs; local workers generate
        from studio.hf_jobs import JobsBackend

        jobs = JobsBackend(runtime.studio, runtime.store)
        jobs.start()
    stop_callbacks = threading.Event()
    deliver_in_background(CallbackSender(runtime.studio), stop_callbacks)
    scheduler = start_scheduler(runtime.studio, runtime.store)  # expiry sweep: now, then every few minutes
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")  # Gradio's own variables, kept for scripts
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    quiet_access_log()  # no session hashes or link signatures in the access log
    try:
        devices = ", ".join(settings.local_workers) or "none"
        print(f"Tune Studio on http://{host}:{port}/ (REST API docs: /docs); local workers: {devices}")
        uvicorn.run(build_server(runtime.studio, Operations(runtime.studio, runtime.store)), host=host, port=port)
    finally:
        scheduler.shutdown(wait=False)
        stop_callbacks.set()
        if jobs is not None:
            jobs.stop()
        workers.stop()
        runtime.close()


if __name__ == "__main__":
    try:
        main()
    except SettingsError as error:  # a setting to fix, not a bug: one line, no trace
        raise SystemExit(f"Tune Studio cannot start: {error}") from None
