"""The queue's rules: which job the worker claims next, and what starting, ending or retrying a job entails.

The queue lives in the database, so a job survives a crash. `storage.db` runs the SQL (small primitives that
take a connection); this module decides. Each function composes the primitives inside one
`Database.transaction()`, so a change and its consequences (failed prompts, queued callbacks) commit together
or not at all.

Claiming order: a queued prompt of a trained tune first (oldest first) so users of finished tunes are not stuck
behind a long training queue, unless its `<lora:…>` tags name a tune still queued or training; else the oldest
queued tune. A tune that can no longer train fails its queued prompts; a job interrupted `MAX_ATTEMPTS` times
fails with the reason.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any

from storage.db import Database
from storage.records import (
    PROMPT_PENDING,
    TUNE_ACTIVE,
    TUNE_RETRYABLE,
    TUNE_UNUSABLE,
    DeliveryKind,
    JobKind,
    Prompt,
    PromptStatus,
    Tune,
    TuneStatus,
    iso,
)

MAX_ATTEMPTS = 3  # attempts of a job (interrupted, or failed by an unexpected error) before it fails for good
TUNE_ENDS_CALLED_BACK = (TuneStatus.TRAINED, TuneStatus.FAILED, TuneStatus.CANCELLED)  # not an expiry
Job = tuple[JobKind, Tune | Prompt]

# -- claiming --------------------------------------------------------------------------------------


def claim_next_job(db: Database) -> Job | None:
    """Atomically take the next job and mark it running (`generating` / `training`, one more attempt).

    Prompts of trained tunes run between trainings; among each kind the order is FIFO. A prompt whose
    `<lora:…>` tags name a tune still queued or training waits for it (one that failed meanwhile lets it run and
    fail). As a backstop, queued prompts of a tune that can no longer be used fail first.

    Returns:
        ("prompt", the prompt without images) or ("tune", the tune), or None when nothing is queued.
    """
    now = iso(db.clock())
    with db.transaction() as conn:
        _fail_prompts_of_unusable_tunes(db, conn, now)
        return _claim_prompt(db, conn, now) or _claim_tune(db, conn, now)


def _fail_prompts_of_unusable_tunes(db: Database, conn: sqlite3.Connection, now: str) -> None:
    """A backstop: prompts whose tune can no longer train never wait forever."""
    for prompt in db.prompts_in(conn, PromptStatus.QUEUED, tune_statuses=TUNE_UNUSABLE):
        db.set_prompt(
            conn, prompt.id, status=PromptStatus.FAILED, error="the tune can no longer be used", updated_at=now
        )
        _after_prompt_ended(db, conn, prompt.owner, prompt.id)


def _claim_prompt(db: Database, conn: sqlite3.Connection, now: str) -> Job | None:
    prompt = db.oldest_ready_prompt(
        conn, PromptStatus.QUEUED, tune_status=TuneStatus.TRAINED, unless_tagged_in=TUNE_ACTIVE
    )
    if prompt is None:
        return None
    db.set_prompt(
        conn, prompt.id, status=PromptStatus.GENERATING, attempts=prompt.attempts + 1, started_at=now, updated_at=now
    )
    return JobKind.PROMPT, db.prompt_by_id(conn, prompt.id)


def _claim_tune(db: Database, conn: sqlite3.Connection, now: str) -> Job | None:
    tune = db.oldest_tune_in(conn, TuneStatus.QUEUED)
    if tune is None:
        return None
    db.set_tune(
        conn,
        tune.id,
        status=TuneStatus.TRAINING,
        attempts=tune.attempts + 1,
        started_training_at=tune.started_training_at or now,  # a resumed training keeps its first start
        updated_at=now,
    )
    return JobKind.TUNE, db.tune_by_id(conn, tune.id)


def jobs_ahead_of_tune(db: Database, tune_id: int) -> int:
    """How many jobs the worker runs before this queued tune, in `claim_next_job`'s order: the one running,
    queued prompts of trained tunes (they go between trainings), and queued tunes created before it."""
    with db.snapshot() as conn:
        running = db.count_tunes(conn, TuneStatus.TRAINING) + db.count_prompts(conn, (PromptStatus.GENERATING,))
        older = db.count_tunes(conn, TuneStatus.QUEUED, before_id=tune_id)
        between = db.count_prompts(conn, (PromptStatus.QUEUED,), tune_status=TuneStatus.TRAINED)
    return running + older + between


def planned_order(tunes: Sequence[Tune], prompts: Sequence[tuple[Prompt, str]]) -> list[tuple[JobKind, int]]:
    """The queued jobs as `claim_next_job` will take them, one after another, if every training succeeds.

    Args:
        tunes: the tunes queued or training.
        prompts: the prompts queued or generating, each with its tune's status.

    Returns:
        (kind, record id) in order; prompts of a tune that will not train are left out.
    """
    training = {tune.id for tune in tunes if tune.status == TuneStatus.TRAINING}  # trained when the queue moves
    ready: list[int] = []
    waiting: dict[int, list[int]] = defaultdict(list)
    for prompt, tune_status in prompts:
        if prompt.status != PromptStatus.QUEUED:
            continue
        if tune_status == TuneStatus.TRAINED or prompt.tune_id in training:
            ready.append(prompt.id)
        elif tune_status == TuneStatus.QUEUED:
            waiting[prompt.tune_id].append(prompt.id)
    heapq.heapify(ready)
    queued = deque(tune.id for tune in tunes if tune.status == TuneStatus.QUEUED)
    order: list[tuple[JobKind, int]] = []
    while ready or queued:
        if ready:
            order.append((JobKind.PROMPT, heapq.heappop(ready)))
            continue
        tune_id = queued.popleft()
        order.append((JobKind.TUNE, tune_id))
        for prompt_id in waiting.pop(tune_id, []):
            heapq.heappush(ready, prompt_id)
    return order


# -- ending ----------------------------------------------------------------------------------------


def end_tune(
    db: Database, owner: str, tune_id: int, status: TuneStatus, *, from_statuses: Sequence[str], **changes: Any
) -> bool:
    """Move a tune to `status` if it is in one of `from_statuses`, with its consequences, atomically:
    a tune that can no longer train fails its queued prompts, and the callbacks are queued.

    Args:
        changes: other tune columns to set with the status (error, eta_seconds, artifact_location…).

    Returns:
        False (nothing changed) when the tune is gone or in another status.

    Raises:
        ValueError: a column in `changes` that cannot be updated (nothing changed).
    """
    with db.transaction() as conn:
        if not db.set_tune(conn, tune_id, owner=owner, from_statuses=from_statuses, status=status, **changes):
            return False
        _after_tune_ended(db, conn, owner, tune_id, status, changes.get("error"))
    return True


def end_prompt(
    db: Database,
    owner: str,
    prompt_id: int,
    status: PromptStatus,
    *,
    error: str | None = None,
    images: Sequence[dict] = (),
) -> bool:
    """Finish a generating prompt as `done` (storing its images) or `failed`, and queue its callbacks, in one
    transaction: a crash keeps neither or both.

    Args:
        images: the stored files, each {"path", "seed", "width", "height"}.

    Returns:
        False (nothing changed) when the prompt is no longer generating (deleted meanwhile).
    """
    now = iso(db.clock())
    completed_at = now if status == PromptStatus.DONE else None
    with db.transaction() as conn:
        changed = db.set_prompt(
            conn,
            prompt_id,
            owner=owner,
            from_statuses=(PromptStatus.GENERATING,),
            status=status,
            error=error,
            completed_at=completed_at,
            updated_at=now,
        )
        if not changed:
            return False
        for image in images:
            db.insert_image(
                conn,
                owner,
                prompt_id,
                path=image["path"],
                seed=image["seed"],
                width=image["width"],
                height=image["height"],
            )
        _after_prompt_ended(db, conn, owner, prompt_id)
    return True


def _after_tune_ended(
    db: Database, conn: sqlite3.Connection, owner: str, tune_id: int, status: str, error: object
) -> None:
    """A tune that will never (again) have a LoRA fails its queued prompts; some end states call back."""
    if status in TUNE_UNUSABLE:
        now = iso(db.clock())
        reason = f"the tune is {status}" + (f": {error}" if error else "")
        for prompt in db.prompts_in(conn, PromptStatus.QUEUED, tune_id=tune_id):
            db.set_prompt(conn, prompt.id, status=PromptStatus.FAILED, error=reason, updated_at=now)
            _after_prompt_ended(db, conn, owner, prompt.id)
    tune = db.tune_by_id(conn, tune_id)
    if tune.callback and status in TUNE_ENDS_CALLED_BACK:
        db.insert_delivery(conn, owner, tune.callback, DeliveryKind.TUNE, tune_id)


def _after_prompt_ended(db: Database, conn: sqlite3.Connection, owner: str, prompt_id: int) -> None:
    """Queue the prompt's callback, and its tune's `prompts_callback` once none of its prompts is pending."""
    prompt = db.prompt_by_id(conn, prompt_id)
    if prompt.callback:
        db.insert_delivery(conn, owner, prompt.callback, DeliveryKind.PROMPT, prompt_id)
    tune = db.tune_by_id(conn, prompt.tune_id)
    if tune is None or not tune.prompts_callback:
        return
    pending = db.count_prompts(conn, PROMPT_PENDING, tune_id=tune.id)
    if pending == 0 and not db.has_delivery(conn, DeliveryKind.PROMPTS, tune.id):
        db.insert_delivery(conn, owner, tune.prompts_callback, DeliveryKind.PROMPTS, tune.id)


# -- retrying --------------------------------------------------------------------------------------


def requeue_interrupted(db: Database) -> tuple[int, int]:
    """Put work a dead process left running back in the queue, or fail it after `MAX_ATTEMPTS` (failing a tune
    fails its queued prompts; callbacks are queued).

    Returns:
        (requeued, failed) counts.
    """
    now = iso(db.clock())
    reason = f"interrupted {MAX_ATTEMPTS} times (the worker process stopped while this ran)"
    failed = 0
    with db.transaction() as conn:
        for prompt in db.prompts_in(conn, PromptStatus.GENERATING):
            if prompt.attempts >= MAX_ATTEMPTS:
                db.set_prompt(conn, prompt.id, status=PromptStatus.FAILED, error=reason, updated_at=now)
                _after_prompt_ended(db, conn, prompt.owner, prompt.id)
                failed += 1
        for tune in db.tunes_in(conn, TuneStatus.TRAINING):
            if tune.attempts >= MAX_ATTEMPTS:
                db.set_tune(conn, tune.id, status=TuneStatus.FAILED, error=reason, updated_at=now)
                _after_tune_ended(db, conn, tune.owner, tune.id, TuneStatus.FAILED, reason)
                failed += 1
        requeued = db.set_every_tune_in(conn, TuneStatus.TRAINING, status=TuneStatus.QUEUED, updated_at=now)
        requeued += db.set_every_prompt_in(conn, PromptStatus.GENERATING, status=PromptStatus.QUEUED, updated_at=now)
    return requeued, failed


def release(db: Database, owner: str, tune_id: int) -> None:
    """Give a training tune back to the queue without counting the attempt (a clean worker shutdown)."""
    with db.transaction() as conn:
        tune = db.find_tune(conn, owner, tune_id)
        if tune is None or tune.status != TuneStatus.TRAINING:
            return
        db.set_tune(
            conn,
            tune_id,
            owner=owner,
            from_statuses=(TuneStatus.TRAINING,),
            status=TuneStatus.QUEUED,
            attempts=max(tune.attempts - 1, 0),
        )


def retry_or_fail_tune(db: Database, tune: Tune, reason: str) -> bool:
    """After a training attempt failed unexpectedly: queue it again, or fail it once it had `MAX_ATTEMPTS`.

    Returns:
        True when the tune failed for good (its queued prompts failed, callbacks queued).
    """
    if tune.attempts >= MAX_ATTEMPTS:
        error = f"failed {tune.attempts} times; last error: {reason}"
        end_tune(
            db,
            tune.owner,
            tune.id,
            TuneStatus.FAILED,
            from_statuses=(TuneStatus.TRAINING,),
            error=error,
            eta_seconds=None,
        )
        return True
    db.update_tune(tune.owner, tune.id, only_if_status=TuneStatus.TRAINING, status=TuneStatus.QUEUED, error=reason)
    return False


def retry_or_fail_prompt(db: Database, prompt: Prompt, reason: str, *, retryable: bool = True) -> bool:
    """After a generation failed: queue it again, or fail it when the error is not `retryable` (it would fail the
    same way) or it had `MAX_ATTEMPTS`.

    Returns:
        True when the prompt failed for good (callbacks queued).
    """
    if not retryable or prompt.attempts >= MAX_ATTEMPTS:
        end_prompt(db, prompt.owner, prompt.id, PromptStatus.FAILED, error=reason)
        return True
    db.update_prompt(
        prompt.owner, prompt.id, only_if_status=PromptStatus.GENERATING, status=PromptStatus.QUEUED, error=reason
    )
    return False


def requeue_failed_prompt(db: Database, owner: str, prompt_id: int) -> bool:
    """Put a failed prompt back in the queue as new (attempts and error cleared), only while its tune is still
    `trained` (an operator's retry).

    Returns:
        False (nothing changed) when the prompt is not the owner's, not failed, or its tune is not trained.
    """
    with db.transaction() as conn:
        prompt = db.prompt_by_id(conn, prompt_id)
        if prompt is None or prompt.owner != owner or prompt.status != PromptStatus.FAILED:
            return False
        tune = db.tune_by_id(conn, prompt.tune_id)
        if tune is None or tune.status != TuneStatus.TRAINED:
            return False
        return db.set_prompt(
            conn,
            prompt_id,
            owner=owner,
            status=PromptStatus.QUEUED,
            attempts=0,
            error=None,
            started_at=None,
            completed_at=None,
        )


def requeue_ended_tune(db: Database, owner: str, tune_id: int) -> int | None:
    """Put a failed or cancelled tune back in the queue as new, with the prompts it failed before they ever ran
    (attempts 0) (an operator's retry).

    Returns:
        How many prompts were queued again, or None when the tune is not failed or cancelled (nothing changed).
    """
    now = iso(db.clock())
    with db.transaction() as conn:
        changed = db.set_tune(
            conn,
            tune_id,
            owner=owner,
            from_statuses=TUNE_RETRYABLE,
            status=TuneStatus.QUEUED,
            attempts=0,
            error=None,
            progress=0,
            eta_seconds=None,
            started_training_at=None,
            updated_at=now,
        )
        if not changed:
            return None
        never_ran = [p for p in db.prompts_in(conn, PromptStatus.FAILED, tune_id=tune_id) if p.attempts == 0]
        for prompt in never_ran:
            db.set_prompt(conn, prompt.id, status=PromptStatus.QUEUED, error=None, updated_at=now)
    return len(never_ran)
