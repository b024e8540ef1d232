"""Bad photos through every interface: REST multipart, the Gradio API and the service itself.

The corpus is made here, in code (no binary fixtures): empty and truncated files, a PNG decompression
bomb, a 100-megapixel image, animations, an SVG, a text file named .jpg. Each is sent as the third of four
photos; the answer must name it (photo 3 / `images[2]` and its file name) and the problem, create
nothing, and leave the server answering. CMYK, 16-bit and EXIF-rotated photos are accepted and converted;
file names that try to climb directories are kept only as base names and nothing is written by them.
"""

from __future__ import annotations

import io
import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from skimage import data

from pipelines.errors import PhotoRejectedError
from studio.requests import TuneCreate
from tests.conftest import astronaut_photos
from tests.security.conftest import Served, call_raw, stored_files

BAD_INDEX = 2  # the bad photo goes third among good ones: errors must name it by position
PACK = "corporate-headshots"


# -- the corpus ------------------------------------------------------------------------------------


def _encode(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


@cache
def good_photos() -> tuple[bytes, ...]:
    return tuple(_encode(photo, "JPEG", quality=90) for photo in astronaut_photos())


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _zeros_zlib(size: int) -> bytes:
    """A zlib stream of `size` zero bytes, from one compressed megabyte repeated (gigabytes in milliseconds)."""
    block = 1 << 20
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeated = deflate.compress(bytes(block)) + deflate.flush(zlib.Z_FULL_FLUSH)  # history reset: repeatable
    count, rest = divmod(size, block)
    tail = deflate.compress(bytes(rest)) + deflate.flush()
    adler = ((size % 65521) << 16) | 1  # adler32 of zeros: a = 1, b = size
    return b"\x78\xda" + repeated * count + tail + struct.pack(">I", adler)


@cache
def zero_png(width: int, height: int, *, channels: int = 1) -> bytes:
    """A complete, valid all-black PNG of any size: a few hundred KB on disk however many pixels it declares."""
    colour_type = {1: 0, 3: 2}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    pixels = _zeros_zlib(height * (1 + width * channels))  # each row: filter byte 0, then zeros
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"")


