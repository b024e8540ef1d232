"""The use cases of Tune Studio: the only thing the UI, the Gradio API and the REST API call.

Every use case takes the owner first and sees only that owner's records. Work (training, generation)
is queued in the database and done by a worker (`studio.worker`); this module never runs a model.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from packs.loader import LIBRARY_DIR, Pack
from pipelines.errors import ValidationError
from pipelines.identity import forget_recent_faces
from pipelines.photos import PhotoInput
from pipelines.prompt_spec import FAMILY_SAMPLING, STORED_FIELDS, option_values, sampling_for
from pipelines.prompts import LoraTag, check_characteristics, render_prompt, split_lora_tags
from pipelines.registry import BRANCHES, Branch, get_branch, model_reference
from pipelines.settings import Settings
from pipelines.train import LORA_WEIGHTS_NAME
from pipelines.tuning import CheckedPhotos, TuneRequest, check_model_type, check_photos, preview_photos
from storage.artifacts import HUB_SCHEME, SAMPLE_SUFFIXES, SAMPLES_DIR
from storage.db import Database
from storage.hub_packs import open_pack_mirror
from storage.net import check_url, fetch_url
from storage.records import (
    TUNE_ACTIVE,
    TUNE_USABLE,
    Image,
    Prompt,
    Tune,
    TuneStatus,
    Visibility,
    new_publication,
    utc_now,
)
from studio import queue
from studio.errors import (
    ApiKeyLimitError,
    ConflictError,
    InsufficientCreditsError,
    NotFoundError,
    RateLimitedError,
)
from studio.limits import RateLimiter
from studio.packs import PackEditor, PackLibrary
from studio.requests import PromptCreate, TuneCreate, check_id, check_page, check_visibility
from studio.showcase import Showcase

Clock = Callable[[], datetime]
MAX_STYLES = 8  # styles picked at tune creation


@dataclass(frozen=True)
class TuneCreated:
    """The tune, and whether this call created it (False: an existing tune with the same title)."""

    tune: Tune
    created: bool


class Studio:
    """The service. One per process; thread-safe.

    Args:
        settings: limits, data folder, branch defaults.
        db: the records.
        store: the artifact store holding trained LoRAs (deleted with their tune).
        packs: the pack library (default: the shipped packs plus the team's in the data folder).
        clock: "now" (tests inject a fake clock to drive expiry).
        rate_limiter: the per-user API rate limit (default: `settings.api_rate_per_minute`; tests pass a fake clock).
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        store: Any = None,
        packs: PackLibrary | None = None,
        clock: Clock = utc_now,
        rate_limiter: RateLimiter | None = None,
    ):
        self.settings = settings
        self.db = db
        self.store = store
        self.packs = packs or PackLibrary(LIBRARY_DIR, settings.data_dir / "packs")
        self.pack_editor = PackEditor(
            self.packs, settings.data_dir / "packs", clock=clock, mirror=open_pack_mirror(settings)
        )
        self.clock = clock
        self.showcase = Showcase(db, settings.data_dir)  # public avatars, read by anyone
        self.rate_limiter = rate_limiter or RateLimiter(settings.api_rate_per_minute)
        self.work_available = threading.Event()  # set when something is queued; the worker waits on it

    # -- paths -----------------------------------------------------------------------------------

    def photos_dir(self, tune_id: int) -> Path:
        return self.settings.data_dir / "photos" / str(tune_id)

    def training_dir(self, tune_id: int) -> Path:
        return self.settings.data_dir / "training" / str(tune_id)

    def images_dir(self, prompt_id: int) -> Path:
        return self.settings.data_dir / "images" / str(prompt_id)

    # -- tunes -----------------------------------------------------------------------------------

    def create_tune(self, owner: str, request: TuneCreate) -> TuneCreated:
        """Check everything, then store the tune, its photos and prompts, and queue the training.

        Idempotent by title per owner: a second call with the same title returns the first tune.
        Prompts without a callback of their own get `request.prompt_callback`.

        Raises:
            ValidationError / PhotoRejectedError: bad fields or photos, or fewer usable photos than
                `settings.min_photos` (each photo left out is named, with why; nothing is written).
            NotFoundError: a prompt's `<lora:ID>` tag names no tune of the caller (nothing is written).
            ConflictError: a tagged tune failed, was cancelled or expired (nothing is written).
            InsufficientCreditsError: not enough tune or image credits (nothing is written).
        """
        # 1. Idempotency: the same title returns the existing tune, no second training
        existing = self.db.tune_by_title(owner, request.title)
        if existing is not None:
            return TuneCreated(existing, created=False)
        # 2. Check the request: branch, class, token, steps, URLs, prompts
        branch = get_branch(request.branch or self.settings.default_branch)
        tune_request = self._tune_request(request, branch.name)
        token = tune_request.resolved_token if not branch.is_mock else (request.token or branch.token)
        model_type = check_model_type(branch, request.model_type)  # the mock's own: its twin may train others
        callbacks = {name: self._checked_url(getattr(request, name), name) for name in ("callback", "prompts_callback")}
        prompts = (*request.prompts, *self.style_prompts(request.styles, branch.name))
        prompts = _with_default_callback(prompts, self._checked_url(request.prompt_callback, "prompt_callback"))
        prompts = [_with_sampling(p, branch, f"prompts_attributes[{i}].scheduler") for i, p in enumerate(prompts)]
        for index, prompt in enumerate(prompts):
            self._checked_url(prompt.callback, f"prompts_attributes[{index}].callback")
        _require_contents(request.images)
        rendered = [
            self._render(p, token, tune_request.class_name, request.characteristics, field=f"prompts_attributes[{i}].")
            for i, p in enumerate(prompts)
        ]
        loras = [
            self._check_loras(owner, tags, tune_id=None, branch=branch.name, field=f"prompts_attributes[{i}].text")
            for i, (_, _, tags) in enumerate(rendered)
        ]
        # 3. Photos: fetch URLs, decode and check every photo
        inputs = list(request.images) + [self._fetch_photo(url, i) for i, url in enumerate(request.image_urls)]
        checked = check_photos(self.settings, inputs, class_name=tune_request.class_name)
        checked.require_usable(self.settings.min_photos)  # near-duplicates and blurry photos do not count
        # 4. Write: credits, the tune row, its photos and prompts in one transaction
        values = {
            "title": request.title,
            "name": tune_request.class_name,
            "token": token,
            "branch": branch.name,
            "base_model": "mock" if branch.is_mock else model_reference(self.settings, branch),
            "model_type": model_type,
            "steps": request.steps if request.steps is not None else (None if branch.is_mock else branch.steps),
            "face_crop": int(request.face_crop),
            "characteristics": dict(request.characteristics),
            "auto_extend": int(request.auto_extend),
            "seed": request.seed,
            "photo_report": [report.to_dict() for report in checked.reports],
            "orig_images": [photo.name for photo in checked.photos],
            "api_fields": request.api_fields,
            "visibility": request.visibility,
            "publication": new_publication() if request.visibility == Visibility.PUBLIC else None,
            **callbacks,
        }
        images = sum(p.images_rendered for p in prompts)
        tune_id = None
        try:
            with self.db.transaction() as conn:
                again = self.db.find_tune_by_title(conn, owner, request.title)
                if again is not None:  # a concurrent call with the same title won the race
                    return TuneCreated(again, created=False)
                if not self.db.spend_credits(conn, owner, tunes=1, images=images):
                    raise InsufficientCreditsError(self._credit_message(owner, tunes=1, images=images))
                tune_id = self.db.insert_tune(conn, owner, values)
                for (prompt, text, _), tags in zip(rendered, loras, strict=True):
                    self.db.insert_prompt(conn, owner, self._prompt_values(tune_id, prompt, text, tags))
                self._store_photos(tune_id, checked.photos)  # last: only the commit comes after it
        except sqlite3.Error:
            if tune_id is not None:  # the commit failed (disk full, lock): the id was never a tune's
                shutil.rmtree(self.photos_dir(tune_id), ignore_errors=True)
            raise
        self.work_available.set()
        return TuneCreated(self.get_tune(owner, tune_id), created=True)

    def check_photos(
        self, photos: Sequence[tuple[str, bytes]], class_name: str, *, preview: bool = False
    ) -> CheckedPhotos:
        """The quality report a tune would get, before anything is written or trained (nothing is stored).

        Args:
            photos: uploads as (file name, contents).
            class_name: the subject's class (decides the face check).
            preview: for a report shown while the user is still choosing: files that are not usable photos are
                listed in `refused` rather than raised, and fewer photos than the minimum are fine.

        Raises:
            ValidationError: a bad class or the wrong number of photos. PhotoRejectedError: unusable files (not
            with `preview`).
        """
        class_name = _named_as_sent(lambda: TuneRequest(class_name=class_name, branch="tiny")).class_name
        _require_contents(photos)
        check = preview_photos if preview else check_photos
        return check(self.settings, list(photos), class_name=class_name)

    def tune_samples(self, owner: str, tune_id: int) -> list[Path]:
        """The sample images stored with a trained tune's LoRA (its model card's), for showing it.

        Only a LoRA stored on this server's disk is looked into: showing a tune never downloads from the Hub.

        Raises:
            NotFoundError: no such tune of the caller.
        """
        location = self.get_tune(owner, tune_id).artifact_location
        if not location or location.startswith(HUB_SCHEME):
            return []
        folder = Path(location) / SAMPLES_DIR
        return sorted(path for path in folder.glob("*") if path.suffix.lower() in SAMPLE_SUFFIXES and path.is_file())

    def get_tune(self, owner: str, tune_id: int) -> Tune:
        """Raises NotFoundError when the tune does not exist or belongs to someone else."""
        tune = self.db.get_tune(owner, tune_id)
        if tune is None:
            raise NotFoundError("tune", tune_id)
        return tune

    def jobs_ahead(self, owner: str, tune_id: int) -> int | None:
        """How many jobs the one worker runs before this tune starts training (0: it is next), or None once it
        is no longer queued. While other work runs a queued tune has no honest ETA, only its place in line.

        Raises:
            NotFoundError: no such tune of the caller.
        """
        if self.get_tune(owner, tune_id).status != TuneStatus.QUEUED:
            return None
        return queue.jobs_ahead_of_tune(self.db, tune_id)

    def list_tunes(self, owner: str, *, limit: int = 20, offset: int = 0) -> list[Tune]:
        """The caller's tunes, newest first."""
        check_page(limit, offset)
        return self.db.list_tunes(owner, limit=limit, offset=offset)

    def cancel_tune(self, owner: str, tune_id: int) -> Tune:
        """Stop a queued or training tune; its queued prompts fail, callbacks are sent, photos deleted."""
        tune = self.get_tune(owner, tune_id)
        cancelled = queue.end_tune(
            self.db,
            owner,
            tune_id,
            TuneStatus.CANCELLED,
            from_statuses=TUNE_ACTIVE,
            error="cancelled by the user",
            eta_seconds=None,
        )
        if not cancelled:
            current = self.get_tune(owner, tune_id)
            raise ConflictError(f"tune {tune_id} is {current.status}; only queued or training tunes can be cancelled")
        if tune.status == TuneStatus.QUEUED:  # a training one is cleaned up by the worker when it stops
            shutil.rmtree(self.photos_dir(tune_id), ignore_errors=True)
        return self.get_tune(owner, tune_id)

    def delete_tune(self, owner: str, tune_id: int, *, delete_images: bool = False) -> None:
        """Delete a tune, its photos and its LoRA (local folder or Hub repo); images stay unless asked.

        Raises:
            NotFoundError: no such tune of the caller. ArtifactError: the LoRA could not be deleted (the
            tune is kept, so the deletion can be retried).
        """
        tune = self.get_tune(owner, tune_id)
        if tune.status in TUNE_ACTIVE:
            self.cancel_tune(owner, tune_id)
        if tune.artifact_location and self.store is not None:
            self.store.delete(tune.artifact_location)
        prompts = self.db.list_prompts(owner, tune_id=tune_id, limit=10_000, offset=0)
        self.db.delete_tune(owner, tune_id, with_images=delete_images)
        shutil.rmtree(self.photos_dir(tune_id), ignore_errors=True)
        shutil.rmtree(self.training_dir(tune_id), ignore_errors=True)
        forget_recent_faces()  # its photos' embeddings, if this process checked them lately
        if delete_images:
            for prompt in prompts:
                shutil.rmtree(self.images_dir(prompt.id), ignore_errors=True)

    # -- prompts ---------------------------------------------------------------------------------

    def create_prompt(self, owner: str, tune_id: int, request: PromptCreate) -> Prompt:
        """Queue a prompt on a trained tune (or one still queued/training: it runs right after).

        `<lora:ID:weight>` tags in the text add the caller's tune ID (same branch) at that weight; a tag
        naming this tune sets its own weight (1 otherwise). The prompt runs once every named tune is trained.

        Raises:
            NotFoundError: no such tune of the caller (this one or one a tag names).
            ConflictError: the tune, or a tagged one, failed, was cancelled or expired.
            ValidationError: an unknown placeholder, bad numbers, or a tag naming a tune of another branch.
            InsufficientCreditsError: no image credits.
        """
        [prompt_id] = self._queue_prompts(owner, self.get_tune(owner, tune_id), [request])
        return self.get_prompt(owner, prompt_id)

    def _queue_prompts(self, owner: str, tune: Tune, requests: list[PromptCreate]) -> list[int]:
        """Render, check tags and credits for all, and insert all prompts in one transaction (all or nothing)."""
        if tune.status not in TUNE_USABLE:
            raise ConflictError(f"tune {tune.id} is {tune.status}; prompts need a trained (or training) tune")
        branch = get_branch(tune.branch)
        requests = [
            _with_sampling(r.sized_for(branch.resolution), branch, _indexed("scheduler", i, requests))
            for i, r in enumerate(requests)
        ]
        rendered = [self._render(request, tune.token, tune.name, tune.characteristics) for request in requests]
        loras = [
            self._check_loras(owner, tags, tune_id=tune.id, branch=tune.branch, field=_indexed("text", i, requests))
            for i, (_, _, tags) in enumerate(rendered)
        ]
        for index, request in enumerate(requests):
            self._checked_url(request.callback, _indexed("callback", index, requests))
        images = sum(request.images_rendered for request in requests)
        with self.db.transaction() as conn:
            current = self.db.find_tune(conn, owner, tune.id)
            if current is None or current.status not in TUNE_USABLE:
                raise ConflictError(f"tune {tune.id} changed to {current.status if current else 'deleted'}")
            if not self.db.spend_credits(conn, owner, images=images):
                raise InsufficientCreditsError(self._credit_message(owner, tunes=0, images=images))
            ids = [
                self.db.insert_prompt(conn, owner, self._prompt_values(tune.id, request, text, tags))
                for (request, text, _), tags in zip(rendered, loras, strict=True)
            ]
        self.work_available.set()
        return ids

    def get_prompt(self, owner: str, prompt_id: int, *, tune_id: int | None = None) -> Prompt:
        prompt = self.db.get_prompt(owner, prompt_id)
        if prompt is None or (tune_id is not None and prompt.tune_id != tune_id):
            raise NotFoundError("prompt", prompt_id)
        return prompt

    def list_prompts(self, owner: str, *, tune_id: int | None = None, limit: int = 20, offset: int = 0) -> list[Prompt]:
        check_page(limit, offset)
        if tune_id is not None:
            self.get_tune(owner, tune_id)
        return self.db.list_prompts(owner, tune_id=tune_id, limit=limit, offset=offset)

    def delete_prompt(self, owner: str, prompt_id: int, *, tune_id: int | None = None) -> None:
        """Delete a prompt and its image files."""
        prompt = self.get_prompt(owner, prompt_id, tune_id=tune_id)
        self.db.delete_prompt(owner, prompt.id)
        shutil.rmtree(self.images_dir(prompt.id), ignore_errors=True)

    def like_image(self, owner: str, image_id: int) -> Image:
        return self._set_liked(owner, image_id, True)

    def unlike_image(self, owner: str, image_id: int) -> Image:
        return self._set_liked(owner, image_id, False)

    def set_visibility(self, owner: str, tune_id: int, visibility: str) -> Tune:
        """Make one of the caller's tunes public (its avatars go on the showcase) or private (they leave it, and
        every public link to them stops working at once; making it public again does not revive old links).

        Raises:
            ValidationError: `visibility` is not private or public. NotFoundError: no such tune of the caller.
        """
        visibility = check_visibility(visibility)
        if not self.db.set_tune_visibility(owner, tune_id, visibility):
            raise NotFoundError("tune", tune_id)
        return self.get_tune(owner, tune_id)

    def hide_image(self, owner: str, image_id: int, *, hidden: bool = True) -> Image:
        """Keep one of the caller's avatars off the showcase (or show it again) while its tune is public.

        Raises:
            ValidationError: `hidden` is not true or false. NotFoundError: no such image of the caller.
        """
        if not isinstance(hidden, bool):
            raise ValidationError("hidden", hidden, "must be true or false")
        if not self.db.set_image_hidden(owner, image_id, hidden):
            raise NotFoundError("image", image_id)
        return self.db.get_image(owner, image_id)

    def like_prompt(self, owner: str, prompt_id: int, *, liked: bool = True) -> Prompt:
        """Like (or unlike) every image of one of the caller's prompts. Raises NotFoundError otherwise."""
        prompt = self.get_prompt(owner, prompt_id)
        for image in prompt.images:
            self._set_liked(owner, image.id, liked)
        return self.get_prompt(owner, prompt_id)

    def image_file(self, owner: str, image_id: int) -> Path:
        """The file of one of the caller's images (for serving it)."""
        image = self.db.get_image(owner, image_id)
        if image is None or not Path(image.path).exists():
            raise NotFoundError("image", image_id)
        return Path(image.path)

    def lora_file(self, owner: str, tune_id: int) -> Path:
        """The weights file of one of the caller's tunes (for serving it), fetched from the store when needed.

        Raises:
            NotFoundError: no such tune of the caller, or it has no LoRA (not trained yet, failed, expired or
                the mock branch).
            ArtifactError: the store could not fetch it (`missing=True` when it is gone).
        """
        tune = self.get_tune(owner, tune_id)
        if not tune.artifact_location or self.store is None:
            raise NotFoundError("LoRA of tune", tune_id)
        return self.store.fetch(tune.artifact_location) / LORA_WEIGHTS_NAME

    def expires_at(self, trained_at: datetime) -> datetime:
        return trained_at + timedelta(days=self.settings.retention_days)

    # -- packs -------------------------------------------------------------------------------------

    def list_packs(self, class_name: str | None = None) -> list[Pack]:
        """Published packs by title, optionally only those that support `class_name`."""
        return self.packs.list(class_name)

    def get_pack(self, pack_id: str) -> Pack:
        """Raises NotFoundError for an unknown or unpublished pack."""
        return self.packs.get(pack_id)

    def create_tune_from_pack(
        self, owner: str, pack_id: str, request: TuneCreate | None, *, tune_ids: Sequence[int] = ()
    ) -> list[TuneCreated]:
        """Train a tune with the pack's preset and queue every pack prompt of its class; `prompts_callback`
        fires when all are done, and each prompt gets `request.prompt_callback`. With `tune_ids`, reuse those
        trained tunes of the caller instead (no training; `request` may be None).

        Raises:
            NotFoundError: unknown pack, or a tune id that is not the caller's.
            ValidationError: the pack does not support the class (`name`); bad fields or photos.
            ConflictError: a reused tune failed, expired or was cancelled.
        """
        pack = self.get_pack(pack_id)
        if tune_ids:
            if isinstance(tune_ids, str) or not isinstance(tune_ids, Sequence):
                raise ValidationError("tune_ids", tune_ids, "must be a list of your tune ids")
            ids = [check_id(tune_id, f"tune_ids[{i}]") for i, tune_id in enumerate(tune_ids)]
            tunes = [self.get_tune(owner, tune_id) for tune_id in ids]  # all checked before queuing any
            for tune in tunes:
                self._check_pack_class(pack, tune.name, field=f"tune_ids[{tune_ids.index(tune.id)}]")
                if tune.status not in TUNE_USABLE:
                    raise ConflictError(f"tune {tune.id} is {tune.status}; it cannot take pack prompts")
            callback = self._checked_url(request.prompt_callback if request else None, "prompt_callback")
            for tune in tunes:
                prompts = _with_default_callback(self._pack_prompts(pack, tune.name, tune.branch), callback)
                self._queue_prompts(owner, tune, prompts)
            return [TuneCreated(self.get_tune(owner, tune.id), created=False) for tune in tunes]
        class_name = request.name.strip().lower() if isinstance(request.name, str) else request.name
        self._check_pack_class(pack, class_name, field="name")
        branch = get_branch(request.branch or self._pack_branch(pack))
        from_pack = replace(
            request,
            branch=branch.name,
            steps=request.steps if request.steps is not None else pack.preset_steps,
            face_crop=pack.preset_face_crop,
            prompts=self._pack_prompts(pack, class_name, branch.name),
        )
        return [self.create_tune(owner, from_pack)]

    def _pack_branch(self, pack: Pack) -> str:
        """The branch a pack tune trains on when the request names none: the pack's, unless this server runs a
        CPU demo or the mock by default (`TUNES_DEFAULT_BRANCH`), which cannot fetch or run the pack's model: then
        the server's, or its demo twin of the pack's architecture (a `flux1` pack on a `tiny` server: `tiny-flux`)."""
        server = get_branch(self.settings.default_branch)
        if not server.is_builtin:
            return pack.default_branch
        family = get_branch(pack.default_branch).family
        if server.is_mock or server.family == family:
            return server.name
        twins = [b.name for b in BRANCHES.values() if b.is_builtin and b.trainable and b.family == family]
        return twins[0] if twins else server.name

    def preview_pack_prompt(
        self,
        pack_id: str,
        class_name: str,
        index: int,
        *,
        characteristics: dict[str, str] | None = None,
        owner: str | None = None,
        tune_id: int | None = None,
    ) -> tuple[str, Prompt | None]:
        """Render one pack prompt with sample characteristics (token `ohwx`), and with `owner`/`tune_id`
        also queue it on that trained tune so the team sees real images. Unpublished packs included.

        Returns:
            (rendered text, the queued prompt or None).
        """
        pack = self.packs.get(pack_id, include_unpublished=True)
        self._check_pack_class(pack, class_name, field="class_name")
        items = pack.prompts[class_name]
        if not isinstance(index, int) or not 0 <= index < len(items):
            raise ValidationError("index", index, f"must be between 0 and {len(items) - 1}")
        samples = check_characteristics(characteristics or {"eye_color": "green eyes", "hair": "short brown hair"})
        text = render_prompt(items[index].text, token="ohwx", class_name=class_name, characteristics=samples)
        if owner is None or tune_id is None:
            return text, None
        tune = self.get_tune(owner, tune_id)
        self._check_pack_class(pack, tune.name, field="tune_id")
        [request] = [p for i, p in enumerate(self._pack_prompts(pack, class_name, tune.branch)) if i == index]
        [prompt_id] = self._queue_prompts(owner, tune, [request])
        return text, self.get_prompt(owner, prompt_id)

    def list_styles(self, class_name: str) -> list[tuple[str, str]]:
        """Every published pack prompt for a class as (label, style key "pack_id/class/index"), for style pickers."""
        styles = []
        for pack in self.list_packs(class_name):
            for index, item in enumerate(pack.prompts[class_name]):
                styles.append((f"{pack.title}: {item.text[:70]}", f"{pack.id}/{class_name}/{index}"))
        return styles

    def style_prompts(self, styles: Sequence[str], branch: str) -> list[PromptCreate]:
        """The prompts for chosen styles (keys from `list_styles`), sized for `branch`.

        Raises:
            ValidationError: more than 8 styles, or a key that names no published pack prompt.
        """
        if isinstance(styles, str) or not isinstance(styles, Sequence):
            raise ValidationError("styles", styles, 'must be a list of style keys, e.g. ["fantasy/woman/0"]')
        if len(styles) > MAX_STYLES:
            raise ValidationError("styles", len(styles), f"must be at most {MAX_STYLES} styles")
        prompts = []
        for position, key in enumerate(styles):
            pack_id, _, rest = str(key).partition("/")
            class_name, _, index = rest.partition("/")
            try:
                pack = self.get_pack(pack_id)
                prompts.append(self._pack_prompts(pack, class_name, get_branch(branch).name)[int(index)])
            except (NotFoundError, KeyError, ValueError, IndexError):
                raise ValidationError(f"styles[{position}]", key, "is not a style of a published pack") from None
        return prompts

    def pack_stats(self, pack_id: str) -> list[dict[str, Any]]:
        """Per pack prompt: its text, images generated and likes (all users), for the creative team."""
        pack = self.packs.get(pack_id, include_unpublished=True)
        counts = self.db.pack_likes(pack_id)
        rows = []
        for class_name, prompts in pack.prompts.items():
            for index, prompt in enumerate(prompts):
                key = f"{class_name}/{index}"
                rows.append({"prompt": key, "text": prompt.text, **counts.get(key, {"images": 0, "likes": 0})})
        return rows

    @staticmethod
    def _check_pack_class(pack: Pack, class_name: str, *, field: str) -> None:
        if class_name not in pack.classes:
            supported = ", ".join(pack.classes)
            raise ValidationError(field, class_name, f"is not a class of pack {pack.id!r}; it supports {supported}")

    @staticmethod
    def _pack_prompts(pack: Pack, class_name: str, branch: str) -> list[PromptCreate]:
        resolution = get_branch(branch).resolution
        prompts = []
        for index, item in enumerate(pack.prompts[class_name]):
            w, h = item.size_for(resolution)
            values = {**option_values(item), "w": w, "h": h}
            prompts.append(PromptCreate(**values, pack_id=pack.id, pack_prompt=f"{class_name}/{index}"))
        return prompts

    # -- API keys --------------------------------------------------------------------------------

    def credits(self, owner: str) -> tuple[int | None, int | None]:
        """The caller's (tune credits, image credits); None means unlimited."""
        return self.db.credits(owner)

    def create_api_key(self, owner: str) -> str:
        """A new API key for `owner`. Returned once; only its SHA-256 is stored.

        Returns:
            The key (`tsk_…`).

        Raises:
            ApiKeyLimitError: `owner` already holds `TUNES_MAX_API_KEYS` unrevoked keys (nothing is created).
        """
        key = "tsk_" + secrets.token_urlsafe(32)
        limit = self.settings.max_api_keys
        with self.db.transaction() as conn:  # counted and added at once: two clicks cannot pass the cap together
            held = self.db.count_api_keys(conn, owner)
            if held >= limit:
                raise ApiKeyLimitError(held, limit)
            self.db.insert_api_key(conn, owner, _hash_key(key), prefix=key[:8])
        return key

    def check_rate(self, owner: str) -> None:
        """Take one API request from `owner`'s allowance: one bucket per user for REST and the named Gradio
        API together, whatever the number of keys (`TUNES_API_RATE_PER_MINUTE`, bursts up to as many).

        Raises:
            RateLimitedError: the bucket is empty; `retry_after` says the seconds until the next request passes.
        """
        wait = self.rate_limiter.allow(owner)
        if wait:
            raise RateLimitedError(self.settings.api_rate_per_minute, wait)

    def owner_for_api_key(self, key: str) -> str | None:
        """The owner of a valid, unrevoked key, else None."""
        found = self.api_key(key)
        return found[0] if found else None

    def api_key(self, key: str) -> tuple[str, int] | None:
        """(owner, key id) of a valid, unrevoked key, else None."""
        if not isinstance(key, str) or not key.startswith("tsk_") or len(key) > 100:
            return None
        return self.db.key_of(_hash_key(key))

    def api_key_is_active(self, owner: str, key_id: int) -> bool:
        """Whether `owner` still holds key `key_id` unrevoked (links signed for that key work only then)."""
        return self.db.key_is_active(owner, key_id)

    def list_api_keys(self, owner: str) -> list[dict[str, Any]]:
        """The caller's keys: id, first characters, created and revoked times (never the key)."""
        return self.db.list_api_keys(owner)

    def revoke_api_key(self, owner: str, key_id: int) -> None:
        if not self.db.revoke_api_key(owner, key_id):
            raise NotFoundError("api key", key_id)

    # -- helpers ---------------------------------------------------------------------------------

    def _set_liked(self, owner: str, image_id: int, liked: bool) -> Image:
        if not self.db.set_liked(owner, image_id, liked):
            raise NotFoundError("image", image_id)
        return self.db.get_image(owner, image_id)

    def _tune_request(self, request: TuneCreate, branch: str) -> TuneRequest:
        # the mock branch is not trainable; check the same fields against a trainable twin
        checked_branch = branch if not get_branch(branch).is_mock else "tiny"
        return _named_as_sent(
            lambda: TuneRequest(
                class_name=request.name,
                branch=checked_branch,
                token=request.token,
                steps=request.steps,
                face_crop=request.face_crop,
                seed=request.seed,
            )
        )

    def _render(
        self, prompt: PromptCreate, token: str, class_name: str, characteristics: dict, *, field: str = ""
    ) -> tuple[PromptCreate, str, tuple[LoraTag, ...]]:
        """The prompt with its negative prompt rendered, its text rendered without `<lora:…>` tags, and the
        tags (`text` keeps the template as written). Errors name `{field}text` (`field`: e.g. the prompt's
        place in a tune request, `prompts_attributes[1].`)."""
        text, tags = split_lora_tags(prompt.text, field=f"{field}text")
        if tags and not text:
            raise ValidationError(
                f"{field}text", prompt.text, "has nothing but <lora:...> tags; describe the image too"
            )
        negative = prompt.negative_prompt
        if negative.strip():
            negative = render_prompt(
                negative,
                token=token,
                class_name=class_name,
                characteristics=characteristics,
                field=f"{field}negative_prompt",
                add_subject=False,
            )
        rendered = render_prompt(
            text, token=token, class_name=class_name, characteristics=characteristics, field=f"{field}text"
        )
        return replace(prompt, negative_prompt=negative), rendered, tags

    def _check_loras(
        self, owner: str, tags: Sequence[LoraTag], *, tune_id: int | None, branch: str, field: str
    ) -> list[dict[str, Any]]:
        """Check that every tagged tune can be combined with the prompt's tune; returns the stored form.

        Raises:
            NotFoundError: a tag names no tune of the caller (another owner's tune is "not found" too).
            ValidationError: a tagged tune is on another branch (`field` and the tag are named).
            ConflictError: a tagged tune failed, was cancelled or expired (it will never have a LoRA).
        """
        for tag in tags:
            if tag.tune_id == tune_id:  # the prompt's own tune: the tag only sets its weight
                continue
            other = self.get_tune(owner, tag.tune_id)
            if other.branch != branch:
                message = f"names tune {other.id} of branch {other.branch}; only tunes of branch {branch} combine here"
                raise ValidationError(field, tag.tag, message)
            if other.status not in TUNE_USABLE:
                raise ConflictError(f"{tag.tag} names tune {other.id}, which is {other.status}; it has no LoRA to add")
        return [{"tune_id": tag.tune_id, "weight": tag.weight} for tag in tags]

    def _checked_url(self, url: str | None, field: str) -> str | None:
        if url is None or url == "":
            return None
        return check_url(url, field=field, allowed_hosts=self.settings.allowed_fetch_hosts)

    def _fetch_photo(self, url: str, index: int) -> PhotoInput:
        return fetch_url(
            url,
            field=f"image_urls[{index}]",
            max_bytes=self.settings.max_photo_bytes,
            allowed_hosts=self.settings.allowed_fetch_hosts,
        )

    def _store_photos(self, tune_id: int, photos: list) -> None:
        """Write the decoded photos (PNG, no metadata) to a temporary folder, then move it into place."""
        target = self.photos_dir(tune_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{tune_id}-", dir=target.parent))
        try:
            for photo in photos:
                photo.image.save(staging / f"{photo.index:02d}.png")
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    @staticmethod
    def _prompt_values(tune_id: int, prompt: PromptCreate, rendered: str, loras: list[dict]) -> dict[str, Any]:
        return {
            "tune_id": tune_id,
            **option_values(prompt, STORED_FIELDS),
            "rendered_text": rendered,
            "callback": prompt.callback or None,
            "pack_id": prompt.pack_id,
            "pack_prompt": prompt.pack_prompt,
            "loras": loras,
        }

    def _credit_message(self, owner: str, *, tunes: int, images: int) -> str:
        tune_credits, image_credits = self.db.credits(owner)
        have = f"you have {tune_credits if tune_credits is not None else 'unlimited'} tune credit(s) and "
        have += f"{image_credits if image_credits is not None else 'unlimited'} image credit(s)"
        return f"Not enough credits: this needs {tunes} tune credit(s) and {images} image credit(s); {have}."


def _require_contents(photos: Sequence[object]) -> None:
    """Uploads arrive as (name, contents); a path here could name another user's files on this server."""
    for index, item in enumerate(photos):
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes)):
            raise ValidationError(f"images[{index}]", type(item).__name__, "must be an uploaded file's contents")


