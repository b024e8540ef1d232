"""Training photos: load and refuse bad uploads, check their quality, and cut them into training images.

Three steps, each usable on its own:

1. `load_photos` decodes uploads in memory and refuses, all at once, every photo that cannot be used
   (not an image, unsupported format, corrupt, too big, too small, animated).
2. `check_quality` reports per photo what a user may want to fix (no face, several faces, small face,
   blur, near-duplicates). These are warnings; only near-duplicates and very blurry photos are left out.
3. `prepare_training_images` crops the usable photos into squares at the training resolution.

Nothing is written to disk.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from pipelines.errors import PhotoProblem, PhotoRejectedError, ValidationError
from pipelines.faces import FaceBox, detect_faces
from pipelines.identity import (
    SAME_PERSON_DISTANCE,
    Subject,
    SubjectMatch,
    find_subject,
    identity_model,
    identity_off_reason,
    likeness,
)
from pipelines.settings import Settings

PhotoInput = str | os.PathLike | tuple[str, bytes]

HUMAN_CLASSES = frozenset({"man", "woman", "boy", "girl", "person", "couple", "baby", "child"})
CAT_CLASSES = frozenset({"cat", "kitten"})
COUPLE_CLASS = "couple"  # two people: the subject is two identities

# Identity (person classes): the largest faces of a photo that are embedded, and how many photos must share the
# subject before a photo of someone else is flagged (with fewer, there is no "the other photos" to compare with).
MAX_FACES_IDENTIFIED = 4
MIN_SUBJECT_PHOTOS = 2
SAME_PERSON_LIKENESS = likeness(SAME_PERSON_DISTANCE)

# Codes of `PhotoProblem` (refusals) and `PhotoWarning` (advice), for callers that translate or count them.
PROBLEM_CODES = (
    "unreadable",
    "empty",
    "file_too_large",
    "not_image",
    "unsupported_format",
    "corrupt",
    "too_many_pixels",
    "animated",
    "too_small",
)
WARNING_CODES = ("no_face", "multiple_faces", "face_too_small", "blurry", "duplicate", "other_person")
SKIP_NOTE = "; it will be skipped"  # ends the warning that leaves a photo out of training

# Sharpness is the variance of the Laplacian on a copy of fixed size: the face box resized to 64x64, or the
# whole photo with its long side at 256 px, so that it measures blur relative to the face (or photo) and not
# the camera's resolution. Both give similar numbers on skimage pictures: sharp photos scored 370-3300
# (astronaut at 256-1024 px, JPEG quality 20, a 50-px face on a large canvas, chelsea, coffee, camera, horse);
# Gaussian blur of radius 1 gave 250-540, radius 2 gave 60-120, radius 3 gave 9-41 and radius 4 gave 15-19.
SHARPNESS_FACE_SIDE = 64
SHARPNESS_PHOTO_SIDE = 256
BLURRY_BELOW = 150.0  # warn: radius 1.5-2 blur on a 512-px photo, noticeably soft
TOO_BLURRY_BELOW = 50.0  # leave out: radius 3+ blur, teaches the model blur

# Decoded photos keep at most this long side: training crops are at most 1024 px, and 30 full-size
# 50-MP photos would hold 4.5 GB of pixels in memory.
MAX_KEPT_SIDE = 4096

# A face narrower than this share of the photo's short side trains poorly (few pixels after cropping).
MIN_FACE_SHARE = 0.10

# 64-bit DCT pHash; Hamming distances measured on the astronaut: resized (256 and 1024 px), JPEG quality
# 20, brightness/contrast/gray/blur changes: 0-2; 20-px shift: 4; 5% crop: 8; 10% crop: 14; 5-degree
# rotation: 12; mirror: 32. Between 24 different skimage pictures: 20 or more (astronaut-chelsea: 32).
DUPLICATE_MAX_DISTANCE = 10

# Cropping: a face crop spans this many face widths (head, hair and a little shoulder), and is only added
# when it is clearly tighter than the full crop, otherwise it would repeat the same picture.
FACE_CROP_SCALE = 2.5
FACE_CROP_MAX_SHARE = 0.75
# Smart centre crop without a face: a window far from the centre needs this much more edge energy to win.
CENTER_BIAS = 0.25

_MAGIC_FORMATS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"GIF87a", "a GIF"),
    (0, b"GIF89a", "a GIF"),
    (0, b"BM", "a BMP image"),
    (0, b"II*\x00", "a TIFF image"),
    (0, b"MM\x00*", "a TIFF image"),
    (4, b"ftypheic", "a HEIC photo (the iPhone default)"),
    (4, b"ftypheix", "a HEIC photo (the iPhone default)"),
    (4, b"ftypmif1", "a HEIF photo"),
    (4, b"ftypavif", "an AVIF image"),
    (0, b"%PDF", "a PDF document"),
    (0, b"\x00\x00\x01\x00", "an icon (ICO)"),
)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


@dataclass
class Photo:
    """One accepted photo: RGB, EXIF orientation applied, metadata (EXIF, GPS) dropped."""

    index: int
    name: str
    image: Image.Image


@dataclass(frozen=True)
class PhotoWarning:
    """Advice about one photo; see `WARNING_CODES`."""

    code: str
    message: str


@dataclass(frozen=True)
class PhotoReport:
    """What `check_quality` found in one photo."""

    index: int
    name: str
    width: int
    height: int
    faces: int | None  # None when no face check applies to the class (dogs, objects)
    face_box: FaceBox | None  # the largest face
    sharpness: float
    phash: str
    duplicate_of: int | None
    usable: bool
    warnings: tuple[PhotoWarning, ...]
    likeness: float | None = None  # the photo's face against the set's subject (0-1), for person classes

    def to_dict(self) -> dict:
        """A JSON-ready dict, for API responses."""
        box = self.face_box
        return {
            "index": self.index,
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "faces": self.faces,
            "face_box": None if box is None else {"x": box.x, "y": box.y, "w": box.w, "h": box.h},
            "sharpness": round(self.sharpness, 1),
            "phash": self.phash,
            "duplicate_of": self.duplicate_of,
            "usable": self.usable,
            "likeness": self.likeness,
            "warnings": [{"code": w.code, "message": w.message} for w in self.warnings],
        }

    @property
    def skipped_because(self) -> str | None:
        """Why the photo is left out of training (e.g. "is nearly the same as photo 1 ('a.jpg')"), or None."""
        if self.usable:
            return None
        reasons = [w.message.removesuffix(SKIP_NOTE) for w in self.warnings if w.message.endswith(SKIP_NOTE)]
        return reasons[0] if reasons else "cannot be used"


@dataclass(frozen=True)
class PhotoSet:
    """What `check_photo_set` found: one report per photo, and who the photos are of.

    `subject` is None for classes without identity checks, when no face was found, or when identity checks are
    off (`identity_off`, the reason, says so). It is biometric data: kept with the tune's LoRA only.
    """

    reports: list[PhotoReport]
    subject: Subject | None = None
    identity_off: str | None = None


@dataclass(frozen=True)
class TrainingImage:
    """One square training image and its caption."""

    image: Image.Image
    caption: str
    source: str
    kind: str  # "full" or "face"


class _Refused(Exception):
    """Internal: one photo cannot be used; carries the problem code and message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def face_kind_for_class(class_name: str) -> str | None:
    """Which face detector applies to a subject class.

    Args:
        class_name: the subject's class word, e.g. "woman", "cat", "dog".

    Returns:
        "human", "cat", or None when photos of this class are not checked for faces.
    """
    name = class_name.strip().lower()
    if name in HUMAN_CLASSES:
        return "human"
    if name in CAT_CLASSES:
        return "cat"
    return None


