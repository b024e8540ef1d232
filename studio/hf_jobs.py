"""Training on rented GPUs: Hugging Face Jobs as a backend beside the local workers (`TUNES_TRAIN_ON=hf-jobs`).

The backend runs in the web process (it only calls the Hub). It claims queued tunes like a worker, holding them
by lease, at most `TUNES_JOBS_MAX_RUNNING` at a time (the rest wait in the queue: a cost cap). For each it pushes
the photos as a private `datasets` repo (`storage.training_sets`), starts `python -m studio.job` on the image
`TUNES_JOBS_IMAGE` with the flavor `TUNES_JOBS_FLAVOR` and the token as a job secret, stores the job id on the
tune and follows the job's log (one JSON line per step: progress, loss and ETA go to the tune record). When the
job completes, the LoRA is in the tune's private model repo and the images of the prompts it rendered are
downloaded into the studio; the training set is deleted in every end state. A job that ends in ERROR is retried
(attempts as for local training); one past `TUNES_JOBS_TIMEOUT` is cancelled and its tune fails; cancelling the
tune cancels the job. A studio restarted while jobs run re-attaches to them by id (`queue.adopt_remote_jobs`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from pipelines.errors import SettingsError
from pipelines.tuning import TuneRequest
from storage.records import JobKind, Tune, TuneStatus, iso
from studio import queue
from studio.job import RESULTS_FILE, JobSpec
from studio.service import Studio
from studio.supervisor import process_alive

log = logging.getLogger(__name__)
NAME = "hf-jobs"  # the backend's worker name on the tunes it holds
_TICK_S = 2.0
_ENDED = ("COMPLETED", "CANCELED", "ERROR", "DELETED")


@dataclass
class Followed:
    """A job the backend follows: its tune, id, and when it was started (for the timeout)."""

    tune: Tune
    job_id: str
    started: float
    training_set: str | None = None


class JobsBackend:
    """Sends trainings to Hugging Face Jobs and follows them; see the module docstring.

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
        self.followed: dict[int, Followed] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Check the flavor against the Hub's hardware list, re-attach to running jobs, then follow and submit."""
        self.check_flavor()
        for tune in queue.adopt_remote_jobs(self.db, self.holder, NAME, alive=process_alive):
            log.info("re-attached to job %s of tune %s", tune.job_id, tune.id)
            self.followed[tune.id] = Followed(tune, tune.job_id, time.monotonic(), tune.training_set)
        self._thread = threading.Thread(target=self._loop, name="tunes-hf-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following (the jobs run on; a restarted studio re-attaches to them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def check_flavor(self) -> None:
        """Raises SettingsError naming the allowed flavors when `TUNES_JOBS_FLAVOR` is not one of the Hub's."""
        names = [item.name for item in self.api.list_jobs_hardware()]
        if self.settings.jobs_flavor not in names:
            raise SettingsError("TUNES_JOBS_FLAVOR", self.settings.jobs_flavor, f"must be one of {', '.join(names)}")

    def _loop(self) -> None:
        while not self._stop.wait(_TICK_S):
            try:
                self.tick()
            except Exception:  # the Hub may be down a while: the next tick tries again
                log.exception("hf-jobs backend tick failed")

    def tick(self) -> None:
        """One round: check every followed job (progress, end, cancel, timeout), then submit queued tunes."""
        for followed in list(self.followed.values()):
            self._check(followed)
        while len(self.followed) < self.settings.jobs_max_running:
            job = queue.claim_next_job(
                self.db, self.holder, lease_s=self.settings.jobs_timeout_s, kinds=(JobKind.TUNE,)
            )
            if job is None:
                return
            self._submit(job[1])

    # -- submitting ------------------------------------------------------------------------------

    def _submit(self, tune: Tune) -> None:
        from storage.training_sets import push_training_set

        photos = sorted(self.studio.photos_dir(tune.id).glob("*.png"))
        request = TuneRequest(class_name=tune.name, branch=tune.branch, token=tune.token, steps=tune.steps)
        caption = f"photo of {request.resolved_token} {request.class_name}"
        repo = tune.training_set or f"{self.namespace}/tune-{tune.id}-{secrets.token_hex(4)}-photos"
        self.db.update_tune(tune.owner, tune.id, training_set=repo)  # before the push: deleted whatever happens
        try:
            push_training_set(photos, caption, repo_id=repo, token=self.settings.hf_token)
        except Exception as error:
            self._fail(tune, f"the training set could not be stored on the Hub: {error}", training_set=repo)
            return
        spec = JobSpec(
            tune_id=tune.id,
            artifact_name=_artifact_name(repo),
            training_set=repo,
            branch=tune.branch,
            base_model=tune.base_model,
            title=tune.title,
            class_name=tune.name,
            token=tune.token,
            steps=tune.steps,
            seed=tune.seed,
            prompts=[self._prompt_spec(p) for p in queue.queued_prompts_of(self.db, tune.id)],
        )
        job = self.api.run_job(
            image=self.settings.jobs_docker_image,
            command=["python", "-m", "studio.job", "--spec", spec.to_json()],
            env=self._job_env(),
            secrets={"HF_TOKEN": self.settings.hf_token},
            flavor=self.settings.jobs_flavor,
            timeout=self.settings.jobs_timeout_s,
            namespace=self.namespace,
        )
        self.db.update_tune(tune.owner, tune.id, job_id=job.id, training_set=repo, error=None)
        log.info("tune %s: job %s started on %s", tune.id, job.id, self.settings.jobs_flavor)
        self.followed[tune.id] = Followed(tune, job.id, time.monotonic(), repo)
        threading.Thread(target=self._follow_logs, args=(tune, job.id), daemon=True).start()

    def _job_env(self) -> dict[str, str]:
        env = {"TUNES_HUB_NAMESPACE": self.settings.hub_namespace or self.namespace, "HF_HUB_DISABLE_TELEMETRY": "1"}
        if os.environ.get("HF_ENDPOINT"):  # a Hub other than huggingface.co (a private one; the tests' fake)
            env["HF_ENDPOINT"] = os.environ["HF_ENDPOINT"]
        return env

    def _prompt_spec(self, prompt) -> dict[str, Any]:
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
                    queue.report_progress(
                        self.db, tune, held_by=self.holder, progress=progress, eta_seconds=event.get("eta_s")
                    )
        except Exception:  # the stage check sees the end either way
            log.warning("tune %s: the log of job %s stopped", tune.id, job_id)

    def _check(self, followed: Followed) -> None:
        tune = self.db.get_tune(followed.tune.owner, followed.tune.id)
        if tune is None or tune.status == TuneStatus.CANCELLED:
            self._cancel_job(followed)
            self._forget(followed, tune or followed.tune)
            return
        queue.renew_lease(self.db, JobKind.TUNE, tune.id, self.holder, lease_s=self.settings.jobs_timeout_s)
        info = self.api.inspect_job(job_id=followed.job_id, namespace=self.namespace)
        stage = str(info.status.stage.value if hasattr(info.status.stage, "value") else info.status.stage)
        if stage == "COMPLETED":
            self._completed(followed, tune)
        elif stage in _ENDED:
            self._forget(followed, tune, keep_set=True)
            reason = f"the job {stage.lower()}: {info.status.message or 'no reason given'}"
            if queue.retry_or_fail_tune(self.db, tune, reason, held_by=self.holder):
                self._delete_training_set(tune)
        elif time.monotonic() - followed.started > self.settings.jobs_timeout_s:
            self._cancel_job(followed)
            self._forget(followed, tune)
            minutes = self.settings.jobs_timeout_s // 60
            self._fail(tune, f"the job did not finish within TUNES_JOBS_TIMEOUT ({minutes} min) and was cancelled")

    def _completed(self, followed: Followed, tune: Tune) -> None:
        location = "hub://" + self.store.repo_id(_artifact_name(followed.training_set or tune.training_set))
        rendered = self._fetch_renders(tune, location)
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

    def _fetch_renders(self, tune: Tune, location: str) -> dict[int, list[dict]]:
        """Download the images the job rendered into the studio's image folders, then delete them from the repo."""
        repo_id = location.split("://", 1)[1]
        try:
            results = json.loads(Path(self.api.hf_hub_download(repo_id, RESULTS_FILE)).read_text())
        except Exception:
            log.warning("tune %s: its job left no rendered images", tune.id)
            return {}
        rendered: dict[int, list[dict]] = {}
        for prompt_id, images in results.items():
            folder = self.studio.images_dir(int(prompt_id))
            folder.mkdir(parents=True, exist_ok=True)
            stored = []
            for image in images:
                target = folder / Path(image["file"]).name
                target.write_bytes(Path(self.api.hf_hub_download(repo_id, image["file"])).read_bytes())
                stored.append({"path": str(target), **{k: image[k] for k in ("seed", "width", "height")}})
            rendered[int(prompt_id)] = stored
        self.api.delete_folder("renders", repo_id=repo_id, commit_message="Tune Studio: renders fetched")
        return rendered

    # -- ending ----------------------------------------------------------------------------------

    def _cancel_job(self, followed: Followed) -> None:
        try:
            self.api.cancel_job(job_id=followed.job_id, namespace=self.namespace)
        except Exception:
            log.warning("job %s could not be cancelled (it may have ended)", followed.job_id)

    def _fail(self, tune: Tune, reason: str, *, training_set: str | None = None) -> None:
        queue.fail_training(self.db, tune, reason, held_by=self.holder)
        self._delete_training_set(tune, training_set)

    def _forget(self, followed: Followed, tune: Tune, *, keep_set: bool = False) -> None:
        self.followed.pop(followed.tune.id, None)
        if not keep_set:
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
