"""The worker: takes queued trainings and generations from the database and runs them, one at a time.

`Backend` is the interface; `InProcessWorker` is the implementation for one local GPU (or the CPU):
a thread that claims the next job (prompts of trained tunes first, then the oldest training), runs it,
and delivers callbacks. On start, work a dead process left `training`/`generating` is queued again (a
training resumes from its checkpoint); after three interrupted or failed attempts it is `failed`.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Protocol

from pipelines.errors import (
    ModelUnavailableError,
    PhotoRejectedError,
    TrainingCancelledError,
    TunesError,
    ValidationError,
)
from pipelines.generate import GenerationRequest, Generator, LoraSpec
from pipelines.prompt_spec import MAX_SEED, STORED_FIELDS, option_values
from pipelines.registry import get_branch
from pipelines.train import TrainProgress
from pipelines.tuning import TuneRequest, check_photos, train_tune
from storage.artifacts import ModelCard
from storage.records import TUNE_ACTIVE, JobKind, Prompt, PromptStatus, Tune, TuneStatus, iso
from studio import queue
from studio.callbacks import CallbackSender
from studio.errors import ConflictError
from studio.service import Studio

log = logging.getLogger(__name__)
_PROGRESS_EVERY_S = 0.5  # how often training progress is written to the tune record
_CANCEL_CHECK_EVERY_S = 1.0
ETA_AFTER_STEPS = 5  # steps of an attempt before its time per step is trusted for an ETA
SAMPLE_IMAGES, SAMPLE_STEPS = 2, 25  # model-card samples: a few seconds on a GPU


class Backend(Protocol):
    """Where queued work runs. In-process now; Hugging Face Jobs later."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def run_once(self) -> bool: ...


