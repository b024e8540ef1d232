"""An honest ETA on a shared worker: a queued tune says it waits for the worker (and its place in line), and
a training shows no ETA until its time per step has settled."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipelines.train import TrainProgress
from studio import queue
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from studio.worker import ETA_AFTER_STEPS, ProgressWriter
from tests.conftest import astronaut_photos
from ui.views import progress_bar, tune_status


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


PHOTOS = [(f"me-{i}.jpg", jpeg(p)) for i, p in enumerate(astronaut_photos())]


@pytest.fixture
def runtime(settings):
    rt = open_runtime(settings, start_worker=False)
    yield rt
    rt.close()


def tune_request(title: str, **changes) -> TuneCreate:
    return TuneCreate(**{"title": title, "name": "woman", "images": PHOTOS, "branch": "fast", **changes})


def test_a_queued_tune_waits_for_the_worker_with_its_place_in_line(runtime):
    studio = runtime.studio
    busy = studio.create_tune("bob", tune_request("pack", prompts=[PromptCreate("{{subject}}", num_images=1)])).tune
    mine = studio.create_tune("alice", tune_request("me")).tune

    assert studio.jobs_ahead("alice", mine.id) == 1  # bob's training goes first
    kind, running = queue.claim_next_job(runtime.db)
    assert (kind, running.id) == ("tune", busy.id)
    assert studio.jobs_ahead("alice", mine.id) == 1  # now it runs
    assert studio.jobs_ahead("bob", busy.id) is None  # no longer queued
    line = tune_status(studio.get_tune("alice", mine.id), ahead=studio.jobs_ahead("alice", mine.id))
    assert line == "queued: waiting for the worker (1 job ahead)"

    runtime.worker.run(kind, running)  # bob's tune trained: its prompt runs before the next training
    assert studio.jobs_ahead("alice", mine.id) == 1
    runtime.worker.run_once()
    assert studio.jobs_ahead("alice", mine.id) == 0
    assert tune_status(studio.get_tune("alice", mine.id), ahead=0) == "queued: next for the worker"


def test_the_progress_bar_of_a_queued_tune_has_no_eta(runtime):
    mine = runtime.studio.create_tune("alice", tune_request("me")).tune
    shown = progress_bar(mine, ahead=3)
    assert "waiting for the worker (3 jobs ahead)" in shown and "left" not in shown
    assert tune_status(mine) == "queued: waiting for the worker"


def test_a_training_shows_no_eta_until_its_steps_settle(runtime):
    studio = runtime.studio
    studio.create_tune("alice", tune_request("me", steps=100))
    _, tune = queue.claim_next_job(runtime.db)
    assert tune_status(studio.get_tune("alice", tune.id)) == "training: preparing the photos and the base model"

    write = ProgressWriter(runtime.db, tune, every_s=0)
    write(TrainProgress("training", 1, 100, eta_seconds=900.0))  # the first step carries the warm-up
    assert tune_status(studio.get_tune("alice", tune.id)) == "training: step 1/100 (1%), estimating the time left"
    write(TrainProgress("training", 1 + ETA_AFTER_STEPS, 100, eta_seconds=47.0))
    line = tune_status(studio.get_tune("alice", tune.id))
    assert line == f"training: step {1 + ETA_AFTER_STEPS}/100 ({(1 + ETA_AFTER_STEPS) / 100:.0%}), about 47s left"


def test_a_resumed_training_waits_for_its_own_steps_before_an_eta(runtime):
    runtime.studio.create_tune("alice", tune_request("me", steps=100))
    _, tune = queue.claim_next_job(runtime.db)
    write = ProgressWriter(runtime.db, tune, every_s=0)
    write(TrainProgress("training", 61, 100, eta_seconds=5.0))  # resumed from a checkpoint at step 60
    assert runtime.db.get_tune("alice", tune.id).eta_seconds is None
    assert runtime.db.get_tune("alice", tune.id).progress == pytest.approx(0.61)
