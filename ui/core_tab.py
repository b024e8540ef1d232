"""The model-core tab: check photos, train a LoRA, generate with it — on the CPU demo branch by default.

Callbacks stay thin: widget values -> a typed request -> one core call -> widgets. Per-user state (the
trained LoRA folder) lives in `gr.State`, never in module globals.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from pipelines.errors import TunesError
from pipelines.generate import SCHEDULERS, GenerationRequest, Generator, LoraSpec
from pipelines.prompts import render_prompt
from pipelines.registry import BRANCHES
from pipelines.settings import Settings
from pipelines.train import TrainProgress
from pipelines.tuning import CheckedPhotos, TuneRequest, check_photos, train_tune, training_images

CLASSES = ("man", "woman", "boy", "girl", "couple", "cat", "dog")
PHOTO_GUIDANCE = (
    "Upload **4-30 photos** of one subject: different days, clothes, backgrounds and angles; the face "
    "clearly visible and sharp; no sunglasses, no other people, no heavy filters. JPEG, PNG or WebP, "
    "at least 256 px on the short side."
)


def _user_error(call: Callable[..., Any]) -> Callable[..., Any]:
    """Show project errors as a readable message next to the form instead of a stack trace."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except TunesError as error:
            raise gr.Error(str(error), duration=None) from None

    wrapped.__name__ = call.__name__
    wrapped.__doc__ = call.__doc__
    return wrapped


def _report_table(checked: CheckedPhotos) -> pd.DataFrame:
    rows = [
        {
            "photo": r.name,
            "size": f"{r.width}x{r.height}",
            "faces": "-" if r.faces is None else r.faces,
            "sharpness": round(r.sharpness),
            "used": "yes" if r.usable else "no",
            "advice": "; ".join(w.message for w in r.warnings) or "looks good",
        }
        for r in checked.reports
    ]
    return pd.DataFrame(rows)