class InProcessWorker:
    """Runs jobs in a background thread of this process (one GPU slot shared by training and generation).

    Args:
        studio: the service (records, settings, paths).
        generator: the process's generator (base pipelines stay loaded between prompts).
        store: the artifact store trained LoRAs go to.
        callbacks: delivers callbacks; None disables them.
    """

    def __init__(self, studio: Studio, generator: Generator, store, *, callbacks: CallbackSender | None = None):
        self.studio = studio
        self.db = studio.db
        self.settings = studio.settings
        self.generator = generator
        self.store = store
        self.callbacks = callbacks or CallbackSender(studio)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._callback_thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Re-queue interrupted work, then serve the queue in a daemon thread."""
        requeued, failed = queue.requeue_interrupted(self.db)
        if requeued or failed:
            log.info(
                "worker start: %d job(s) re-queued, %d failed after %d attempts", requeued, failed, queue.MAX_ATTEMPTS
            )
        self._thread = threading.Thread(target=self._loop, name="tunes-worker", daemon=True)
        self._thread.start()
        # callbacks have their own thread: a receiver that hangs must not hold up training and generation
        self._callback_thread = threading.Thread(target=self._deliver_loop, name="tunes-callbacks", daemon=True)
        self._callback_thread.start()

    def _deliver_loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.callbacks.deliver_due()
            except Exception:
                log.exception("callback delivery error")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.studio.work_available.set()
        for thread in (self._thread, self._callback_thread):
            if thread is not None:
                thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # the loop must survive anything a job does
                log.exception("worker loop error")
                worked = False
            if not worked:
                self.studio.work_available.wait(timeout=1.0)
                self.studio.work_available.clear()

    def run_once(self) -> bool:
        """Claim and run one job. Returns False when the queue was empty."""
        job = queue.claim_next_job(self.db)
        if job is None:
            return False
        self.run(*job)
        return True

    def run(self, kind: JobKind, record: Tune | Prompt) -> None:
        """Run one claimed job ("tune" or "prompt")."""
        if kind == JobKind.TUNE:
            self._run_training(record)
        else:
            self._run_prompt(record)

    def drain(self, *, max_jobs: int = 1000) -> int:
        """Run jobs until the queue is empty (tests and scripts). Returns how many ran."""
        count = 0
        while count < max_jobs and self.run_once():
            count += 1
        self.callbacks.deliver_due()
        return count

    # -- training --------------------------------------------------------------------------------

    def _run_training(self, tune: Tune) -> None:
        branch = get_branch(tune.branch)
        try:
            # the mock branch trains nothing; its prompts get placeholder images
            location = None if branch.is_mock else self._train(tune)
        except TrainingCancelledError:
            if self._stop.is_set():
                queue.release(self.db, tune.owner, tune.id)  # a clean shutdown is not a failed attempt
            self._discard_if_ended(tune)
            return
        except (ValidationError, PhotoRejectedError, ModelUnavailableError) as error:  # would fail the same way again
            self._fail_tune(tune, str(error))
            return
        except Exception as error:
            log.error("training of tune %s failed: %s", tune.id, traceback.format_exc(limit=5))
            reason = _describe(error, self.studio.settings.data_dir)
            if queue.retry_or_fail_tune(self.db, tune, reason):
                self._discard_if_ended(tune)
            return
        trained_at = self.studio.clock()
        finished = queue.end_tune(
            self.db,
            tune.owner,
            tune.id,
            TuneStatus.TRAINED,
            from_statuses=(TuneStatus.TRAINING,),
            progress=1.0,
            eta_seconds=0,
            error=None,
            trained_at=iso(trained_at),
            expires_at=iso(self.studio.expires_at(trained_at)) if location else None,
            artifact_location=location,
        )
        if not finished:  # cancelled or deleted while the last steps ran: keep nothing of it
            self._delete_artifact(location)
        self._discard_if_ended(tune)
        self.studio.work_available.set()  # its prompts can run now

    def _train(self, tune: Tune) -> str:
        photos = sorted(self.studio.photos_dir(tune.id).glob("*.png"))
        checked = check_photos(self.settings, photos, class_name=tune.name)
        request = TuneRequest(
            class_name=tune.name,
            branch=tune.branch,
            token=tune.token,
            steps=tune.steps,
            face_crop=tune.face_crop,
            seed=tune.seed,
        )
        output = self.studio.training_dir(tune.id)
        on_progress = ProgressWriter(self.db, tune)
        last_check = [time.monotonic()]

        def should_cancel() -> bool:
            now = time.monotonic()
            if now - last_check[0] < _CANCEL_CHECK_EVERY_S:
                return self._stop.is_set()
            last_check[0] = now
            current = self.db.get_tune(tune.owner, tune.id)
            return current is None or current.status == TuneStatus.CANCELLED or self._stop.is_set()

        result = train_tune(
            self.settings, checked, request, output, on_progress=on_progress, should_cancel=should_cancel
        )
        instance_prompt = result.metadata["instance_prompt"]
        card = ModelCard(
            base_model=tune.base_model,
            instance_prompt=instance_prompt,
            branch=tune.branch,
            title=tune.title,
            sample_images=self._samples(tune, result.output_dir, instance_prompt),
        )
        # a random suffix: a reset database or a second deployment never writes onto an old tune's repo
        return self.store.put(f"{tune.id}-{secrets.token_hex(4)}", result.output_dir, card)

    def _samples(self, tune: Tune, lora_dir: Path, prompt: str) -> tuple[Path, ...]:
        """Two images of the instance prompt for the model card; a failure here never fails the tune."""
        try:
            request = GenerationRequest(
                text=prompt,
                num_images=SAMPLE_IMAGES,
                seed=tune.seed,
                steps=SAMPLE_STEPS,
                loras=(LoraSpec(f"tune-{tune.id}", lora_dir),),
            )
            result = self.generator.generate(tune.branch, request)
        except Exception:
            log.warning("no sample images for tune %s: %s", tune.id, traceback.format_exc(limit=3))
            return ()
        folder = lora_dir / "samples"
        folder.mkdir(exist_ok=True)
        paths = []
        for index, item in enumerate(result.images):
            path = folder / f"{index}.png"
            item.image.save(path)
            paths.append(path)
        return tuple(paths)

    def _discard_if_ended(self, tune: Tune) -> None:
        """Once a tune is trained, failed, cancelled or deleted, its photos and checkpoints go (privacy):
        the LoRA lives in the store and nothing will resume the training. Photos stay only while queued."""
        current = self.db.get_tune(tune.owner, tune.id)
        if current is not None and current.status in TUNE_ACTIVE:
            return
        shutil.rmtree(self.studio.training_dir(tune.id), ignore_errors=True)
        if current is None or current.status != TuneStatus.TRAINED or self.settings.delete_photos_after_training:
            shutil.rmtree(self.studio.photos_dir(tune.id), ignore_errors=True)

    def _delete_artifact(self, location: str | None) -> None:
        if location is None:
            return
        try:
            self.store.delete(location)
        except Exception:  # the Hub may be down; the orphan is logged for the operator
            log.error("could not delete orphaned LoRA %s: %s", location, traceback.format_exc(limit=2))

    def _fail_tune(self, tune: Tune, reason: str) -> None:
        queue.end_tune(
            self.db,
            tune.owner,
            tune.id,
            TuneStatus.FAILED,
            from_statuses=(TuneStatus.TRAINING,),
            error=reason,
            eta_seconds=None,
        )
        self._discard_if_ended(tune)

    # -- generation ------------------------------------------------------------------------------

    def _run_prompt(self, prompt: Prompt) -> None:
        tune = self.db.get_tune(prompt.owner, prompt.tune_id)
        try:
            images = self._generate(tune, prompt)
        except Exception as error:
            log.error("prompt %s failed: %s", prompt.id, traceback.format_exc(limit=5))
            reason = _describe(error, self.studio.settings.data_dir)
            # an error of ours (a bad input, a missing LoRA) would fail the same way again
            if queue.retry_or_fail_prompt(self.db, prompt, reason, retryable=not isinstance(error, TunesError)):
                shutil.rmtree(self.studio.images_dir(prompt.id), ignore_errors=True)  # images of a failed run
            return
        if not queue.end_prompt(self.db, prompt.owner, prompt.id, PromptStatus.DONE, images=images):
            # deleted meanwhile: keep nothing of it
            shutil.rmtree(self.studio.images_dir(prompt.id), ignore_errors=True)

    def _generate(self, tune: Tune | None, prompt: Prompt) -> list[dict]:
        if tune is None or tune.status != TuneStatus.TRAINED:
            raise ConflictError(f"the tune is {tune.status if tune else 'deleted'}; its prompts cannot run")
        loras = self._loras(tune, prompt)
        seed = prompt.seed
        if seed is None:  # chosen once and kept, so a retry after a crash draws the same images
            seed = secrets.randbelow(MAX_SEED + 1)
            self.db.update_prompt(prompt.owner, prompt.id, seed=seed)
        request = GenerationRequest(
            **{**option_values(prompt, STORED_FIELDS), "text": prompt.rendered_text, "seed": seed}, loras=loras
        )
        result = self.generator.generate(tune.branch, request)
        folder = self.studio.images_dir(prompt.id)
        folder.mkdir(parents=True, exist_ok=True)
        stored = []
        for index, item in enumerate(result.images):
            path = folder / f"{index:02d}-{item.seed}.png"
            tmp = path.with_suffix(".tmp")
            item.image.save(tmp, format="PNG")
            tmp.replace(path)
            stored.append(
                {"path": str(path), "seed": item.seed, "width": item.image.width, "height": item.image.height}
            )
        return stored

    def _loras(self, tune: Tune, prompt: Prompt) -> tuple[LoraSpec, ...]:
        """The prompt's tune (weight 1 unless a tag sets it) and every tune its `<lora:…>` tags name.

        Tagged tunes are checked on every branch, so the mock branch fails like a real one; it applies none.

        Raises:
            ConflictError: a tune has no LoRA now (deleted, failed, cancelled or expired since it was tagged).
        """
        weights = {entry["tune_id"]: entry["weight"] for entry in prompt.loras}
        tunes = [tune] + [self._tagged_tune(prompt, tune_id) for tune_id in weights if tune_id != tune.id]
        if get_branch(tune.branch).is_mock:
            return ()
        specs = []
        for each in tunes:
            if not each.artifact_location:
                raise ConflictError(f"tune {each.id} has no LoRA any more (expired or deleted)")
            path = self.store.fetch(each.artifact_location)
            specs.append(LoraSpec(f"tune-{each.id}", path, weight=weights.get(each.id, 1.0)))
        return tuple(specs)

    def _tagged_tune(self, prompt: Prompt, tune_id: int) -> Tune:
        other = self.db.get_tune(prompt.owner, tune_id)
        if other is None or other.status != TuneStatus.TRAINED:
            state = other.status if other else "deleted"
            raise ConflictError(f"<lora:{tune_id}> names tune {tune_id}, which is {state}; it has no LoRA to add")
        return other


class ProgressWriter:
    """Writes a training's progress to its tune record, at most every `every_s` seconds.

    The ETA is written only once `ETA_AFTER_STEPS` steps of this attempt ran: the first steps carry the warm-up
    (allocations, caches; the first run of a server builds the tiny model too), and an ETA taken from them swings
    by minutes. Until then the record has none and the tune reads "estimating the time left".
    """

    def __init__(self, db, tune: Tune, *, every_s: float = _PROGRESS_EVERY_S, clock=time.monotonic):
        self.db, self.tune, self.every_s, self.clock = db, tune, every_s, clock
        self.last_write: float | None = None
        self.first_step: int | None = None

    def __call__(self, progress: TrainProgress) -> None:
        if progress.phase != "training":
            return
        if self.first_step is None:  # a resumed run starts past 0
            self.first_step = progress.step - 1
        now = self.clock()
        recent = self.last_write is not None and now - self.last_write < self.every_s
        if recent and progress.step < progress.total_steps:
            return
        self.last_write = now
        settled = progress.step - self.first_step >= ETA_AFTER_STEPS
        eta = progress.eta_seconds if settled else None
        fraction = progress.step / progress.total_steps
        self.db.update_tune(self.tune.owner, self.tune.id, progress=fraction, eta_seconds=eta)


def _describe(error: BaseException, data_dir: Path) -> str:
    """The error as its owner reads it on the record: the OS reason without the file name, and never a path
    inside the data folder; the full text is in the log only."""
    if isinstance(error, TunesError):
        return str(error)
    if isinstance(error, OSError) and error.strerror:  # "No space left on device", not the server path
        return f"{type(error).__name__}: {error.strerror}"
    return f"{type(error).__name__}: {error}".replace(str(data_dir), "<data folder>")
