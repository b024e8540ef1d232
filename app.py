"""Tune Studio: assembles the Gradio tabs and launches. No logic lives here; `python app.py` serves it."""

from __future__ import annotations

import gradio as gr

from pipelines.generate import Generator
from pipelines.settings import Settings
from ui.core_tab import build_core_tab


def build_app(settings: Settings) -> gr.Blocks:
    """The whole app for one process: one generator (pipelines stay loaded) shared by every session."""
    generator = Generator(settings)
    with gr.Blocks(title="Tune Studio") as app:
        gr.Markdown("# Tune Studio\nPersonal AI avatars: train a DreamBooth LoRA on your photos, then generate.")
        build_core_tab(settings, generator)
    return app


def main() -> None:
    settings = Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    build_app(settings).queue(default_concurrency_limit=1).launch(max_file_size=settings.max_photo_bytes)


if __name__ == "__main__":
    main()
