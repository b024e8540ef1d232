"""The job that runs on a rented GPU (Hugging Face Jobs): `python -m studio.job --spec '<json>'`.

It runs this project's own image, so the same trainer and generator as a local worker. A training job reads the
training set (the square crops the studio prepared, each with its caption) from a private `datasets` repo, trains
on exactly those, pushes the LoRA and its model card to the tune's private model repo, then renders the prompts
queued with the tune on the same GPU (one cold start for a whole pack). A render job (no training set) downloads
the LoRA of a trained tune and renders a batch of its prompts. Either uploads the images to the folder
`spec.renders` of the LoRA's repo with a `results.json`, which the studio reads, downloads and then deletes
(`studio.hf_jobs`). It prints one JSON line per event on stdout, the studio follows them in the job's logs:

    {"event": "progress", "step": 12, "total": 500, "loss": 0.1, "eta_s": 80}
    {"event": "trained", "location": "hub://ns/tune-12-ab12cd34"}
    {"event": "rendered", "prompt_id": 40, "images": 4}
    {"event": "done"}

The Hugging Face token arrives as the job's secret `HF_TOKEN` and is never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_NAME = "results.json"  # in the renders folder: {prompt id: [{"file", "seed", "width", "height"}]}


@dataclass(frozen=True)
class JobSpec:
    """What one job does, as the studio sends it (JSON on the command line; no secret in it)."""

    tune_id: int
    renders: str  # the folder of the LoRA's repo the images go to
    branch: str
    base_model: str
    title: str
    class_name: str
    token: str
    steps: int | None
    seed: int
    prompts: list[dict[str, Any]] = field(default_factory=list)  # {"id", "text", "negative_prompt", …, "seed"}
    training_set: str | None = None  # a training: the private dataset repo with the crops
    artifact_name: str | None = None  # a training: the model repo is `<namespace>/tune-<artifact_name>`
    lora: str | None = None  # a batch of renders: the trained LoRA's location (`hub://…`)
    model_type: str = "lora"  # a training: "lora" or "pti" (`Tune.model_type`)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        return cls(**json.loads(text))


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def run(spec: JobSpec) -> None:
    """Train, push the LoRA, render the prompts, upload their images; see the module docstring."""
    from pipelines.settings import Settings
    from storage.artifacts import open_store

    with tempfile.TemporaryDirectory(prefix="tune-job-") as scratch:
        settings = Settings.from_env()  # the image's data folder: base models, the tiny model it builds
        if spec.training_set:
            lora_dir, location = _train(settings, spec, Path(scratch))
            emit("trained", location=location)
        else:
            location = spec.lora
            lora_dir = open_store(settings).fetch(location)
        _render(settings, spec, lora_dir, location, Path(scratch) / "renders")
    emit("done")


def _train(settings, spec: JobSpec, scratch: Path) -> tuple[Path, str]:
    from pipelines.photos import TrainingImage
    from pipelines.train import TrainProgress
    from pipelines.tuning import TuneRequest, train_on_images
    from storage.artifacts import ModelCard, open_store
    from storage.training_sets import load_training_set

    rows = load_training_set(spec.training_set, token=settings.hf_token)  # the crops the studio made, captioned
    images = [TrainingImage(image, caption, f"{i:02d}.png", "full") for i, (image, caption) in enumerate(rows)]
    request = TuneRequest(
        class_name=spec.class_name,
        branch=spec.branch,
        token=spec.token,
        steps=spec.steps,
        seed=spec.seed,
        model_type=spec.model_type,
    )

    def progress(update: TrainProgress) -> None:
        if update.phase == "training":
            emit("progress", step=update.step, total=update.total_steps, loss=update.loss, eta_s=update.eta_seconds)

    result = train_on_images(settings, images, request, scratch / "training", on_progress=progress)
    card = ModelCard.from_metadata(result.metadata, branch=spec.branch, base_model=spec.base_model, title=spec.title)
    location = open_store(settings).put(spec.artifact_name, result.output_dir, card)
    return result.output_dir, location


def _render(settings, spec: JobSpec, lora_dir: Path, location: str, folder: Path) -> None:
    from huggingface_hub import HfApi

    from pipelines.generate import GenerationRequest, Generator, LoraSpec
    from pipelines.prompt_spec import STORED_FIELDS

    generator = Generator(settings)
    results: dict[str, list[dict[str, Any]]] = {}
    for prompt in spec.prompts:
        options = {name: prompt[name] for name in STORED_FIELDS if name in prompt}
        lora = LoraSpec(f"tune-{spec.tune_id}", lora_dir, token=spec.token)
        request = GenerationRequest(**options, loras=(lora,)).candidates()  # the studio keeps the best_of best
        generated = generator.generate(spec.branch, request)
        images = []
        for index, item in enumerate(generated.images):
            name = f"{prompt['id']}/{index:02d}-{item.seed}.png"
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            item.image.save(folder / name)
            images.append({"file": f"{spec.renders}/{name}", "seed": item.seed, "width": item.image.width,
                           "height": item.image.height})  # fmt: skip
        results[str(prompt["id"])] = images
        emit("rendered", prompt_id=prompt["id"], images=len(images))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESULTS_NAME).write_text(json.dumps(results))
    repo_id = location.split("://", 1)[1]
    HfApi(token=settings.hf_token).upload_folder(
        repo_id=repo_id, folder_path=folder, path_in_repo=spec.renders, commit_message="Tune Studio: rendered prompts"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m studio.job", description="Train a tune, render its prompts.")
    parser.add_argument("--spec", required=True, help="the job as JSON (see JobSpec)")
    args = parser.parse_args(argv)
    try:
        run(JobSpec.from_json(args.spec))
    except Exception as error:  # the reason, for the studio to show; the trace is in the job's log
        import traceback

        traceback.print_exc()
        emit("failed", reason=f"{type(error).__name__}: {error}"[:500])
        sys.exit(1)


if __name__ == "__main__":
    main()
