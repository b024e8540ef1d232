"""Several workers over one database: a claimed job is its worker's while the lease lasts, goes to another
worker once it lapses (attempts counted, then failed with the reason), and only its holder can end it: a job
never completes twice. Driven with a fake clock through `studio.queue`, as the worker processes call it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipelines.settings import Settings
from storage.records import DeliveryKind, JobKind, PromptStatus, TuneStatus
from studio import queue
from studio.requests import PromptCreate
from studio.runtime import open_runtime
from tests.studio.test_service import tune_request

LEASE = 30.0


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def runtime(tmp_path, clock):
    settings = Settings(data_dir=tmp_path / "data", device="cpu", allowed_fetch_hosts=("127.0.0.1",))
    rt = open_runtime(settings, clock=clock, start_worker=False)
    yield rt
    rt.close()


def claim(runtime, worker: str, **options):
    return queue.claim_next_job(runtime.db, worker, lease_s=LEASE, **options)


def test_a_job_under_a_live_lease_is_nobody_elses(runtime, clock):
    tune = runtime.studio.create_tune("alice", tune_request()).tune
    assert claim(runtime, "w1")[1].id == tune.id

    clock.advance(LEASE * 2 / 3)
    assert queue.renew_lease(runtime.db, JobKind.TUNE, tune.id, "w1", lease_s=LEASE)
    clock.advance(LEASE * 2 / 3)  # past the first lease, within the renewed one
    assert claim(runtime, "w2") is None
    assert queue.requeue_own(runtime.db, "w2", alive=lambda pid: False) == 0  # a restarted w2 takes none of w1's
    assert runtime.studio.get_tune("alice", tune.id).status == TuneStatus.TRAINING


def test_a_lapsed_lease_hands_the_training_to_another_worker_and_the_first_can_no_longer_write(runtime, clock):
    tune = runtime.studio.create_tune("alice", tune_request(callback="http://127.0.0.1:9/t")).tune
    _, first = claim(runtime, "w1")

    clock.advance(LEASE + 1)  # w1 was killed or paused: no heartbeat
    kind, second = claim(runtime, "w2")
    assert (kind, second.id, second.attempts) == (JobKind.TUNE, tune.id, 2)

    assert not queue.renew_lease(runtime.db, JobKind.TUNE, tune.id, "w1", lease_s=LEASE)
    assert queue.taken_over(runtime.db, JobKind.TUNE, tune.id, "w1")  # so w1 stops without writing
    assert not queue.report_progress(runtime.db, first, progress=0.9, eta_seconds=1, held_by="w1")
    trained = {"from_statuses": (TuneStatus.TRAINING,), "progress": 1.0}
    assert not queue.end_tune(runtime.db, "alice", tune.id, TuneStatus.TRAINED, held_by="w1", **trained)
    assert queue.end_tune(runtime.db, "alice", tune.id, TuneStatus.TRAINED, held_by="w2", **trained)
    assert not queue.end_tune(runtime.db, "alice", tune.id, TuneStatus.TRAINED, held_by="w1", **trained)

    assert runtime.studio.get_tune("alice", tune.id).status == TuneStatus.TRAINED
    assert len(runtime.db.deliveries_for("alice", DeliveryKind.TUNE, tune.id)) == 1  # one callback per end state


def test_a_job_whose_workers_keep_dying_fails_after_the_last_attempt_with_the_reason(runtime, clock):
    prompts = [PromptCreate("{{subject}} at sea", num_images=1, callback="http://127.0.0.1:9/p")]
    tune = runtime.studio.create_tune("alice", tune_request(prompts=prompts)).tune
    for attempt in range(1, queue.MAX_ATTEMPTS + 1):
        _, claimed = claim(runtime, f"w{attempt}")
        assert claimed.attempts == attempt
        clock.advance(LEASE + 1)

    assert claim(runtime, "w9") is None  # the lapsed third attempt fails the tune instead of a fourth
    failed = runtime.studio.get_tune("alice", tune.id)
    assert failed.status == TuneStatus.FAILED
    assert failed.error == f"interrupted {queue.MAX_ATTEMPTS} times (its worker stopped or stopped answering)"
    [prompt] = runtime.studio.list_prompts("alice", tune_id=tune.id)
    assert prompt.status == PromptStatus.FAILED and "the tune is failed" in prompt.error
    assert len(runtime.db.deliveries_for("alice", DeliveryKind.PROMPT, prompt.id)) == 1


def test_a_restarted_worker_takes_back_its_earlier_process_jobs_once_that_process_is_gone(runtime, clock):
    tune = runtime.studio.create_tune("alice", tune_request()).tune
    claim(runtime, queue.holder_id("w1", 101))  # w1's process 101

    # started again as process 102 while 101 still finishes its work: 101 keeps its job
    assert queue.requeue_own(runtime.db, "w1", alive=lambda pid: pid == 101) == 0
    assert queue.requeue_own(runtime.db, "w10", alive=lambda pid: False) == 0  # another name: not its job
    assert queue.requeue_own(runtime.db, "w1", alive=lambda pid: False) == 1  # 101 is gone: at once, no lease wait
    _, again = claim(runtime, queue.holder_id("w1", 102))
    assert (again.id, again.attempts) == (tune.id, 2)


def test_a_prompt_completes_once_with_exactly_its_images(runtime, clock):
    prompts = [PromptCreate("{{subject}} skiing", num_images=2, callback="http://127.0.0.1:9/p")]
    tune = runtime.studio.create_tune("alice", tune_request(prompts=prompts)).tune
    claim(runtime, "w1")
    queue.end_tune(runtime.db, "alice", tune.id, TuneStatus.TRAINED, from_statuses=(TuneStatus.TRAINING,))
    _, prompt = claim(runtime, "w1")
    clock.advance(LEASE + 1)
    _, again = claim(runtime, "w2")
    assert (again.id, again.attempts) == (prompt.id, 2)

    images = [{"path": f"/x/{i}.png", "seed": 7 + i, "width": 64, "height": 64} for i in range(2)]
    assert queue.end_prompt(runtime.db, "alice", prompt.id, PromptStatus.DONE, images=images, held_by="w2")
    assert not queue.end_prompt(runtime.db, "alice", prompt.id, PromptStatus.DONE, images=images, held_by="w1")

    done = runtime.studio.get_prompt("alice", prompt.id)
    assert done.status == PromptStatus.DONE and len(done.images) == 2
    assert len(runtime.db.deliveries_for("alice", DeliveryKind.PROMPT, prompt.id)) == 1


def test_a_cancelled_training_is_ended_not_taken_over(runtime, clock):
    tune = runtime.studio.create_tune("alice", tune_request()).tune
    claim(runtime, "w1")
    runtime.studio.cancel_tune("alice", tune.id)

    assert not queue.renew_lease(runtime.db, JobKind.TUNE, tune.id, "w1", lease_s=LEASE)
    assert not queue.taken_over(runtime.db, JobKind.TUNE, tune.id, "w1")  # the worker's cancel check handles it


def test_a_worker_gets_prompts_of_a_branch_it_has_loaded_unless_an_older_one_has_waited_long(runtime, clock):
    on_fast = runtime.studio.create_tune("alice", tune_request("fast one")).tune
    on_tiny = runtime.studio.create_tune("alice", tune_request("tiny one", branch="tiny")).tune
    for tune in (on_fast, on_tiny):
        claim(runtime, "w0")
        queue.end_tune(runtime.db, "alice", tune.id, TuneStatus.TRAINED, from_statuses=(TuneStatus.TRAINING,))
    older = runtime.studio.create_prompt("alice", on_fast.id, PromptCreate("{{subject}} one", num_images=1))
    newer = runtime.studio.create_prompt("alice", on_tiny.id, PromptCreate("{{subject}} two", num_images=1))

    assert claim(runtime, "w1", loaded=("tiny",))[1].id == newer.id  # its pipeline is already in memory
    assert claim(runtime, "w2", loaded=("sdxl1",))[1].id == older.id  # nothing loaded matches: the oldest
    for prompt, worker in ((newer, "w1"), (older, "w2")):
        assert queue.end_prompt(runtime.db, "alice", prompt.id, PromptStatus.DONE, held_by=worker)

    third = runtime.studio.create_prompt("alice", on_fast.id, PromptCreate("{{subject}} three", num_images=1))
    fourth = runtime.studio.create_prompt("alice", on_tiny.id, PromptCreate("{{subject}} four", num_images=1))
    clock.advance(queue.AFFINITY_WAIT_S + 1)
    assert claim(runtime, "w1", loaded=("tiny",))[1].id == third.id  # waited long enough: fairness first
    assert claim(runtime, "w1", loaded=("tiny",))[1].id == fourth.id


def test_a_worker_that_only_generates_leaves_trainings_to_the_jobs_backend(runtime, clock):
    tune = runtime.studio.create_tune("alice", tune_request()).tune
    assert claim(runtime, "w1", kinds={JobKind.PROMPT: None}) is None
    assert claim(runtime, "hf-jobs.7", kinds={JobKind.TUNE: None})[1].id == tune.id


def test_a_training_on_a_remote_job_is_not_taken_over_but_adopted_by_the_next_backend(runtime, clock):
    tune = runtime.studio.create_tune("alice", tune_request()).tune
    claim(runtime, queue.holder_id("hf-jobs", 7), kinds={JobKind.TUNE: None})
    runtime.db.update_tune("alice", tune.id, job_id="job-1", training_set="ns/tune-1-ab12cd34-photos")
    clock.advance(LEASE * 10)  # the studio that followed the job is gone; the job runs on

    assert claim(runtime, "w1") is None  # no second training of the tune
    assert queue.adopt_remote_jobs(runtime.db, "hf-jobs.8", "hf-jobs", alive=lambda pid: pid == 7) == []
    [adopted] = queue.adopt_remote_jobs(runtime.db, "hf-jobs.8", "hf-jobs", alive=lambda pid: False)
    assert (adopted.id, adopted.job_id, adopted.attempts, adopted.status) == (tune.id, "job-1", 1, TuneStatus.TRAINING)
    assert queue.renew_lease(runtime.db, JobKind.TUNE, tune.id, "hf-jobs.8", lease_s=LEASE)
