"""The operators' use cases: tables of everything (queue, workers, tunes, prompts, users, storage, expiries, pack
prompts with their likes and likeness) and the actions on any owner's records (cancel, retry, extend, expire now,
delete, credits).

Every method takes the acting user first and refuses anyone who is not an admin (`TUNES_ADMINS`). The
tables read across owners through the database's admin-only queries; an action looks up the record's owner
and then goes through the same owner-scoped `Studio` use case a user would, so the rules stay in one place.
No gradio here: `admin.tab` shows these tables and calls these actions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from admin.dashboard import Dashboard, build_dashboard, window_start
from admin.scheduler import expire_tune
from pipelines.errors import ValidationError
from pipelines.registry import get_branch
from storage.records import TUNE_RETRYABLE, JobKind, Prompt, PromptStatus, Tune, TuneStatus, iso
from studio.errors import ConflictError, NotFoundError
from studio.queue import planned_order, requeue_ended_tune, requeue_failed_prompt
from studio.service import Studio
from studio.users import Roles

TUNE_STATUSES = tuple(status.value for status in TuneStatus)
PROMPT_STATUSES = tuple(status.value for status in PromptStatus)
RETRY_KINDS = tuple(kind.value for kind in JobKind)
# the admin tab's tables by name (CSV export); "times" is the dashboard's wait and run times per branch
TABLES = ("queue", "workers", "tunes", "prompts", "users", "storage", "expiries", "pack_prompts", "times")
DESTRUCTIVE = ("cancel", "expire", "delete")  # tune actions the admin tab asks about first
RUNNING, WAITING = "running", "queued"  # a job's state in the queue table
MAX_ROWS = 10_000
MAX_DAYS = 3650
MAX_GRANT = 1_000_000
_TEXT_WIDTH = 80  # prompt texts are cut to this in tables

TUNE_COLUMNS = [
    "id",
    "owner",
    "title",
    "class",
    "branch",
    "status",
    "progress %",
    "created (UTC)",
    "trained (UTC)",
    "expires (UTC)",
    "error",
]
PROMPT_COLUMNS = [
    "id",
    "tune",
    "owner",
    "prompt",
    "images",
    "status",
    "attempts",
    "created (UTC)",
    "completed (UTC)",
    "error",
]
QUEUE_COLUMNS = ["position", "state", "job", "id", "tune", "owner", "what", "progress %", "ETA", "started (UTC)"]
USER_COLUMNS = ["user", "admin", "tunes", "prompts", "images", "tune credits", "image credits"]
STORAGE_COLUMNS = ["what", "folder", "files", "size", "bytes"]
EXPIRY_COLUMNS = ["id", "owner", "title", "expires (UTC)", "days left", "auto extend"]
WORKER_COLUMNS = [
    "id",
    "device",
    "state",
    "job",
    "heartbeat (s ago)",
    "heartbeat (UTC)",
    "jobs done",
    "branches loaded",
    "pid",
    "host",
]
ALIVE, STOPPED = "alive", "stopped"  # a worker's state in the workers table (else "dead (...)")
PACK_PROMPT_COLUMNS = [
    "pack",
    "prompt",
    "text",
    "images",
    "likes",
    "with likeness",
    "mean likeness",
    "p10",
    "median",
    "p90",
]
LIKENESS_QUANTILES = {"p10": 0.1, "median": 0.5, "p90": 0.9}


@dataclass(frozen=True)
class Credits:
    """A user's credits after a change; None means unlimited."""

    user: str
    tunes: int | None
    images: int | None

    def __str__(self) -> str:
        return f"{self.user} has {_credits(self.tunes)} tune credit(s) and {_credits(self.images)} image credit(s)"


@dataclass(frozen=True)
class Overview:
    """Every admin table at once (one refresh of the admin tab)."""

    queue: pd.DataFrame
    workers: pd.DataFrame
    tunes: pd.DataFrame
    prompts: pd.DataFrame
    users: pd.DataFrame
    storage: pd.DataFrame
    expiries: pd.DataFrame
    pack_prompts: pd.DataFrame


