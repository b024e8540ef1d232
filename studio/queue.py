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
import os
import sqlite3
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.registry import BRANCHES
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
LOCAL_WORKER = "local"  # the worker thread of a process that runs its own jobs (tests, scripts, benchmarks)
DEFAULT_LEASE_S = 30.0  # how long a claimed job stays a worker's without a heartbeat (`TUNES_WORKER_LEASE_SECONDS`)
AFFINITY_WAIT_S = 60.0  # a prompt waiting longer than this goes to the next free worker, loaded branch or not
TUNE_ENDS_CALLED_BACK = (TuneStatus.TRAINED, TuneStatus.FAILED, TuneStatus.CANCELLED)  # not an expiry
Job = tuple[JobKind, Tune | Prompt]
Share = Mapping[JobKind, Sequence[str] | None]  # the kinds of job a worker takes, each on these branches (None: all)
EVERY_JOB: Share = {JobKind.PROMPT: None, JobKind.TUNE: None}

# -- claiming --------------------------------------------------------------------------------------


def claim_next_job(
    db: Database,
    worker: str | None = None,
    *,
    lease_s: float = DEFAULT_LEASE_S,
    loaded: Sequence[str] = (),
    kinds: Share = EVERY_JOB,
) -> Job | None:
    """Atomically take the next job for `worker`, mark it running (`generating` / `training`, one more attempt)
    and held by `worker` for `lease_s` seconds (the worker's heartbeat renews the lease: `renew_lease`). The
    default holder is this process's own worker thread (`holder_id(LOCAL_WORKER, pid)`, as `open_runtime` names it).

    Prompts of trained tunes run between trainings; among each kind the order is FIFO. A prompt whose
    `<lora:…>` tags name a tune still queued or training waits for it (one that failed meanwhile lets it run and
    fail). Among ready prompts one on a branch in `loaded` (base pipelines the worker has in memory) goes first,
    unless the oldest has waited `AFFINITY_WAIT_S`. First, jobs whose lease lapsed (their worker died, hangs or
    lost contact) go back to the queue, or fail after `MAX_ATTEMPTS`; and as a backstop, queued prompts of a tune
    that can no longer be used fail. `kinds` limits what this worker takes: which kinds, each on which branches
    (`local_share`: with `TUNES_TRAIN_ON=hf-jobs` the Jobs backend trains and local workers mostly generate).

    Returns:
        ("prompt", the prompt without images) or ("tune", the tune), or None when nothing is queued.
    """
    worker = worker or holder_id(LOCAL_WORKER, os.getpid())
    moment = db.clock()
    now, until = iso(moment), iso(moment + timedelta(seconds=lease_s))
    with db.transaction() as conn:
        _requeue(db, conn, _lapsed(db, conn, now), now, reason="its worker stopped or stopped answering")
        _fail_prompts_of_unusable_tunes(db, conn, now)
        held = {"worker_id": worker, "lease_until": until}
        prompt = None
        if JobKind.PROMPT in kinds:
            prompt = _claim_prompt(db, conn, now, held, loaded, moment, only=kinds[JobKind.PROMPT])
        return prompt or (_claim_tune(db, conn, now, held, kinds[JobKind.TUNE]) if JobKind.TUNE in kinds else None)


def claim_prompts_of_tune(db: Database, tune_id: int, worker: str, *, lease_s: float) -> list[Prompt]:
    """Take every ready prompt queued for the trained tune `tune_id` at once (a job renders them in one batch), as
    `claim_next_job` takes one. Returns them, oldest first (none when the tune is not trained)."""
    moment = db.clock()
    now, until = iso(moment), iso(moment + timedelta(seconds=lease_s))
    held = {"worker_id": worker, "lease_until": until}
    claimed = []
    with db.transaction() as conn:
        while job := _claim_prompt(db, conn, now, held, (), moment, only=None, tune_id=tune_id):
            claimed.append(job[1])
    return claimed


def local_share(train_on: str, device: str) -> Share:
    """What a local worker on `device` takes: every job with `TUNES_TRAIN_ON=local`. With `hf-jobs` the Jobs
    backend trains, and renders too when no local worker has a GPU (`jobs_share`); a local worker keeps the
    mock branch's jobs (nothing to rent a GPU for) and, on a GPU, the prompts of every branch."""
    if train_on != "hf-jobs":
        return EVERY_JOB
    mock = tuple(name for name, branch in BRANCHES.items() if branch.is_mock)
    return {JobKind.PROMPT: None if is_gpu(device) else mock, JobKind.TUNE: mock}


