"""The Create tab on a studio that trains on Hugging Face Jobs (issue 16), in a browser: the fake Hub's Jobs API runs
the job as a local process; the user sees the tune train with the job's progress and end trained, and the photos
never stay on the Hub.

Drives Debian's chromium with Playwright against the launched app, like `tests/test_browser.py`.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from app import serving
from studio.hf_jobs import JobsBackend
from studio.runtime import open_runtime
from tests.conftest import astronaut_photos, settings_with_tiny
from tests.fakehub import FAKE_TOKEN, fake_hub_fixture  # noqa: F401 (registers `fake_hub`)
from tests.test_browser import CHROMIUM, browser_page

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (.ci/run installs it)")


def test_a_tune_made_on_the_create_tab_trains_on_a_job_with_its_progress_shown(tmp_path, tiny_sd15_dir, fake_hub):
    from playwright.sync_api import expect

    settings = replace(
        settings_with_tiny(tmp_path / "data", tiny_sd15_dir),
        local_user="ann",
        hf_token=FAKE_TOKEN,
        hub_namespace="studio",
        train_on="hf-jobs",
        jobs_image="tune-studio:test",
    )
    fake_hub.job_extra_env = {"TUNES_DATA_DIR": str(settings.data_dir), "OMP_NUM_THREADS": "1"}  # the tiny model
    runtime = open_runtime(settings)  # its local worker keeps only the mock branch's jobs
    backend = JobsBackend(runtime.studio, runtime.store)
    backend.start()
    paths = []
    for index, photo in enumerate(astronaut_photos()):
        paths.append(tmp_path / f"me-{index}.jpg")
        photo.save(paths[-1], quality=92)
    try:
        with serving(runtime) as url, browser_page(url) as page:
            page.get_by_role("tab", name="Create tune").click()
            page.locator("#tune-photos input[type=file]").set_input_files([str(p) for p in paths])
            page.locator("#photo-report").get_by_text("me-3.jpg").wait_for()
            page.get_by_label("Title").fill("On a rented GPU")
            page.get_by_text("Advanced settings").click()
            page.get_by_label("Training steps").fill("60")
            page.locator("#create-tune").click()
            training = page.locator("#tune-progress [data-status=training]")
            training.wait_for(timeout=60_000)
            # the job's log reaches the progress bar: step and time left
            expect(training).to_contain_text(re.compile(r"step [1-9]\d*/60 .*left"), timeout=120_000)
            page.locator("#tune-progress [data-status=trained]").wait_for(timeout=180_000)
            expect(page.locator("#generate-with-tune")).to_be_visible()
            page.screenshot(path=str(tmp_path / "trained-on-a-job.png"), full_page=True)
        [job] = fake_hub.submitted_jobs()
        [tune] = runtime.studio.list_tunes("ann")
        assert job.stage == "COMPLETED" and tune.job_id == job.id
        assert fake_hub.repos[tune.artifact_location.removeprefix("hub://")].private
        assert not [name for name in fake_hub.repos if name.startswith("datasets/")], "the photos left the Hub"
    finally:
        backend.stop()
        runtime.close()
