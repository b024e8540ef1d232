"""Covers the creative team uploads: re-encoded and kept with the team's packs in the data folder (never in the
code's `packs/library/covers/`), named by pack and content, refused when they are not images or too large (naming
`cover`), saved as a pack version that revert undoes, and shown on the gallery's card."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from packs.loader import COVERS_DIR, LIBRARY_DIR, PackError, parse_pack
from pipelines.errors import ValidationError
from pipelines.settings import Settings
from storage.db import Database
from studio.packs import MAX_COVER_SIDE, MAX_COVER_UPLOAD_BYTES, PackEditor, PackLibrary, encode_cover
from studio.service import Studio
from tests.studio.test_packs import MINI_PACK
from ui.packs_tab import cover_image, pack_cards


def picture(size: tuple[int, int], colour: tuple[int, int, int], kind: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, kind)
    return buffer.getvalue()


@pytest.fixture
def studio(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    db = Database(settings.data_dir / "tunes.db")
    yield Studio(settings, db)
    db.close()


def test_an_upload_is_kept_in_the_data_folder_resized_and_named_by_pack_and_content(studio):
    shipped = sorted(path.name for path in COVERS_DIR.iterdir())
    pack = studio.pack_editor.set_cover("fantasy", picture((3000, 1500), (200, 40, 90)), editor="ed")

    team = studio.settings.data_dir / "packs" / "covers"
    assert studio.pack_editor.covers_dir == team
    assert pack.cover.startswith("fantasy-") and pack.cover.endswith(".jpg") and len(pack.cover) == len("fantasy-") + 14
    with Image.open(team / pack.cover) as stored:
        assert stored.format == "JPEG" and stored.mode == "RGB" and stored.size == (MAX_COVER_SIDE, MAX_COVER_SIDE // 2)
    assert sorted(path.name for path in COVERS_DIR.iterdir()) == shipped, "nothing is written to the code folder"
    assert not (LIBRARY_DIR / "fantasy.yaml").read_text().count(pack.cover)
    assert [v["action"] for v in studio.pack_editor.versions("fantasy")] == ["cover"]
    assert studio.packs.image_path(pack.cover) == team / pack.cover

    again = studio.pack_editor.set_cover("fantasy", picture((3000, 1500), (200, 40, 90)), editor="ed")
    assert again.cover == pack.cover, "the same picture keeps its name"
    png = studio.pack_editor.set_cover("fantasy", picture((64, 64), (0, 0, 0), "PNG"), editor="ed")
    assert png.cover.endswith(".png")


@pytest.mark.parametrize(
    ("upload", "filename", "shown", "problem"),
    [
        (b"not a picture at all", "notes.png", "'notes.png'", "must be an image file (PNG, JPEG or WebP) that opens"),
        (b"", "empty.jpg", "'empty.jpg, an empty file'", "must be an image file"),
        (b"\x00" * (MAX_COVER_UPLOAD_BYTES + 1), "huge.jpg", f"'huge.jpg, {MAX_COVER_UPLOAD_BYTES + 1} bytes'",
         "must be an image of at most 15 MB"),
    ],
)  # fmt: skip
def test_a_bad_upload_is_refused_naming_cover_and_the_value_and_nothing_changes(studio, upload, filename, shown,
                                                                               problem):  # fmt: skip
    with pytest.raises(ValidationError) as refused:
        studio.pack_editor.set_cover("fantasy", upload, editor="ed", filename=filename)
    assert refused.value.field == "cover"
    assert str(refused.value).startswith(f"`cover` {problem}") and str(refused.value).endswith(f"(got {shown})")
    assert studio.pack_editor.versions("fantasy") == []
    assert not studio.pack_editor.covers_dir.exists() or not any(studio.pack_editor.covers_dir.iterdir())


def test_an_image_too_large_once_decoded_is_refused_before_it_is_decoded():
    buffer = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buffer, "PNG")  # 41 Mpx in a few KB
    with pytest.raises(ValidationError, match=r"`cover` must be an image of at most 40000000 pixels"):
        encode_cover(buffer.getvalue(), filename="bomb.png")


def test_revert_brings_the_previous_cover_back(studio):
    first = studio.pack_editor.set_cover("fantasy", picture((500, 500), (10, 200, 10)), editor="ed").cover
    second = studio.pack_editor.set_cover("fantasy", picture((500, 500), (10, 10, 200)), editor="ed").cover
    assert first != second
    assert studio.pack_editor.revert("fantasy", 1, editor="ed").cover == first
    assert studio.get_pack("fantasy").cover == first
    assert [v["action"] for v in studio.pack_editor.versions("fantasy")] == ["cover", "cover", "revert to 1"]


def test_the_gallery_card_shows_the_team_cover(studio):
    before = cover_image(studio.get_pack("fantasy"), studio.packs.cover_dirs).getpixel((5, 5))
    studio.pack_editor.set_cover("fantasy", picture((384, 384), (250, 250, 0)), editor="ed")
    items, ids = pack_cards(studio, "all")
    image = items[ids.index("fantasy")][0]
    assert image.getpixel((5, 5)) == pytest.approx((250, 250, 0), abs=3) and before != image.getpixel((5, 5))
    assert studio.packs.image_path(studio.get_pack("fantasy").cover).parent == studio.pack_editor.covers_dir


def test_the_loader_finds_a_cover_in_the_team_folder_and_refuses_one_in_neither(tmp_path):
    team = tmp_path / "team"
    (team / "covers").mkdir(parents=True)
    (team / "covers" / "mini-abc.png").write_bytes(picture((8, 8), (1, 2, 3), "PNG"))
    library = PackLibrary(tmp_path / "shipped", team)
    editor = PackEditor(library, team)
    pack = editor.create({**MINI_PACK, "cover": "mini-abc.png", "samples": ["fantasy.jpg"]}, editor="ana")
    assert pack.cover == "mini-abc.png" and library.image_path("fantasy.jpg") == COVERS_DIR / "fantasy.jpg"
    with pytest.raises(PackError, match=r"`mini.yaml: cover` must be the name of an image file in packs/library"):
        parse_pack({**MINI_PACK, "cover": "mini-abc.png"}, source="mini.yaml")  # the shipped covers only
    for name in ("../covers/mini-abc.png", "..", "/etc/passwd"):
        with pytest.raises(PackError, match=r"must be the name of an image file"):
            parse_pack({**MINI_PACK, "cover": name}, source="mini.yaml", covers=library.cover_dirs)
