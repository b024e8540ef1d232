"""Likeness as people see it: gallery captions carry each avatar's likeness, "Sort by: most alike" puts the most
alike first (unknown last), the photo report has a likeness column and flags someone else's photo, a note says
when identity checks are off, the Generate tab's "Keep the best of" reaches the prompt, and a pack's page shows
its prompts' mean likeness."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import pytest
from PIL import Image

from pipelines.errors import PhotoProblem, ValidationError
from pipelines.photos import FaceBox, PhotoReport, PhotoWarning
from pipelines.settings import Settings
from storage.artifacts import SAMPLES_DIR
from storage.db import Database
from studio.requests import PromptCreate, TuneCreate
from studio.service import Studio
from tests.conftest import astronaut_photos
from tests.security.conftest import call_in_session, call_raw
from ui.context import UIContext
from ui.create_tab import build_create_tab
from ui.files import UIFiles
from ui.generate_tab import build_generate_tab
from ui.packs_tab import prompt_table
from ui.views import identity_note, ordered_images, photo_report_table, prompt_gallery, tune_gallery

OWNER = "local"  # the one user of a server without sign-in
OFF = "identity checks are off: dlib is not installed (pip install dlib-bin)"


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.resize((256, 256)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


PHOTOS = [(f"me-{i}.jpg", _jpeg(photo)) for i, photo in enumerate(astronaut_photos())]


@pytest.fixture
def studio(tmp_path) -> Iterator[Studio]:
    settings = Settings(data_dir=tmp_path / "data", device="cpu")
    settings.data_dir.mkdir()
    db = Database(settings.data_dir / "tunes.db")
    yield Studio(settings, db)
    db.close()


@pytest.fixture
def files(tmp_path) -> UIFiles:
    return UIFiles(tmp_path / "gradio", 3600)


def new_tune(studio: Studio) -> int:
    return studio.create_tune(OWNER, TuneCreate(title="me", name="woman", images=PHOTOS, branch="fast")).tune.id


def with_images(
    studio: Studio, tune_id: int, likeness: list[float | None], *, pack: str | None = None, key: str | None = None
) -> int:
    """A prompt whose images (real files) have these likenesses, as the worker leaves it; returns its id."""
    request = PromptCreate("{{subject}} at the beach", num_images=1, pack_id=pack, pack_prompt=key)
    prompt = studio.create_prompt(OWNER, tune_id, request)
    folder = studio.settings.data_dir / "images"
    folder.mkdir(exist_ok=True)
    with studio.db.transaction() as conn:
        for seed, value in enumerate(likeness, start=100 * prompt.id):
            path = folder / f"{seed}.png"
            Image.new("RGB", (16, 16), (seed % 256, 0, 0)).save(path)
            studio.db.insert_image(
                conn, OWNER, prompt.id, path=str(path), seed=seed, width=16, height=16, likeness=value
            )
    return prompt.id


def captions(gallery: list[tuple[str, str]] | list[dict[str, Any]]) -> list[str]:
    return [item["caption"] if isinstance(item, dict) else item[1] for item in gallery]


# -- galleries ------------------------------------------------------------------------------------------------


def test_captions_show_the_likeness_when_it_is_known(studio, files):
    prompt_id = with_images(studio, new_tune(studio), [0.8234, None, 0.5])
    first, unknown, liked = studio.get_prompt(OWNER, prompt_id).images
    studio.like_image(OWNER, liked.id)

    shown = prompt_gallery(studio, files, OWNER, [studio.get_prompt(OWNER, prompt_id)])

    assert captions(shown) == [
        f"#{first.id} · seed {first.seed} · likeness 0.82",
        f"#{unknown.id} · seed {unknown.seed}",  # no face found, or identity checks off: nothing to show
        f"#{liked.id} · seed {liked.seed} · likeness 0.50 · ♥",
    ]
    assert [Path(path) for path, _ in shown] == [
        studio.image_file(OWNER, image.id) for image in (first, unknown, liked)
    ]


def test_most_alike_puts_the_highest_likeness_first_and_unknown_last(studio, files):
    tune_id = new_tune(studio)
    older = with_images(studio, tune_id, [0.4, None, 0.9])
    newer = with_images(studio, tune_id, [0.6, 0.95, None])
    prompts = studio.list_prompts(OWNER, tune_id=tune_id)
    assert [p.id for p in prompts] == [newer, older], "the newest prompt first"

    def likeness(order: str) -> list[float | None]:
        return [image.likeness for image in ordered_images(prompts, order)]

    assert likeness("newest") == [0.6, 0.95, None, 0.4, None, 0.9]
    assert likeness("most alike") == [0.95, 0.9, 0.6, 0.4, None, None]
    sorted_captions = captions(prompt_gallery(studio, files, OWNER, prompts, order="most alike"))
    assert [caption.split(" · ")[-1] for caption in sorted_captions[:4]] == [
        "likeness 0.95",
        "likeness 0.90",
        "likeness 0.60",
        "likeness 0.40",
    ]
    assert not any("likeness" in caption for caption in sorted_captions[4:])
    with pytest.raises(ValidationError, match=r"`sort_by` must be one of newest, most alike \(got 'best'\)"):
        ordered_images(prompts, "best")


def test_a_tunes_avatars_most_alike_first_then_its_samples(studio, files, tmp_path):
    tune_id = new_tune(studio)
    lora = tmp_path / "lora"
    (lora / SAMPLES_DIR).mkdir(parents=True)
    for number in (1, 2):
        Image.new("RGB", (16, 16), "teal").save(lora / SAMPLES_DIR / f"sample-{number}.png")
    studio.db.update_tune(OWNER, tune_id, artifact_location=str(lora))
    with_images(studio, tune_id, [0.55, 0.75])
    prompts = studio.list_prompts(OWNER, tune_id=tune_id)

    newest = captions(tune_gallery(studio, files, OWNER, tune_id, prompts))
    alike = captions(tune_gallery(studio, files, OWNER, tune_id, prompts, order="most alike"))

    assert newest[:2] == ["sample 1", "sample 2"] and newest[2].endswith("likeness 0.55")
    assert [caption.split(" · ")[-1] for caption in alike] == ["likeness 0.75", "likeness 0.55", "sample 1", "sample 2"]


# -- the photo report -----------------------------------------------------------------------------------------


def photo_report(index: int, likeness: float | None, *warnings: PhotoWarning) -> dict[str, Any]:
    return PhotoReport(
        index=index,
        name=f"{index + 1}.jpg",
        width=512,
        height=512,
        faces=1,
        face_box=FaceBox(100, 100, 200, 200),
        sharpness=420.0,
        phash="0" * 16,
        duplicate_of=None,
        usable=not warnings,
        warnings=warnings,
        likeness=likeness,
    ).to_dict()


def test_the_photo_report_shows_each_photos_likeness_and_flags_someone_else():
    someone_else = PhotoWarning(
        "other_person",
        "may show someone else: its face is not the person of the other photos (likeness 0.21; the same person "
        "scores 0.5 or more); it will be skipped",
    )
    refused = PhotoProblem(index=3, name="notes.jpg", code="not_image", message="is not an image (a text file?)")

    table = photo_report_table(
        [photo_report(0, 0.934), photo_report(1, None), photo_report(2, 0.2149, someone_else)], [refused]
    )

    assert table["likeness"].tolist() == ["0.93", "", "0.21", "-"]  # blank: not measured; "-": not a photo
    assert table["used"].tolist() == ["yes", "yes", "no", "no"]
    assert table["advice"].tolist()[2] == someone_else.message


def test_a_note_says_when_identity_checks_are_off():
    assert identity_note(None) == ""
    note = identity_note(OFF)
    assert note.startswith("ⓘ Identity checks are off: dlib is not installed (pip install dlib-bin).")
    assert "no likeness" in note


# -- the tabs' events, as the browser calls them --------------------------------------------------------------


@pytest.fixture
def served(studio) -> Iterator[httpx.Client]:
    """The Create and Generate tabs in one app without sign-in (the local user); a client for its events."""
    ctx = UIContext(studio, studio.settings)
    with gr.Blocks() as app:
        with gr.Tab("Create"):
            build_create_tab(ctx)
        with gr.Tab("Generate"):
            build_generate_tab(ctx, app)
    app.launch(prevent_thread_lock=True, quiet=True)
    try:
        with httpx.Client(base_url=app.local_url, timeout=60) as client:
            yield client
    finally:
        app.close()


def generate_inputs(tune_id: int, *, num_images: int, keep: str) -> list[Any]:
    # tune, prompt, negative, images, seed, shape, steps, cfg, scheduler, faces, hires, super resolution, best of
    return [tune_id, "{{subject}} smiling", "", num_images, "", "1:1", 4, 7.0, "euler_a", False, False, False, keep]


def test_the_generate_tab_keeps_the_best_of_and_sorts_its_results(served, studio):
    tune_id = new_tune(studio)
    session = uuid.uuid4().hex
    assert call_in_session(served, session, "tunes_changed", [None])[0] == "complete"  # fills the tune picker

    kind, outputs = call_in_session(served, session, "generate", generate_inputs(tune_id, num_images=2, keep="6"))
    assert kind == "complete" and outputs[0]["visible"] is False, outputs  # no error banner
    [prompt] = studio.list_prompts(OWNER)
    assert (prompt.num_images, prompt.best_of) == (2, 6)

    kind, outputs = call_in_session(served, session, "generate", generate_inputs(tune_id, num_images=4, keep="3"))
    assert kind == "complete" and "Keep the best of must be more than num_images (4)" in outputs[0]["value"]
    kind, outputs = call_in_session(served, session, "generate", generate_inputs(tune_id, num_images=4, keep="0"))
    assert kind == "complete" and outputs[0]["visible"] is False
    newest = studio.list_prompts(OWNER)[0]
    assert newest.best_of is None and len(studio.list_prompts(OWNER)) == 2, "0 keeps all"

    with studio.db.transaction() as conn:  # the worker's part: images with their likeness
        for seed, value in enumerate([0.42, None, 0.91, 0.77]):
            path = studio.settings.data_dir / f"{seed}.png"
            Image.new("RGB", (16, 16), (seed * 40, 0, 0)).save(path)
            studio.db.insert_image(
                conn, OWNER, newest.id, path=str(path), seed=seed, width=16, height=16, likeness=value
            )
    # "Sort by: most alike" on the prompt shown (the newest: the session's, not the id sent)
    kind, outputs = call_in_session(served, session, "resort", [None, "most alike"])
    assert kind == "complete", outputs
    [gallery] = outputs
    assert [caption.split(" · ")[-1] for caption in captions(gallery)] == [
        "likeness 0.91",
        "likeness 0.77",
        "likeness 0.42",
        "seed 1",
    ]


def test_the_create_tab_sorts_the_followed_tunes_avatars(served, studio):
    with_images(studio, new_tune(studio), [0.61, None, 0.88])

    for order, expected in [("newest", ["0.61", "", "0.88"]), ("most alike", ["0.88", "0.61", ""])]:
        kind, outputs = call_raw(served, "refresh", [None, order])  # follows the newest tune
        assert kind == "complete", outputs
        avatars, sort_box = outputs[5], outputs[6]
        shown = [caption.partition("likeness ")[2] for caption in captions(avatars["value"])]
        assert shown == expected and avatars["visible"] is True and sort_box["visible"] is True, order


def test_the_create_tab_notes_once_that_identity_checks_are_off(served, monkeypatch):
    uploaded = served.post("gradio_api/upload", files=[("files", (n, c, "image/jpeg")) for n, c in PHOTOS])
    photos = [{"path": path, "meta": {"_type": "gradio.FileData"}} for path in uploaded.json()]

    kind, (_, report, _, note) = call_raw(served, "photos_changed", [photos, "woman"])
    assert kind == "complete" and note["visible"] is False, note
    assert "likeness" in report["headers"]

    monkeypatch.setattr("pipelines.photos.identity_model", lambda: None)
    monkeypatch.setattr("pipelines.photos.identity_off_reason", lambda: OFF)
    kind, (_, report, _, note) = call_raw(served, "photos_changed", [photos, "woman"])
    assert kind == "complete" and note["visible"] is True
    assert note["value"] == identity_note(OFF)
    likeness = report["headers"].index("likeness")
    assert [row[likeness] for row in report["data"]] == ["", "", "", ""], "no likeness without identity checks"


# -- a pack's page --------------------------------------------------------------------------------------------


def test_a_packs_page_shows_each_prompts_mean_likeness(studio):
    tune_id = new_tune(studio)
    with_images(studio, tune_id, [0.8, 0.6, None], pack="corporate-headshots", key="woman/0")
    with_images(studio, tune_id, [None], pack="corporate-headshots", key="woman/1")

    table = prompt_table(studio, studio.get_pack("corporate-headshots"), "woman")

    assert table.columns[-3:].tolist() == ["made", "likes", "likeness"]
    assert table["made"].tolist()[:3] == [3, 1, 0]
    assert table["likeness"].tolist()[:3] == ["0.70", "", ""], "the mean of the measured ones; blank: none measured"
