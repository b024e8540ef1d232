"""Likeness through both APIs on one served app: REST's `image_details` and the Gradio API's prompt carry each
avatar's likeness, `best_of` is a field of both (checked alike), and neither ever returns the subject's
embeddings. The worker draws with `DrawsThesePhotos` (see tests/studio/test_likeness.py)."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from gradio_client import Client

from storage.db import Database
from studio.runtime import open_runtime
from studio.service import Studio
from tests.conftest import settings_with_tiny, wait_for
from tests.pipelines.test_identity import face_photo
from tests.studio.test_likeness import GRAY, OBAMA_PHOTOS, DrawsThesePhotos

pytestmark = pytest.mark.usefixtures("no_card_samples")


@pytest.fixture
def served(tmp_path, tiny_sd15_dir):
    from app import serving

    settings = replace(settings_with_tiny(tmp_path, tiny_sd15_dir), accounts=("alice:alice-pw",))
    runtime = open_runtime(settings, start_worker=False)
    runtime.worker.generator = DrawsThesePhotos(settings)
    runtime.worker.generator.photos = [GRAY, face_photo("obama2.jpg")]
    runtime.worker.start()
    try:
        with serving(runtime) as url:
            key = Studio(settings, Database(settings.data_dir / "tunes.db")).create_api_key("alice")
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as rest:
                yield runtime, rest, Client(url, auth=("alice", "alice-pw"), verbose=False)
    finally:
        runtime.close()


def test_likeness_and_best_of_through_rest_and_the_gradio_api(served):
    runtime, rest, gradio = served
    files = [("tune[images][]", (name, data, "image/jpeg")) for name, data in OBAMA_PHOTOS]
    form = {"tune[title]": "obama", "tune[name]": "man", "tune[branch]": "tiny", "tune[steps]": "1"}
    tune = rest.post("/tunes", data=form, files=files).json()
    wait_for(lambda: rest.get(f"/tunes/{tune['id']}").json(), lambda t: t["status"] == "trained", what="training")

    refused = rest.post(f"/tunes/{tune['id']}/prompts", json={"prompt": {"text": "ohwx man", "best_of": 1}})
    assert refused.status_code == 422 and "best_of" in refused.text

    body = {"prompt": {"text": "{{subject}}", "num_images": 1, "best_of": 2, "steps": 1, "seed": 40}}
    prompt = rest.post(f"/tunes/{tune['id']}/prompts", json=body).json()
    done = wait_for(
        lambda: rest.get(f"/tunes/{tune['id']}/prompts/{prompt['id']}").json(), lambda p: p["images"], what="images"
    )
    assert done["best_of"] == 2 and len(done["images"]) == 1
    (detail,) = done["image_details"]
    assert detail["seed"] == 41, "the second candidate (Obama) is kept over the first (no face)"
    assert detail["likeness"] >= 0.6 and detail["url"] == done["images"][0]
    assert httpx.get(detail["url"]).status_code == 200

    from_gradio, _ = gradio.predict(prompt_id=prompt["id"], api_name="/get_prompt")
    assert [image["likeness"] for image in from_gradio["images"]] == [detail["likeness"]]
    made = gradio.predict(
        tune_id=tune["id"], text="{{subject}}", num_images=1, best_of=2, steps=1, api_name="/create_prompt"
    )
    assert made["best_of"] == 2

    assert runtime.studio.db.subject_faces(tune["id"]) is not None
    everything = " ".join(
        [rest.get(f"/tunes/{tune['id']}").text, rest.get("/tunes").text, rest.get("/prompts").text, str(from_gradio)]
    )
    assert "embedding" not in everything and "subject_faces" not in everything
