"""Expiry: LoRAs go after the retention period, auto-extended tunes stay, images are kept."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from admin.scheduler import start_scheduler, sweep
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from tests.studio.test_service import PHOTOS

pytestmark = pytest.mark.usefixtures("no_card_samples")  # expiry deletes the LoRA whatever its card holds


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, days: float) -> None:
        self.now += timedelta(days=days)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def runtime(settings, clock):
    rt = open_runtime(settings, clock=clock, start_worker=False)
    yield rt
    rt.close()


def trained_tune(runtime, title: str, **changes):
    request = TuneCreate(
        title=title,
        name="woman",
        images=PHOTOS,
        branch="tiny",
        steps=1,
        prompts=[PromptCreate("{{subject}}", num_images=1, steps=1)],
        **changes,
    )
    tune = runtime.studio.create_tune("alice", request).tune
    runtime.worker.drain()
    return runtime.studio.get_tune("alice", tune.id)


def test_a_lora_expires_after_the_retention_period_and_images_stay(runtime, clock):
    tune = trained_tune(runtime, "me")
    assert tune.expires_at == "2026-01-31T00:00:00+00:00"
    image_path = runtime.studio.image_file("alice", runtime.studio.list_prompts("alice")[0].images[0].id)

    clock.advance(29)
    assert sweep(runtime.studio, runtime.store).expired == []
    assert runtime.studio.get_tune("alice", tune.id).status == "trained"

    clock.advance(2)
    assert sweep(runtime.studio, runtime.store).expired == [tune.id]
    expired = runtime.studio.get_tune("alice", tune.id)
    assert expired.status == "expired"
    assert not runtime.store.exists(tune.artifact_location)
    assert image_path.exists()
    assert sweep(runtime.studio, runtime.store).expired == [], "a second sweep changes nothing"


def test_auto_extend_moves_the_expiry_instead(runtime, clock):
    tune = trained_tune(runtime, "keep", auto_extend=True)
    clock.advance(31)
    result = sweep(runtime.studio, runtime.store)
    assert result.extended == [tune.id] and result.expired == []
    kept = runtime.studio.get_tune("alice", tune.id)
    assert kept.status == "trained" and kept.expires_at == "2026-03-03T00:00:00+00:00"
    assert runtime.store.exists(kept.artifact_location)


def test_the_scheduler_sweeps_once_at_start(runtime, clock):
    tune = trained_tune(runtime, "missed")
    clock.advance(45)  # the app was down when this tune expired
    scheduler = start_scheduler(runtime.studio, runtime.store)
    try:
        deadline = time.monotonic() + 20
        while runtime.studio.get_tune("alice", tune.id).status != "expired" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.shutdown()
    assert runtime.studio.get_tune("alice", tune.id).status == "expired"


def test_generated_images_older_than_their_retention_are_purged(settings, clock):
    runtime = open_runtime(settings.with_overrides(image_retention_days=10), clock=clock, start_worker=False)
    try:
        request = TuneCreate(
            title="me", name="woman", images=PHOTOS, branch="fast", prompts=[PromptCreate("{{subject}}", num_images=2)]
        )
        tune = runtime.studio.create_tune("alice", request).tune
        runtime.worker.drain()
        [prompt] = runtime.studio.list_prompts("alice", tune_id=tune.id)
        files = [runtime.studio.image_file("alice", image.id) for image in prompt.images]

        clock.advance(9)
        assert sweep(runtime.studio, runtime.store).purged_images == 0
        clock.advance(2)
        assert sweep(runtime.studio, runtime.store).purged_images == 2
        assert not any(path.exists() for path in files)
        assert runtime.studio.get_prompt("alice", prompt.id).images == []
    finally:
        runtime.close()


def test_an_expired_tune_fails_its_waiting_prompts(runtime, clock):
    tune = trained_tune(runtime, "late")
    waiting = runtime.studio.create_prompt("alice", tune.id, PromptCreate("{{subject}} again", num_images=1))
    clock.advance(31)
    sweep(runtime.studio, runtime.store)
    assert runtime.worker.drain() == 0
    prompt = runtime.studio.get_prompt("alice", waiting.id)
    assert prompt.status == "failed" and "expired" in prompt.error
