"""Gradio's copies of uploads and shown images: only their user may fetch them, and they go with their record.

Alice uploads photos and is shown her avatars through the Gradio API; bob, signed in, asks Gradio's file route
for the very same paths and gets 404. Once alice's tune has taken her photos, their uploads are gone from disk;
once she deletes her prompt, the copies of its images are gone too (REST already answered 404 for them).
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from gradio.utils import get_upload_folder

from tests.conftest import astronaut_photos, wait_for
from tests.security.conftest import Served, call_raw

# create_tune's values after photos, title and name (ui.api.TUNE_PARAMETERS), as the boxes hold them by default
DEFAULT_TUNE_FIELDS = ["", 0, "", True, {}, "", "", False, [], [], [], {}, 0, "", "", False, "private"]


def upload(session: httpx.Client, name: str, content: bytes) -> str:
    """Upload one file as the browser does; returns Gradio's path for it."""
    answer = session.post("gradio_api/upload", files=[("files", (name, content, "image/jpeg"))])
    assert answer.status_code == 200, answer.text
    [path] = answer.json()
    return path


def jpeg(index: int) -> bytes:
    buffer = io.BytesIO()
    astronaut_photos()[index].save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


def fetch(session: httpx.Client, path: str) -> httpx.Response:
    return session.get(f"gradio_api/file={path}")


def test_an_upload_is_fetched_only_by_its_uploader(served: Served):
    with served.browser("alice") as alice, served.browser("bob") as bob:
        path = upload(alice, "alice-only.jpg", jpeg(0) + b"alice")  # bytes no other test uploads
        assert fetch(alice, path).status_code == 200
        refused = fetch(bob, path)
        assert refused.status_code == 404 and refused.content.find(b"\xff\xd8") == -1


def test_a_copy_nobody_was_given_is_served_to_nobody(served: Served):
    stray = Path(get_upload_folder()) / ("0" * 64) / "left-by-an-earlier-run.png"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"\x89PNG earlier run")
    with served.browser("alice") as alice:
        assert fetch(alice, str(stray)).status_code == 404


def test_photos_a_tune_took_leave_gradios_folder(served: Served):
    with served.browser("alice") as alice:
        photos = [upload(alice, f"me-{i}.jpg", jpeg(i)) for i in range(4)]
        files = [{"path": p, "meta": {"_type": "gradio.FileData"}, "orig_name": Path(p).name} for p in photos]
        kind, tune = call_raw(alice, "create_tune", [files, "Uploads go", "woman", *DEFAULT_TUNE_FIELDS])
        assert kind == "complete", tune
        assert not any(Path(p).exists() for p in photos)  # the service keeps its own copy of the photos
        assert all(fetch(alice, p).status_code == 404 for p in photos)

        kind, message = call_raw(alice, "check_photos", [files, "woman"])  # the uploads are gone: an error…
        assert kind == "error" and "me-0.jpg" in message, message
        assert get_upload_folder() not in message and "/tmp/" not in message  # …without this server's folders


def test_avatar_copies_are_only_their_owners_and_go_with_their_prompt(served: Served):
    with served.rest("alice") as rest:
        tune = served.studio.list_tunes("alice", limit=100)
        trained = next(t for t in tune if t.status == "trained")
        prompt = rest.post(f"/tunes/{trained.id}/prompts", json={"prompt": {"text": "{{subject}}", "num_images": 2}})
        assert prompt.status_code == 201, prompt.text
        prompt_id = prompt.json()["id"]
        wait_for(lambda: served.studio.get_prompt("alice", prompt_id).status, lambda s: s == "done", what="images")
    with served.browser("alice") as alice, served.browser("bob") as bob:
        kind, (record, gallery) = call_raw(alice, "get_prompt", [prompt_id])
        assert kind == "complete", record
        copies = [item["image"]["path"] for item in gallery]
        assert len(copies) == 2 and all(Path(c).is_relative_to(Path(get_upload_folder()).resolve()) for c in copies)
        assert all(fetch(alice, c).content.startswith(b"\x89PNG") for c in copies)
        assert all(fetch(bob, c).status_code == 404 for c in copies)

        served.studio.delete_prompt("alice", prompt_id)  # as REST or the Generate tab would
        assert all(fetch(alice, c).status_code == 404 for c in copies)
        assert not any(Path(c).exists() for c in copies)


@pytest.fixture(scope="module", autouse=True)
def trained_tune(served: Served):
    """Alice has a trained tune (fast branch) before these tests run."""
    with served.browser("alice") as alice:
        photos = [upload(alice, f"base-{i}.jpg", jpeg(i)) for i in range(4)]
    files = [{"path": p, "meta": {"_type": "gradio.FileData"}} for p in photos]
    with served.browser("alice") as alice:
        kind, [tune] = call_raw(alice, "create_tune", [files, "Trained", "woman", *DEFAULT_TUNE_FIELDS])
    assert kind == "complete", tune
    wait_for(lambda: served.studio.get_tune("alice", tune["id"]).status, lambda s: s == "trained", what="training")
