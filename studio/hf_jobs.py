"""Training on rented GPUs: Hugging Face Jobs as a backend beside the local workers (`TUNES_TRAIN_ON=hf-jobs`).

The backend runs in the web process (it only calls the Hub). It claims queued tunes like a worker, holding them by
lease, at most `TUNES_JOBS_MAX_RUNNING` jobs at a time (the rest wait in the queue: a cost cap). For each tune it
prepares the captioned square crops a local worker would train on, pushes them as a private `datasets` repo
(`storage.training_sets`), and starts `python -m studio.job` on the image `TUNES_JOBS_IMAGE` with the flavor
`TUNES_JOBS_FLAVOR` and the token as a job secret. The job id is stored on the tune; the job's log (one JSON line
per step) gives the tune its progress and ETA. When the job completes, the LoRA is in the tune's private model
repo and the images of the prompts the job rendered after training are downloaded into the studio.

Prompts created later for a trained tune run on a local worker when one has a GPU; otherwise the backend claims
them too, every ready prompt of one tune in one job (`queue.jobs_share`). The mock branch never rents a GPU.

Lifecycle: the training set is deleted in every end state, and a sweep at start removes any left behind. A job
that ends in ERROR, or cannot be started, is retried (attempts as for local work) with its reason on the record;
one past `TUNES_JOBS_TIMEOUT` is cancelled and its tune fails; cancelling the tune cancels the job. A studio
restarted while trainings run re-attaches to their jobs by id (`queue.adopt_remote_jobs`), never starting a second
job for a tune; renders held by a studio that died go back to the queue and are rendered again.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from PIL import Image as PILImage

from pipelines.errors import SettingsError
from pipelines.photos import TrainingImage
from pipelines.tuning import TuneRequest, check_photos, training_images
from storage.artifacts import describe_hub_error
from storage.records import TUNE_ACTIVE, JobKind, Prompt, PromptStatus, Tune, TuneStatus, iso
from studio import likeness, queue
from studio.job import RESULTS_NAME, JobSpec
from studio.service import Studio
from studio.supervisor import process_alive

log = logging.getLogger(__name__)
NAME = "hf-jobs"  # the backend's worker name on the jobs it holds
TRAINING_RENDERS = "renders/train"  # where a training job puts the images of the prompts it rendered
SWEEP_MIN_AGE = timedelta(hours=1)  # a training set younger than this may be one being pushed right now
_TICK_S = 2.0
_ENDED = ("COMPLETED", "CANCELED", "ERROR", "DELETED")


@dataclass
class Followed:
    """A job the backend follows: a training (its tune, then the tune's queued prompts) or a batch of renders."""

    job_id: str
    tune: Tune
    started: float  # monotonic, for the timeout
    renders: str  # the folder of the LoRA's repo the job puts its images in
    training_set: str | None = None  # set for a training
    prompts: list[Prompt] = field(default_factory=list)  # a batch of renders: the prompts the backend holds

    @property
    def trains(self) -> bool:
        return self.training_set is not None


class JobsBackend:
    """Sends trainings (and renders, with no local GPU) to Hugging Face Jobs and follows them; see the module
    docstring.

    Args:
        studio: the service (records, settings, photo folders).
        store: the artifact store (the LoRA's private repo; its images are fetched from there).
        api: a Hub client (tests point it at the fake Hub); default: one with `HF_TOKEN`.
    """

    def __init__(self, studio: Studio, store, *, api: HfApi | None = None):
        self.studio = studio
        self.db = studio.db
        self.settings = studio.settings
        self.store = store
        self.api = api or HfApi(token=self.settings.hf_token)
        self.namespace = self.settings.jobs_owner
        self.holder = queue.holder_id(NAME, os.getpid())
        self.scorer = likeness.Scorer()  # the renders' likeness, measured in a process of its own
        self.share = queue.jobs_share(self.settings.local_workers)
        self.followed: dict[str, Followed] = {}  # by job id
        self._start_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Check the flavor, re-attach to the jobs of trainings still running, sweep the training sets left behind,
        then follow and submit from a thread."""
        self.check_flavor()
        self.reattach()
        self.sweep()
        self._thread = threading.Thread(target=self._loop, name="tunes-hf-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following (the jobs run on; a restarted studio re-attaches to them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.scorer.close()

    def check_flavor(self) -> None:
        """Raises SettingsError naming the allowed flavors when `TUNES_JOBS_FLAVOR` is not one of the Hub's."""
        names = [item.name for item in self.api.list_jobs_hardware()]
        if self.settings.jobs_flavor not in names:
            raise SettingsError("TUNES_JOBS_FLAVOR", self.settings.jobs_flavor, f"must be one of {', '.join(names)}")

    def reattach(self) -> list[Tune]:
        """Follow again the jobs an earlier studio process started for trainings; the renders it held go back to the
        queue (their jobs are not known by id). Returns the tunes re-attached."""
        adopted = queue.adopt_remote_jobs(self.db, self.holder, NAME, alive=process_alive)
        for tune in adopted:
            log.info("re-attached to job %s of tune %s", tune.job_id, tune.id)
            self.followed[tune.job_id] = Followed(
                tune.job_id, tune, time.monotonic(), TRAINING_RENDERS, training_set=tune.training_set
            )
            threading.Thread(target=self._follow_logs, args=(tune, tune.job_id), daemon=True).start()
        queue.requeue_own(self.db, NAME, alive=process_alive)
        return adopted

    def sweep(self) -> list[str]:
        """Delete the training sets of this namespace that no queued or training tune needs (a crash between push
        and record, a delete that failed); those younger than `SWEEP_MIN_AGE` are spared."""
        from storage.training_sets import sweep

        keep = self.db.training_sets_of(TUNE_ACTIVE)
        try:
            return sweep(self.namespace, keep, token=self.settings.hf_token, min_age=SWEEP_MIN_AGE)
        except Exception as error:  # the next start sweeps again
            log.warning("the training sets could not be swept: %s", error)
            return []

    def _loop(self) -> None:
        while not self._stop.wait(_TICK_S):
            try:
                self.tick()
            except Exception:  # the Hub may be down a while: the next tick tries again
                log.exception("hf-jobs backend tick failed")

    def tick(self) -> None:
        """One round: check every followed job (progress, end, cancel, timeout), then submit queued work."""
        for followed in list(self.followed.values()):
            self._check(followed)
        while len(self.followed) < self.settings.jobs_max_running:
            job = queue.claim_next_job(self.db, self.holder, lease_s=self._lease_s, kinds=self.share)
            if job is None:
                return
            kind, record = job
            if kind == JobKind.TUNE:
                self._submit_training(record)
            else:
                self._submit_renders(record)

    # -- submitting ------------------------------------------------------------------------------

    def _submit_training(self, tune: Tune) -> None:
        from storage.training_sets import push_training_set

        repo = tune.training_set or f"{self.namespace}/tune-{tune.id}-{secrets.token_hex(4)}-photos"
        self.db.update_tune(tune.owner, tune.id, training_set=repo)  # before the push: deleted whatever happens
        try:
            crops = self._training_images(tune)
            push_training_set(
                [c.image for c in crops], [c.caption for c in crops], repo_id=repo, token=self.settings.hf_token
            )
        except Exception as error:  # photos no longer usable, or the Hub refused: the tune fails, nothing is left
            self._fail(tune, f"the training set could not be stored on the Hub: {error}", training_set=repo)
            return
        spec = self._spec(
            tune,
            artifact_name=_artifact_name(repo),
            training_set=repo,
            renders=TRAINING_RENDERS,
            prompts=[self._prompt_spec(p) for p in queue.queued_prompts_of(self.db, tune.id)],
        )
        job_id = self._run(spec)
        if job_id is None:  # the Hub would not start it: queued again (or failed after the attempts)
            if queue.retry_or_fail_tune(self.db, tune, self._start_error, held_by=self.holder):
                self._delete_training_set(tune, repo)
            return
        self.db.update_tune(tune.owner, tune.id, job_id=job_id, error=None)
        self.followed[job_id] = Followed(job_id, tune, time.monotonic(), TRAINING_RENDERS, training_set=repo)
        threading.Thread(target=self._follow_logs, args=(tune, job_id), daemon=True).start()

    def _submit_renders(self, first: Prompt) -> None:
        """One job for every ready prompt of `first`'s tune (the LoRA is loaded once)."""
        prompts = [first, *queue.claim_prompts_of_tune(self.db, first.tune_id, self.holder, lease_s=self._lease_s)]
        tune = self.db.get_tune(first.owner, first.tune_id)
        renders = f"renders/{secrets.token_hex(4)}"
        spec = self._spec(
            tune, lora=tune.artifact_location, renders=renders, prompts=[self._prompt_spec(p) for p in prompts]
        )
        job_id = self._run(spec)
        if job_id is None:
            for prompt in prompts:
                queue.retry_or_fail_prompt(self.db, prompt, self._start_error, held_by=self.holder)
            return
        self.followed[job_id] = Followed(job_id, tune, time.monotonic(), renders, prompts=prompts)

    def _spec(self, tune: Tune, **job: Any) -> JobSpec:
        return JobSpec(
            tune_id=tune.id,
            branch=tune.branch,
            base_model=tune.base_model,
            title=tune.title,
            class_name=tune.name,
            token=tune.token,
            steps=tune.steps,
            seed=tune.seed,
            model_type=tune.model_type,
            **job,
        )

    def _run(self, spec: JobSpec) -> str | None:
        """Start the job; its id, or None when the Hub would not start it (the reason in `_start_error`)."""
        try:
            job = self.api.run_job(
                image=self.settings.jobs_docker_image,
                command=["python", "-m", "studio.job", "--spec", spec.to_json()],
                env=self._job_env(),
                secrets={"HF_TOKEN": self.settings.hf_token},
                flavor=self.settings.jobs_flavor,
                timeout=self.settings.jobs_timeout_s,
                namespace=self.namespace,
            )
        except Exception as error:
            reason = f"the job could not be started: {describe_hub_error(error)}"
            self._start_error = _without_token(reason, self.settings.hf_token)
            log.warning("tune %s: %s", spec.tune_id, self._start_error)
            return None
        log.info("tune %s: job %s started on %s", spec.tune_id, job.id, self.settings.jobs_flavor)
        return job.id

    @property
    def _lease_s(self) -> float:
        return float(self.settings.jobs_timeout_s)

    def _training_images(self, tune: Tune) -> list[TrainingImage]:
        """The square, captioned crops a local worker would train on (face crops included when asked): the job
        trains on exactly these, so the photos' faces are found once, here, with the studio's checks."""
        photos = sorted(self.studio.photos_dir(tune.id).glob("*.png"))
        request = TuneRequest(
            class_name=tune.name,
            branch=tune.branch,
            token=tune.token,
            steps=tune.steps,
            face_crop=tune.face_crop,
            model_type=tune.model_type,
        )
        checked = check_photos(self.settings, photos, class_name=tune.name)
        likeness.keep_subject(self.db, tune.id, checked.subject)  # the job never sees it: renders are scored here
        return training_images(checked, request)

    def _job_env(self) -> dict[str, str]:
        env = {"TUNES_HUB_NAMESPACE": self.settings.hub_namespace or self.namespace, "HF_HUB_DISABLE_TELEMETRY": "1"}
        if os.environ.get("HF_ENDPOINT"):  # a Hub other than huggingface.co (a private one; the tests' fake)
            env["HF_ENDPOINT"] = os.environ["HF_ENDPOINT"]
        return env

    def _prompt_spec(self, prompt: Prompt) -> dict[str, Any]:
        from pipelines.prompt_spec import MAX_SEED, STORED_FIELDS, option_values

        seed = prompt.seed if prompt.seed is not None else secrets.randbelow(MAX_SEED + 1)
        if prompt.seed is None:  # chosen once and kept, as a local worker does
            self.db.update_prompt(prompt.owner, prompt.id, seed=seed)
        return {**option_values(prompt, STORED_FIELDS), "id": prompt.id, "text": prompt.rendered_text, "seed": seed}

    # -- following -------------------------------------------------------------------------------

    def _follow_logs(self, tune: Tune, job_id: str) -> None:
        """Read the job's log as it runs; each progress line goes to the tune record."""
        try:
            for line in self.api.fetch_job_logs(job_id=job_id, namespace=self.namespace, follow=True):
                event = _event(line)
                if event and event.get("event") == "progress" and event.get("total"):
                    progress = min(1.0, event["step"] / event["total"])
                    loss = event.get("loss")
                    point = (event["step"], loss) if isinstance(loss, int | float) else None
                    queue.report_progress(
                        self.db, tune, held_by=self.holder, progress=progress, eta_seconds=event.get("eta_s"),
                        loss_point=point,
                    )  # fmt: skip
        except Exception:  # the stage check sees the end either way
            log.warning("tune %s: the log of job %s stopped", tune.id, job_id)

    def _check(self, followed: Followed) -> None:
        tune = self.db.get_tune(followed.tune.owner, followed.tune.id)
        wanted = TuneStatus.TRAINING if followed.trains else TuneStatus.TRAINED
        if tune is None or tune.status != wanted:  # cancelled, deleted or expired meanwhile
            self._cancel_job(followed)
            self._forget(followed, tune or followed.tune)
            self._end_renders(followed, "the tune can no longer be used", retry=False)
            return
        self._renew_leases(followed)
        info = self.api.inspect_job(job_id=followed.job_id, namespace=self.namespace)
        stage = str(getattr(info.status.stage, "value", info.status.stage))
        if stage == "COMPLETED":
            self._completed(followed, tune)
        elif stage in _ENDED:
            reason = f"the job {stage.lower()}: {info.status.message or 'no reason given'}"
            self._forget(followed, tune, keep_set=True)
            if followed.trains and queue.retry_or_fail_tune(self.db, tune, reason, held_by=self.holder):
                self._delete_training_set(tune, followed.training_set)
            self._end_renders(followed, reason, retry=True)
        elif time.monotonic() - followed.started > self.settings.jobs_timeout_s:
            self._cancel_job(followed)
            self._forget(followed, tune)
            minutes = self.settings.jobs_timeout_s // 60
            reason = f"the job did not finish within TUNES_JOBS_TIMEOUT ({minutes} min) and was cancelled"
            if followed.trains:
                self._fail(tune, reason)
            self._end_renders(followed, reason, retry=False)

    def _renew_leases(self, followed: Followed) -> None:
        if followed.trains:
            queue.renew_lease(self.db, JobKind.TUNE, followed.tune.id, self.holder, lease_s=self._lease_s)
        for prompt in followed.prompts:
            queue.renew_lease(self.db, JobKind.PROMPT, prompt.id, self.holder, lease_s=self._lease_s)

    def _completed(self, followed: Followed, tune: Tune) -> None:
        if followed.trains:
            self._trained(followed, tune)
            return
        rendered = self._fetch_renders(tune, tune.artifact_location, followed.renders)
        for prompt in followed.prompts:
            if prompt.id in rendered:
                queue.end_prompt(self.db, prompt.owner, prompt.id, PromptStatus.DONE, images=rendered[prompt.id],
                                 held_by=self.holder)  # fmt: skip
            else:
                queue.retry_or_fail_prompt(self.db, prompt, "the job ended without rendering it", held_by=self.holder)
        self._forget(followed, tune)

    def _trained(self, followed: Followed, tune: Tune) -> None:
        location = "hub://" + self.store.repo_id(_artifact_name(followed.training_set))
        rendered = self._fetch_renders(tune, location, followed.renders)
        trained_at = self.studio.clock()
        finished = queue.finish_remote_training(
            self.db,
            tune,
            held_by=self.holder,
            rendered=rendered,
            progress=1.0,
            eta_seconds=0,
            error=None,
            trained_at=iso(trained_at),
            expires_at=iso(self.studio.expires_at(trained_at)),
            artifact_location=location,
        )
        if not finished:
            log.warning("tune %s ended while its job completed; its LoRA is deleted", tune.id)
            self.store.delete(location)
        self._forget(followed, tune)
        self.studio.work_available.set()

    def _fetch_renders(self, tune: Tune, location: str, folder: str) -> dict[int, list[dict]]:
        """Download the images a job put in `folder` of the LoRA's repo into the studio's image folders, then delete
        them from the repo."""
        repo_id = location.split("://", 1)[1]
        try:
            results = json.loads(Path(self.api.hf_hub_download(repo_id, f"{folder}/{RESULTS_NAME}")).read_text())
        except Exception:
            log.warning("tune %s: its job left no rendered images", tune.id)
            return {}
        rendered: dict[int, list[dict]] = {}
        for prompt_id, images in results.items():
            prompt = self.db.get_prompt(tune.owner, int(prompt_id))
            if prompt is None:  # deleted while the job ran
                continue
            rendered[prompt.id] = self._keep_renders(tune, prompt, repo_id, images)
        self.api.delete_folder(folder, repo_id=repo_id, commit_message="Tune Studio: renders fetched")
        return rendered

    def _keep_renders(self, tune: Tune, prompt: Prompt, repo_id: str, images: list[dict]) -> list[dict]:
        """Download one prompt's rendered images, score their likeness and keep its `best_of` best (or all)."""
        target_dir = self.studio.images_dir(prompt.id)
        target_dir.mkdir(parents=True, exist_ok=True)
        files = [Path(self.api.hf_hub_download(repo_id, image["file"])) for image in images]
        pictures = []
        for file in files:
            with PILImage.open(file) as picture:
                pictures.append(picture.convert("RGB"))
        scores = self.scorer.submit(self.db, tune.id, pictures).result()  # dlib holds the GIL: not in this process
        stored = []
        for index in likeness.kept(prompt, scores):
            target = target_dir / Path(images[index]["file"]).name
            target.write_bytes(files[index].read_bytes())
            size = {k: images[index][k] for k in ("seed", "width", "height")}
            stored.append({"path": str(target), **size, "likeness": scores[index]})
        return stored

    # -- ending ----------------------------------------------------------------------------------

    def _cancel_job(self, followed: Followed) -> None:
        try:
            self.api.cancel_job(job_id=followed.job_id, namespace=self.namespace)
        except Exception:
            log.warning("job %s could not be cancelled (it may have ended)", followed.job_id)

    def _end_renders(self, followed: Followed, reason: str, *, retry: bool) -> None:
        """The prompts of a batch of renders that ended without images: queued again (`retry`, up to the attempts)
        or failed with `reason`."""
        for prompt in followed.prompts:
            queue.retry_or_fail_prompt(self.db, prompt, reason, retryable=retry, held_by=self.holder)

    def _fail(self, tune: Tune, reason: str, *, training_set: str | None = None) -> None:
        queue.fail_training(self.db, tune, reason, held_by=self.holder)
        self._delete_training_set(tune, training_set)

    def _forget(self, followed: Followed, tune: Tune, *, keep_set: bool = False) -> None:
        self.followed.pop(followed.job_id, None)
        if followed.trains and not keep_set:
            self._delete_training_set(tune, followed.training_set)

    def _delete_training_set(self, tune: Tune, repo: str | None = None) -> None:
        from storage.training_sets import delete_training_set

        current = self.db.get_tune(tune.owner, tune.id)
        repo = repo or (current.training_set if current else tune.training_set)
        if repo:
            try:
                delete_training_set(repo, token=self.settings.hf_token)
            except Exception:  # the sweep at the next start removes it
                log.warning("tune %s: its training set %s could not be deleted yet", tune.id, repo)


def _artifact_name(training_set: str) -> str:
    """The LoRA's name (its repo is `<namespace>/tune-<name>`) from the training set's (`ns/tune-12-ab12cd34-photos`
    gives `12-ab12cd34`): fixed before the job starts, so a re-attached studio knows where the LoRA went."""
    return training_set.split("/", 1)[1].removeprefix("tune-").removesuffix("-photos")


def _event(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith('{"event"'):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _without_token(text: str, token: str | None) -> str:
    return text.replace(token, "hf_***") if token else text