def build_core_tab(settings: Settings, generator: Generator) -> None:
    """Add the tab's widgets and events to the enclosing `gr.Blocks`."""
    trainable = [name for name, branch in BRANCHES.items() if branch.trainable]
    branch_help = "\n".join(f"- **{name}**: {BRANCHES[name].description}" for name in trainable)

    def load(files: list[str] | None, class_name: str) -> CheckedPhotos:
        return check_photos(settings, [Path(f) for f in files or []], class_name=class_name)

    @_user_error
    def check(files: list[str] | None, class_name: str, branch: str, face_crop: bool):
        """Check photos: a quality report per photo and the square crops training will use."""
        checked = load(files, class_name)
        crops = training_images(checked, TuneRequest(class_name=class_name, branch=branch, face_crop=face_crop))
        gallery = [(c.image, f"{c.source} ({c.kind})") for c in crops]
        return _report_table(checked), gallery

    @_user_error
    def train(files, class_name, branch, steps, face_crop, progress=gr.Progress()):  # noqa: B008 (gradio idiom)
        """Train a LoRA on the photos; returns the LoRA folder (kept in session state) and a summary."""
        checked = load(files, class_name)
        request = TuneRequest(class_name=class_name, branch=branch, steps=int(steps) or None, face_crop=face_crop)

        def on_progress(p: TrainProgress) -> None:
            eta = f", about {p.eta_seconds:.0f}s left" if p.eta_seconds else ""
            loss = f", loss {p.loss:.3f}" if p.loss is not None else ""
            progress((p.step, p.total_steps), desc=f"{p.phase}: step {p.step}/{p.total_steps}{loss}{eta} {p.message}")

        output = settings.data_dir / "loras" / f"demo-{uuid.uuid4().hex[:12]}"
        result = train_tune(settings, checked, request, output, on_progress=on_progress)
        meta = result.metadata
        summary = (
            f"Trained **{meta['instance_prompt']}** on {meta['num_training_images']} images: {meta['steps']} steps "
            f"in {meta['train_seconds']:.0f}s, final loss {meta['final_loss']:.3f}. "
            f"Use `{meta['token']} {meta['class_name']}` (or `{{{{subject}}}}`) in your prompts."
        )
        curve = meta["loss_curve"]
        losses = pd.DataFrame(
            {"step": [(i + 1) * curve["stride"] for i in range(len(curve["values"]))], "loss": curve["values"]}
        )
        return {"folder": str(result.output_dir), "branch": branch, **meta}, summary, losses

    @_user_error
    def generate(tune, prompt, negative, num_images, seed, steps, cfg, scheduler, inpaint_faces, hires_fix):
        """Generate images with the trained LoRA; each caption shows the seed that reproduces it."""
        if not tune:
            raise gr.Error("Train a LoRA first (step 2).")
        text = render_prompt(prompt, token=tune["token"], class_name=tune["class_name"], field="prompt")
        request = GenerationRequest(
            prompt=text,
            negative_prompt=negative or "",
            num_images=int(num_images),
            seed=None if seed is None or int(seed) < 0 else int(seed),
            steps=int(steps),
            cfg_scale=float(cfg),
            scheduler=scheduler,
            loras=(LoraSpec("demo", Path(tune["folder"])),),
            inpaint_faces=bool(inpaint_faces),
            hires_fix=bool(hires_fix),
        )
        result = generator.generate(tune["branch"], request)
        return [(item.image, f"seed {item.seed}") for item in result.images], f"Prompt used: `{text}`"

    with gr.Tab("Model core"):
        tune = gr.State(None)
        gr.Markdown("### 1. Photos\n" + PHOTO_GUIDANCE)
        with gr.Row():
            files = gr.File(label="Photos", file_count="multiple", file_types=["image"], scale=2)
            with gr.Column(scale=1):
                class_name = gr.Dropdown(list(CLASSES), value="woman", label="Subject class")
                branch = gr.Dropdown(trainable, value=settings.default_branch, label="Base model (branch)")
                with gr.Accordion("Branches and advanced settings", open=False):
                    gr.Markdown(branch_help)
                    steps = gr.Number(value=0, precision=0, label="Steps (0 = branch default)")
                    face_crop = gr.Checkbox(value=True, label="Add face-centred crops")
        check_button = gr.Button("Check photos")
        report = gr.Dataframe(label="Photo check", interactive=False)
        crops = gr.Gallery(label="Training crops", columns=8, height=220)
        gr.Markdown("### 2. Train")
        train_button = gr.Button("Train", variant="primary")
        summary = gr.Markdown()
        loss_plot = gr.LinePlot(x="step", y="loss", label="Training loss", height=220)
        gr.Markdown("### 3. Generate")
        with gr.Row():
            prompt = gr.Textbox(value="portrait photo of {{subject}}, studio lighting", label="Prompt", scale=3)
            negative = gr.Textbox(value="blurry, lowres", label="Negative prompt", scale=2)
        with gr.Row():
            num_images = gr.Slider(1, 8, value=4, step=1, label="Images")
            seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
            gen_steps = gr.Slider(1, 150, value=20, step=1, label="Steps")
            cfg = gr.Slider(0, 30, value=7, step=0.5, label="CFG scale")
            scheduler = gr.Dropdown(list(SCHEDULERS), value="dpm++2m_karras", label="Scheduler")
        with gr.Row():
            inpaint_faces = gr.Checkbox(label="Re-paint faces")
            hires_fix = gr.Checkbox(label="Hires fix (1.5x)")
        generate_button = gr.Button("Generate", variant="primary")
        used_prompt = gr.Markdown()
        gallery = gr.Gallery(label="Results", columns=4)

        check_button.click(check, [files, class_name, branch, face_crop], [report, crops], api_name="check_photos")
        train_button.click(
            train, [files, class_name, branch, steps, face_crop], [tune, summary, loss_plot], api_name="train"
        )
        generate_button.click(
            generate,
            [tune, prompt, negative, num_images, seed, gen_steps, cfg, scheduler, inpaint_faces, hires_fix],
            [gallery, used_prompt],
            api_name="generate",
        )
