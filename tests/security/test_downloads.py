"""The "Download all (zip)" button keeps the temp folder bounded (security review, issue 12 item 6): one zip per
prompt at a stable path in one folder, the oldest removed, so clicking (or polling) many times fills no disk."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from studio.errors import NotFoundError
from ui.generate_tab import KEEP_ZIPS, zip_prompt_images


class ImageFiles:
    """The one studio call the zip needs: the caller's image files, by id."""

    def __init__(self, folder: Path):
        self.folder = folder

    def image_file(self, owner: str, image_id: int) -> Path:
        path = self.folder / f"{owner}-{image_id}.png"
        if not path.exists():
            raise NotFoundError("image", image_id)
        return path


def prompt(prompt_id: int, image_ids: tuple[int, ...] = (1, 2)) -> SimpleNamespace:
    return SimpleNamespace(id=prompt_id, images=[SimpleNamespace(id=i, seed=100 + i) for i in image_ids])


@pytest.fixture
def temp(tmp_path, monkeypatch) -> Path:
    """The system temp folder, here a fresh one, so every file a download leaves behind is counted."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def studio(tmp_path) -> ImageFiles:
    images = tmp_path / "images"
    images.mkdir()
    for image_id in (1, 2):
        Image.new("RGB", (8, 8), "teal").save(images / f"alice-{image_id}.png")
    return ImageFiles(images)


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_many_zip_downloads_leave_a_bounded_number_of_files(temp, studio):
    for prompt_id in range(1, 51):
        archive = zip_prompt_images(studio, "alice", prompt(prompt_id))
    assert len(files_under(temp)) == KEEP_ZIPS, "older zips are removed"
    with zipfile.ZipFile(archive) as bundle:
        assert bundle.namelist() == ["prompt-50-seed-101.png", "prompt-50-seed-102.png"]


def test_the_same_prompt_is_zipped_to_the_same_file(temp, studio):
    first = zip_prompt_images(studio, "alice", prompt(7))
    again = zip_prompt_images(studio, "alice", prompt(7))
    assert first == again and Path(first).read_bytes() == Path(again).read_bytes()
    assert files_under(temp) == [Path(first)]


def test_a_zip_that_fails_leaves_no_partial_file(temp, studio):
    with pytest.raises(NotFoundError):
        zip_prompt_images(studio, "alice", prompt(8, image_ids=(1, 99)))
    assert files_under(temp) == []
