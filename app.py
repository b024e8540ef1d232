"""Tune Studio: assembles the Gradio tabs and the named API, and launches. `python app.py` serves it.

No logic lives here: every tab calls the service (`studio.service.Studio`) through a `UIContext`.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from admin.operations import Operations
from admin.scheduler import start_scheduler
from admin.tab import build_admin_tab
from pipelines.errors import SignInRequiredError
from pipelines.settings import Settings
from studio.service import Studio
from ui.account_tab import build_account_tab
from ui.api import build_api
from ui.context import UIContext
from ui.create_tab import build_create_tab
from ui.feedback import CSS
from ui.generate_tab import build_generate_tab
from ui.packs_tab import build_packs_tab

HEADER = "# Tune Studio\nPersonal AI avatars: train a DreamBooth LoRA on your photos, then generate."


def build_app(studio: Studio, operations: Operations) -> gr.Blocks:
    """The app for one process. Every session shares the service; per-user state lives in `gr.State`."""
    ctx = UIContext(studio, studio.settings)
    with gr.Blocks(title="Tune Studio") as app:
        build_api(ctx)  # first: the public endpoint names (create_tune, …) go to the API, not to tab callbacks
        with gr.Row():
            gr.Markdown(HEADER)
            if studio.settings.oauth_client_id:
                gr.LoginButton(scale=0)
        with gr.Tabs(selected="create") as tabs:
            with gr.Tab("Create tune", id="create"):
                create = build_create_tab(ctx)
            with gr.Tab("Generate", id="generate"):
                build_generate_tab(ctx, app)
            with gr.Tab("Pack gallery", id="packs"):
                packs = build_packs_tab(ctx)
            with gr.Tab("Account", id="account"):
                build_account_tab(ctx, app)
            with gr.Tab("Admin", id="admin", visible=False) as admin_tab:
                build_admin_tab(ctx, operations)

        def roles(request: gr.Request):
            """Show the admin tab and the pack editor only to those who may use them (their events check too)."""
            try:
                user = ctx.user(request)
            except SignInRequiredError:  # not signed in yet: show nothing extra
                user = None
            editor = user is not None and ctx.roles.is_editor(user)
            admin = user is not None and ctx.roles.is_admin(user)
            return [gr.update(visible=admin)] + [gr.update(visible=editor) for _ in packs.editor_only]

        private = {"api_visibility": "private"}
        packs.use_pack.click(
            create.choose_pack, [packs.chosen_pack, packs.chosen_class], create.pack_outputs, **private
        ).then(lambda: gr.Tabs(selected="create"), None, tabs, **private)
        app.load(roles, None, [admin_tab, *packs.editor_only], **private)
    return app


def launch_options(settings: Settings) -> dict[str, Any]:
    """`launch()` arguments from the settings: sign-in, the server's upload limit, the style."""
    options: dict[str, Any] = {"max_file_size": settings.max_photo_bytes, "css": CSS}
    if settings.accounts:
        options["auth"] = settings.account_pairs
        options["auth_message"] = "Sign in to Tune Studio."
    return options


def main() -> None:
    from studio.runtime import open_runtime  # heavy imports (torch) only when serving

    settings = Settings.from_env()
    runtime = open_runtime(settings)  # database, artifact store, worker thread (re-queues interrupted work)
    scheduler = start_scheduler(runtime.studio, runtime.store)  # expiry sweep: now, then every few minutes
    try:
        app = build_app(runtime.studio, Operations(runtime.studio, runtime.store))
        app.queue(default_concurrency_limit=8).launch(**launch_options(settings))
    finally:
        scheduler.shutdown(wait=False)
        runtime.close()


if __name__ == "__main__":
    main()