class Operations:
    """What an operator can see and do. Thread-safe (the database serialises writes).

    Args:
        studio: the service; actions go through its owner-scoped use cases.
        store: the artifact store holding the LoRAs (the one the worker and the expiry sweep use).
    """

    def __init__(self, studio: Studio, store: Any):
        self.studio = studio
        self.db = studio.db
        self.store = store
        self.roles = Roles(studio.settings)

    # -- tables ----------------------------------------------------------------------------------

    def overview(self, admin: str, *, tune_status: str | None = None, within_days: int = 7) -> Overview:
        """All the tables of the admin tab.

        Raises:
            PermissionDeniedError: `admin` is not an admin. ValidationError: a bad filter.
        """
        self._require_admin(admin)
        return Overview(
            queue=self.queue(admin),
            workers=self.workers(admin),
            tunes=self.tunes(admin, status=tune_status),
            prompts=self.prompts(admin),
            users=self.users(admin),
            storage=self.storage(admin),
            expiries=self.expiries_due(admin, within_days=within_days),
            pack_prompts=self.pack_prompts(admin),
        )

    def table(
        self, admin: str, name: str, *, tune_status: str | None = None, within_days: int = 7, window: str = "day"
    ) -> pd.DataFrame:
        """One table of the admin tab by name (`TABLES`), as the tab shows it with the same filters: for CSV export.

        Raises:
            PermissionDeniedError: `admin` is not an admin. ValidationError: an unknown `name` or a bad filter.
        """
        self._require_admin(admin)
        _check_choice("table", name, TABLES, required=True)
        if name == "times":
            return self.dashboard(admin, window=window).times
        if name == "tunes":
            return self.tunes(admin, status=tune_status)
        if name == "expiries":
            return self.expiries_due(admin, within_days=within_days)
        return getattr(self, name)(admin)

    def tunes(self, admin: str, *, status: str | None = None, limit: int = 200) -> pd.DataFrame:
        """Every owner's tunes, newest first.

        Args:
            status: only tunes in this status (one of `TUNE_STATUSES`); None for all.
            limit: at most this many rows.

        Raises:
            PermissionDeniedError: `admin` is not an admin. ValidationError: a bad `status` or `limit`.
        """
        self._require_admin(admin)
        _check_choice("status", status, TUNE_STATUSES)
        _check_int("limit", limit, 1, MAX_ROWS)
        rows = [
            [
                tune.id,
                tune.owner,
                tune.title,
                tune.name,
                tune.branch,
                tune.status,
                round(tune.progress * 100),
                _when(tune.created_at),
                _when(tune.trained_at),
                _when(tune.expires_at),
                tune.error,
            ]
            for tune in self.db.admin_list_tunes(status=status, limit=limit)
        ]
        return _frame(rows, TUNE_COLUMNS)

    def prompts(
        self, admin: str, *, status: str | None = None, tune_id: int | None = None, limit: int = 200
    ) -> pd.DataFrame:
        """Every owner's prompts, newest first; `images` reads "made/asked".

        Args:
            status: only prompts in this status (one of `PROMPT_STATUSES`); None for all.
            tune_id: only the prompts of this tune.
            limit: at most this many rows.

        Raises:
            PermissionDeniedError: `admin` is not an admin. ValidationError: a bad filter or `limit`.
        """
        self._require_admin(admin)
        _check_choice("status", status, PROMPT_STATUSES)
        if tune_id is not None:
            _check_id("tune_id", tune_id)
        _check_int("limit", limit, 1, MAX_ROWS)
        rows = [
            [
                prompt.id,
                prompt.tune_id,
                prompt.owner,
                _cut(prompt.rendered_text),
                f"{len(prompt.images)}/{prompt.num_images}",
                prompt.status,
                prompt.attempts,
                _when(prompt.created_at),
                _when(prompt.completed_at),
                prompt.error,
            ]
            for prompt in self.db.admin_list_prompts(status=status, tune_id=tune_id, limit=limit)
        ]
        return _frame(rows, PROMPT_COLUMNS)

    def queue(self, admin: str) -> pd.DataFrame:
        """The pending work in the order the worker will take it.

        Running jobs come first (position 0, with progress and ETA for a training). Then the worker's
        order (`studio.queue.claim_next_job`): prompts of trained tunes first, oldest first, else the oldest
        queued training, after which that tune's prompts are ready too. The order assumes trainings
        succeed; prompts of a tune that can no longer run are listed last as `will fail`, without position.

        Raises:
            PermissionDeniedError: `admin` is not an admin.
        """
        self._require_admin(admin)
        tunes, prompts = self.db.admin_queue()
        rows = [_tune_job(tune, 0, RUNNING) for tune in tunes if tune.status == TuneStatus.TRAINING]
        rows += [_prompt_job(p, 0, RUNNING) for p, _ in prompts if p.status == PromptStatus.GENERATING]
        tunes_by_id = {tune.id: tune for tune in tunes}
        prompts_by_id = {prompt.id: prompt for prompt, _ in prompts}
        will_run = {tune.id for tune in tunes} | {p.tune_id for p, status in prompts if status == TuneStatus.TRAINED}
        for position, (kind, record_id) in enumerate(planned_order(tunes, prompts), start=1):
            if kind == JobKind.TUNE:
                rows.append(_tune_job(tunes_by_id[record_id], position, WAITING))
            else:
                rows.append(_prompt_job(prompts_by_id[record_id], position, WAITING))
        for prompt, tune_status in prompts:
            if prompt.status == PromptStatus.QUEUED and prompt.tune_id not in will_run:
                rows.append(_prompt_job(prompt, None, f"will fail (tune {tune_status})"))
        return _frame(rows, QUEUE_COLUMNS)

    def workers(self, admin: str) -> pd.DataFrame:
        """Every worker that ever reported itself (`studio.worker`), by id: its device, state, current job,
        last heartbeat (seconds ago and when), jobs done, the branches it has loaded, its pid and host.

        A worker is `stopped` when it shut down; `dead` when its last heartbeat is older than one lease
        (`TUNES_WORKER_LEASE_SECONDS`): it was killed, hangs or lost the disk, and its job goes back to the queue
        for another worker (or its restart). Otherwise it is `alive`.

        Raises:
            PermissionDeniedError: `admin` is not an admin.
        """
        self._require_admin(admin)
        now, lease_s = self.studio.clock(), self.studio.settings.worker_lease_s
        rows = []
        for worker in self.db.list_workers():
            heartbeat = datetime.fromisoformat(worker.heartbeat_at)
            age = max(0.0, (now - heartbeat).total_seconds())  # another host's clock may run ahead
            rows.append(
                [
                    worker.id,
                    worker.device,
                    _worker_state(stopped=worker.stopped_at is not None, age=age, lease_s=lease_s),
                    worker.job,
                    round(age),
                    heartbeat.strftime("%Y-%m-%d %H:%M:%S"),
                    worker.jobs_done,
                    ", ".join(worker.branches) or None,
                    worker.pid,
                    worker.host,
                ]
            )
        return _frame(rows, WORKER_COLUMNS)

    def users(self, admin: str) -> pd.DataFrame:
        """Every user with a record: what they own and their credits ("unlimited" where none are set).

        Raises:
            PermissionDeniedError: `admin` is not an admin.
        """
        self._require_admin(admin)
        rows = [
            [
                user["user"],
                "yes" if self.roles.is_admin(user["user"]) else "no",
                user["tunes"],
                user["prompts"],
                user["images"],
                _credits(user["tune_credits"]),
                _credits(user["image_credits"]),
            ]
            for user in self.db.user_summaries()
        ]
        return _frame(rows, USER_COLUMNS)

    def storage(self, admin: str) -> pd.DataFrame:
        """Disk used under the data folder by kind, human-readable and in bytes, with a total row.

        Raises:
            PermissionDeniedError: `admin` is not an admin.
        """
        self._require_admin(admin)
        usage = storage_usage(self.studio, self.store)
        rows = [[what, folder, files, _human(size), size] for what, (folder, files, size) in usage.items()]
        total_files, total = sum(row[2] for row in rows), sum(row[4] for row in rows)
        rows.append(["total", str(self.studio.settings.data_dir), total_files, _human(total), total])
        return _frame(rows, STORAGE_COLUMNS)

    def dashboard(self, admin: str, *, window: str = "day") -> Dashboard:
        """The ops dashboard's figures over the last `window` ("day" or "week"): `admin.dashboard.build_dashboard`.

        Raises:
            PermissionDeniedError: `admin` is not an admin. ValidationError: a bad `window`.
        """
        self._require_admin(admin)
        end = self.studio.clock()
        start = window_start(window, end)
        return build_dashboard(
            window,
            end,
            jobs=self.db.job_history(start),
            spends=self.db.credit_spends(start),
            samples=self.db.storage_samples(start),
        )

    def expiries_due(self, admin: str, *, within_days: int = 7) -> pd.DataFrame:
        """Trained tunes whose LoRA expires within `within_days` (overdue ones too), soonest first.

        Raises:
            PermissionDeniedError: `admin` is not an admin. ValidationError: a bad `within_days`.
        """
        self._require_admin(admin)
        _check_int("within_days", within_days, 0, MAX_DAYS)
        now = self.studio.clock()
        rows = [
            [
                tune.id,
                tune.owner,
                tune.title,
                _when(tune.expires_at),
                round((datetime.fromisoformat(tune.expires_at) - now).total_seconds() / 86400, 1),
                "yes" if tune.auto_extend else "no",
            ]
            for tune in self.db.tunes_due_for_expiry(now + timedelta(days=within_days))
        ]
        return _frame(rows, EXPIRY_COLUMNS)

    def pack_prompts(self, admin: str) -> pd.DataFrame:
        """Per pack prompt that made images (every owner's), by pack and prompt: its images, likes, and the
        likeness of its images (`pipelines.identity`, 0-1): how many have one, their mean, 10th percentile, median
        and 90th percentile, two decimals (empty when none has). A low p10 or median marks a prompt that loses the
        face.

        Raises:
            PermissionDeniedError: `admin` is not an admin.
        """
        self._require_admin(admin)
        summary = likeness_summary(pd.DataFrame(self.db.pack_image_likeness(), columns=_IMAGE_COLUMNS))
        texts: dict[str, dict[str, str]] = {}
        rows = []
        for item in summary.itertuples(index=False):
            if item.pack not in texts:
                texts[item.pack] = self._pack_texts(item.pack)
            quantiles = [_two_places(getattr(item, name)) for name in LIKENESS_QUANTILES]
            rows.append(
                [
                    item.pack,
                    item.prompt,
                    texts[item.pack].get(item.prompt),
                    int(item.images),
                    int(item.likes),
                    int(item.scored),
                    _two_places(item.mean),
                    *quantiles,
                ]
            )
        rows.sort(key=lambda row: (row[0], *_prompt_order(row[1])))
        return _frame(rows, PACK_PROMPT_COLUMNS)

    def _pack_texts(self, pack_id: str) -> dict[str, str]:
        """A pack's prompt texts by "class/index"; none for a pack that is gone."""
        try:
            pack = self.studio.packs.get(pack_id, include_unpublished=True)
        except (NotFoundError, ValidationError):
            return {}
        return {
            f"{class_name}/{index}": _cut(prompt.text)
            for class_name, prompts in pack.prompts.items()
            for index, prompt in enumerate(prompts)
        }

    # -- a selected record ------------------------------------------------------------------------

    def describe(self, admin: str, kind: str, record_id: int) -> str:
        """One line about a record picked in a table: what it is, whose, its state and what it holds.

        Raises:
            PermissionDeniedError, ValidationError (a bad `kind` or id), NotFoundError.
        """
        self._require_admin(admin)
        _check_choice("kind", kind, RETRY_KINDS, required=True)
        if kind == JobKind.PROMPT:
            _check_id("record_id", record_id)
            owner = self.db.owner_of_prompt(record_id)
            if owner is None:
                raise NotFoundError("prompt", record_id)
            prompt = self.studio.get_prompt(owner, record_id)
            made = f"{prompt.status}, {len(prompt.images)}/{prompt.num_images} images"
            return f"Prompt {prompt.id} of {owner} (tune {prompt.tune_id}): {made}. {_cut(prompt.text)}"
        tune, waiting, images = self._holdings(record_id)
        state = f"{tune.status} {round(tune.progress * 100)} %" if tune.status == TuneStatus.TRAINING else tune.status
        lora = "LoRA until " + _when(tune.expires_at) if tune.artifact_location and tune.expires_at else "no LoRA"
        return (
            f"Tune {tune.id} {tune.title!r} of {tune.owner} ({tune.name}, {tune.branch}): {state}; {lora}; "
            f"{waiting} prompt(s) waiting, {images} image(s)."
        )

    def question(self, admin: str, action: str, tune_id: int, *, delete_images: bool = False) -> str:
        """What a destructive action on a tune would lose, asked before it acts (Markdown): `cancel`, `expire` or
        `delete`, with the tune's own figures (progress, waiting prompts, images, the LoRA).

        Raises:
            PermissionDeniedError, ValidationError (a bad `action` or id), NotFoundError.
        """
        self._require_admin(admin)
        _check_choice("action", action, DESTRUCTIVE, required=True)
        tune, waiting, images = self._holdings(tune_id)
        name = f"tune {tune.id} ({tune.title!r} of {tune.owner}, {tune.status})"
        prompts = f"its {waiting} waiting prompt(s) fail" if waiting else "no prompt is waiting"
        if action == "cancel":
            progress = f", and its progress ({round(tune.progress * 100)} %) is lost" if tune.progress else ""
            lost = f"Its training stops{progress}; {prompts}; its training photos are deleted."
        elif action == "expire":
            lost = f"Its LoRA is deleted and {prompts}; its {images} image(s) stay."
        else:
            kept = f"and so are its {images} image(s)" if delete_images else f"its {images} image(s) stay"
            lost = f"Its photos, LoRA and every prompt are deleted; {kept}."
        when = " now" if action == "expire" else ""
        return f"**{action.capitalize()} {name}{when}?** {lost} This cannot be undone."

    def _holdings(self, tune_id: int) -> tuple[Tune, int, int]:
        """A tune of any owner, its waiting prompts and its images."""
        tune = self.studio.get_tune(self._tune_owner(tune_id), tune_id)
        prompts = self.db.admin_list_prompts(status=None, tune_id=tune_id, limit=MAX_ROWS)
        waiting = sum(prompt.status in (PromptStatus.QUEUED, PromptStatus.GENERATING) for prompt in prompts)
        return tune, waiting, sum(len(prompt.images) for prompt in prompts)

    # -- actions ---------------------------------------------------------------------------------

    def cancel(self, admin: str, tune_id: int) -> Tune:
        """Cancel a queued or training tune of any owner (as `Studio.cancel_tune`: its queued prompts fail).

        Raises:
            PermissionDeniedError, ValidationError, NotFoundError. ConflictError: the tune is not queued or training.
        """
        self._require_admin(admin)
        return self.studio.cancel_tune(self._tune_owner(tune_id), tune_id)

    def retry(self, admin: str, kind: str, record_id: int) -> Tune | Prompt:
        """Queue a failed prompt or a failed/cancelled tune again, as if new (attempts reset, error cleared).

        A tune takes back the prompts its failure failed before they ran. Nothing is charged again.

        Args:
            kind: "tune" or "prompt".
            record_id: the tune's or prompt's id.

        Returns:
            The queued record.

        Raises:
            PermissionDeniedError, ValidationError, NotFoundError.
            ConflictError: the record did not fail; a prompt's tune is not trained (or its LoRA is gone);
                a tune's photos were deleted (its owner must create the tune again).
        """
        self._require_admin(admin)
        _check_choice("kind", kind, RETRY_KINDS, required=True)
        record = self._retry_prompt(record_id) if kind == JobKind.PROMPT else self._retry_tune(record_id)
        self.studio.work_available.set()
        return record

    def extend(self, admin: str, tune_id: int, days: int) -> Tune:
        """Keep a trained tune's LoRA `days` longer: from its expiry, or from now when that has passed.

        Raises:
            PermissionDeniedError, ValidationError (`days` not 1..3650), NotFoundError.
            ConflictError: the tune is not trained, or its LoRA never expires (mock branch).
        """
        self._require_admin(admin)
        _check_int("days", days, 1, MAX_DAYS)
        owner = self._tune_owner(tune_id)
        tune = self.studio.get_tune(owner, tune_id)
        if tune.status != TuneStatus.TRAINED:
            raise ConflictError(f"tune {tune_id} is {tune.status}; only trained tunes can be extended")
        if tune.expires_at is None:
            raise ConflictError(f"tune {tune_id} has no LoRA that expires (branch {tune.branch}); nothing to extend")
        start = max(datetime.fromisoformat(tune.expires_at), self.studio.clock())
        expires_at = iso(start + timedelta(days))
        if not self.db.update_tune(owner, tune_id, only_if_status=TuneStatus.TRAINED, expires_at=expires_at):
            raise ConflictError(f"tune {tune_id} changed while it was being extended; refresh and try again")
        return self.studio.get_tune(owner, tune_id)

    def expire_now(self, admin: str, tune_id: int) -> Tune:
        """Expire a trained tune now, the way the expiry sweep does: its LoRA is deleted, its waiting
        prompts fail, callbacks are sent; its images stay.

        Raises:
            PermissionDeniedError, ValidationError, NotFoundError. ConflictError: the tune is not trained.
            ArtifactError: the LoRA could not be deleted (the tune stays trained; try again).
        """
        self._require_admin(admin)
        owner = self._tune_owner(tune_id)
        tune = self.studio.get_tune(owner, tune_id)
        if tune.status != TuneStatus.TRAINED or not expire_tune(self.studio, self.store, tune, now=self.studio.clock()):
            current = self.studio.get_tune(owner, tune_id)
            raise ConflictError(f"tune {tune_id} is {current.status}; only trained tunes can be expired")
        return self.studio.get_tune(owner, tune_id)

    def delete(self, admin: str, tune_id: int, *, delete_images: bool = False) -> Tune:
        """Delete any owner's tune as `Studio.delete_tune` does (photos, LoRA, prompts; images unless asked).

        Returns:
            The tune as it was before deletion.

        Raises:
            PermissionDeniedError, ValidationError, NotFoundError. ArtifactError: the LoRA could not be deleted.
        """
        self._require_admin(admin)
        owner = self._tune_owner(tune_id)
        tune = self.studio.get_tune(owner, tune_id)
        self.studio.delete_tune(owner, tune_id, delete_images=bool(delete_images))
        return tune

    def block_image(self, admin: str, image_id: int, *, blocked: bool = True) -> str:
        """Take any owner's avatar off the showcase (or put it back); its owner cannot undo a block. Returns the
        image's owner.

        Raises:
            PermissionDeniedError, ValidationError (a bad id), NotFoundError.
        """
        self._require_admin(admin)
        _check_id("image_id", image_id)
        owner = self.db.set_image_blocked(image_id, bool(blocked))
        if owner is None:
            raise NotFoundError("image", image_id)
        return owner

    def grant_credits(self, admin: str, user: str, tunes: int = 0, images: int = 0) -> Credits:
        """Add tune and image credits to a user (created if new). Unlimited credits stay unlimited.

        Raises:
            PermissionDeniedError. ValidationError: `user` empty, or `tunes`/`images` not an integer 0..1,000,000.
        """
        self._require_admin(admin)
        user = _check_user(user)
        _check_int("tunes", tunes, 0, MAX_GRANT)
        _check_int("images", images, 0, MAX_GRANT)
        return Credits(user, *self.db.add_credits(user, tunes=tunes, images=images))

    def set_credits(self, admin: str, user: str, *, tunes: int | None, images: int | None) -> Credits:
        """Set a user's credits outright; None makes them unlimited (the default for a new user).

        Raises:
            PermissionDeniedError. ValidationError: `user` empty, or `tunes`/`images` neither None nor 0..1,000,000.
        """
        self._require_admin(admin)
        user = _check_user(user)
        for name, value in (("tunes", tunes), ("images", images)):
            if value is not None:
                _check_int(name, value, 0, MAX_GRANT)
        self.db.set_credits(user, tunes=tunes, images=images)
        return Credits(user, *self.db.credits(user))

    # -- helpers ---------------------------------------------------------------------------------

    def _require_admin(self, admin: str) -> None:
        self.roles.require_admin(admin)

    def _tune_owner(self, tune_id: int) -> str:
        _check_id("tune_id", tune_id)
        owner = self.db.owner_of_tune(tune_id)
        if owner is None:
            raise NotFoundError("tune", tune_id)
        return owner

    def _retry_prompt(self, prompt_id: int) -> Prompt:
        _check_id("record_id", prompt_id)
        owner = self.db.owner_of_prompt(prompt_id)
        if owner is None:
            raise NotFoundError("prompt", prompt_id)
        prompt = self.studio.get_prompt(owner, prompt_id)
        if prompt.status != PromptStatus.FAILED:
            raise ConflictError(f"prompt {prompt_id} is {prompt.status}; only failed prompts can be retried")
        tune = self.studio.get_tune(owner, prompt.tune_id)
        has_lora = tune.artifact_location is not None or get_branch(tune.branch).is_mock
        if tune.status != TuneStatus.TRAINED or not has_lora:
            raise ConflictError(
                f"prompt {prompt_id} cannot run again: its tune {tune.id} is {tune.status}"
                + ("" if tune.status != TuneStatus.TRAINED else " but has no LoRA")
                + "; a prompt needs a trained tune with its LoRA"
            )
        if not requeue_failed_prompt(self.db, owner, prompt_id):
            raise ConflictError(f"prompt {prompt_id} or its tune changed meanwhile; refresh and try again")
        return self.studio.get_prompt(owner, prompt_id)

    def _retry_tune(self, tune_id: int) -> Tune:
        _check_id("record_id", tune_id)
        owner = self._tune_owner(tune_id)
        tune = self.studio.get_tune(owner, tune_id)
        if tune.status not in TUNE_RETRYABLE:
            raise ConflictError(f"tune {tune_id} is {tune.status}; only failed or cancelled tunes can be retried")
        if not any(self.studio.photos_dir(tune_id).glob("*.png")):
            raise ConflictError(
                f"tune {tune_id} cannot be trained again: its photos were deleted when it ended ({tune.status}); "
                f"photos are not kept after a tune ends. {owner} must create the tune again with the photos."
            )
        if requeue_ended_tune(self.db, owner, tune_id) is None:
            raise ConflictError(f"tune {tune_id} changed meanwhile; refresh and try again")
        return self.studio.get_tune(owner, tune_id)