def is_gpu(device: str) -> bool:
    """Whether a worker on `device` (`cpu`, `cuda`, `cuda:N`, `auto`) has a GPU, told without importing torch (the
    web tier does not): `auto` has one where the NVIDIA driver lists a GPU."""
    return device.startswith("cuda") or (device == "auto" and any(Path("/proc/driver/nvidia/gpus").glob("*")))


def jobs_share(local_devices: Sequence[str]) -> Share:
    """What the Jobs backend takes: the tunes of every real branch, and their prompts when no local worker has a
    GPU (they are batched into one job per tune)."""
    real = tuple(name for name, branch in BRANCHES.items() if not branch.is_mock)
    if any(is_gpu(device) for device in local_devices):
        return {JobKind.TUNE: real}
    return {JobKind.TUNE: real, JobKind.PROMPT: real}


def has_work(db: Database) -> bool:
    """Whether `claim_next_job` could find something (a cheap read; an idle worker asks this before claiming)."""
    return db.has_claimable(
        iso(db.clock()), queued=TuneStatus.QUEUED, training=TuneStatus.TRAINING, generating=PromptStatus.GENERATING
    )


def renew_lease(db: Database, kind: JobKind, record_id: int, worker: str, *, lease_s: float = DEFAULT_LEASE_S) -> bool:
    """Extend `worker`'s lease on its running job to `lease_s` seconds from now.

    Returns:
        False when the job is no longer the worker's to run: ended, deleted, or re-queued (or claimed) by another
        worker after the lease lapsed; `taken_over` tells these apart.
    """
    until = iso(db.clock() + timedelta(seconds=lease_s))
    table, running = _job_table(kind)
    with db.transaction() as conn:
        return db.extend_lease(conn, table, record_id, worker=worker, running=running, until=until)


def taken_over(db: Database, kind: JobKind, record_id: int, worker: str) -> bool:
    """Whether a job `worker` ran went back to the queue or to another worker (rather than ended or gone): the
    worker lost it and must stop without writing anything."""
    table, running = _job_table(kind)
    with db.snapshot() as conn:
        holder = db.holder(conn, table, record_id)
    if holder is None:
        return False
    status, held_by = holder
    return status == TuneStatus.QUEUED or (status == running and held_by != worker)


def holder_id(name: str, pid: int) -> str:
    """What a job's `worker_id` holds while a worker runs it: the worker's name and its process id (`w0.4242`)."""
    return f"{name}.{pid}"


def requeue_own(db: Database, name: str, *, alive: Callable[[int], bool]) -> int:
    """At a worker's start: the jobs an earlier process of the same worker name held go back to the queue now, if
    that process is gone (`alive(pid)` is False), rather than when their lease lapses; the attempt counts. One
    still finishing (a server restarted while its old worker stops) keeps them. Returns how many were re-queued or
    failed."""
    now = iso(db.clock())
    with db.transaction() as conn:
        held = [
            *((JobKind.TUNE, tune, pid) for tune, pid in db.held_by_name(conn, "tunes", TuneStatus.TRAINING, name)),
            *(
                (JobKind.PROMPT, prompt, pid)
                for prompt, pid in db.held_by_name(conn, "prompts", PromptStatus.GENERATING, name)
            ),
        ]
        gone = [(kind, record) for kind, record, pid in held if not alive(pid)]
        _requeue(db, conn, gone, now, reason="its worker stopped while this ran")
    return len(gone)


def _job_table(kind: JobKind) -> tuple[str, str]:
    return ("tunes", TuneStatus.TRAINING) if kind == JobKind.TUNE else ("prompts", PromptStatus.GENERATING)


def _lapsed(db: Database, conn: sqlite3.Connection, now: str) -> list[Job]:
    return [
        *((JobKind.TUNE, tune) for tune in db.running_past_lease(conn, "tunes", TuneStatus.TRAINING, now)),
        *((JobKind.PROMPT, prompt) for prompt in db.running_past_lease(conn, "prompts", PromptStatus.GENERATING, now)),
    ]


