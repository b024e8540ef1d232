"""How records look on screen: tables, status lines and galleries built from service records (no logic)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

import pandas as pd

from pipelines.errors import PhotoProblem, ValidationError
from pipelines.prompt_spec import FAMILY_SAMPLING
from pipelines.registry import BRANCHES
from pipelines.tuning import model_types
from storage.records import Image, Prompt, PromptStatus, Tune, TuneStatus
from studio.service import Studio
from ui.files import UIFiles

CLASSES = ("man", "woman", "boy", "girl", "couple", "cat", "dog")
NEWEST, MOST_ALIKE = "newest", "most alike"
SORT_ORDERS = (NEWEST, MOST_ALIKE)  # how the galleries can be sorted ("Sort by")
# branches a person can pick: trainable ones plus the mock
USER_BRANCHES = tuple(name for name, branch in BRANCHES.items() if branch.trainable or branch.is_mock)
CLASS_GUIDANCE = {
    "person": (
        "**Good photos** make a good tune: 10-20 photos of the same person, different days, clothes, backgrounds "
        "and angles; the face sharp and well lit; mostly head and shoulders, a few half-body. **Avoid** "
        "sunglasses, hats hiding the hair, other people, heavy filters and near-identical shots. JPEG, PNG or "
        "WebP, at least 256 px on the short side."
    ),
    "couple": (
        "**Couples**: photos of the two of you together, both faces visible and sharp in every photo, "
        "different places and outfits. Photos with only one of you confuse the model."
    ),
    "pet": (
        "**Pets**: 10-20 photos of the same animal, the whole head visible, eye level, sharp, different places "
        "and light. Avoid other animals in the frame."
    ),
}


def class_guidance(class_name: str | None) -> str:
    if class_name == "couple":
        return CLASS_GUIDANCE["couple"]
    return CLASS_GUIDANCE["pet" if class_name in ("cat", "dog") else "person"]


PIVOTAL_HELP = (
    "Trains by *pivotal tuning* unless you untick it in Advanced settings: new tokens `<s0><s1>` learnt in both "
    "text encoders, plus a LoRA; binds a face better than a plain LoRA."
)
MODEL_TYPE_HELP = (
    "Every tune gives a LoRA in the standard diffusers format; a pivotal tune also gives its tokens' embeddings "
    f"(`embeddings.safetensors`). FLUX prompts run with FLUX's own sampler ({FAMILY_SAMPLING['flux'].scheduler}) "
    f"and, unless they set `cfg_scale`, guidance {FAMILY_SAMPLING['flux'].cfg_scale:g}."
)


def branch_help() -> str:
    """The base models a person can pick, each with its description (and pivotal tuning where it trains)."""
    lines = []
    for name in USER_BRANCHES:
        branch = BRANCHES[name]
        extra = f" {PIVOTAL_HELP}" if "pti" in model_types(branch) else ""
        lines.append(f"- **{name}**: {branch.description}{extra}")
    return "\n".join(lines) + "\n\n" + MODEL_TYPE_HELP


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def tune_status(tune: Tune, *, ahead: int | None = None) -> str:
    """One line a person reads: the place in line while queued, step and ETA while training, expiry once trained.

    A queued tune gets no ETA: the one worker may be busy with other people's work for minutes.

    Args:
        tune: the tune.
        ahead: for a queued tune, the jobs the worker runs first (`Studio.jobs_ahead`); None when not known.
    """
    if tune.status == TuneStatus.QUEUED:
        if ahead == 0:
            return "queued: next for the worker"
        waiting = "queued: waiting for the worker"
        return waiting if ahead is None else f"{waiting} ({ahead} job{'' if ahead == 1 else 's'} ahead)"
    if tune.status == TuneStatus.TRAINING:
        steps = tune.steps or 0
        step = round(tune.progress * steps)
        if tune.eta_seconds is not None:
            return f"training: step {step}/{steps} ({tune.progress:.0%}), about {duration(tune.eta_seconds)} left"
        if step == 0:  # photo checks and the base model (built on this server's first run)
            return "training: preparing the photos and the base model"
        return f"training: step {step}/{steps} ({tune.progress:.0%}), estimating the time left"
    if tune.status == TuneStatus.TRAINED:
        return f"trained; LoRA kept until {(tune.expires_at or '-')[:10]}" + (
            " (auto-extends)" if tune.auto_extend else ""
        )
    if tune.status == TuneStatus.FAILED:
        return f"failed: {tune.error}"
    return tune.status


def progress_bar(tune: Tune, *, ahead: int | None = None) -> str:
    """An HTML progress bar for the watched tune (`ahead`: as for `tune_status`)."""
    percent = 100 if tune.status == TuneStatus.TRAINED else round(tune.progress * 100)
    colour = {TuneStatus.FAILED: "#ef4444", TuneStatus.CANCELLED: "#9ca3af", TuneStatus.TRAINED: "#22c55e"}.get(
        tune.status, "#6366f1"
    )
    return (
        f"<div class='tune-progress' data-status='{tune.status}'>"
        f"<div style='background:#e5e7eb;border-radius:6px;height:12px;overflow:hidden'>"
        f"<div style='width:{percent}%;background:{colour};height:12px'></div></div>"
        f"<p><b>{escape(tune.title)}</b> (#{tune.id}, {tune.name}, {tune.branch}): "
        f"{escape(tune_status(tune, ahead=ahead))}</p></div>"
    )


def loss_frame(tune: Tune | None) -> pd.DataFrame:
    """The tune's training loss by step (the mean of the steps since the previous point), for a line plot."""
    points = tune.loss_curve if tune is not None else []
    return pd.DataFrame([{"step": int(step), "loss": float(loss)} for step, loss in points], columns=["step", "loss"])