# -- the cost of a tune on Hugging Face Jobs (`python -m admin jobs-cost`) ---------------------------------------

# One tune's job time when nothing better is known: an SD 1.5 tune (800 steps) on an A10G, about 5 min of cold start
# (image pull, base model download) and 7 of training. An estimate, not a measurement: README "Scale out".
TUNE_JOB_MINUTES = 12.0
JOBS_COST_COLUMNS = ["flavor", "GPU", "GPU memory", "USD per hour", "USD per tune"]
_UNITS_PER_HOUR = {"second": 3600, "minute": 60, "hour": 1}


@dataclass(frozen=True)
class FlavorCost:
    """What a GPU flavor of Hugging Face Jobs costs: per hour, and for one tune of `minutes` of job time."""

    flavor: str
    gpu: str  # e.g. "1x A10G"
    gpu_memory: str  # e.g. "24 GB" (all the flavor's GPUs together)
    usd_per_hour: float
    usd_per_tune: float
    minutes: float

    def row(self) -> list[Any]:
        return [self.flavor, self.gpu, self.gpu_memory, f"{self.usd_per_hour:.2f}", f"{self.usd_per_tune:.2f}"]


def jobs_costs(hardware: list[Any], *, minutes: float = TUNE_JOB_MINUTES) -> list[FlavorCost]:
    """The GPU flavors of the Hub's hardware list with their price per hour and the cost of one tune.

    Args:
        hardware: `HfApi().list_jobs_hardware()`: `JobHardwareInfo` items (`name`, `accelerator`,
            `unit_cost_micro_usd` per `unit_label`).
        minutes: one tune's job time, from start to end (cold start included), in minutes.

    Returns:
        One `FlavorCost` per flavor with a GPU, in the Hub's order (CPU flavors cannot train).

    Raises:
        ValidationError: `minutes` is not above 0, or the Hub prices a flavor per a unit other than second, minute
            or hour.
    """
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not 0 < minutes <= 60 * 24 * 7:
        raise ValidationError("minutes", minutes, "must be a number of minutes above 0 (at most a week)")
    costs = []
    for item in hardware:
        if item.accelerator is None:
            continue
        units = _UNITS_PER_HOUR.get(item.unit_label)
        if units is None:
            raise ValidationError("unit_label", item.unit_label, f"must be one of {', '.join(_UNITS_PER_HOUR)}")
        per_hour = item.unit_cost_micro_usd / 1_000_000 * units
        gpu = item.accelerator
        costs.append(
            FlavorCost(
                flavor=item.name,
                gpu=f"{gpu.quantity}x {gpu.model}",
                gpu_memory=gpu.vram,
                usd_per_hour=per_hour,
                usd_per_tune=per_hour * minutes / 60,
                minutes=minutes,
            )
        )
    return costs


