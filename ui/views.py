"""How records look on screen: tables, status lines and galleries built from service records (no logic)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

import pandas as pd

from pipelines.registry import BRANCHES
from storage.records import Prompt, Tune
from studio.service import Studio
from ui.files import UIFiles

CLASSES = ("man", "woman", "boy", "girl", "couple", "cat", "dog")
# branches a person can pick: trainable ones plus the mock; flux1 appears once it has a trainer
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


def branch_help() -> str:
    return "\n".join(f"- **{name}**: {BRANCHES[name].description}" for name in USER_BRANCHES)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def tune_status(tune: Tune) -> str:
    """One line a person reads: status, step and ETA while training, expiry once trained."""
    if tune.status == "training":
        steps = tune.steps or 0
        step = round(tune.progress * steps)
        return f"training: step {step}/{steps} ({tune.progress:.0%}), about {duration(tune.eta_seconds)} left"
    if tune.status == "trained":
        return f"trained; LoRA kept until {(tune.expires_at or '-')[:10]}" + (
            " (auto-extends)" if tune.auto_extend else ""
        )
    if tune.status == "failed":
        return f"failed: {tune.error}"
    return tune.status


def progress_bar(tune: Tune) -> str:
    """An HTML progress bar for the watched tune."""
    percent = 100 if tune.status == "trained" else round(tune.progress * 100)
    colour = {"failed": "#ef4444", "cancelled": "#9ca3af", "trained": "#22c55e"}.get(tune.status, "#6366f1")
    return (
        f"<div class='tune-progress' data-status='{tune.status}'>"
        f"<div style='background:#e5e7eb;border-radius:6px;height:12px;overflow:hidden'>"
        f"<div style='width:{percent}%;background:{colour};height:12px'></div></div>"
        f"<p><b>{escape(tune.title)}</b> (#{tune.id}, {tune.name}, {tune.branch}): "
        f"{escape(tune_status(tune))}</p></div>"
    )


def tunes_table(tunes: Sequence[Tune]) -> pd.DataFrame:
    rows = [
        {
            "id": t.id,
            "title": t.title,
            "class": t.name,
            "branch": t.branch,
            "status": t.status,
            "progress": f"{(1.0 if t.status == 'trained' else t.progress):.0%}",
            "ETA": duration(t.eta_seconds) if t.status == "training" else "-",
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
            "status": p.status if p.status != "failed" else f"failed: {p.error}",
            "images": len(p.images),
            "liked": sum(i.liked for i in p.images),
            "created": p.created_at[:16].replace("T", " "),
        }
        for p in prompts
    ]
    return pd.DataFrame(rows, columns=["id", "tune", "prompt", "status", "images", "liked", "created"])


def photo_report_table(reports: Sequence[dict[str, Any]]) -> pd.DataFrame:
    rows = [
        {
            "photo": r["name"],
            "size": f"{r['width']}x{r['height']}",
            "faces": "-" if r["faces"] is None else r["faces"],
            "sharpness": round(r["sharpness"]),
            "used": "yes" if r["usable"] else "no",
            "advice": "; ".join(w["message"] for w in r["warnings"]) or "looks good",
        }
        for r in reports
    ]
    return pd.DataFrame(rows, columns=["photo", "size", "faces", "sharpness", "used", "advice"])


def prompt_gallery(studio: Studio, files: UIFiles, owner: str, prompts: Sequence[Prompt]) -> list[tuple[str, str]]:
    """(image file, caption) for every image of the prompts; captions carry the seed that regenerates it.
    The owner alone may fetch the copies Gradio makes, while the images exist (`UIFiles.show`)."""
    return [
        (
            files.show(owner, studio.image_file(owner, image.id)),
            f"#{image.id} · seed {image.seed}" + (" · ♥" if image.liked else ""),
        )
        for prompt in prompts
        for image in prompt.images
    ]
