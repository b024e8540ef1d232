"""Records as Astria-shaped JSON: the familiar field names, absolute URLs served (and access-checked) here."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from packs.loader import Pack
from rest.security import UrlSigner
from storage.records import Image, Prompt, Tune, TuneStatus, iso, utc_now


class Shapes:
    """Builds response bodies for one request: `base` is the server's public root (scheme, host, prefix)."""

    def __init__(self, base: str, signer: UrlSigner, key_id: int):
        self.base = base.rstrip("/")
        self.signer = signer
        self.key_id = key_id  # the caller's API key: its links end when it is revoked

    def tune(self, tune: Tune) -> dict[str, Any]:
        extra = tune.api_fields
        ckpt = self._link(f"/tunes/{tune.id}/ckpt", tune.owner) if tune.artifact_location else None
        eta = None
        if tune.status == TuneStatus.TRAINING and tune.eta_seconds is not None:
            eta = iso(utc_now() + timedelta(seconds=tune.eta_seconds))
        return {
            "id": tune.id,
            "title": tune.title,
            "name": tune.name,
            "token": tune.token,
            "branch": tune.branch,
            "model_type": tune.model_type,
            "base_tune_id": extra.get("base_tune_id"),
            "preset": extra.get("preset"),
            "training_face_correct": extra.get("training_face_correct", False),
            "steps": tune.steps,
            "face_crop": tune.face_crop,
            "characteristics": tune.characteristics,
            "auto_extend": tune.auto_extend,
            "callback": tune.callback,
            "status": tune.status,
            "progress": tune.progress,
            "error": tune.error,
            "eta": eta,
            "trained_at": tune.trained_at,
            "started_training_at": tune.started_training_at,
            "expires_at": tune.expires_at,
            "created_at": tune.created_at,
            "updated_at": tune.updated_at,
            "url": f"{self.base}/tunes/{tune.id}",
            "orig_images": list(tune.orig_images),
            "ckpt_url": ckpt,
            "ckpt_urls": [ckpt] if ckpt else [],
            "visibility": tune.visibility,
        }

    def image(self, image: Image) -> dict[str, Any]:
        """One image's details (`ImageOut`), its link signed for the caller."""
        return {
            "id": image.id,
            "url": self._link(f"/images/{image.id}", image.owner),
            "seed": image.seed,
            "width": image.width,
            "height": image.height,
            "liked": image.liked,
            "hidden": image.hidden,
            "likeness": image.likeness,
        }

    def prompt(self, prompt: Prompt) -> dict[str, Any]:
        # Astria's `images` are bare links; `image_details` (ours) says more about each, in the same order
        details = [self.image(image) for image in prompt.images]
        images = [detail["url"] for detail in details]
        return {
            "id": prompt.id,
            "tune_id": prompt.tune_id,
            "text": prompt.text,
            "rendered_text": prompt.rendered_text,
            "negative_prompt": prompt.negative_prompt,
            "num_images": prompt.num_images,
            "seed": prompt.seed,
            "w": prompt.w,
            "h": prompt.h,
            "steps": prompt.steps,
            "cfg_scale": prompt.cfg_scale,
            "scheduler": prompt.scheduler,
            "super_resolution": prompt.super_resolution,
            "inpaint_faces": prompt.inpaint_faces,
            "hires_fix": prompt.hires_fix,
            "best_of": prompt.best_of,
            "callback": prompt.callback,
            "status": prompt.status,
            "error": prompt.error,
            "liked": any(image.liked for image in prompt.images),
            "created_at": prompt.created_at,
            "updated_at": prompt.updated_at,
            "started_training_at": prompt.started_at,
            "trained_at": prompt.completed_at,
            "url": f"{self.base}/tunes/{prompt.tune_id}/prompts/{prompt.id}",
            "images": images,
            "image_details": details,
        }

    def _link(self, path: str, owner: str) -> str:
        return self.signer.sign(self.base, path, owner, self.key_id)

    @staticmethod
    def pack(pack: Pack) -> dict[str, Any]:
        data = pack.to_dict()
        data["slug"] = pack.id
        data["costs"] = {name: {"images": count} for name, count in data["images_per_class"].items()}
        return data
