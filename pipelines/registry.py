"""Base-model registry: what each branch trains and generates with, and where its weights come from.

A branch is a product choice (`sd15`, `sdxl1`, `flux1`, the CPU demos `tiny` and `tiny-flux`, the mock
`fast`); its family is the architecture the code paths switch on. `resolve_model_dir` turns a branch into a
local diffusers folder: the settings override or the default Hub id, downloaded once into the Hub cache, or
a tiny model built from configs. `load_pipeline` loads one; nothing is loaded at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.device import Placement
from pipelines.errors import ModelUnavailableError, ValidationError
from pipelines.settings import Settings
from pipelines.tiny import TINY_RESOLUTION, build_tiny_flux, build_tiny_sd15

PIPELINE_CLASSES = {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline", "flux": "FluxPipeline"}
# models built here from configs, by reference: the builder and the folder name under `models_dir`
_BUILTIN_MODELS = {"builtin:tiny-sd15": build_tiny_sd15, "builtin:tiny-flux": build_tiny_flux}


@dataclass(frozen=True)
class Branch:
    """Defaults of one branch. `model` is a Hub id, or `builtin:` for models built from configs."""

    name: str
    family: str
    model: str
    token: str
    resolution: int
    steps: int
    learning_rate: float
    rank: int
    trainable: bool
    description: str
    # what a tune trains when the request names none: "lora", or "pti" (SDXL pivotal tuning, Astria's SDXL default)
    model_type: str = "lora"

    @property
    def is_mock(self) -> bool:
        return self.family == "mock"

    @property
    def is_builtin(self) -> bool:
        """Built here from configs (the CPU demo) or a mock: it runs on any server, no weights to fetch."""
        return self.is_mock or self.model.startswith("builtin:")


BRANCHES: dict[str, Branch] = {
    branch.name: branch
    for branch in (
        Branch(
            name="sd15",
            family="sd15",
            model="stable-diffusion-v1-5/stable-diffusion-v1-5",
            token="sks",
            resolution=512,
            steps=800,
            learning_rate=1e-4,
            rank=16,
            trainable=True,
            description="Stable Diffusion 1.5, 512 px. Fast, modest GPUs (8 GB).",
        ),
        Branch(
            name="sdxl1",
            family="sdxl",
            model="stabilityai/stable-diffusion-xl-base-1.0",
            token="ohwx",
            resolution=1024,
            steps=1000,
            learning_rate=1e-4,
            rank=32,
            trainable=True,
            description="Stable Diffusion XL 1.0, 1024 px. Best quality among the UNet models (16-24 GB GPU).",
            model_type="pti",
        ),
        Branch(
            name="flux1",
            family="flux",
            model="black-forest-labs/FLUX.1-dev",
            token="ohwx",
            resolution=1024,
            # diffusers' FLUX DreamBooth LoRA recipe: AdamW at 1e-4, rank 16, 1000 steps at 1024 px
            steps=1000,
            learning_rate=1e-4,
            rank=16,
            trainable=True,
            description=(
                "FLUX.1 [dev], 1024 px. Best likeness; needs a large GPU (its transformer alone is 24 GB in bf16) "
                "and an HF token (gated)."
            ),
        ),
        Branch(
            name="tiny",
            family="sd15",
            model="builtin:tiny-sd15",
            token="sks",
            resolution=TINY_RESOLUTION,
            steps=100,
            learning_rate=1e-2,  # a random model: the high rate makes learning visible in 100 CPU steps
            rank=8,
            trainable=True,
            description="CPU demo: an SD-1.5-shaped random model built locally. Trains in seconds; images are noise.",
        ),
        Branch(
            name="tiny-flux",
            family="flux",
            model="builtin:tiny-flux",
            token="ohwx",
            resolution=TINY_RESOLUTION,
            steps=100,
            learning_rate=1e-2,  # as `tiny`: a random model, so a high rate shows learning in 100 CPU steps
            rank=8,
            trainable=True,
            description="CPU demo: a FLUX.1-shaped random model built locally. Trains in seconds; images are noise.",
        ),
        Branch(
            name="fast",
            family="mock",
            model="builtin:none",
            token="sks",
            resolution=512,
            steps=1,
            learning_rate=0.0,
            rank=0,
            trainable=False,
            description="Mock for client integration: no training, placeholder images, same lifecycle and callbacks.",
        ),
    )
}


def get_branch(name: str) -> Branch:
    """Look up a branch by name.

    Raises:
        ValidationError: unknown branch; the message lists the known ones.
    """
    try:
        return BRANCHES[name]
    except KeyError:
        raise ValidationError("branch", name, f"is not a known branch; choose one of {', '.join(BRANCHES)}") from None


def model_reference(settings: Settings, branch: Branch) -> str:
    """The model id or path a branch uses: the `TUNES_BASE_MODEL_*` setting if set, else the default."""
    return settings.base_model_override(branch.name) or branch.model


def resolve_model_dir(settings: Settings, branch: Branch) -> Path:
    """A local diffusers folder with the branch's base model, building or downloading it if needed.

    Raises:
        ValidationError: the branch is the mock, which has no model.
        ModelUnavailableError: the weights are neither local nor downloadable; says how to provide them.
    """
    if branch.is_mock:
        raise ValidationError("branch", branch.name, "is the mock branch and has no model weights")
    reference = model_reference(settings, branch)
    if reference in _BUILTIN_MODELS:
        return _BUILTIN_MODELS[reference](settings.models_dir / reference.removeprefix("builtin:"))
    path = Path(reference).expanduser()
    if path.exists():
        if not (path / "model_index.json").exists():
            raise ModelUnavailableError(
                f"Base model folder for branch '{branch.name}' ({path}) has no model_index.json; "
                f"point {_setting_name(branch)} at a diffusers pipeline folder (the one save_pretrained writes)."
            )
        return path
    return _download(settings, branch, reference)


def _setting_name(branch: Branch) -> str:
    return f"TUNES_BASE_MODEL_{branch.name.upper()}"


def _download(settings: Settings, branch: Branch, repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    how = (
        f"Set {_setting_name(branch)} to a local diffusers folder, or make the Hub reachable "
        "(unset HF_HUB_OFFLINE, and set HF_TOKEN for gated models such as FLUX.1 [dev])."
    )
    try:
        folder = snapshot_download(
            repo_id,
            token=settings.hf_token,
            # component folders only: the root of SD-1.5 also holds multi-GB single-file checkpoints
            allow_patterns=["model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors"],
            ignore_patterns=["*.fp16.safetensors", "*non_ema*", "safety_checker/*"],  # loaded without it
        )
    except GatedRepoError:
        raise ModelUnavailableError(
            f"Base model '{repo_id}' for branch '{branch.name}' is gated: accept its licence on the Hub and set "
            f"HF_TOKEN to a token of that account. Or: {how}"
        ) from None
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, OSError) as e:
        raise ModelUnavailableError(
            f"Base model '{repo_id}' for branch '{branch.name}' is not available ({type(e).__name__}). {how}"
        ) from None
    return Path(folder)


def load_pipeline(model_dir: Path, family: str, placement: Placement) -> Any:
    """Load a diffusers pipeline of the family from a local folder, weights in `placement.dtype`.

    Raises:
        ValidationError: the family has no pipeline here (the mock has none).
    """
    import diffusers

    if family not in PIPELINE_CLASSES:
        raise ValidationError("family", family, f"cannot be loaded; supported: {', '.join(PIPELINE_CLASSES)}")
    pipeline_class = getattr(diffusers, PIPELINE_CLASSES[family])
    kwargs: dict[str, Any] = {"dtype": placement.dtype}
    if family == "sd15":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipe = pipeline_class.from_pretrained(model_dir, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(placement.device)
