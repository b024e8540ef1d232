"""Gradio's copies: owners, record links and lifetimes (`ui.files.UIFiles`), on a folder laid out as Gradio's."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ui.files import UIFiles

HOUR = 3600.0


@pytest.fixture
def clock() -> list[float]:
    return [1_000_000.0]


@pytest.fixture
def files(tmp_path, clock) -> UIFiles:
    return UIFiles(tmp_path / "gradio", 24 * HOUR, clock=lambda: clock[0])


def gradio_copy(files: UIFiles, source: Path) -> Path:
    """Copy `source` where Gradio would (as its postprocess does)."""
    copy = files.copy_path(source)
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, copy)
    return copy


def record_file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_a_shown_record_file_is_its_owners_while_the_record_exists(tmp_path, files):
    image = record_file(tmp_path, "images/7/00-42.png", b"\x89PNG alice")
    copy = gradio_copy(files, Path(files.show("alice", image)))
    assert files.may_fetch("alice", copy) and not files.may_fetch("bob", copy) and not files.may_fetch(None, copy)
    image.unlink()  # the prompt was deleted
    assert not files.may_fetch("alice", copy) and not copy.exists() and not copy.parent.exists()


def test_two_users_with_the_same_bytes_each_keep_their_claim(tmp_path, files):
    alices = record_file(tmp_path, "a/1.png", b"same bytes")
    bobs = record_file(tmp_path, "b/1.png", b"same bytes")
    copy = gradio_copy(files, Path(files.show("alice", alices)))
    files.show("bob", bobs)
    alices.unlink()
    assert not files.may_fetch("alice", copy)
    assert files.may_fetch("bob", copy) and copy.exists()  # bob's image still exists


def test_a_zip_goes_with_the_images_it_was_made_of(tmp_path, files):
    images = [record_file(tmp_path, f"images/3/{i}.png", b"img%d" % i) for i in range(2)]
    archive = record_file(tmp_path, "zips/prompt-3.zip", b"PK zip")
    copy = gradio_copy(files, Path(files.show("alice", archive, of=images)))
    assert files.may_fetch("alice", copy)
    for image in images:
        image.unlink()
    assert files.sweep() == 1 and not copy.exists()


def test_uploads_go_once_a_tune_took_them_and_only_for_their_uploader(tmp_path, files):
    upload = gradio_copy(files, record_file(tmp_path, "client/me.jpg", b"jpeg"))
    files.own("alice", upload)
    files.discard("bob", [upload])  # not bob's to discard
    assert upload.exists() and files.may_fetch("alice", upload)
    files.discard("alice", [upload])
    assert not upload.exists() and not files.may_fetch("alice", upload)


def test_copies_expire_after_the_lifetime(tmp_path, files, clock):
    upload = gradio_copy(files, record_file(tmp_path, "client/old.jpg", b"old"))
    files.own("alice", upload)
    clock[0] += 23 * HOUR
    assert files.sweep() == 0 and files.may_fetch("alice", upload)
    clock[0] += 2 * HOUR
    assert files.sweep() == 1 and not upload.exists() and not files.may_fetch("alice", upload)


def test_files_nobody_owns_are_served_to_nobody_and_swept_once_old(tmp_path, files, clock):
    stray = gradio_copy(files, record_file(tmp_path, "earlier/run.png", b"left behind"))
    assert not files.may_fetch("alice", stray)
    os.utime(stray, (clock[0] - 25 * HOUR, clock[0] - 25 * HOUR))
    assert files.sweep() == 1 and not stray.exists()


def test_public_files_are_everyones_and_paths_outside_the_folder_nobodys(tmp_path, files):
    icon = gradio_copy(files, record_file(tmp_path, "static/icon.png", b"icon"))
    files.make_public(icon)
    assert files.may_fetch("bob", icon) and files.may_fetch(None, icon)
    outside = record_file(tmp_path, "data/tunes.db", b"SQLite format 3")
    files.own("alice", outside)  # ignored: not one of Gradio's copies
    assert not files.may_fetch("alice", outside)
    assert not files.may_fetch("alice", f"{files.folder}/../data/tunes.db")


def test_a_folder_reached_through_a_link_is_the_same_folder(tmp_path, clock):
    real = tmp_path / "real-gradio"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real, target_is_directory=True)
    files = UIFiles(tmp_path / "linked", 24 * HOUR, clock=lambda: clock[0])
    assert files.spellings == (str(tmp_path / "linked"), str(real))
    upload = gradio_copy(files, record_file(tmp_path, "client/me.jpg", b"jpeg"))
    as_sent = str(tmp_path / "linked" / upload.parent.name / upload.name)  # Gradio's spelling of the path
    files.own("alice", as_sent)
    assert files.may_fetch("alice", upload) and files.may_fetch("alice", as_sent)