def _requeue(db: Database, conn: sqlite3.Connection, jobs: Sequence[Job], now: str, *, reason: str) -> int:
    """Interrupted jobs back to the queue (a training resumes from its checkpoint), or failed once they had
    `MAX_ATTEMPTS` (a failed tune fails its queued prompts; callbacks are queued). Returns how many failed."""
    failed = 0
    error = f"interrupted {MAX_ATTEMPTS} times ({reason})"
    released = {"worker_id": None, "lease_until": None, "updated_at": now}
    for kind, record in jobs:
        gave_up = record.attempts >= MAX_ATTEMPTS
        failed += gave_up
        if kind == JobKind.TUNE and gave_up:
            db.set_tune(conn, record.id, status=TuneStatus.FAILED, error=error, eta_seconds=None, **released)
            _after_tune_ended(db, conn, record.owner, record.id, TuneStatus.FAILED, error)
        elif kind == JobKind.TUNE:
            db.set_tune(conn, record.id, status=TuneStatus.QUEUED, **released)
        elif gave_up:
            db.set_prompt(conn, record.id, status=PromptStatus.FAILED, error=error, **released)
            _after_prompt_ended(db, conn, record.owner, record.id)
        else:
            db.set_prompt(conn, record.id, status=PromptStatus.QUEUED, **released)
    return failed


def _fail_prompts_of_unusable_tunes(db: Database, conn: sqlite3.Connection, now: str) -> None:
    """A backstop: prompts whose tune can no longer train never wait forever."""
    for prompt in db.prompts_in(conn, PromptStatus.QUEUED, tune_statuses=TUNE_UNUSABLE):
        db.set_prompt(
            conn, prompt.id, status=PromptStatus.FAILED, error="the tune can no longer be used", updated_at=now
        )
        _after_prompt_ended(db, conn, prompt.owner, prompt.id)


def _claim_prompt(
    db: Database,
    conn: sqlite3.Connection,
    now: str,
    held: dict[str, str],
    loaded: Sequence[str],
    moment: datetime,
    *,
    only: Sequence[str] | None,
    tune_id: int | None = None,
) -> Job | None:
    ready = {"tune_status": TuneStatus.TRAINED, "unless_tagged_in": TUNE_ACTIVE, "tune_id": tune_id}
    prompt = db.oldest_ready_prompt(conn, PromptStatus.QUEUED, **ready, branches=only)
    if prompt is None:
        return None
    loaded = [name for name in loaded if only is None or name in only]
    if loaded and _waited_s(prompt, moment) < AFFINITY_WAIT_S and db.branch_of_prompt(conn, prompt.id) not in loaded:
        prompt = db.oldest_ready_prompt(conn, PromptStatus.QUEUED, **ready, branches=loaded) or prompt
    db.set_prompt(
        conn,
        prompt.id,
        status=PromptStatus.GENERATING,
        attempts=prompt.attempts + 1,
        started_at=now,
        updated_at=now,
        **held,
    )
    return JobKind.PROMPT, db.prompt_by_id(conn, prompt.id)


def _waited_s(prompt: Prompt, moment: datetime) -> float:
    try:
        return (moment - datetime.fromisoformat(prompt.created_at)).total_seconds()
    except (TypeError, ValueError):  # a row from before timestamps were checked: it has waited long enough
        return float("inf")