def _named_as_sent(build: Callable[[], TuneRequest]) -> TuneRequest:
    """The training request; its `class_name` is the `name` callers send, and errors say so."""
    try:
        return build()
    except ValidationError as error:
        if error.field != "class_name":
            raise
        raise ValidationError("name", error.value, error.message) from None


def _with_default_callback(prompts: Sequence[PromptCreate], callback: str | None) -> list[PromptCreate]:
    """The prompts, each without a callback of its own given `callback` (a tune's `prompt_callback`)."""
    return [replace(p, callback=callback) if callback and not p.callback else p for p in prompts]


def _with_sampling(prompt: PromptCreate, branch: Branch, field: str) -> PromptCreate:
    """The prompt with the scheduler and guidance it will run with on `branch` (its own, or the model family's
    defaults), so the record says what ran.

    Raises:
        ValidationError: a scheduler the branch's models cannot run, naming `field`; for a pack prompt (which the
            caller did not write) naming `branch`, the pack and the prompt.
    """
    try:
        scheduler, cfg_scale = sampling_for(branch.family, prompt.scheduler, prompt.cfg_scale, field=field)
    except ValidationError:
        if not prompt.pack_id:
            raise
        class_name, _, index = (prompt.pack_prompt or "").partition("/")
        runs = ", ".join(FAMILY_SAMPLING.get(branch.family, FAMILY_SAMPLING["sd15"]).schedulers)
        message = (
            f"cannot run prompt {class_name}[{index}] of pack {prompt.pack_id!r}: it names the sampler "
            f"{prompt.scheduler}, and this branch's models run only {runs}; use the pack on another branch"
        )
        raise ValidationError("branch", branch.name, message) from None
    return replace(prompt, scheduler=scheduler, cfg_scale=cfg_scale)


def _indexed(name: str, index: int, items: Sequence[object]) -> str:
    """A field name for error messages: `name` for a single item, `prompts[i].name` among several."""
    return name if len(items) == 1 else f"prompts[{index}].{name}"


def _hash_key(key: str) -> str:
    # API keys are 256-bit random, so a fast hash is enough (no password stretching needed)
    return hashlib.sha256(key.encode()).hexdigest()