# ---------------------------------------------------------------------------------------------------------
# 1. Loading


def load_photos(inputs: Sequence[PhotoInput], settings: Settings) -> list[Photo]:
    """Read, check and decode uploaded photos in memory.

    Args:
        inputs: file paths, or `(filename, file bytes)` pairs; only the base name of a filename is kept.
        settings: photo count, size and pixel limits.

    Returns:
        One `Photo` per input, in the same order, RGB with EXIF orientation applied.

    Raises:
        ValidationError: too few or too many photos, or an input is neither a path nor a (name, bytes) pair.
        PhotoRejectedError: one or more photos cannot be used; `problems` lists every one of them.
    """
    check_photo_count(len(inputs), settings)
    photos, problems = load_each_photo(inputs, settings)
    if problems:
        raise PhotoRejectedError(problems)
    return photos


def check_photo_count(count: int, settings: Settings, *, minimum: int | None = None) -> None:
    """Raises ValidationError (`images`) unless `minimum` (default `settings.min_photos`) <= count <= the maximum."""
    low = settings.min_photos if minimum is None else minimum
    if not low <= count <= settings.max_photos:
        raise ValidationError(
            "images", count, f"must contain between {settings.min_photos} and {settings.max_photos} photos"
        )


def load_each_photo(inputs: Sequence[PhotoInput], settings: Settings) -> tuple[list[Photo], list[PhotoProblem]]:
    """Decode every photo that can be used and say why each other one cannot (the count is not checked).

    Returns:
        The accepted photos and the refused ones' problems, each in input order (indexes are the inputs').

    Raises:
        ValidationError: an input is neither a path nor a (name, bytes) pair.
    """
    photos: list[Photo] = []
    problems: list[PhotoProblem] = []
    for index, item in enumerate(inputs):
        name = _input_name(index, item)
        try:
            data = _read_input(item, settings)
            photos.append(Photo(index=index, name=name, image=_decode(data, settings)))
        except _Refused as refused:
            problems.append(PhotoProblem(index=index, name=name, code=refused.code, message=refused.message))
    return photos, problems


