"""The worker: claims queued trainings and generations from the database and runs them, one at a time.

`InProcessWorker` runs jobs for one device. `make run` / `python app.py` starts one worker *process* per entry of
`TUNES_WORKER_DEVICES` (`python -m studio.worker --id w0 --device cuda:0`, supervised by `studio.supervisor`), so
the web process never trains and never imports torch; tests and scripts can also run it as a thread of their own
process (`open_runtime`). Several workers share one data folder: a claimed job is held by its worker's id with a
lease that a heartbeat renews (`TUNES_WORKER_LEASE_SECONDS`). A job whose lease lapses (its worker was killed,
hangs or lost the disk) is re-queued by the next claim of any worker, and a training resumes from its checkpoint;
after three interrupted or failed attempts it is `failed`. A worker that finds it lost its lease (it was paused
past it) stops that job without writing anything: only the holder ends a job, so nothing completes twice.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import threading
import time
import traceback
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipelines.errors import (
    ModelUnavailableError,
    PhotoRejectedError,
    SettingsError,
    TrainingCancelledError,
    TunesError,
    ValidationError,
)
from pipelines.generate import GeneratedImage, GenerationRequest, GenerationResult, Generator, LoraSpec
from pipelines.prompt_spec import MAX_SEED, STORED_FIELDS, option_values
from pipelines.registry import get_branch
from pipelines.settings import Settings
from pipelines.train import TrainProgress
from pipelines.tuning import TuneRequest, check_photos, train_tune
from storage.artifacts import ModelCard
from storage.records import TUNE_ACTIVE, JobKind, Prompt, PromptStatus, Tune, TuneStatus, iso
from studio import likeness, queue
from studio.callbacks import CallbackSender, deliver_in_background
from studio.errors import ConflictError
from studio.service import Studio
from studio.supervisor import process_alive

log = logging.getLogger(__name__)
_PROGRESS_EVERY_S = 0.5  # how often training progress is written to the tune record
_CANCEL_CHECK_EVERY_S = 1.0
_IDLE_POLL_S = 0.5  # how often an idle worker looks for work queued by another process
ETA_AFTER_STEPS = 5  # steps of an attempt before its time per step is trusted for an ETA
SAMPLE_IMAGES, SAMPLE_STEPS = 2, 25  # model-card samples: a few seconds on a GPU


class LeaseLostError(TunesError):
    """The worker's lease on its job lapsed and another worker took the job over: stop, write nothing."""


