"""Expiry and retention: an idempotent sweep, run by one APScheduler BackgroundScheduler per server.

The sweep runs once at start (so expiries missed while the app was down still happen) and then every
few minutes. Expired tunes lose their LoRA (local folder or Hub repo) and become `expired`; their images
are kept. Tunes with `auto_extend` get a new expiry instead. Generated images older than
`TUNES_IMAGE_RETENTION_DAYS` (when set) are purged. The same scheduler records the disk used by kind at start and
every hour, for the admin dashboard's storage plot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from storage.records import Tune, TuneStatus, iso
from studio import queue
from studio.service import Studio

log = logging.getLogger(__name__)
SWEEP_EVERY_MINUTES = 5
STORAGE_SAMPLE_EVERY_MINUTES = 60


@dataclass
class SweepResult:
    expired: list[int] = field(default_factory=list)
    extended: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)
    purged_images: int = 0


def sweep(studio: Studio, store) -> SweepResult:
    """Expire or extend every trained tune past its `expires_at` (by `studio.clock`). Safe to run twice.

    A store error leaves the tune `trained` (it is retried next sweep) and is reported in `errors`.
    """
    result = SweepResult()
    now = studio.clock()
    for tune in studio.db.tunes_due_for_expiry(now):
        if tune.auto_extend:
            studio.db.update_tune(tune.owner, tune.id, expires_at=iso(studio.expires_at(now)))
            result.extended.append(tune.id)
            continue
        try:
            if expire_tune(studio, store, tune):
                result.expired.append(tune.id)
        except Exception as error:  # e.g. the Hub is down: keep the record, try again next time
            result.errors[tune.id] = str(error)
            log.warning("could not expire tune %s: %s", tune.id, error)
    if studio.settings.image_retention_days:
        cutoff = now - timedelta(days=studio.settings.image_retention_days)
        for path in studio.db.purge_images_before(cutoff):
            Path(path).unlink(missing_ok=True)
            result.purged_images += 1
    return result


def expire_tune(studio: Studio, store, tune: Tune, *, now: datetime | None = None) -> bool:
    """Delete a trained tune's LoRA, then mark the tune `expired`: its waiting prompts fail, callbacks are queued.

    The sweep and the admin's "expire now" both go through here.

    Args:
        now: when given, recorded as the tune's `expires_at` (an early expiry); the sweep keeps the due date.

    Returns:
        False when the tune was no longer `trained` (nothing changed).

    Raises:
        ArtifactError: the LoRA could not be deleted; the tune stays `trained`, so this can be tried again.
    """
    if tune.artifact_location:
        store.delete(tune.artifact_location)
    changes = {"expires_at": iso(now)} if now is not None else {}
    return queue.end_tune(
        studio.db,
        tune.owner,
        tune.id,
        TuneStatus.EXPIRED,
        from_statuses=(TuneStatus.TRAINED,),
        artifact_location=None,
        eta_seconds=None,
        **changes,
    )


def start_scheduler(studio: Studio, store, *, every_minutes: int = SWEEP_EVERY_MINUTES):
    """Start a BackgroundScheduler running `sweep` now and every `every_minutes`, and the hourly storage sample.
    Returns it (call .shutdown())."""
    from datetime import UTC

    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(timezone="UTC")
    jobs = {"expiry-sweep": (sweep, every_minutes), "storage-sample": (_sample_storage, STORAGE_SAMPLE_EVERY_MINUTES)}
    for name, (job, minutes) in jobs.items():  # each now (at start), then every `minutes`
        scheduler.add_job(
            job,
            "interval",
            minutes=minutes,
            args=(studio, store),
            id=name,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            replace_existing=True,
        )
    scheduler.start()
    return scheduler


def _sample_storage(studio: Studio, store) -> None:
    from admin.operations import sample_storage  # (operations uses this module's expire_tune)

    try:
        sample_storage(studio, store)
    except Exception as error:  # a full disk or a locked database: the next sample will do
        log.warning("could not record the disk used: %s", error)
