"""Tune Studio: assembles the Gradio tabs and launches. No logic lives here; `python app.py` serves it."""

from __future__ import annotations

import gradio as gr

from admin.scheduler import start_scheduler
from pipelines.generate import Generator
from pipelines.settings import Settings
from studio.runtime import open_runtime
from ui.core_tab import build_core_tab


def build_app(settings: Settings, generator: Generator | None = None) -> gr.Blocks:
    """The app for one process: one generator (pipelines stay loaded) shared by every session."""
    generator = generator or Generator(settings)
    with gr.Blocks(title="Tune Studio") as app:
        gr.Markdown("# Tune Studio\nPersonal AI avatars: train a DreamBooth LoRA on your photos, then generate.")
        build_core_tab(settings, generator)
    return app


def main() -> None:
    settings = Settings.from_env()
    runtime = open_runtime(settings)  # database, artifact store, worker thread (re-queues interrupted work)
    scheduler = start_scheduler(runtime.studio, runtime.store)  # expiry sweep: now, then every few minutes
    try:
        app = build_app(settings, runtime.generator).queue(default_concurrency_limit=1)
        app.launch(max_file_size=settings.max_photo_bytes)
    finally:
        scheduler.shutdown(wait=False)
        runtime.close()


if __name__ == "__main__":
    main()