def tunes_table(tunes: Sequence[Tune]) -> pd.DataFrame:
    rows = [
        {
            "id": t.id,
            "title": t.title,
            "class": t.name,
            "branch": t.branch,
            "status": t.status,
            "progress": f"{(1.0 if t.status == TuneStatus.TRAINED else t.progress):.0%}",
            "ETA": duration(t.eta_seconds) if t.status == TuneStatus.TRAINING else "-",
            "created": t.created_at[:16].replace("T", " "),
        }
        for t in tunes
    ]
    return pd.DataFrame(rows, columns=["id", "title", "class", "branch", "status", "progress", "ETA", "created"])


def prompts_table(prompts: Sequence[Prompt]) -> pd.DataFrame:
    rows = [
        {
            "id": p.id,
            "tune": p.tune_id,
            "prompt": p.rendered_text,
            "status": p.status if p.status != PromptStatus.FAILED else f"failed: {p.error}",
            "images": len(p.images),
            "liked": sum(i.liked for i in p.images),
            "created": p.created_at[:16].replace("T", " "),
        }
        for p in prompts
    ]
    return pd.DataFrame(rows, columns=["id", "tune", "prompt", "status", "images", "liked", "created"])


PHOTO_REPORT_HEADERS = ["photo", "size", "faces", "likeness", "sharpness", "used", "advice"]
# the advice is the long column; the short ones stay wide enough that their headers never wrap
PHOTO_REPORT_WIDTHS = ["15%", "9%", "7%", "10%", "11%", "7%", "41%"]


def photo_report_table(reports: Sequence[dict[str, Any]], refused: Sequence[PhotoProblem] = ()) -> pd.DataFrame:
    """One row per upload in upload order: a checked photo's report (`PhotoReport.to_dict`), or a refused file
    marked in place with why. Empty, it still has the real headers."""
    rows = [(r["index"], _report_row(r)) for r in reports] + [(p.index, _refused_row(p)) for p in refused]
    return pd.DataFrame([row for _, row in sorted(rows, key=lambda item: item[0])], columns=PHOTO_REPORT_HEADERS)


def _report_row(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "photo": report["name"],
        "size": f"{report['width']}x{report['height']}",
        "faces": "-" if report["faces"] is None else str(report["faces"]),
        "likeness": likeness_text(report.get("likeness")),
        "sharpness": str(round(report["sharpness"])),
        "used": "yes" if report["usable"] else "no",
        "advice": "; ".join(w["message"] for w in report["warnings"]) or "looks good",
    }


def _refused_row(problem: PhotoProblem) -> dict[str, Any]:
    return {
        "photo": problem.name,
        "size": "-",
        "faces": "-",
        "likeness": "-",
        "sharpness": "-",
        "used": "no",
        "advice": f"refused: {problem.message}",
    }


def identity_note(identity_off: str | None) -> str:
    """The note under the photo report when identity checks are off (`CheckedPhotos.identity_off`, the reason);
    empty when they are on."""
    if not identity_off:
        return ""
    reason = identity_off[0].upper() + identity_off[1:]
    return (
        f"ⓘ {escape(reason, quote=False)}. Photos of someone else are not flagged, and avatars get no likeness score."
    )


def likeness_text(likeness: float | None) -> str:
    """A likeness (0-1, `pipelines.identity`) as shown, two decimals; blank when not known."""
    return "" if likeness is None else f"{likeness:.2f}"


def image_caption(image: Image) -> str:
    """`#12 · seed 42 · likeness 0.82 · ♥`: the seed regenerates the image; likeness and like when known."""
    parts = [f"#{image.id}", f"seed {image.seed}"]
    if image.likeness is not None:
        parts.append(f"likeness {likeness_text(image.likeness)}")
    if image.liked:
        parts.append("♥")
    if image.hidden or image.blocked:
        parts.append("off the showcase")
    return " · ".join(parts)


def ordered_images(prompts: Sequence[Prompt], order: str = NEWEST) -> list[Image]:
    """The prompts' images in gallery order: as the prompts list them (`newest`), or the most alike first
    (`most alike`; images without a likeness last, ties in their listed order).

    Raises:
        ValidationError: `order` is not one of `SORT_ORDERS`.
    """
    if order not in SORT_ORDERS:
        raise ValidationError("sort_by", order, f"must be one of {', '.join(SORT_ORDERS)}")
    images = [image for prompt in prompts for image in prompt.images]
    if order == MOST_ALIKE:
        images.sort(key=lambda image: (image.likeness is None, -(image.likeness or 0.0)))
    return images


def prompt_gallery(
    studio: Studio, files: UIFiles, owner: str, prompts: Sequence[Prompt], *, order: str = NEWEST
) -> list[tuple[str, str]]:
    """(image file, caption) for every image of the prompts in `order` (see `ordered_images`); captions carry the
    seed that regenerates it and its likeness. The owner alone may fetch the copies Gradio makes, while the images
    exist (`UIFiles.show`)."""
    return [
        (files.show(owner, studio.image_file(owner, image.id)), image_caption(image))
        for image in ordered_images(prompts, order)
    ]


def tune_gallery(
    studio: Studio, files: UIFiles, owner: str, tune_id: int, prompts: Sequence[Prompt], *, order: str = NEWEST
) -> list[tuple[str, str]]:
    """(image file, caption) for a tune's sample images (made right after training), then its avatars; sorted
    `most alike`, the avatars come first and the samples (no likeness) last. Each shown only to its owner."""
    samples = [
        (files.show(owner, path), f"sample {number}")
        for number, path in enumerate(studio.tune_samples(owner, tune_id), start=1)
    ]
    avatars = prompt_gallery(studio, files, owner, prompts, order=order)
    return avatars + samples if order == MOST_ALIKE else samples + avatars