def _input_name(index: int, item: PhotoInput) -> str:
    if isinstance(item, tuple):
        if len(item) != 2 or not isinstance(item[0], str) or not isinstance(item[1], bytes | bytearray):
            raise ValidationError(f"images[{index}]", item, "must be a file path or a (filename, bytes) pair")
        raw = item[0]
    elif isinstance(item, str | os.PathLike):
        raw = os.fspath(item)
    else:
        raise ValidationError(f"images[{index}]", item, "must be a file path or a (filename, bytes) pair")
    return _safe_name(str(raw), index)


def _safe_name(raw: str, index: int) -> str:
    # Names come from browsers and API clients: keep only the last path component (either slash), drop
    # control characters, and never return something that could climb directories.
    base = PurePosixPath(raw.replace("\\", "/")).name
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    if base in ("", ".", ".."):
        return f"photo-{index + 1}"
    return base[:200]


def _read_input(item: PhotoInput, settings: Settings) -> bytes:
    if isinstance(item, tuple):
        data = bytes(item[1])
    else:
        path = Path(item)
        try:
            size = path.stat().st_size
            if size > settings.max_photo_bytes:  # refuse before reading a huge file into memory
                raise _Refused("file_too_large", _too_large_message(size, settings))
            data = path.read_bytes()
        except OSError as e:
            raise _Refused("unreadable", f"could not be read ({e.strerror or e})") from e
    if not data:
        raise _Refused("empty", "is empty (0 bytes)")
    if len(data) > settings.max_photo_bytes:
        raise _Refused("file_too_large", _too_large_message(len(data), settings))
    return data


def _too_large_message(size: int, settings: Settings) -> str:
    return f"is {_format_bytes(size)}; the limit is {_format_bytes(settings.max_photo_bytes)}"


def _format_bytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.0f} KB"


