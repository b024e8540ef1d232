"""Training on Hugging Face Jobs, end to end against the fake Hub, whose Jobs API runs the job as a local process:
the backend pushes the photos as a private dataset, the job (`python -m studio.job`) trains the tiny model, pushes
the LoRA to the tune's private repo and renders the tune's prompt; the studio ends up with a trained tune, the
prompt's images, and no training set left."""

from __future__ import annotations

from huggingface_hub import HfApi

from storage.records import PromptStatus, TuneStatus
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
        assert trained.artifact_location.startswith("hub://studio/tune-")
        repo = fake_hub.repos[trained.artifact_location.removeprefix("hub://")]
        assert repo.private and "pytorch_lora_weights.safetensors" in repo.files
        assert not any(name.startswith("renders/") for name in repo.files)  # fetched, then deleted
        [prompt] = runtime.studio.list_prompts("alice", tune_id=tune.id)
        assert prompt.status == PromptStatus.DONE and [i.seed for i in prompt.images] == [5, 6]
        assert f"datasets/{training_set}" not in fake_hub.repos  # the photos are gone from the Hub
        assert FAKE_TOKEN not in "\n".join(job.log_lines)
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