class Backend(Protocol):
    """Where queued work runs. In-process now; Hugging Face Jobs later."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def run_once(self) -> bool: ...


class InProcessWorker:
    """Runs jobs on one device, in a background thread (`start`) or in the foreground of a worker process (`serve`).

    Args:
        studio: the service (records, settings, paths).
        generator: the worker's generator (base pipelines stay loaded between prompts: prompt affinity).
        store: the artifact store trained LoRAs go to.
        callbacks: delivers callbacks in a thread beside the worker's (`start`); None: a default sender.
        worker_id: this worker's name (`w0`; one running process per name). The jobs it holds carry its name and
            process id (`holder`): a restarted worker takes back the jobs of an earlier process of its name once that
            process is gone.
        device: shown on the admin tab.
    """

    def __init__(
        self,
        studio: Studio,
        generator: Generator,
        store,
        *,
        callbacks: CallbackSender | None = None,
        worker_id: str = queue.LOCAL_WORKER,
        device: str | None = None,
    ):
        self.studio = studio
        self.db = studio.db
        self.settings = studio.settings
        self.generator = generator
        self.store = store
        self.callbacks = callbacks or CallbackSender(studio)
        self.name = worker_id
        self.worker_id = queue.holder_id(worker_id, os.getpid())  # what its jobs' `worker_id` holds
        self.device = device or self.settings.device
        self.lease_s = float(self.settings.worker_lease_s)
        # with trainings on Hugging Face Jobs (`studio.hf_jobs`), local workers mostly generate
        self.kinds = queue.local_share(self.settings.train_on, self.device)
        self.lease: Lease | None = None  # of the job running now
        # a generated prompt whose images are scored (likeness) while the next prompt generates, then stored
        self._finishing: _Finishing | None = None
        self._scorer = likeness.Scorer()
        self._done = 0  # jobs finished since the last heartbeat
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._parent: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve the queue from daemon threads of this process: the worker, its heartbeat, the callback sender."""
        self._begin()
        self._spawn(self._loop, "tunes-worker")
        # callbacks have their own thread: a receiver that hangs must not hold up training and generation
        self._threads.append(deliver_in_background(self.callbacks, self._stop))

    def serve(self, *, parent_pid: int | None = None) -> None:
        """Serve the queue in the foreground (a worker process) until `stop`, or until the parent process that
        started it is gone (a supervisor killed with SIGKILL takes its workers with it)."""
        self._parent = parent_pid
        self._begin()
        try:
            self._loop(parent_pid=parent_pid)
        finally:
            self.db.worker_stopped(self.name)

    def _begin(self) -> None:
        self.db.worker_started(self.name, device=self.device, pid=os.getpid(), host=socket.gethostname())
        taken_back = queue.requeue_own(self.db, self.name, alive=process_alive)
        if taken_back:
            log.info("worker %s: %d job(s) of its previous run back in the queue", self.name, taken_back)
        self._spawn(self._heartbeat_loop, "tunes-heartbeat")

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _heartbeat_loop(self) -> None:
        """Every third of the lease: renew the running job's lease and say this worker is alive."""
        while not self._stop.wait(self.lease_s / 3):
            if self._parent is not None and os.getppid() != self._parent:  # mid-job too: a training stops
                log.warning("worker %s: the process that started it is gone; stopping", self.name)
                self._stop.set()
            try:
                self.heartbeat()
            except Exception:  # a locked or full disk now and then must not end the heartbeat
                log.exception("worker %s: heartbeat failed", self.name)

    def heartbeat(self) -> None:
        lease, finishing = self.lease, self._finishing
        if lease is not None:
            lease.renew()
        if finishing is not None and finishing.lease is not None:
            finishing.lease.renew()
        done, self._done = self._done, 0
        job = None if lease is None else f"{lease.kind} {lease.record_id}"
        self.db.worker_heartbeat(self.name, job=job, branches=self.generator.loaded_branches, done=done)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.studio.work_available.set()
        for thread in self._threads:
            thread.join(timeout)
        self._scorer.close()

    def _loop(self, *, parent_pid: int | None = None) -> None:
        try:
            self._serve_queue(parent_pid)
        finally:
            self._finish_pending()

    def _serve_queue(self, parent_pid: int | None) -> None:
        while not self._stop.is_set():
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("worker %s: the process that started it is gone; stopping", self.name)
                return
            try:
                worked = self.run_once(overlap=True)
            except Exception:  # the loop must survive anything a job does
                log.exception("worker loop error")
                worked = False
            if not worked:
                self.studio.work_available.wait(timeout=_IDLE_POLL_S)  # set by this process's service; others poll
                self.studio.work_available.clear()

    def run_once(self, *, overlap: bool = False) -> bool:
        """Claim and run one job. Returns False when the queue was empty.

        Args:
            overlap: a prompt's images are scored for likeness while the next prompt generates, and the prompt ends
                (images stored, status `done`) once that next prompt's images exist or the queue is empty: the
                serving loop's way, so a pack run does not wait for the scoring. False: the prompt ends here.
        """
        job = None
        if queue.has_work(self.db):
            loaded = self.generator.loaded_branches
            job = queue.claim_next_job(self.db, self.worker_id, lease_s=self.lease_s, loaded=loaded, kinds=self.kinds)
        if job is None:
            self._finish_pending()
            return False
        kind, record = job
        self.lease = Lease(self.db, kind, record.id, self.worker_id, lease_s=self.lease_s)
        try:
            self.run(kind, record, overlap=overlap)
        except LeaseLostError:
            log.warning("worker %s: lost its lease on %s %s; another worker runs it", self.name, kind, record.id)
        finally:
            self.lease = None
            self._done += 1
        return True

    def run(self, kind: JobKind, record: Tune | Prompt, *, overlap: bool = False) -> None:
        """Run one claimed job ("tune" or "prompt"); see `run_once` for `overlap`."""
        if kind == JobKind.TUNE:
            self._finish_pending()
            self._run_training(record)
        else:
            self._run_prompt(record, overlap=overlap)

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
            if self._stop.is_set():  # a clean shutdown is not a failed attempt
                queue.release(self.db, tune.owner, tune.id, held_by=self.worker_id)
            self._discard_if_ended(tune)
            return
        except (ValidationError, PhotoRejectedError, ModelUnavailableError) as error:  # would fail the same way again
            self._fail_tune(tune, str(error))
            return
        except LeaseLostError:  # another worker runs it now: not a failed attempt, and nothing is written
            raise
        except Exception as error:
            log.error("training of tune %s failed: %s", tune.id, traceback.format_exc(limit=5))
            reason = _describe(error, self.studio.settings.data_dir)
            if queue.retry_or_fail_tune(self.db, tune, reason, held_by=self.worker_id):
                self._discard_if_ended(tune)
            return
        trained_at = self.studio.clock()
        finished = queue.end_tune(
            self.db,
            tune.owner,
            tune.id,
            TuneStatus.TRAINED,
            from_statuses=(TuneStatus.TRAINING,),
            held_by=self.worker_id,
            progress=1.0,
            eta_seconds=0,
            error=None,
            trained_at=iso(trained_at),
            expires_at=iso(self.studio.expires_at(trained_at)) if location else None,
            artifact_location=location,
        )
        if not finished:  # cancelled, deleted or taken over while the last steps ran: keep nothing of it
            self._delete_artifact(location)
        self._discard_if_ended(tune)
        self.studio.work_available.set()  # its prompts can run now

    def _train(self, tune: Tune) -> str:
        photos = sorted(self.studio.photos_dir(tune.id).glob("*.png"))
        checked = check_photos(self.settings, photos, class_name=tune.name)
        likeness.keep_subject(self.db, tune.id, checked.subject)
        request = TuneRequest(
            class_name=tune.name,
            branch=tune.branch,
            token=tune.token,
            steps=tune.steps,
            face_crop=tune.face_crop,
            seed=tune.seed,
            model_type=tune.model_type,
        )
        output = self.studio.training_dir(tune.id)
        writer = ProgressWriter(self.db, tune, held_by=self.worker_id)
        last_check = [time.monotonic()]

        def on_progress(progress: TrainProgress) -> None:
            self._check_lease()  # before a checkpoint is saved: one that lost its lease must not overwrite it
            writer(progress)

        def should_cancel() -> bool:
            self._check_lease()
            now = time.monotonic()
            if now - last_check[0] < _CANCEL_CHECK_EVERY_S:
                return self._stop.is_set()
            last_check[0] = now
            current = self.db.get_tune(tune.owner, tune.id)
            return current is None or current.status == TuneStatus.CANCELLED or self._stop.is_set()

        result = train_tune(
            self.settings, checked, request, output, on_progress=on_progress, should_cancel=should_cancel
        )
        # the tune's own words: a pivotal LoRA's trained tokens are loaded under names of the generator's choosing
        subject = f"{tune.token} {tune.name}"
        card = ModelCard.from_metadata(
            result.metadata,
            branch=tune.branch,
            base_model=tune.base_model,
            title=tune.title,
            sample_images=self._samples(tune, result.output_dir, subject),
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
                loras=(LoraSpec(f"tune-{tune.id}", lora_dir, token=tune.token),),
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
        queue.fail_training(self.db, tune, reason, held_by=self.worker_id)
        self._discard_if_ended(tune)

    # -- generation ------------------------------------------------------------------------------

    def _run_prompt(self, prompt: Prompt, *, overlap: bool = False) -> None:
        tune = self.db.get_tune(prompt.owner, prompt.tune_id)
        try:
            result = self._generate(tune, prompt)
        except LeaseLostError:
            raise
        except Exception as error:
            log.error("prompt %s failed: %s", prompt.id, traceback.format_exc(limit=5))
            reason = _describe(error, self.studio.settings.data_dir)
            # an error of ours (a bad input, a missing LoRA) would fail the same way again
            retryable = not isinstance(error, TunesError)
            if queue.retry_or_fail_prompt(self.db, prompt, reason, retryable=retryable, held_by=self.worker_id):
                shutil.rmtree(self.studio.images_dir(prompt.id), ignore_errors=True)  # images of a failed run
            return
        self._finish_pending()  # the previous prompt, scored while this one generated
        pictures = [item.image for item in result.images]
        scores = self._scorer.submit(self.db, tune.id, pictures)
        self._finishing = _Finishing(prompt, self.lease, result.images, scores)
        if not overlap:
            self._finish_pending()

        scores = self._scorer.submit(self.db, tune.id, pictures)

    def _finish_pending(self) -> None:
        """End the generated prompt waiting for its likeness scores: keep its best images, store them, mark it done."""
        finishing, self._finishing = self._finishing, None
        if finishing is None:
            return
        prompt = finishing.prompt
        try:
            scores = finishing.scores.result()
        except Exception:  # a scoring failure loses the scores, never the images
            log.exception("prompt %s: its likeness could not be measured", prompt.id)
            scores = [None] * len(finishing.images)
        try:
            if finishing.lease is not None:
                finishing.lease.check()
        except LeaseLostError:
            log.warning("worker %s: lost its lease on prompt %s; another worker runs it", self.name, prompt.id)
            return
        try:
            images = self._store_images(prompt, finishing.images, scores)
        except Exception as error:  # a full disk: the prompt runs again, or fails with no partial images kept
            log.error("prompt %s: its images could not be stored: %s", prompt.id, traceback.format_exc(limit=5))
            reason = _describe(error, self.studio.settings.data_dir)
            if queue.retry_or_fail_prompt(self.db, prompt, reason, held_by=self.worker_id):
                shutil.rmtree(self.studio.images_dir(prompt.id), ignore_errors=True)  # images of a failed run
            return
        ended = queue.end_prompt(
            self.db, prompt.owner, prompt.id, PromptStatus.DONE, images=images, held_by=self.worker_id
        )
        if not ended and self.db.get_prompt(prompt.owner, prompt.id) is None:
            shutil.rmtree(self.studio.images_dir(prompt.id), ignore_errors=True)  # deleted meanwhile: keep nothing

    def _generate(self, tune: Tune | None, prompt: Prompt) -> GenerationResult:
        if tune is None or tune.status != TuneStatus.TRAINED:
            raise ConflictError(f"the tune is {tune.status if tune else 'deleted'}; its prompts cannot run")
        loras = self._loras(tune, prompt)
        seed = prompt.seed
        if seed is None:  # chosen once and kept, so a retry after a crash draws the same images
            seed = secrets.randbelow(MAX_SEED + 1)
            self.db.update_prompt(prompt.owner, prompt.id, seed=seed)
        options = {**option_values(prompt, STORED_FIELDS), "text": prompt.rendered_text, "seed": seed}
        request = GenerationRequest(**options, loras=loras).candidates()
        return self.generator.generate(tune.branch, request, should_cancel=self._lease_lost)

    def _store_images(self, prompt: Prompt, images: list[GeneratedImage], scores: list[float | None]) -> list[dict]:
        """Write the images the prompt keeps (`likeness.kept`) as PNGs; their records, with their likeness."""
        folder = self.studio.images_dir(prompt.id)
        folder.mkdir(parents=True, exist_ok=True)
        stored = []
        for index in likeness.kept(prompt, scores):
            item = images[index]
            path = folder / f"{index:02d}-{item.seed}.png"
            tmp = path.with_suffix(".tmp")
            item.image.save(tmp, format="PNG")
            tmp.replace(path)
            size = {"width": item.image.width, "height": item.image.height}
            stored.append({"path": str(path), "seed": item.seed, **size, "likeness": scores[index]})
        return stored

    def _check_lease(self) -> None:
        """Raises LeaseLostError once another worker has taken the running job over."""
        if self.lease is not None:
            self.lease.check()

    def _lease_lost(self) -> bool:
        self._check_lease()
        return False

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
            specs.append(LoraSpec(f"tune-{each.id}", path, weight=weights.get(each.id, 1.0), token=each.token))
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

    def __init__(
        self, db, tune: Tune, *, every_s: float = _PROGRESS_EVERY_S, clock=time.monotonic, held_by: str | None = None
    ):
        self.db, self.tune, self.every_s, self.clock, self.held_by = db, tune, every_s, clock, held_by
        self.last_write: float | None = None
        self.first_step: int | None = None
        self.losses: list[float] = []  # since the last write: their mean is the curve's next point

    def __call__(self, progress: TrainProgress) -> None:
        if progress.phase != "training":
            return
        if self.first_step is None:  # a resumed run starts past 0
            self.first_step = progress.step - 1
        if progress.loss is not None:
            self.losses.append(progress.loss)
        now = self.clock()
        recent = self.last_write is not None and now - self.last_write < self.every_s
        if recent and progress.step < progress.total_steps:
            return
        self.last_write = now
        settled = progress.step - self.first_step >= ETA_AFTER_STEPS
        eta = progress.eta_seconds if settled else None
        fraction = progress.step / progress.total_steps
        point = (progress.step, sum(self.losses) / len(self.losses)) if self.losses else None
        self.losses = []
        queue.report_progress(
            self.db, self.tune, progress=fraction, eta_seconds=eta, held_by=self.held_by, loss_point=point
        )


def _describe(error: BaseException, data_dir: Path) -> str:
    """The error as its owner reads it on the record: the OS reason without the file name, and never a path
    inside the data folder; the full text is in the log only."""
    if isinstance(error, TunesError):
        return str(error)
    if isinstance(error, OSError) and error.strerror:  # "No space left on device", not the server path
        return f"{type(error).__name__}: {error.strerror}"
    return f"{type(error).__name__}: {error}".replace(str(data_dir), "<data folder>")


class Lease:
    """A worker's hold on its running job. The heartbeat renews it every third of its length; `check`, called
    before every training step and every write, renews it itself once it is due (a worker that was paused past
    it, by SIGSTOP or a stalled disk, finds out there, before it writes anything).

    Raises (from `check`):
        LeaseLostError: the job went back to the queue or to another worker.
    """

    def __init__(self, db, kind: JobKind, record_id: int, worker: str, *, lease_s: float, clock=time.monotonic):
        self.db, self.kind, self.record_id, self.worker, self.lease_s, self.clock = (
            db,
            kind,
            record_id,
            worker,
            lease_s,
            clock,
        )
        self.due = clock() + lease_s * 2 / 3  # renewed before a third of it is left
        self.lost = False
        self._lock = threading.Lock()

    def renew(self) -> None:
        with self._lock:
            if self.lost:
                return
            asked = self.clock()
            if queue.renew_lease(self.db, self.kind, self.record_id, self.worker, lease_s=self.lease_s):
                self.due = asked + self.lease_s * 2 / 3
            elif queue.taken_over(self.db, self.kind, self.record_id, self.worker):
                self.lost = True  # ended or deleted is not lost: the job's own checks see that

    def check(self) -> None:
        if not self.lost and self.clock() >= self.due:
            self.renew()
        if self.lost:
            raise LeaseLostError(f"{self.kind} {self.record_id} was taken over by another worker")


@dataclass
class _Finishing:
    """A generated prompt waiting for its likeness scores (`likeness.Scorer`), its lease renewed by the heartbeat."""

    prompt: Prompt
    lease: Lease | None
    images: list[GeneratedImage]
    scores: Future


def _stop_with_parent(parent_pid: int) -> None:
    """Ask Linux for SIGTERM when the parent dies (a SIGKILLed server), so no orphan keeps training; elsewhere
    the heartbeat notices within a third of a lease."""
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):  # not Linux
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # gone before the request took effect
        raise SystemExit("the process that started this worker is gone")


def main(argv: list[str] | None = None) -> None:
    """`python -m studio.worker --id w0 --device cuda:0`: one worker process on the data folder of the settings."""
    import argparse
    import signal

    from studio.runtime import open_runtime

    parser = argparse.ArgumentParser(prog="python -m studio.worker", description=main.__doc__)
    parser.add_argument("--id", default="w0", help="this worker's id (one process per id; default w0)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: TUNES_DEVICE)")
    parser.add_argument("--parent", type=int, help="stop when this process (the supervisor) is gone")
    args = parser.parse_args(argv)
    if args.parent is not None:  # first, before the slow imports: a server killed meanwhile takes this worker along
        _stop_with_parent(args.parent)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker {args.id} %(levelname)s %(message)s")
    settings = Settings.from_env()
    runtime = open_runtime(settings, start_worker=False, worker_id=args.id, device=args.device)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: runtime.worker.stop(timeout=0))
    log.info("serving the queue of %s on %s", settings.data_dir, runtime.worker.device)
    try:
        runtime.worker.serve(parent_pid=args.parent)
    finally:
        runtime.db.close()


if __name__ == "__main__":
    try:
        main()
    except SettingsError as error:
        raise SystemExit(f"Tune Studio worker cannot start: {error}") from None
