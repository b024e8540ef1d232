"""A day of seeded history for the ops dashboard's tests: tunes and prompts created through the service, then moved
to the statuses and times below (hours before now) as workers would have left them, credit charges at the times
the records were created, and hourly disk samples. Shared by the dashboard's unit tests and its browser test."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from storage.records import iso
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import Runtime
from tests.admin.test_operations import PHOTOS

OOM = "CUDA out of memory: tried to allocate 2.00 GiB"
LOST = "failed 3 times; last error: its worker stopped or stopped answering"


@dataclass(frozen=True)
class Job:
    """A seeded job: hours before now when it was created, started and ended (None: not yet)."""

    kind: str  # "train" or "generate"
    owner: str
    branch: str
    status: str
    created: float
    started: float | None = None
    ended: float | None = None
    error: str | None = None


# every prompt belongs to the first tune (alice's, trained 19 hours ago)
TUNES = [
    Job("train", "alice", "sd15", "trained", 20, 19.5, 19),
    Job("train", "bob", "sdxl1", "trained", 6, 5, 4),
    Job("train", "carol", "sd15", "failed", 3, 2.9, 2.5, LOST),
    Job("train", "alice", "sd15", "queued", 0.5),
]
PROMPTS = [
    Job("generate", "alice", "sd15", "done", 18.9, 18.8, 18.7),
    Job("generate", "alice", "sd15", "done", 18.9, 18.6, 18.5),
    Job("generate", "alice", "sd15", "done", 12, 11.9, 11.8),
    Job("generate", "alice", "sd15", "done", 3.2, 3.0, 2.95),
    Job("generate", "alice", "sd15", "failed", 2.2, 2.1, 2.0, OOM),
    Job("generate", "alice", "sd15", "failed", 2.2, 2.0, 1.9, OOM + " (retry)"),
    Job("generate", "alice", "sd15", "queued", 1.0),
    Job("generate", "alice", "sd15", "queued", 0.2),
]
IMAGES_PER_PROMPT = 2
# disk samples: LoRAs grow by 1 MiB an hour, generated images by 3 MiB
SAMPLE_HOURS = range(24, -1, -1)


@dataclass(frozen=True)
class Seeded:
    now: datetime
    tune_ids: list[int]
    prompt_ids: list[int]

    def when(self, hours: float | None) -> datetime | None:
        return None if hours is None else self.now - timedelta(hours=hours)


def seed_history(runtime: Runtime, now: datetime) -> Seeded:
    """Create `TUNES` and `PROMPTS` through the service, then set their statuses and times; returns their ids."""
    studio, db = runtime.studio, runtime.db
    tune_ids = []
    for index, job in enumerate(TUNES):
        request = TuneCreate(title=f"seeded {index}", name="woman", images=PHOTOS, branch="tiny")
        tune_ids.append(studio.create_tune(job.owner, request).tune.id)
    prompt_ids = [
        studio.create_prompt(job.owner, tune_ids[0], PromptCreate("{{subject}}", num_images=IMAGES_PER_PROMPT)).id
        for job in PROMPTS
    ]
    seeded = Seeded(now, tune_ids, prompt_ids)
    with db.transaction() as conn:
        for tune_id, job in zip(tune_ids, TUNES, strict=True):
            conn.execute(
                "UPDATE tunes SET status = ?, branch = ?, error = ?, created_at = ?, started_training_at = ?,"
                " trained_at = ?, updated_at = ? WHERE id = ?",
                (
                    job.status,
                    job.branch,
                    job.error,
                    _iso(seeded.when(job.created)),
                    _iso(seeded.when(job.started)),
                    _iso(seeded.when(job.ended)) if job.status == "trained" else None,
                    _iso(seeded.when(job.ended if job.ended is not None else job.created)),
                    tune_id,
                ),
            )
        for prompt_id, job in zip(prompt_ids, PROMPTS, strict=True):
            conn.execute(
                "UPDATE prompts SET status = ?, error = ?, created_at = ?, started_at = ?, completed_at = ?,"
                " updated_at = ? WHERE id = ?",
                (
                    job.status,
                    job.error,
                    _iso(seeded.when(job.created)),
                    _iso(seeded.when(job.started)),
                    _iso(seeded.when(job.ended)) if job.status == "done" else None,
                    _iso(seeded.when(job.ended if job.ended is not None else job.created)),
                    prompt_id,
                ),
            )
        # each charge happened when its record was created (tunes first, then prompts, as above)
        charges = [row["id"] for row in conn.execute("SELECT id FROM credit_spends ORDER BY id").fetchall()]
        for charge, job in zip(charges, [*TUNES, *PROMPTS], strict=True):
            conn.execute("UPDATE credit_spends SET at = ? WHERE id = ?", (_iso(seeded.when(job.created)), charge))
    for hours in SAMPLE_HOURS:
        grown = 24 - hours
        usage = {"LoRAs": (grown, grown * 2**20), "generated images": (3 * grown, 3 * grown * 2**20)}
        usage["total"] = (4 * grown, 4 * grown * 2**20)
        db.put_storage_sample(now - timedelta(hours=hours), usage)
    return seeded


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)
