"""The queue's rules live in `studio.queue`, over storage methods that only run SQL; statuses are enums that
read and serialise as the plain strings records always carried."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.records import PromptStatus, TuneStatus
from studio import queue
from studio.requests import PromptCreate
from studio.runtime import open_runtime
from tests.studio.test_service import tune_request

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runtime(settings):
    rt = open_runtime(settings, start_worker=False)
    yield rt
    rt.close()


def test_no_sql_runs_outside_storage():
    sources = [
        ROOT / "app.py",
        *(path for folder in ("studio", "ui", "rest", "admin") for path in (ROOT / folder).rglob("*.py")),
    ]
    running_sql = [str(path.relative_to(ROOT)) for path in sources if "execute(" in path.read_text()]
    assert running_sql == []


def test_statuses_compare_equal_to_the_stored_strings_and_serialise_as_them(runtime):
    tune = runtime.studio.create_tune("alice", tune_request()).tune
    kind, claimed = queue.claim_next_job(runtime.db)

    assert (kind, tune.status, claimed.status) == ("tune", TuneStatus.QUEUED, TuneStatus.TRAINING)
    published = runtime.studio.get_tune("alice", tune.id).to_dict()
    assert type(published["status"]) is str and json.dumps(published["status"]) == '"training"'


def test_a_clean_shutdown_gives_a_training_back_without_counting_the_attempt(runtime):
    tune = runtime.studio.create_tune("alice", tune_request()).tune
    _, claimed = queue.claim_next_job(runtime.db)
    assert claimed.attempts == 1

    queue.release(runtime.db, "bob", tune.id)  # another owner's tune: nothing happens
    assert runtime.studio.get_tune("alice", tune.id).status == TuneStatus.TRAINING
    queue.release(runtime.db, "alice", tune.id)
    released = runtime.studio.get_tune("alice", tune.id)
    assert (released.status, released.attempts) == (TuneStatus.QUEUED, 0)


def test_an_unexpected_training_error_is_retried_until_the_last_attempt_fails_the_tune(runtime):
    tune = runtime.studio.create_tune("alice", tune_request()).tune
    for attempt in range(1, queue.MAX_ATTEMPTS + 1):
        _, claimed = queue.claim_next_job(runtime.db)
        assert claimed.attempts == attempt
        assert queue.retry_or_fail_tune(runtime.db, claimed, "RuntimeError: boom") is (attempt == queue.MAX_ATTEMPTS)

    failed = runtime.studio.get_tune("alice", tune.id)
    assert failed.status == TuneStatus.FAILED
    assert failed.error == f"failed {queue.MAX_ATTEMPTS} times; last error: RuntimeError: boom"
    assert queue.claim_next_job(runtime.db) is None


def test_a_retried_tune_takes_back_the_prompts_its_failure_failed_before_they_ran(runtime):
    prompts = [PromptCreate(text="{{subject}}", num_images=1), PromptCreate(text="{{subject}} smiling", num_images=1)]
    tune = runtime.studio.create_tune("alice", tune_request(prompts=prompts)).tune
    queue.claim_next_job(runtime.db)
    ended = queue.end_tune(
        runtime.db, "alice", tune.id, TuneStatus.FAILED, from_statuses=(TuneStatus.TRAINING,), error="boom"
    )
    assert ended
    assert {p.status for p in runtime.studio.list_prompts("alice", tune_id=tune.id)} == {PromptStatus.FAILED}

    assert queue.requeue_ended_tune(runtime.db, "bob", tune.id) is None  # not bob's
    assert queue.requeue_ended_tune(runtime.db, "alice", tune.id) == 2
    again = runtime.studio.get_tune("alice", tune.id)
    assert (again.status, again.attempts, again.error) == (TuneStatus.QUEUED, 0, None)
    assert {p.status for p in runtime.studio.list_prompts("alice", tune_id=tune.id)} == {PromptStatus.QUEUED}
    assert queue.requeue_ended_tune(runtime.db, "alice", tune.id) is None  # queued: not failed any more