def _decode(data: bytes, settings: Settings) -> Image.Image:
    # 1. Open by content, only as JPEG, PNG or WebP.
    image = _open_accepted(data)
    # 2. Refuse decompression bombs from the header, before any pixel is decoded.
    width, height = image.size
    if width * height > settings.max_photo_pixels:
        raise _Refused("too_many_pixels", f"has {width * height:,} pixels; the limit is {settings.max_photo_pixels:,}")
    if getattr(image, "is_animated", False):
        raise _Refused("animated", "is animated (GIF/APNG/WebP animations are not supported)")
    # 3. Decode every pixel: a truncated file must fail here, not later during training.
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as e:
        raise _Refused("too_many_pixels", f"has too many pixels ({e})") from e
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error... on bad files
        raise _Refused("corrupt", "is truncated or corrupt") from e
    # 4. Check the size as the user sees it, then normalise to plain RGB.
    if min(image.size) < settings.min_photo_side:
        raise _Refused(
            "too_small",
            f"is {image.width}x{image.height}; the short side must be at least {settings.min_photo_side} px",
        )
    rgb = _to_rgb(image)
    rgb.info.clear()  # no EXIF/GPS/ICC travels further with the pixels
    if max(rgb.size) > MAX_KEPT_SIDE:
        rgb.thumbnail((MAX_KEPT_SIDE, MAX_KEPT_SIDE), Image.Resampling.LANCZOS)
    return rgb


