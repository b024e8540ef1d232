"""Training on Hugging Face Jobs, end to end against the fake Hub, whose Jobs API runs the job as a local process:
the backend pushes the photos as a private dataset, the job (`python -m studio.job`) trains the tiny model, pushes
the LoRA to the tune's private repo and renders the tune's prompt; the studio ends up with a trained tune, the
prompt's images, and no training set left."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

from pipelines.registry import get_branch
from storage.records import JobKind, PromptStatus, TuneStatus
from storage.training_sets import load_training_set
from studio import queue
from studio.hf_jobs import JobsBackend
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from tests.conftest import wait_for
from tests.fakehub import FAKE_TOKEN, fake_hub_fixture  # noqa: F401 (registers `fake_hub`)
from tests.studio.test_service import PHOTOS


def jobs_settings(settings, **changes):
    return settings.with_overrides(
        hf_token=FAKE_TOKEN, hub_namespace="studio", train_on="hf-jobs", jobs_image="tune-studio:test", **changes
    )


def test_a_tiny_tune_trains_on_a_job_and_its_prompt_comes_back_with_its_images(settings, fake_hub):
    settings = jobs_settings(settings)
    fake_hub.job_extra_env = {"TUNES_DATA_DIR": str(settings.data_dir), "OMP_NUM_THREADS": "1"}  # the tiny model
    runtime = open_runtime(settings, start_worker=False)
    backend = JobsBackend(runtime.studio, runtime.store, api=HfApi(endpoint=fake_hub.url, token=FAKE_TOKEN))
    try:
        request = TuneCreate(
            title="me",
            name="woman",
            images=PHOTOS,
            branch="tiny",
            steps=4,
            prompts=[PromptCreate("{{subject}} in a garden", num_images=2, steps=2, seed=5)],
        )
        tune = runtime.studio.create_tune("alice", request).tune
        backend.check_flavor()
        fake_hub.fail_next_job("CUDA out of memory")  # the first job errors: the tune is retried
        backend.tick()  # submits
        backend.tick()  # sees the error, queues the tune again, submits a second job
        failed, job = fake_hub.submitted_jobs()
        assert failed.stage == "ERROR"
        assert job.secrets == {"HF_TOKEN": FAKE_TOKEN} and FAKE_TOKEN not in " ".join(job.spec.get("command", []))
        training_set = runtime.studio.get_tune("alice", tune.id).training_set
        assert fake_hub.repos[f"datasets/{training_set}"].private

        def ended():
            backend.tick()
            return runtime.studio.get_tune("alice", tune.id)

        trained = wait_for(ended, lambda t: t.status != TuneStatus.TRAINING, timeout=240, what="the job", every=1)
        assert trained.status == TuneStatus.TRAINED, (trained.error, job.log_lines[-20:])
        assert trained.job_id == job.id and trained.attempts == 2
        assert [step for step, _ in trained.loss_curve] == [1, 2, 3, 4], "the job's log drew the loss curve"
        assert trained.artifact_location.startswith("hub://studio/tune-")
        repo = fake_hub.repos[trained.artifact_location.removeprefix("hub://")]
        assert repo.private and "pytorch_lora_weights.safetensors" in repo.files
        assert not any(name.startswith("renders/") for name in repo.files)  # fetched, then deleted
        [prompt] = runtime.studio.list_prompts("alice", tune_id=tune.id)
        assert prompt.status == PromptStatus.DONE and [i.seed for i in prompt.images] == [5, 6]
        assert f"datasets/{training_set}" not in fake_hub.repos  # the photos are gone from the Hub
        assert FAKE_TOKEN not in "\n".join(job.log_lines)

        # 2. Two prompts created later, no local GPU: one job renders both with the trained LoRA
        later = [
            runtime.studio.create_prompt("alice", tune.id, PromptCreate(text, num_images=1, steps=2, seed=seed))
            for text, seed in (("{{subject}} on a beach", 11), ("{{subject}} in the snow", 12))
        ]
        backend.tick()
        assert len(fake_hub.submitted_jobs()) == 3, "one job for both prompts"
        assert all(runtime.studio.get_prompt("alice", p.id).status == PromptStatus.GENERATING for p in later)
        done = wait_for(
            lambda: backend.tick() or [runtime.studio.get_prompt("alice", p.id) for p in later],
            lambda ps: all(p.status in (PromptStatus.DONE, PromptStatus.FAILED) for p in ps),
            timeout=180,
            what="the batch of renders",
            every=1,
        )
        why = ([p.error for p in done], fake_hub.submitted_jobs()[-1].log_lines[-20:])
        assert [(p.status, [i.seed for i in p.images]) for p in done] == [("done", [11]), ("done", [12])], why
        assert all(Path(i.path).is_file() for p in done for i in p.images)
        assert not any(name.startswith("renders/") for name in repo.files)
        assert not backend.followed
    finally:
        backend.stop()
        runtime.close()


def test_a_job_stuck_in_scheduling_is_cancelled_at_the_timeout_and_a_cancelled_tune_cancels_its_job(settings, fake_hub):
    runtime = open_runtime(jobs_settings(settings, jobs_timeout_s=1), start_worker=False)
    backend = JobsBackend(runtime.studio, runtime.store, api=HfApi(endpoint=fake_hub.url, token=FAKE_TOKEN))
    fake_hub.hold_jobs = True  # no machine free: the jobs wait in SCHEDULING
    try:
        stuck = runtime.studio.create_tune(
            "alice", TuneCreate(title="stuck", name="woman", images=PHOTOS, branch="tiny")
        )
        gone = runtime.studio.create_tune("alice", TuneCreate(title="gone", name="woman", images=PHOTOS, branch="tiny"))
        backend.tick()
        first, second = fake_hub.submitted_jobs()
        # what the job will train on: the studio's square crops (full and face), each captioned with the token
        training_set = runtime.studio.get_tune("alice", stuck.tune.id).training_set
        rows = load_training_set(training_set, token=FAKE_TOKEN)
        assert len(rows) > len(PHOTOS), "a face crop beside each full crop"
        side = get_branch("tiny").resolution
        assert {image.size for image, _ in rows} == {(side, side)}
        assert {text for _, text in rows} == {f"{stuck.tune.token} woman"}
        runtime.studio.cancel_tune("alice", gone.tune.id)
        wait_for(
            lambda: backend.tick() or runtime.studio.get_tune("alice", stuck.tune.id),
            lambda t: t.status != TuneStatus.TRAINING,
            what="the timeout",
        )
        failed = runtime.studio.get_tune("alice", stuck.tune.id)
        assert failed.status == TuneStatus.FAILED and "TUNES_JOBS_TIMEOUT" in failed.error
        for job in (first, second):
            assert job.wait("CANCELED", timeout=30) == "CANCELED"
        assert not [name for name in fake_hub.repos if name.startswith("datasets/")]  # both training sets deleted
    finally:
        backend.stop()
        runtime.close()


def test_a_hub_that_refuses_the_photos_or_the_job_fails_the_tune_cleanly(settings, fake_hub):
    runtime = open_runtime(jobs_settings(settings), start_worker=False)
    backend = JobsBackend(runtime.studio, runtime.store, api=HfApi(endpoint=fake_hub.url, token=FAKE_TOKEN))
    try:
        # 1. The dataset push is refused: the tune fails at once with the reason, no job starts, no repo is left
        refused = runtime.studio.create_tune("alice", TuneCreate(title="a", name="woman", images=PHOTOS, branch="tiny"))
        fake_hub.fail_next("/api/datasets/studio/", status=403, message="Forbidden: quota exceeded")
        backend.tick()
        failed = runtime.studio.get_tune("alice", refused.tune.id)
        assert failed.status == TuneStatus.FAILED and "training set could not be stored" in failed.error
        assert "quota exceeded" in failed.error and FAKE_TOKEN not in failed.error
        assert not fake_hub.submitted_jobs() and not [n for n in fake_hub.repos if n.startswith("datasets/")]

        # 2. Jobs cannot start (no credit): retried on each tick, failed after the attempts, training set deleted
        tune = runtime.studio.create_tune("alice", TuneCreate(title="b", name="woman", images=PHOTOS, branch="tiny"))
        fake_hub.fail_next("/api/jobs/studio", method="POST", status=402, message="Payment required", times=3)
        for _ in range(3):
            backend.tick()
        ended = runtime.studio.get_tune("alice", tune.tune.id)
        assert (ended.status, ended.attempts) == (TuneStatus.FAILED, 3), ended
        assert "could not be started" in ended.error and "Payment required" in ended.error
        assert FAKE_TOKEN not in ended.error and not fake_hub.submitted_jobs() and not backend.followed
        assert not [name for name in fake_hub.repos if name.startswith("datasets/")]
    finally:
        backend.stop()
        runtime.close()


def test_cancelling_a_tune_while_its_job_runs_stops_the_job_after_its_progress_was_seen(settings, fake_hub):
    settings = jobs_settings(settings)
    fake_hub.job_extra_env = {"TUNES_DATA_DIR": str(settings.data_dir), "OMP_NUM_THREADS": "1"}
    runtime = open_runtime(settings, start_worker=False)
    backend = JobsBackend(runtime.studio, runtime.store, api=HfApi(endpoint=fake_hub.url, token=FAKE_TOKEN))
    try:
        request = TuneCreate(title="me", name="woman", images=PHOTOS, branch="tiny", steps=400)
        tune = runtime.studio.create_tune("alice", request).tune
        backend.tick()
        [job] = fake_hub.submitted_jobs()
        training = wait_for(
            lambda: backend.tick() or runtime.studio.get_tune("alice", tune.id),
            lambda t: t.progress > 0 or t.status != TuneStatus.TRAINING,
            timeout=120,
            what="progress from the job's log",
            every=0.5,
        )
        assert training.status == TuneStatus.TRAINING and training.eta_seconds is not None, job.log_lines[-10:]
        runtime.studio.cancel_tune("alice", tune.id)
        backend.tick()
        assert job.wait("CANCELED", timeout=30) == "CANCELED" and job.wait_gone(timeout=30), "the GPU is let go"
        assert runtime.studio.get_tune("alice", tune.id).status == TuneStatus.CANCELLED
        assert not backend.followed and not [n for n in fake_hub.repos if n.startswith("datasets/")]
        assert not [n for n in fake_hub.repos if n.startswith("studio/tune-")], "no LoRA pushed"
    finally:
        backend.stop()
        runtime.close()


def test_the_mock_branch_never_rents_a_gpu_and_renders_go_to_jobs_only_without_a_local_gpu(settings):
    runtime = open_runtime(jobs_settings(settings), start_worker=False)
    try:
        mock = runtime.studio.create_tune("alice", TuneCreate(title="m", name="woman", images=PHOTOS, branch="fast"))
        real = runtime.studio.create_tune("alice", TuneCreate(title="r", name="woman", images=PHOTOS, branch="tiny"))
        jobs = queue.jobs_share(("cpu",))
        claimed = queue.claim_next_job(runtime.db, "hf-jobs.1", kinds=jobs)
        assert (claimed[0], claimed[1].id) == (JobKind.TUNE, real.tune.id), "the Jobs backend trains real branches"
        assert queue.claim_next_job(runtime.db, "hf-jobs.1", kinds=jobs) is None, "not the mock one"
        local = queue.claim_next_job(runtime.db, "w0.1", kinds=queue.local_share("hf-jobs", "cpu"))
        assert (local[0], local[1].id) == (JobKind.TUNE, mock.tune.id), "a local worker serves the mock branch"
        assert queue.local_share("local", "cpu") == queue.EVERY_JOB
        # where prompts of trained tunes go: a local GPU renders them; without one, the Jobs backend batches them
        assert JobKind.PROMPT in queue.jobs_share(("cpu",)) and JobKind.PROMPT not in queue.jobs_share(("cuda:0",))
        assert queue.local_share("hf-jobs", "cuda:0")[JobKind.PROMPT] is None
        assert queue.local_share("hf-jobs", "cpu")[JobKind.PROMPT] == ("fast",)
    finally:
        runtime.close()