def _claim_tune(
    db: Database, conn: sqlite3.Connection, now: str, held: dict[str, str], only: Sequence[str] | None
) -> Job | None:
    tune = db.oldest_tune_in(conn, TuneStatus.QUEUED, branches=only)
    if tune is None:
        return None
    db.set_tune(
        conn,
        tune.id,
        status=TuneStatus.TRAINING,
        attempts=tune.attempts + 1,
        started_training_at=tune.started_training_at or now,  # a resumed training keeps its first start
        updated_at=now,
        **held,
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


MAX_LOSS_POINTS = 200  # a loss curve keeps at most this many points: every other one goes when it is full


def report_progress(
    db: Database,
    tune: Tune,
    *,
    held_by: str | None = None,
    loss_point: tuple[int, float] | None = None,
    **progress: Any,
) -> bool:
    """Write a training's progress (`progress`, `eta_seconds`) while it trains and, given `held_by`, while that
    worker still holds it; `loss_point` (step, loss) goes on the tune's loss curve. Returns whether it was written."""
    with db.transaction() as conn:
        if loss_point is not None:
            current = db.tune_by_id(conn, tune.id)
            if current is not None:
                progress["loss_curve"] = _with_point(current.loss_curve, loss_point)
        training = (TuneStatus.TRAINING,)
        return db.set_tune(conn, tune.id, owner=tune.owner, from_statuses=training, held_by=held_by, **progress)


def _with_point(curve: list[list[float]], point: tuple[int, float]) -> list[list[float]]:
    """The curve with `point` added; a resumed run's points from its restart on replace the earlier ones."""
    step, loss = point
    kept = [item for item in curve if item[0] < step]
    if len(kept) >= MAX_LOSS_POINTS:
        kept = kept[::2]
    return [*kept, [int(step), round(float(loss), 6)]]


# -- remote jobs (Hugging Face Jobs) ----------------------------------------------------------------


def adopt_remote_jobs(db: Database, holder: str, name: str, *, alive: Callable[[int], bool]) -> list[Tune]:
    """At the start of the Jobs backend: the tunes training on a job that an earlier process of `name` followed
    (now gone) become `holder`'s to follow, so the studio re-attaches to running jobs instead of starting second
    ones. Returns those tunes."""
    now = iso(db.clock())
    adopted = []
    with db.transaction() as conn:
        for tune, pid in db.held_by_name(conn, "tunes", TuneStatus.TRAINING, name):
            if tune.job_id and not alive(pid):
                db.set_tune(conn, tune.id, worker_id=holder, updated_at=tune.updated_at or now)
                adopted.append(db.tune_by_id(conn, tune.id))
    return adopted


def queued_prompts_of(db: Database, tune_id: int) -> list[Prompt]:
    """The prompts waiting for a tune's training, oldest first (a job renders them right after training)."""
    with db.snapshot() as conn:
        return db.prompts_in(conn, PromptStatus.QUEUED, tune_id=tune_id)


def finish_remote_training(
    db: Database,
    tune: Tune,
    *,
    held_by: str,
    rendered: dict[int, Sequence[dict]],
    **trained: Any,
) -> bool:
    """A job trained `tune` and rendered some of its queued prompts: in one transaction the tune is `trained`
    (with `trained`: artifact_location, trained_at, expires_at…) and each rendered prompt still queued is `done`
    with exactly its images, callbacks queued. Prompts it did not render stay queued for the workers.

    Returns:
        False (nothing changed) when the tune is no longer training under `held_by` (cancelled or deleted).
    """
    now = iso(db.clock())
    with db.transaction() as conn:
        ended = db.set_tune(
            conn,
            tune.id,
            owner=tune.owner,
            from_statuses=(TuneStatus.TRAINING,),
            held_by=held_by,
            status=TuneStatus.TRAINED,
            lease_until=None,
            **trained,
        )
        if not ended:
            return False
        _after_tune_ended(db, conn, tune.owner, tune.id, TuneStatus.TRAINED, None)
        for prompt_id, images in rendered.items():
            done = db.set_prompt(
                conn,
                prompt_id,
                owner=tune.owner,
                from_statuses=(PromptStatus.QUEUED,),
                status=PromptStatus.DONE,
                attempts=1,
                started_at=now,
                completed_at=now,
                updated_at=now,
            )
            if not done:
                continue
            for image in images:
                db.insert_image(conn, tune.owner, prompt_id, **_image_columns(image))
            _after_prompt_ended(db, conn, tune.owner, prompt_id)
    return True


# -- ending ----------------------------------------------------------------------------------------


def end_tune(
    db: Database,
    owner: str,
    tune_id: int,
    status: TuneStatus,
    *,
    from_statuses: Sequence[str],
    held_by: str | None = None,
    **changes: Any,
) -> bool:
    """Move a tune to `status` if it is in one of `from_statuses`, with its consequences, atomically:
    a tune that can no longer train fails its queued prompts, and the callbacks are queued.

    Args:
        held_by: the worker ending its job: nothing changes unless that worker still holds it (a worker that lost
            its lease never ends a job twice).
        changes: other tune columns to set with the status (error, eta_seconds, artifact_location…).

    Returns:
        False (nothing changed) when the tune is gone, in another status, or held by another worker.

    Raises:
        ValueError: a column in `changes` that cannot be updated (nothing changed).
    """
    with db.transaction() as conn:
        if held_by is not None:
            changes["lease_until"] = None
        ended = db.set_tune(
            conn, tune_id, owner=owner, from_statuses=from_statuses, held_by=held_by, status=status, **changes
        )
        if not ended:
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
    held_by: str | None = None,
) -> bool:
    """Finish a generating prompt as `done` (storing its images) or `failed`, and queue its callbacks, in one
    transaction: a crash keeps neither or both.

    Args:
        images: the stored files, each {"path", "seed", "width", "height"} and optionally "likeness".
        held_by: the worker ending its job (see `end_tune`).

    Returns:
        False (nothing changed) when the prompt is no longer generating (deleted meanwhile) or another worker
        holds it.
    """
    now = iso(db.clock())
    completed_at = now if status == PromptStatus.DONE else None
    with db.transaction() as conn:
        changed = db.set_prompt(
            conn,
            prompt_id,
            owner=owner,
            from_statuses=(PromptStatus.GENERATING,),
            held_by=held_by,
            status=status,
            error=error,
            completed_at=completed_at,
            lease_until=None,
            updated_at=now,
        )
        if not changed:
            return False
        for image in images:
            db.insert_image(conn, owner, prompt_id, **_image_columns(image))
        _after_prompt_ended(db, conn, owner, prompt_id)
    return True