def _open_accepted(data: bytes) -> ImageFile.ImageFile:
    # The plugin classes are used directly rather than Image.open, which would apply PIL's process-wide
    # MAX_IMAGE_PIXELS (warning or error) before our own per-settings limit, and would open phone JPEGs
    # with an embedded preview (MPO) as a two-frame "animation".
    opener = _opener_for(data)
    if opener is None:
        raise _Refused(*_describe_unsupported(data))
    try:
        return opener(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise _Refused("too_many_pixels", f"has too many pixels ({e})") from e
    except Exception as e:  # a valid signature followed by a broken header
        raise _Refused("corrupt", "is truncated or corrupt") from e


def _opener_for(data: bytes) -> type[ImageFile.ImageFile] | None:
    if data.startswith(b"\xff\xd8\xff"):
        return JpegImagePlugin.JpegImageFile
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PngImagePlugin.PngImageFile
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WebPImagePlugin.WebPImageFile
    return None


def _describe_unsupported(data: bytes) -> tuple[str, str]:
    for offset, magic, label in _MAGIC_FORMATS:
        if data[offset : offset + len(magic)] == magic:
            return ("unsupported_format", f"is {label}; use JPEG, PNG or WebP")
    head = data[:2048]
    if b"<svg" in head.lower():
        return ("not_image", "is not a photo (an SVG drawing?); use JPEG, PNG or WebP")
    if _looks_like_text(head):
        return ("not_image", "is not an image (a text file?)")
    return ("not_image", "is not a JPEG, PNG or WebP image")


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3  # only a multi-byte character cut off by the window
    return True


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        # convert("L") would clip every value above 255 to white; scale the 16-bit range down instead.
        values = np.asarray(image, dtype=np.int64).clip(0, 65535)
        image = Image.fromarray((values >> 8).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")  # also CMYK, palette, grayscale and 1-bit


# ---------------------------------------------------------------------------------------------------------
# 2. Quality


def check_quality(photos: Sequence[Photo], *, class_name: str) -> list[PhotoReport]:
    """The per-photo reports of `check_photo_set` (without the subject's identity)."""
    return check_photo_set(photos, class_name=class_name).reports


def check_photo_set(photos: Sequence[Photo], *, class_name: str) -> PhotoSet:
    """Look for problems a user may want to fix; they are warnings, not errors.

    For person classes with identity checks on (`pipelines.identity`), the subject is the person most photos
    share (two people for a couple): each report's face is the subject's (not the largest face found), and a
    photo whose face is someone else's is flagged `other_person` and left out of training.

    Args:
        photos: accepted photos, from `load_photos`.
        class_name: the subject's class; decides which face check applies (see `face_kind_for_class`).

    Returns:
        One report per photo, in order, and the subject. Near-duplicates of an earlier usable photo
        (`duplicate_of` names the nearest one), very blurry photos and other people's photos are marked
        `usable=False`.
    """
    kind = face_kind_for_class(class_name)
    found = [detect_faces(photo.image, kind=kind) if kind else None for photo in photos]
    identified = _identify(photos, found, class_name)
    reports: list[PhotoReport] = []
    hashes: list[tuple[int, int]] = []  # (photo index, hash) of the usable photos so far
    for photo, faces, match in zip(photos, found, identified.matches, strict=True):
        image = photo.image
        face = _subject_box(faces, match)
        sharpness = _sharpness(image, face)
        phash = _phash(image)
        duplicate_of = _find_duplicate(phash, hashes)
        someone_else = _someone_else(match, identified)
        usable = duplicate_of is None and sharpness >= TOO_BLURRY_BELOW and someone_else is None
        if usable:  # only kept photos are compared: "the same as photo N" never names a skipped one
            hashes.append((photo.index, phash))
        warnings = _face_warnings(kind, faces, face, image.size, identified.subject is not None)
        warnings += (someone_else,) if someone_else else ()
        warnings += _blur_warnings(sharpness)
        if duplicate_of is not None:
            earlier = next(p.name for p in photos if p.index == duplicate_of)
            warnings += (
                PhotoWarning("duplicate", f"is nearly the same as photo {duplicate_of + 1} ({earlier!r}){SKIP_NOTE}"),
            )
        reports.append(
            PhotoReport(
                index=photo.index,
                name=photo.name,
                width=image.width,
                height=image.height,
                faces=None if faces is None else len(faces),
                face_box=face,
                sharpness=sharpness,
                phash=f"{phash:016x}",
                duplicate_of=duplicate_of,
                usable=usable,
                warnings=warnings,
                likeness=match.likeness if match else None,
            )
        )
    return PhotoSet(reports, identified.subject, identified.off_reason)


@dataclass(frozen=True)
class _Identified:
    subject: Subject | None
    matches: list[SubjectMatch | None]
    support: int  # how many photos show the subject
    off_reason: str | None


def _identify(photos: Sequence[Photo], found: Sequence[list[FaceBox] | None], class_name: str) -> _Identified:
    """The subject of a person class's photos and each photo's match to it (all None when not applicable)."""
    name = class_name.strip().lower()
    nothing = [None] * len(photos)
    if name not in HUMAN_CLASSES:
        return _Identified(None, nothing, 0, None)
    model = identity_model()
    if model is None:
        return _Identified(None, nothing, 0, identity_off_reason())
    faces = [
        model.embed(photo.image, (boxes or [])[:MAX_FACES_IDENTIFIED])
        for photo, boxes in zip(photos, found, strict=True)
    ]
    subject, matches = find_subject(faces, people=2 if name == COUPLE_CLASS else 1)
    support = sum(bool(match.faces) for match in matches)
    return _Identified(subject, list(matches), support, None)


def _subject_box(faces: list[FaceBox] | None, match: SubjectMatch | None) -> FaceBox | None:
    """The subject's face (both faces' box for a couple); the largest face when the subject is not known."""
    if not faces:
        return None
    if match is None or not match.faces:
        return faces[0]
    chosen = [faces[i] for i in match.faces]
    left, top = min(b.x for b in chosen), min(b.y for b in chosen)
    right, bottom = max(b.x + b.w for b in chosen), max(b.y + b.h for b in chosen)
    return FaceBox(left, top, right - left, bottom - top)


def _someone_else(match: SubjectMatch | None, identified: _Identified) -> PhotoWarning | None:
    """The warning for a photo whose faces are all far from a subject that at least two other photos share."""
    if match is None or match.faces or match.likeness is None or identified.support < MIN_SUBJECT_PHOTOS:
        return None
    return PhotoWarning(
        "other_person",
        f"may show someone else: its face is not the person of the other photos (likeness {match.likeness:.2f}; "
        f"the same person scores {SAME_PERSON_LIKENESS:.1f} or more){SKIP_NOTE}",
    )


def _face_warnings(
    kind: str | None, faces: list[FaceBox] | None, face: FaceBox | None, size: tuple[int, int], identified: bool
) -> tuple[PhotoWarning, ...]:
    if kind is None or faces is None:
        return ()
    if not faces:
        # The cat cascade misses close-ups (it finds nothing on skimage's chelsea), so for cats a missing
        # face says little about the photo and would only be noise.
        if kind == "cat":
            return ()
        return (PhotoWarning("no_face", "no face was found; use photos where the face is clearly visible"),)
    warnings: tuple[PhotoWarning, ...] = ()
    if len(faces) > 1:
        advice = "the crop centres on the subject's face" if identified else "the photo should show only the subject"
        warnings += (PhotoWarning("multiple_faces", f"{len(faces)} faces were found; {advice}"),)
    face = face or faces[0]
    share = max(face.w, face.h) / min(size)
    if share < MIN_FACE_SHARE:
        warnings += (
            PhotoWarning(
                "face_too_small",
                f"the face is small ({share:.0%} of the photo's short side); a closer photo works better",
            ),
        )
    return warnings


def _blur_warnings(sharpness: float) -> tuple[PhotoWarning, ...]:
    if sharpness >= BLURRY_BELOW:
        return ()
    if sharpness < TOO_BLURRY_BELOW:
        message = f"is too blurry to train on (sharpness {sharpness:.0f}, needs {TOO_BLURRY_BELOW:.0f}){SKIP_NOTE}"
    else:
        message = f"looks blurry (sharpness {sharpness:.0f}, sharp photos score {BLURRY_BELOW:.0f} or more)"
    return (PhotoWarning("blurry", message),)


def _sharpness(image: Image.Image, face: FaceBox | None) -> float:
    import cv2

    if face is not None:
        region = image.crop((face.x, face.y, face.x + face.w, face.y + face.h))
        size = (SHARPNESS_FACE_SIDE, SHARPNESS_FACE_SIDE)
    else:
        region = image
        scale = SHARPNESS_PHOTO_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    gray = np.asarray(region.convert("L"))
    shrink = size[0] <= gray.shape[1]
    resized = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return float(cv2.Laplacian(resized, cv2.CV_64F).var())


def _phash(image: Image.Image) -> int:
    import cv2

    gray = np.asarray(image.convert("L"), dtype=np.float32)
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8]  # the lowest frequencies: the photo's overall layout
    bits = (low > np.median(low)).flatten()
    return int("".join("1" if bit else "0" for bit in bits), 2)


def _find_duplicate(phash: int, earlier: list[tuple[int, int]]) -> int | None:
    distances = [((phash ^ other).bit_count(), index) for index, other in earlier]
    close = [d for d in distances if d[0] <= DUPLICATE_MAX_DISTANCE]
    return min(close)[1] if close else None


# ---------------------------------------------------------------------------------------------------------
# 3. Training images


def prepare_training_images(
    photos: Sequence[Photo],
    reports: Sequence[PhotoReport],
    *,
    resolution: int,
    token: str,
    class_name: str,
    face_crop: bool,
) -> list[TrainingImage]:
    """Crop the usable photos into square training images with captions.

    Args:
        photos: accepted photos, from `load_photos`.
        reports: their reports from `check_quality`, in the same order.
        resolution: side of every training image, in pixels.
        token: the rare token that names the subject, e.g. "ohwx".
        class_name: the subject's class, e.g. "woman"; captions are `"{token} {class_name}"`.
        face_crop: also add a tighter crop around the face of each photo where one was found.

    Returns:
        For each usable photo a "full" crop (centred on the face, or on the busiest part of the photo),
        followed by its "face" crop when asked for and useful.

    Raises:
        ValidationError: bad resolution, token or class name, reports that do not match the photos, or no
            usable photo left.
    """
    # 1. Check inputs
    _check_prepare_inputs(photos, reports, resolution=resolution, token=token, class_name=class_name)
    usable = [(photo, report) for photo, report in zip(photos, reports, strict=True) if report.usable]
    if not usable:
        raise ValidationError("images", [p.name for p in photos], f"no usable photo remains: {_why_unusable(reports)}")
    # 2. Crop and resize
    caption = f"{token.strip()} {class_name.strip()}"
    images: list[TrainingImage] = []
    for photo, report in usable:
        full = _full_crop_box(photo.image, report.face_box)
        images.append(TrainingImage(_crop_resize(photo.image, full, resolution), caption, photo.name, "full"))
        if face_crop and report.face_box is not None:
            left, top, side = report.face_box.expanded_square(FACE_CROP_SCALE, photo.image.size)
            if side <= FACE_CROP_MAX_SHARE * full[2]:
                images.append(
                    TrainingImage(_crop_resize(photo.image, (left, top, side), resolution), caption, photo.name, "face")
                )
    return images


def _check_prepare_inputs(
    photos: Sequence[Photo], reports: Sequence[PhotoReport], *, resolution: int, token: str, class_name: str
) -> None:
    if resolution < 64 or resolution % 8:
        raise ValidationError("resolution", resolution, "must be a multiple of 8 and at least 64")
    if not token.strip() or any(ch.isspace() for ch in token.strip()):
        raise ValidationError("token", token, "must be one word, e.g. `ohwx`")
    if not class_name.strip():
        raise ValidationError("class_name", class_name, "must not be empty, e.g. `woman` or `dog`")
    if [p.index for p in photos] != [r.index for r in reports]:
        raise ValidationError(
            "reports", [r.index for r in reports], f"must describe the photos in order ({[p.index for p in photos]})"
        )


def _why_unusable(reports: Sequence[PhotoReport]) -> str:
    duplicates = sum(r.duplicate_of is not None for r in reports)
    blurry = sum(r.duplicate_of is None and not r.usable for r in reports)
    return f"{duplicates} near-duplicate(s) and {blurry} too blurry; upload sharper, different photos"


def _full_crop_box(image: Image.Image, face: FaceBox | None) -> tuple[int, int, int]:
    """The largest square (left, top, side): centred on the face, else on the busiest window."""
    width, height = image.size
    side = min(width, height)
    if width == height:
        return (0, 0, side)
    if face is not None:
        cx, cy = face.center
        start = round((cx if width > height else cy) - side / 2)
    else:
        start = _busiest_window_start(image, side)
    start = max(0, min(start, max(width, height) - side))
    return (start, 0, side) if width > height else (0, start, side)


def _busiest_window_start(image: Image.Image, side: int) -> int:
    """Offset along the long axis of the square window with the most edge energy, mildly favouring the centre."""
    import cv2

    # Work on a small copy: only the layout matters, and it keeps this fast for 50-megapixel photos.
    scale = min(1.0, 256 / min(image.size))
    small = image.convert("L").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    gray = np.asarray(small, dtype=np.float32)
    energy = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    profile = energy.sum(axis=0 if image.width > image.height else 1)
    window = min(len(profile), max(1, round(side * scale)))
    sums = np.convolve(profile, np.ones(window), mode="valid")  # energy of every window position
    positions = np.arange(len(sums))
    centre = (len(sums) - 1) / 2
    distance = np.abs(positions - centre) / max(centre, 1)  # 0 at the centre, 1 at either end
    scores = sums / max(float(sums.max()), 1e-9) - CENTER_BIAS * distance
    return round(int(np.argmax(scores)) / scale)


def _crop_resize(image: Image.Image, box: tuple[int, int, int], resolution: int) -> Image.Image:
    left, top, side = box
    square = image.crop((left, top, left + side, top + side))
    return square.resize((resolution, resolution), Image.Resampling.LANCZOS)
