"""Training needs `TUNES_MIN_PHOTOS` usable photos, not uploads: near-duplicates left out do not count.

Six uploads of which four are near-duplicates (the same photo saved again) leave two photos to train on; the
service refuses them, and so do the Gradio API and REST, each naming the photos left out and why.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from pipelines.errors import ValidationError
from storage.db import Database
from studio.requests import TuneCreate
from studio.runtime import open_runtime
from studio.service import Studio
from tests.conftest import astronaut_photos, served_app, settings_with_tiny


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def two_photos_and_four_copies() -> list[tuple[str, bytes]]:
    """Photos 1 and 2 differ; 3-6 are the first two saved again (other JPEG quality or size): near-duplicates."""
    first, second = astronaut_photos()[:2]
    copies = [jpeg(first, 60), jpeg(second, 70), jpeg(first.resize((400, 400)), 80), jpeg(second, 50)]
    return [(f"{i}.jpg", data) for i, data in enumerate([jpeg(first), jpeg(second), *copies], start=1)]


FEW = two_photos_and_four_copies()
ENOUGH = [(f"me-{i}.jpg", jpeg(photo)) for i, photo in enumerate(astronaut_photos())]
DROPPED = [
    "photo 3 ('3.jpg') is nearly the same as photo 1 ('1.jpg')",
    "photo 4 ('4.jpg') is nearly the same as photo 2 ('2.jpg')",
    "photo 5 ('5.jpg') is nearly the same as photo 1 ('1.jpg')",
    "photo 6 ('6.jpg') is nearly the same as photo 2 ('2.jpg')",
]


def assert_names_what_was_dropped(message: str) -> None:
    assert "at least 4 usable photos; 2 of 6 can be used" in message
    for line in DROPPED:
        assert line in message, (line, message)


@pytest.fixture
def runtime(settings):
    rt = open_runtime(settings, start_worker=False)
    yield rt
    rt.close()


def test_the_service_refuses_too_few_usable_photos_and_writes_nothing(runtime):
    request = TuneCreate(title="Few", name="woman", images=FEW, branch="fast")

    with pytest.raises(ValidationError) as excinfo:
        runtime.studio.create_tune("alice", request)

    assert excinfo.value.field == "images" and excinfo.value.value == 2
    assert_names_what_was_dropped(str(excinfo.value))
    assert runtime.studio.list_tunes("alice") == []
    assert runtime.studio.create_tune("alice", replace(request, images=ENOUGH)).created  # four usable: fine


def test_the_preview_report_marks_a_bad_file_in_place_and_counts_only_usable_photos(runtime):
    uploads = [*ENOUGH[:2], ("notes.jpg", b"just some text"), *ENOUGH[2:]]

    checked = runtime.studio.check_photos(uploads, "woman", preview=True)

    assert [p.name for p in checked.photos] == ["me-0.jpg", "me-1.jpg", "me-2.jpg", "me-3.jpg"]
    assert [(p.index, p.name) for p in checked.refused] == [(2, "notes.jpg")]
    assert checked.usable_count == 4
    assert checked.dropped() == ["photo 3 ('notes.jpg'): is not an image (a text file?)"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_sd15_dir):
    settings = replace(
        settings_with_tiny(tmp_path_factory.mktemp("usable"), tiny_sd15_dir),
        default_branch="fast",
        accounts=("alice:alice-pw",),
        api_rate_per_minute=100_000,
    )
    with served_app(settings) as url:
        key = Studio(settings, Database(settings.data_dir / "tunes.db")).create_api_key("alice")
        yield url, key


def test_the_gradio_api_refuses_too_few_usable_photos(served, tmp_path: Path):
    url, _ = served
    alice = Client(url, auth=("alice", "alice-pw"), verbose=False)
    files = []
    for name, data in FEW:
        (tmp_path / name).write_bytes(data)
        files.append(handle_file(str(tmp_path / name)))

    with pytest.raises(AppError) as excinfo:
        alice.predict(photos=files, title="Few via Gradio", name="woman", api_name="/create_tune")

    assert_names_what_was_dropped(str(excinfo.value))
    assert alice.predict(api_name="/list_tunes") == []


def test_rest_refuses_too_few_usable_photos_with_422_on_images(served):
    url, key = served
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as alice:
        files = [("tune[images][]", (name, data, "image/jpeg")) for name, data in FEW]
        response = alice.post("/tunes", data={"tune[title]": "Few via REST", "tune[name]": "woman"}, files=files)

        assert response.status_code == 422, response.text
        [message] = response.json()["errors"]["images"]
        assert_names_what_was_dropped(message)
        assert alice.get("/tunes").json() == []
