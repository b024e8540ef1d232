import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data

from pipelines.errors import PhotoRejectedError, ValidationError
from pipelines.faces import detect_faces
from pipelines.photos import (
    Photo,
    check_quality,
    face_kind_for_class,
    load_photos,
    prepare_training_images,
)
from pipelines.settings import Settings

# ---------------------------------------------------------------------------------------------------------
# Helpers: every image is made here, in memory.


def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def chelsea() -> Image.Image:
    return Image.fromarray(data.chelsea())


def encode(image: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_bomb(side: int) -> bytes:
    """A valid 1-bit PNG of side x side white-ish pixels that compresses to a few kilobytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    rows = zlib.compress(bytes(side * (1 + (side + 7) // 8)), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (300, 300), color) for color in ("red", "blue")]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def photo(image: Image.Image, index: int = 0, name: str = "me.jpg") -> Photo:
    return Photo(index=index, name=name, image=image)


def codes(report) -> list[str]:
    return [w.code for w in report.warnings]


@pytest.fixture
def photo_settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path)


def good_inputs(count: int) -> list[tuple[str, bytes]]:
    jpeg = encode(astronaut())
    return [(f"me-{i}.jpg", jpeg) for i in range(count)]


# ---------------------------------------------------------------------------------------------------------
# 1. Loading


def test_loads_paths_and_uploads_as_rgb_photos(tmp_path, photo_settings):
    path = tmp_path / "portrait.jpg"
    path.write_bytes(encode(astronaut()))
    inputs = [
        path,
        str(path),
        ("renamed.png", encode(astronaut())),  # a JPEG with a .png name: the content decides
        ("cat.jpg", encode(chelsea(), "WEBP")),
    ]

    photos = load_photos(inputs, photo_settings)

    assert [p.index for p in photos] == [0, 1, 2, 3]
    assert [p.name for p in photos] == ["portrait.jpg", "portrait.jpg", "renamed.png", "cat.jpg"]
    assert all(p.image.mode == "RGB" for p in photos)
    assert photos[3].image.size == (451, 300)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd.jpg", "passwd.jpg"),
        ("/var/www/uploads/me.jpg", "me.jpg"),
        ("C:\\Users\\ann\\Pictures\\me.png", "me.png"),
        ("..", "photo-1"),
        ("", "photo-1"),
    ],
)
def test_photo_names_never_keep_a_path(photo_settings, raw, expected):
    inputs = [(raw, encode(astronaut())), *good_inputs(3)]

    photos = load_photos(inputs, photo_settings)

    assert photos[0].name == expected


@pytest.mark.parametrize("count", [3, 31])
def test_refuses_too_few_or_too_many_photos(photo_settings, count):
    with pytest.raises(ValidationError) as excinfo:
        load_photos(good_inputs(count), photo_settings)

    assert excinfo.value.field == "images"
    assert excinfo.value.value == count
    assert "between 4 and 30 photos" in str(excinfo.value)


def test_photo_count_limits_come_from_settings(photo_settings):
    with pytest.raises(ValidationError, match="between 5 and 6 photos"):
        load_photos(good_inputs(4), photo_settings.with_overrides(min_photos=5, max_photos=6))


def test_one_error_lists_every_bad_photo(tmp_path, photo_settings):
    jpeg = encode(astronaut())
    bad = {
        "empty.jpg": (b"", "empty", "is empty"),
        "cut.jpg": (jpeg[: len(jpeg) // 2], "corrupt", "truncated or corrupt"),
        "notes.jpg": (b"my best photos, see attached\n" * 20, "not_image", "a text file?"),
        "logo.svg": (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "not_image", "SVG"),
        "still.gif": (encode(astronaut(), "GIF"), "unsupported_format", "is a GIF; use JPEG, PNG or WebP"),
        "moving.png": (animated("PNG"), "animated", "is animated"),
        "moving.webp": (animated("WEBP"), "animated", "is animated"),
        "bomb.png": (png_bomb(10_000), "too_many_pixels", "has 100,000,000 pixels; the limit is 50,000,000"),
        "tiny.jpg": (encode(astronaut().resize((200, 180))), "too_small", "is 200x180; the short side"),
    }
    inputs: list = [("ok-1.jpg", jpeg)]
    inputs += [(name, content) for name, (content, _, _) in bad.items()]
    inputs += [tmp_path / "missing.jpg", ("ok-2.png", encode(astronaut(), "PNG"))]

    with pytest.raises(PhotoRejectedError) as excinfo:
        load_photos(inputs, photo_settings)

    problems = excinfo.value.problems
    assert [p.index for p in problems] == list(range(1, 11))  # every bad one, none of the good ones
    for problem, (name, (_, code, words)) in zip(problems[:-1], bad.items(), strict=True):
        assert (problem.name, problem.code) == (name, code)
        assert words in problem.message
    assert problems[-1].code == "unreadable" and problems[-1].name == "missing.jpg"
    message = str(excinfo.value)
    assert all(name in message for name in bad)


def test_the_pixel_limit_comes_from_settings(photo_settings):
    inputs = good_inputs(4)

    with pytest.raises(PhotoRejectedError) as excinfo:
        load_photos(inputs, photo_settings.with_overrides(max_photo_pixels=512 * 512 - 1))

    assert {p.code for p in excinfo.value.problems} == {"too_many_pixels"}
    assert len(excinfo.value.problems) == 4


def test_refuses_files_over_the_byte_limit_before_decoding(tmp_path, photo_settings):
    path = tmp_path / "huge.jpg"
    path.write_bytes(encode(astronaut(), quality=95))
    limited = photo_settings.with_overrides(max_photo_bytes=10_000)

    with pytest.raises(PhotoRejectedError) as excinfo:
        load_photos([path, *good_inputs(3)], limited)

    problem = excinfo.value.problems[0]
    assert (problem.index, problem.code) == (0, "file_too_large")
    assert "the limit is 10 KB" in problem.message
    assert len(excinfo.value.problems) == 4  # the uploaded copies are over the limit too


def test_cmyk_jpeg_is_accepted_with_its_colours(photo_settings):
    original = astronaut()
    inputs = [("print.jpg", encode(original.convert("CMYK"), quality=95)), *good_inputs(3)]

    loaded = load_photos(inputs, photo_settings)[0].image

    assert loaded.mode == "RGB"
    difference = np.abs(np.asarray(loaded, dtype=int) - np.asarray(original, dtype=int))
    assert difference.mean() < 10


def test_16_bit_png_keeps_its_tones_instead_of_turning_white(photo_settings):
    ramp = np.tile(np.linspace(0, 65535, 400, dtype=np.uint16), (300, 1))
    inputs = [("scan.png", encode(Image.fromarray(ramp), "PNG")), *good_inputs(3)]

    pixels = np.asarray(load_photos(inputs, photo_settings)[0].image)

    assert pixels.shape == (300, 400, 3)
    assert pixels[:, :10].max() < 10  # the dark end stays dark
    assert pixels[:, -10:].min() > 245
    assert 100 < pixels.mean() < 155


def test_transparent_png_is_put_on_white(photo_settings):
    rgba = astronaut().convert("RGBA")
    alpha = np.full((512, 512), 255, dtype=np.uint8)
    alpha[:, :256] = 0  # left half fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    inputs = [("cutout.png", encode(rgba, "PNG")), *good_inputs(3)]

    pixels = np.asarray(load_photos(inputs, photo_settings)[0].image)

    assert (pixels[:, :256] == 255).all()
    assert (pixels[:, 256:] == np.asarray(astronaut())[:, 256:]).all()


def test_exif_rotated_phone_photo_is_turned_upright_and_its_metadata_dropped(photo_settings):
    stored = Image.new("RGB", (400, 300), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 50, 50))  # a red mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    inputs = [("phone.jpg", encode(stored, exif=exif)), *good_inputs(3)]

    image = load_photos(inputs, photo_settings)[0].image

    assert image.size == (300, 400)  # portrait, as the phone showed it
    red, _green, blue = image.getpixel((275, 25))  # the mark is now top-right
    assert red > 200 and blue < 60
    assert "exif" not in image.info


# ---------------------------------------------------------------------------------------------------------
# 2. Quality


def test_a_good_portrait_has_one_face_and_no_warnings():
    (report,) = check_quality([photo(astronaut())], class_name="woman")

    assert report.faces == 1
    assert report.face_box is not None and report.face_box.w > 60
    assert report.warnings == ()
    assert report.usable
    assert len(report.phash) == 16 and int(report.phash, 16) >= 0


def test_blurry_photos_are_flagged_and_very_blurry_ones_left_out():
    soft = astronaut().filter(ImageFilter.GaussianBlur(2))
    smeared = astronaut().filter(ImageFilter.GaussianBlur(5))

    soft_report, smeared_report = check_quality([photo(soft), photo(smeared, 1)], class_name="woman")
    (sharp_report,) = check_quality([photo(astronaut())], class_name="woman")

    assert codes(soft_report) == ["blurry"] and soft_report.usable
    assert "blurry" in codes(smeared_report) and not smeared_report.usable
    assert sharp_report.sharpness > 3 * soft_report.sharpness > 3 * smeared_report.sharpness


def test_sharpness_does_not_depend_on_resolution():
    photos = [
        photo(astronaut(), 0),
        photo(astronaut().resize((1024, 1024), Image.Resampling.LANCZOS), 1),
        photo(chelsea(), 2),
        photo(chelsea().resize((902, 600), Image.Resampling.LANCZOS), 3),
    ]

    faces = check_quality(photos[:2], class_name="woman")  # measured on the face
    whole = check_quality(photos[2:], class_name="dog")  # measured on the whole photo

    assert faces[1].sharpness == pytest.approx(faces[0].sharpness, rel=0.25)
    assert whole[1].sharpness == pytest.approx(whole[0].sharpness, rel=0.25)


def test_a_trimmed_resized_recompressed_copy_is_a_duplicate_and_left_out():
    trimmed = astronaut().crop((15, 15, 497, 497)).resize((300, 300))  # as a phone's "edit" and "share" would
    copy = Image.open(io.BytesIO(encode(trimmed, quality=40))).convert("RGB")

    first, second, cat = check_quality(
        [photo(astronaut(), 0, "a.jpg"), photo(copy, 1, "a-small.jpg"), photo(chelsea(), 2, "c.jpg")],
        class_name="woman",
    )

    assert first.usable and first.duplicate_of is None
    assert second.duplicate_of == 0 and not second.usable
    assert "duplicate" in codes(second)
    assert "'a.jpg'" in next(w.message for w in second.warnings if w.code == "duplicate")
    assert cat.duplicate_of is None and first.phash != cat.phash


def test_a_duplicate_is_named_after_the_kept_photo_never_a_skipped_one():
    shifted = astronaut().crop((20, 0, 512, 492)).resize((512, 512))  # a near-duplicate of the first photo
    copy = Image.open(io.BytesIO(encode(shifted, quality=50))).convert("RGB")  # closest to the skipped one

    first, second, third = check_quality(
        [photo(astronaut(), 0, "a.jpg"), photo(shifted, 1, "b.jpg"), photo(copy, 2, "c.jpg")], class_name="woman"
    )

    assert first.usable and not second.usable and not third.usable
    assert second.duplicate_of == 0 and third.duplicate_of == 0
    assert third.skipped_because == "is nearly the same as photo 1 ('a.jpg')"


def test_no_face_is_flagged_only_where_faces_are_expected():
    (as_man,) = check_quality([photo(chelsea())], class_name="man")
    (as_cat,) = check_quality([photo(chelsea())], class_name="cat")
    (as_dog,) = check_quality([photo(chelsea())], class_name="dog")

    assert codes(as_man) == ["no_face"]
    assert "no_face" not in codes(as_cat)
    assert as_dog.faces is None and as_dog.warnings == ()


def test_a_small_face_in_a_big_photo_is_flagged():
    canvas = Image.new("RGB", (1200, 900), (200, 200, 200))
    canvas.paste(astronaut().resize((256, 256)), (100, 500))

    (report,) = check_quality([photo(canvas)], class_name="man")

    assert report.faces == 1
    assert "face_too_small" in codes(report)
    assert report.usable  # a warning, not a refusal


def test_two_people_are_flagged():
    pair = Image.new("RGB", (1024, 512))
    pair.paste(astronaut(), (0, 0))
    pair.paste(astronaut().transpose(Image.Transpose.FLIP_LEFT_RIGHT), (512, 0))

    (report,) = check_quality([photo(pair)], class_name="person")

    assert report.faces == 2
    assert "multiple_faces" in codes(report)


def test_report_is_json_ready():
    (report,) = check_quality([photo(astronaut(), 3, "me.jpg")], class_name="woman")

    payload = json.loads(json.dumps(report.to_dict()))

    assert payload["index"] == 3 and payload["name"] == "me.jpg"
    assert payload["faces"] == 1 and set(payload["face_box"]) == {"x", "y", "w", "h"}
    assert payload["warnings"] == [] and payload["usable"] is True


@pytest.mark.parametrize(
    ("class_name", "kind"), [("woman", "human"), (" Man ", "human"), ("cat", "cat"), ("dog", None), ("mug", None)]
)
def test_face_kind_follows_the_class(class_name, kind):
    assert face_kind_for_class(class_name) == kind


# ---------------------------------------------------------------------------------------------------------
# 3. Training images


def test_training_images_are_exact_squares_with_captions():
    photos = [photo(astronaut(), 0, "a.jpg"), photo(chelsea(), 1, "c.jpg")]
    reports = check_quality(photos, class_name="woman")

    images = prepare_training_images(photos, reports, resolution=256, token="ohwx", class_name="woman", face_crop=False)

    assert [(t.source, t.kind) for t in images] == [("a.jpg", "full"), ("c.jpg", "full")]
    assert all(t.image.size == (256, 256) and t.image.mode == "RGB" for t in images)
    assert all(t.caption == "ohwx woman" for t in images)


def test_face_crops_are_added_only_where_a_face_was_found():
    person = [photo(astronaut(), 0, "a.jpg")]
    dog = [photo(chelsea(), 0, "c.jpg")]

    person_images = prepare_training_images(
        person,
        check_quality(person, class_name="woman"),
        resolution=256,
        token="ohwx",
        class_name="woman",
        face_crop=True,
    )
    dog_images = prepare_training_images(
        dog, check_quality(dog, class_name="dog"), resolution=256, token="ohwx", class_name="dog", face_crop=True
    )

    assert [t.kind for t in person_images] == ["full", "face"]
    full_face, close_face = (detect_faces(t.image)[0] for t in person_images)
    assert close_face.w > 1.5 * full_face.w  # the face crop is a real close-up
    assert [t.kind for t in dog_images] == ["full"]


def test_a_close_up_gets_no_face_crop_that_would_repeat_it():
    close_up = [photo(astronaut().crop((140, 30, 410, 300)))]  # the face is already 40% of the photo

    images = prepare_training_images(
        close_up,
        check_quality(close_up, class_name="woman"),
        resolution=256,
        token="ohwx",
        class_name="woman",
        face_crop=True,
    )

    assert [t.kind for t in images] == ["full"]


def test_full_crop_of_a_wide_photo_keeps_a_face_near_the_left_edge():
    wide = Image.new("RGB", (1400, 512))
    wide.paste(astronaut(), (0, 0))
    texture = Image.fromarray(data.brick()).convert("RGB")  # busier than the astronaut: bait for a naive crop
    wide.paste(texture, (512, 0))
    wide.paste(texture, (888, 0))
    photos = [photo(wide)]

    (full,) = prepare_training_images(
        photos,
        check_quality(photos, class_name="woman"),
        resolution=512,
        token="ohwx",
        class_name="woman",
        face_crop=False,
    )

    assert len(detect_faces(full.image)) == 1


def test_full_crop_without_a_face_keeps_the_busy_part_of_the_photo():
    wide = Image.new("RGB", (1200, 400), (128, 128, 128))
    wide.paste(chelsea().resize((600, 400)), (600, 0))  # the subject is on the right, the left is empty
    photos = [photo(wide)]

    (full,) = prepare_training_images(
        photos, check_quality(photos, class_name="dog"), resolution=256, token="ohwx", class_name="dog", face_crop=False
    )

    pixels = np.asarray(full.image.resize((400, 400), Image.Resampling.NEAREST))
    grey_share = (pixels == 128).all(axis=2).mean()
    assert grey_share < 0.1  # a plain centre crop would be half empty margin


def test_nothing_usable_is_an_error_that_says_why():
    smeared = astronaut().filter(ImageFilter.GaussianBlur(6))
    photos = [photo(smeared, 0, "a.jpg"), photo(smeared.resize((400, 400)), 1, "b.jpg")]
    reports = check_quality(photos, class_name="woman")

    with pytest.raises(ValidationError) as excinfo:
        prepare_training_images(photos, reports, resolution=256, token="ohwx", class_name="woman", face_crop=True)

    assert excinfo.value.field == "images"
    assert excinfo.value.value == ["a.jpg", "b.jpg"]
    # the second is too blurry itself; it is not "the same as" the first, which is skipped too
    assert "no usable photo remains: 0 near-duplicate(s) and 2 too blurry" in str(excinfo.value)


def test_bad_resolution_is_refused_by_name():
    photos = [photo(astronaut())]

    with pytest.raises(ValidationError) as excinfo:
        prepare_training_images(
            photos,
            check_quality(photos, class_name="woman"),
            resolution=500,
            token="ohwx",
            class_name="woman",
            face_crop=False,
        )

    assert excinfo.value.field == "resolution" and excinfo.value.value == 500


def test_huge_photos_are_kept_at_a_bounded_size(photo_settings):
    panorama = Image.new("RGB", (6000, 400), (90, 120, 150))
    inputs = [("panorama.png", encode(panorama, "PNG")), *good_inputs(3)]
    photos = load_photos(inputs, photo_settings)
    assert photos[0].image.size == (4096, 273)