def _truncated_jpeg() -> bytes:
    photo = good_photos()[0]
    return photo[: len(photo) // 2]


def _frames() -> list[Image.Image]:
    return [Image.new("RGB", (320, 320), colour) for colour in ("red", "green", "blue")]


def _animated_gif() -> bytes:
    first, *rest = _frames()
    return _encode(first, "GIF", save_all=True, append_images=rest, duration=100, loop=0)


def _animated_png() -> bytes:
    first, *rest = _frames()
    return _encode(first, "PNG", save_all=True, append_images=rest, duration=100)


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="512" height="512"><rect/></svg>'


@dataclass(frozen=True)
class Bad:
    """One bad photo: its file name, how to make it, and the words the refusal must use."""

    name: str
    make: Callable[[], bytes]
    problem: str


BAD = {
    "zero bytes": Bad("empty.jpg", lambda: b"", "is empty (0 bytes)"),
    "truncated JPEG": Bad("cut.jpg", _truncated_jpeg, "is truncated or corrupt"),
    "PNG bomb": Bad("bomb.png", lambda: zero_png(30_000, 30_000), "has 900,000,000 pixels; the limit is 50,000,000"),
    "100 megapixels": Bad(
        "huge.png", lambda: zero_png(10_000, 10_000, channels=3), "has 100,000,000 pixels; the limit is 50,000,000"
    ),
    "animated GIF": Bad("moving.gif", _animated_gif, "is a GIF; use JPEG, PNG or WebP"),
    "animated PNG": Bad("moving.png", _animated_png, "is animated"),
    "SVG": Bad("drawing.svg", lambda: SVG, "is not a photo (an SVG drawing?)"),
    "text named .jpg": Bad("notes.jpg", lambda: b"name,eyes\nalice,green\n" * 20, "is not an image (a text file?)"),
}
CASES = pytest.mark.parametrize("case", list(BAD))


def with_bad(case: str) -> list[tuple[str, bytes]]:
    """Four photos as (name, bytes): three good ones and the bad one at `BAD_INDEX`."""
    bad = BAD[case]
    photos = [(f"me-{i}.jpg", photo) for i, photo in enumerate(good_photos()[:3])]
    photos.insert(BAD_INDEX, (bad.name, bad.make()))
    return photos


def expected(case: str) -> tuple[str, str]:
    """The refusal names the photo (position and file name) and the problem."""
    bad = BAD[case]
    return f"photo {BAD_INDEX + 1} ({bad.name!r})", bad.problem


def test_the_corpus_is_what_it_claims():
    bomb, huge = BAD["PNG bomb"].make(), BAD["100 megapixels"].make()
    assert len(bomb) < 2_000_000 and len(huge) < 1_000_000  # small on disk
    idat = zero_png(300, 200)[41:-16]  # after the signature, IHDR and IDAT's length and type; before its CRC and IEND
    assert zlib.decompress(idat) == bytes(200 * 301)  # the stream really is zeros
    assert Image.open(io.BytesIO(zero_png(300, 200))).convert("L").getextrema() == (0, 0)
    assert Image.open(io.BytesIO(BAD["animated PNG"].make())).n_frames == 3


# -- the interfaces --------------------------------------------------------------------------------


def rest_files(photos: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("tune[images][]", (name, content, "application/octet-stream")) for name, content in photos]


@pytest.fixture(scope="module")
def alice_rest(served: Served):
    with served.rest("alice") as client:
        yield client


@pytest.fixture(scope="module")
def alice_gradio(served: Served):
    return served.gradio("alice")


@pytest.fixture
def nothing_created(served: Served, alice_rest):
    """No tune, no photo folder: checked after the test, and the server still answers."""
    tunes = [t["id"] for t in alice_rest.get("/tunes", params={"limit": 100}).json()]
    photos = stored_files(served.settings.data_dir / "photos")
    yield
    assert [t["id"] for t in alice_rest.get("/tunes", params={"limit": 100}).json()] == tunes
    assert stored_files(served.settings.data_dir / "photos") == photos
    served.still_answers()


def as_local_files(folder: Path, photos: list[tuple[str, bytes]]) -> list[dict]:
    """Write the photos under their names (a fresh folder per call) for gradio_client to upload."""
    folder = folder / uuid.uuid4().hex
    folder.mkdir()
    for name, content in photos:
        (folder / name).write_bytes(content)
    return [handle_file(str(folder / name)) for name, _ in photos]


@CASES
@pytest.mark.parametrize("route", ["/tunes", f"/p/{PACK}/tunes"])
@pytest.mark.usefixtures("nothing_created")
def test_rest_refuses_the_photo_by_index_name_and_problem(alice_rest, case, route):
    fields = {"tune[title]": f"REST {route} {case}", "tune[name]": "woman"}
    response = alice_rest.post(route, data=fields, files=rest_files(with_bad(case)))
    assert response.status_code == 422, response.text
    body = response.json()
    photo, problem = expected(case)
    assert list(body["errors"]) == [f"images[{BAD_INDEX}]"]
    assert photo in body["error"] and problem in body["error"]
    assert "Traceback" not in response.text


@CASES
@pytest.mark.usefixtures("nothing_created")
def test_gradio_create_tune_refuses_the_photo_by_index_name_and_problem(alice_gradio, tmp_path, case):
    photos = as_local_files(tmp_path, with_bad(case))
    with pytest.raises(AppError) as refused:
        alice_gradio.predict(photos=photos, title=f"Gradio {case}", name="woman", api_name="/create_tune")
    photo, problem = expected(case)
    assert photo in str(refused.value) and problem in str(refused.value)


@CASES
@pytest.mark.usefixtures("nothing_created")
def test_gradio_check_photos_refuses_the_photo_by_index_name_and_problem(alice_gradio, tmp_path, case):
    photos = as_local_files(tmp_path, with_bad(case))
    with pytest.raises(AppError) as refused:
        alice_gradio.predict(photos=photos, name="woman", api_name="/check_photos")
    photo, problem = expected(case)
    assert photo in str(refused.value) and problem in str(refused.value)


@pytest.fixture(scope="module")
def alice_browser(served: Served):
    with served.browser("alice") as session:
        yield session


@CASES
@pytest.mark.usefixtures("nothing_created")
def test_the_create_tab_refuses_the_photo_by_index_name_and_problem(alice_browser, case):
    """The tab's own events, as the browser calls them: the preview's report and the Create button."""
    files = [("files", (name, content, "application/octet-stream")) for name, content in with_bad(case)]
    uploaded = alice_browser.post("gradio_api/upload", files=files)
    assert uploaded.status_code == 200, uploaded.text
    photos = [{"path": path, "meta": {"_type": "gradio.FileData"}} for path in uploaded.json()]
    create = [photos, f"Tab {case}", "woman", "fast", "", "", True, "", "(no pack)", [], False, "private"]  # fmt: skip
    photo, problem = expected(case)
    for event, inputs in (("photos_changed", [photos, "woman"]), ("create_tune_1", create)):
        kind, outputs = call_raw(alice_browser, event, inputs)
        assert kind == "complete", (event, outputs)
        banner = str(outputs[2] if event == "photos_changed" else outputs[0])
        assert "Could not do that" in banner and photo in banner and problem in banner, (event, banner)


@CASES
@pytest.mark.usefixtures("nothing_created")
def test_the_service_refuses_the_photo_by_index_name_and_problem(served: Served, case):
    bad = BAD[case]
    calls = {
        "create_tune": lambda: served.studio.create_tune(
            "alice", TuneCreate(title=f"Service {case}", name="woman", images=with_bad(case))
        ),
        "check_photos": lambda: served.studio.check_photos(with_bad(case), "woman"),
    }
    for call in calls.values():
        with pytest.raises(PhotoRejectedError) as refused:
            call()
        [problem] = refused.value.problems
        assert (problem.index, problem.name) == (BAD_INDEX, bad.name) and bad.problem in problem.message
        assert expected(case)[0] in str(refused.value)


def test_every_bad_photo_is_named_in_one_answer(alice_rest, served: Served):
    """All refusals at once, so a user can fix every photo in one go (REST and Gradio alike)."""
    photos = [(bad.name, bad.make()) for bad in BAD.values()]
    response = alice_rest.post(
        "/tunes", data={"tune[title]": "All bad", "tune[name]": "woman"}, files=rest_files(photos)
    )
    assert response.status_code == 422
    for index, bad in enumerate(BAD.values()):
        assert f"photo {index + 1} ({bad.name!r}): {bad.problem}" in response.json()["error"]
    served.still_answers()


# -- accepted and converted ------------------------------------------------------------------------


def _cmyk_jpeg() -> bytes:
    return _encode(Image.fromarray(data.chelsea()).convert("CMYK"), "JPEG", quality=95)


def _sixteen_bit_png() -> bytes:
    camera = data.camera().astype(np.uint16) * 257  # the full 16-bit range
    return _encode(Image.fromarray(camera, mode="I;16"), "PNG")


def test_the_converted_corpus_is_what_it_claims():
    assert Image.open(io.BytesIO(_cmyk_jpeg())).mode == "CMYK"
    assert Image.open(io.BytesIO(_sixteen_bit_png())).mode in ("I;16", "I")


def converted() -> list[tuple[str, bytes]]:
    good = good_photos()
    return [("me-0.jpg", good[0]), ("me-1.jpg", good[1]), ("cmyk.jpg", _cmyk_jpeg()), ("deep.png", _sixteen_bit_png())]


def assert_converted(cmyk: Image.Image, deep: Image.Image) -> None:
    """Plain RGB with the right colours: the cat is not inverted, the 16-bit photo is not clipped to white."""
    assert cmyk.mode == deep.mode == "RGB"
    assert np.abs(np.asarray(cmyk, dtype=int) - data.chelsea()).mean() < 8
    assert np.abs(np.asarray(deep.convert("L"), dtype=int) - data.camera()).mean() < 2


def test_cmyk_and_16_bit_photos_are_accepted_and_converted_through_rest(served: Served, alice_rest):
    response = alice_rest.post(
        "/tunes", data={"tune[title]": "Converted", "tune[name]": "woman"}, files=rest_files(converted())
    )
    assert response.status_code == 201, response.text
    tune_id = response.json()["id"]
    assert response.json()["orig_images"] == ["me-0.jpg", "me-1.jpg", "cmyk.jpg", "deep.png"]
    stored = served.settings.data_dir / "photos" / str(tune_id)
    assert_converted(Image.open(stored / "02.png"), Image.open(stored / "03.png"))
    report = served.studio.get_tune("alice", tune_id).photo_report
    assert [(r["width"], r["height"]) for r in report[2:]] == [(451, 300), (512, 512)]


def test_cmyk_and_16_bit_photos_are_accepted_through_gradio_and_the_service(served: Served, alice_gradio, tmp_path):
    report = alice_gradio.predict(photos=as_local_files(tmp_path, converted()), name="woman", api_name="/check_photos")
    assert [(r["name"], r["width"], r["height"]) for r in report[2:]] == [
        ("cmyk.jpg", 451, 300),
        ("deep.png", 512, 512),
    ]
    checked = served.studio.check_photos(converted(), "woman")
    assert_converted(checked.photos[2].image, checked.photos[3].image)


# EXIF orientation -> the transpose that undoes it (what a camera did to the pixels it stored)
_STORED_AS = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def rotated() -> list[tuple[str, bytes]]:
    """A good photo and three portraits (300x400 upright, a red block top left) stored turned, with EXIF
    orientation 3, 6 and 8 saying how to turn them back. The portraits differ (two crops and a mirror image):
    near-duplicates would be left out, and a tune needs four usable photos."""
    astronaut = Image.fromarray(data.astronaut())
    portraits = [
        astronaut.crop((100, 50, 400, 450)),
        astronaut.crop((100, 50, 400, 450)).transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        astronaut.crop((0, 0, 300, 400)),
    ]
    photos = [("me-0.jpg", good_photos()[0])]
    for (orientation, turn), upright in zip(_STORED_AS.items(), portraits, strict=True):
        upright.paste((255, 0, 0), (0, 0, 60, 60))
        exif = Image.Exif()
        exif[0x0112] = orientation
        photos.append((f"exif-{orientation}.jpg", _encode(upright.transpose(turn), "JPEG", quality=95, exif=exif)))
    return photos


def assert_upright(image: Image.Image) -> None:
    red, green, blue = image.convert("RGB").getpixel((20, 20))
    assert image.size == (300, 400) and red > 200 and green < 60 and blue < 60


def test_exif_rotated_photos_are_stored_upright(served: Served, alice_rest, alice_gradio, tmp_path):
    response = alice_rest.post(
        "/tunes", data={"tune[title]": "Rotated", "tune[name]": "woman"}, files=rest_files(rotated())
    )
    assert response.status_code == 201, response.text
    tune_id = response.json()["id"]
    for index in (1, 2, 3):
        assert_upright(Image.open(served.settings.data_dir / "photos" / str(tune_id) / f"{index:02d}.png"))
    report = served.studio.get_tune("alice", tune_id).photo_report
    assert [(r["width"], r["height"]) for r in report[1:]] == [(300, 400)] * 3
    via_gradio = alice_gradio.predict(
        photos=as_local_files(tmp_path, rotated()), name="woman", api_name="/check_photos"
    )
    assert [(r["width"], r["height"]) for r in via_gradio[1:]] == [(300, 400)] * 3
    for photo in served.studio.check_photos(rotated(), "woman").photos[1:]:
        assert_upright(photo.image)


# -- names that try to climb out -------------------------------------------------------------------

# name sent -> name kept (only the last component, either slash, no control characters)
CLIMBING = {
    "../../etc/passwd.jpg": "passwd.jpg",
    "..\\..\\windows\\win.jpg": "win.jpg",
    "/var/tmp/abs.jpg": "abs.jpg",
    "sub/dir/nested.jpg": "nested.jpg",
}


def raw_multipart(fields: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart body written byte for byte, so file names reach the server exactly as given."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    for filename, content in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="tune[images][]"; filename="{filename}"\r\n'
        parts.append(head.encode() + b"Content-Type: image/jpeg\r\n\r\n" + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def assert_nothing_written_by_name(served: Served, tune_id: int, names: list[str]) -> None:
    data_dir = served.settings.data_dir
    assert stored_files(data_dir / "photos" / str(tune_id)) == {f"{i:02d}.png" for i in range(4)}
    for name in names:  # nowhere in or around the data folder, whatever the name climbs to
        leaf = Path(name.replace("\\", "/")).name
        assert not list(data_dir.parent.rglob(leaf)), leaf
    assert not Path("/etc/passwd.jpg").exists() and not Path("/var/tmp/abs.jpg").exists()


def test_rest_keeps_only_base_names(served: Served, alice_rest):
    photos = list(zip(CLIMBING, good_photos(), strict=True))
    body, kind = raw_multipart({"tune[title]": "Climbing", "tune[name]": "woman"}, photos)
    response = alice_rest.post("/tunes", content=body, headers={"content-type": kind})
    assert response.status_code == 201, response.text
    assert response.json()["orig_images"] == list(CLIMBING.values())
    assert_nothing_written_by_name(served, response.json()["id"], list(CLIMBING))


def test_nul_and_control_characters_never_reach_a_name(served: Served, alice_rest):
    names = ["nul\x00byte.jpg", "tab\tbed.jpg", "..", "."]
    photos = list(zip(names, good_photos(), strict=True))
    body, kind = raw_multipart({"tune[title]": "Control", "tune[name]": "woman"}, photos)
    response = alice_rest.post("/tunes", content=body, headers={"content-type": kind})
    assert response.status_code == 201, response.text
    assert response.json()["orig_images"] == ["nulbyte.jpg", "tabbed.jpg", "photo-3", "photo-4"]
    assert_nothing_written_by_name(served, response.json()["id"], [])


def test_the_service_keeps_only_base_names(served: Served):
    photos = list(zip(CLIMBING, good_photos(), strict=True))
    created = served.studio.create_tune("alice", TuneCreate(title="Climbing, service", name="woman", images=photos))
    assert list(created.tune.orig_images) == list(CLIMBING.values())
    assert [report["name"] for report in created.tune.photo_report] == list(CLIMBING.values())
    assert_nothing_written_by_name(served, created.tune.id, list(CLIMBING))


# Local file names gradio_client can upload (it sends the base name of a local path): odd but valid
ODD_LOCAL = ["..\\..\\evil.jpg", "%2e%2e%2fetc%2fpasswd.jpg", "....jpg", "-rf .jpg"]


def test_gradio_keeps_only_base_names(served: Served, alice_gradio, tmp_path):
    photos = as_local_files(tmp_path, list(zip(ODD_LOCAL, good_photos(), strict=True)))
    report = alice_gradio.predict(photos=photos, name="woman", api_name="/check_photos")
    tune = alice_gradio.predict(photos=photos, title="Odd names", name="woman", api_name="/create_tune")
    for names in ([r["name"] for r in report], tune["orig_images"]):
        assert len(names) == 4 and all("/" not in n and "\\" not in n and n.isprintable() for n in names), names
    assert tune["orig_images"][1:] == ODD_LOCAL[1:]  # names that are already base names are kept as given
    assert_nothing_written_by_name(served, tune["id"], ODD_LOCAL)


def test_gradio_upload_route_stores_climbing_names_in_its_cache_only(served: Served):
    with served.browser("alice") as session:
        files = [("files", (name, good_photos()[0], "image/jpeg")) for name in CLIMBING]
        response = session.post("gradio_api/upload", files=files)
    assert response.status_code == 200, response.text
    paths = [Path(path) for path in response.json()]
    cache_dir = paths[0].parent.parent
    for path, name in zip(paths, CLIMBING, strict=True):
        assert path.parent.parent == cache_dir and "/" not in path.name and "\\" not in path.name, path
        assert path.name.endswith(CLIMBING[name]) and not path.is_relative_to(served.settings.data_dir)
    assert not (cache_dir.parent / "etc" / "passwd.jpg").exists()
    served.still_answers()