_IMAGE_COLUMNS = ["pack", "prompt", "liked", "likeness"]  # `Database.pack_image_likeness` rows


def likeness_summary(images: pd.DataFrame) -> pd.DataFrame:
    """Per (pack, prompt) of `images` (one row per image: pack, prompt, liked, likeness or None): `images`,
    `likes`, `scored` (images with a likeness), and the `mean` and `LIKENESS_QUANTILES` of the known likenesses
    (NaN when none is known; quantiles interpolate linearly, as numpy's)."""
    images = images.assign(likeness=pd.to_numeric(images["likeness"]), liked=images["liked"].astype(int))
    groups = images.groupby(["pack", "prompt"], sort=False)
    summary = groups.agg(
        images=("liked", "size"), likes=("liked", "sum"), scored=("likeness", "count"), mean=("likeness", "mean")
    )
    for name, quantile in LIKENESS_QUANTILES.items():
        summary[name] = groups["likeness"].quantile(quantile)
    return summary.reset_index()


def _two_places(value: float) -> float | None:
    return None if pd.isna(value) else round(float(value), 2)


def _prompt_order(key: str) -> tuple[str, int]:
    """ "woman/10" after "woman/9"."""
    class_name, _, index = key.partition("/")
    return class_name, int(index) if index.isdigit() else -1


