"""The launched app, driven through gradio_client as a program would: check photos, train, generate."""

from __future__ import annotations

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from app import build_app
from tests.conftest import astronaut_photos, settings_with_tiny


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_sd15_dir):
    settings = settings_with_tiny(tmp_path_factory.mktemp("app"), tiny_sd15_dir)
    app = build_app(settings).queue()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    yield Client(app.local_url, verbose=False)
    app.close()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, variant in enumerate(astronaut_photos()):
        path = folder / f"me-{i}.jpg"
        variant.save(path, quality=92)
        paths.append(handle_file(str(path)))
    return paths


def test_check_train_generate_through_the_api(client, photos):
    report, crops = client.predict(photos, "woman", "tiny", True, api_name="/check_photos")
    assert [row[0] for row in report["data"]] == ["me-0.jpg", "me-1.jpg", "me-2.jpg", "me-3.jpg"]
    assert all(row[4] == "yes" for row in report["data"])
    assert len(crops) >= 4

    summary, losses = client.predict(photos, "woman", "tiny", 3, True, api_name="/train")
    assert "Trained **sks woman**" in summary and "3 steps" in summary
    assert [row[0] for row in losses["data"]] == [1, 2, 3]

    # the trained LoRA stays in this client's session state
    images, used = client.predict(
        "{{subject}} as an astronaut", "", 2, 42, 2, 5.0, "euler", False, False, api_name="/generate"
    )
    assert used == "Prompt used: `sks woman as an astronaut`"
    assert [item["caption"] for item in images] == ["seed 42", "seed 43"]
    assert Image.open(images[0]["image"]).size == (128, 128)


def test_errors_come_back_as_readable_messages(client, photos):
    with pytest.raises(Exception, match="between 4 and 30 photos"):
        client.predict(photos[:2], "woman", "tiny", True, api_name="/check_photos")


def test_generating_before_training_says_what_to_do(tmp_path_factory, client):
    fresh = Client(client.src, verbose=False)
    with pytest.raises(Exception, match="Train a LoRA first"):
        fresh.predict("{{subject}}", "", 1, 1, 2, 5.0, "euler", False, False, api_name="/generate")