def _image_columns(image: dict) -> dict:
    """An image row's columns from a worker's or job's image dict ({"path", "seed", "width", "height"} and, where
    it was measured, "likeness")."""
    return {key: image.get(key) for key in ("path", "seed", "width", "height", "likeness")}


def _after_tune_ended(
    db: Database, conn: sqlite3.Connection, owner: str, tune_id: int, status: str, error: object
) -> None:
    """A tune that will never (again) have a LoRA fails its queued prompts and loses its subject's face embeddings
    (biometric data lives only as long as the LoRA); some end states call back."""
    if status in TUNE_UNUSABLE:
        db.delete_subject_faces(conn, tune_id)
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
    """Put every running job back in the queue whoever holds it, or fail it after `MAX_ATTEMPTS`: for when no worker
    can be running (an operator's recovery, a test's simulated crash). Workers use leases instead (`claim_next_job`
    re-queues only lapsed ones, `requeue_own` a restarted worker's own).

    Returns:
        (requeued, failed) counts.
    """
    now = iso(db.clock())
    with db.transaction() as conn:
        jobs = [
            *((JobKind.TUNE, tune) for tune in db.tunes_in(conn, TuneStatus.TRAINING)),
            *((JobKind.PROMPT, prompt) for prompt in db.prompts_in(conn, PromptStatus.GENERATING)),
        ]
        failed = _requeue(db, conn, jobs, now, reason="the worker process stopped while this ran")
    return len(jobs) - failed, failed


def release(db: Database, owner: str, tune_id: int, *, held_by: str | None = None) -> None:
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
            held_by=held_by,
            status=TuneStatus.QUEUED,
            attempts=max(tune.attempts - 1, 0),
            worker_id=None,
            lease_until=None,
        )


def fail_training(db: Database, tune: Tune, reason: str, *, held_by: str | None = None) -> bool:
    """A training that will not succeed ends `failed` with `reason` (its queued prompts fail, callbacks go).
    Returns False when it was no longer training (under `held_by`)."""
    training = (TuneStatus.TRAINING,)
    return end_tune(
        db,
        tune.owner,
        tune.id,
        TuneStatus.FAILED,
        from_statuses=training,
        held_by=held_by,
        error=reason,
        eta_seconds=None,
    )


def retry_or_fail_tune(db: Database, tune: Tune, reason: str, *, held_by: str | None = None) -> bool:
    """After a training attempt failed unexpectedly: queue it again, or fail it once it had `MAX_ATTEMPTS`.

    Returns:
        True when the tune failed for good (its queued prompts failed, callbacks queued).
    """
    if tune.attempts >= MAX_ATTEMPTS:
        fail_training(db, tune, f"failed {tune.attempts} times; last error: {reason}", held_by=held_by)
        return True
    with db.transaction() as conn:
        requeued = {"status": TuneStatus.QUEUED, "error": reason, "worker_id": None, "lease_until": None}
        db.set_tune(conn, tune.id, owner=tune.owner, from_statuses=(TuneStatus.TRAINING,), held_by=held_by, **requeued)
    return False


def retry_or_fail_prompt(
    db: Database, prompt: Prompt, reason: str, *, retryable: bool = True, held_by: str | None = None
) -> bool:
    """After a generation failed: queue it again, or fail it when the error is not `retryable` (it would fail the
    same way) or it had `MAX_ATTEMPTS`.

    Returns:
        True when the prompt failed for good (callbacks queued).
    """
    if not retryable or prompt.attempts >= MAX_ATTEMPTS:
        return end_prompt(db, prompt.owner, prompt.id, PromptStatus.FAILED, error=reason, held_by=held_by)
    with db.transaction() as conn:
        requeued = {"status": PromptStatus.QUEUED, "error": reason, "worker_id": None, "lease_until": None}
        running = (PromptStatus.GENERATING,)
        db.set_prompt(conn, prompt.id, owner=prompt.owner, from_statuses=running, held_by=held_by, **requeued)
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