def _tune_job(tune: Tune, position: int | None, state: str) -> list[Any]:
    running = state == "running"
    eta = _duration(tune.eta_seconds) if running else None
    started = _when(tune.started_training_at) if running else None
    progress = round(tune.progress * 100)
    return [position, state, "train", tune.id, tune.id, tune.owner, tune.title, progress, eta, started]


def _prompt_job(prompt: Prompt, position: int | None, state: str) -> list[Any]:
    started = _when(prompt.started_at) if state == "running" else None
    what = f"{prompt.num_images} image(s): {_cut(prompt.rendered_text)}"
    return [position, state, "generate", prompt.id, prompt.tune_id, prompt.owner, what, None, None, started]


def _worker_state(*, stopped: bool, age: float, lease_s: float) -> str:
    if stopped:
        return STOPPED
    return f"dead (no heartbeat for {round(age)} s)" if age > lease_s else ALIVE


def storage_usage(studio: Studio, store: Any) -> dict[str, tuple[str, int, int]]:
    """Disk used under the data folder by kind: {kind: (folder, files, bytes)}, the database last."""
    data = studio.settings.data_dir
    folders = {
        "training photos": data / "photos",
        "training checkpoints": data / "training",
        "generated images": data / "images",
        "LoRAs": Path(getattr(store, "root", data / "artifacts")),
        "LoRA download cache (Hub)": data / "hub_cache",
        "team packs": data / "packs",
    }
    usage = {what: (str(folder), *_disk_usage(folder)) for what, folder in folders.items()}
    database = [path for path in data.glob(f"{studio.db.path.name}*") if path.is_file()]
    usage["database"] = (str(studio.db.path), len(database), sum(path.stat().st_size for path in database))
    return usage


def sample_storage(studio: Studio, store: Any) -> dict[str, tuple[int, int]]:
    """Record the disk used by kind now, for the dashboard's storage plot (the scheduler calls this hourly).
    Returns {kind: (files, bytes)}, with a "total"."""
    usage = {what: (files, size) for what, (_, files, size) in storage_usage(studio, store).items()}
    usage["total"] = (sum(files for files, _ in usage.values()), sum(size for _, size in usage.values()))
    studio.db.put_storage_sample(studio.clock(), usage)
    return usage


def _frame(rows: list[list[Any]], columns: list[str]) -> pd.DataFrame:
    # object columns keep None as None (an empty cell) instead of turning ints with gaps into floats/NaN
    return pd.DataFrame(rows, columns=columns, dtype=object)


def _disk_usage(folder: Path) -> tuple[int, int]:
    """(files, bytes) under `folder`, not following links (built models are linked, not owned)."""
    files = size = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                size += os.lstat(os.path.join(root, name)).st_size
                files += 1
            except OSError:  # removed while we walked
                continue
    return files, size


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _when(timestamp: str | None) -> str | None:
    return datetime.fromisoformat(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else None


def _cut(text: str) -> str:
    return text if len(text) <= _TEXT_WIDTH else text[: _TEXT_WIDTH - 1] + "…"


def _credits(value: int | None) -> int | str:
    return "unlimited" if value is None else value


def _check_int(field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(field, value, f"must be an integer between {low} and {high:,}")


def _check_id(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(field, value, "must be a record id (a positive integer)")


def _check_choice(field: str, value: object, choices: tuple[str, ...], *, required: bool = False) -> None:
    if (value is None and not required) or value in choices:
        return
    raise ValidationError(field, value, f"must be one of {', '.join(choices)}" + ("" if required else " (or none)"))


def _check_user(user: object) -> str:
    if not isinstance(user, str) or not user.strip() or len(user) > 200:
        raise ValidationError("user", user, "must be a user id (non-empty text)")
    return user.strip()
