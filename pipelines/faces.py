"""Face detection with OpenCV Haar cascades: fast, CPU-only, no model download.

Used to check uploaded training photos (is there one face, is it big enough, where to crop) and later to
find faces in generated images so they can be re-painted. Boxes are always in the coordinates of the image
that was passed in, whatever its size.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipelines.errors import TunesError, ValidationError

FACE_KINDS = ("human", "cat")

# Detection runs on a copy whose long side is brought into this range: big photos are shrunk for speed,
# small images (e.g. 64-px face crops of generated images) are enlarged because the cascades' smallest
# window is 20-24 px and a 64-px astronaut portrait was missed without it.
_MAX_WORK_SIDE = 800
_MIN_WORK_SIDE = 400
_MIN_FACE_WORK_PX = 20
_SCALE_FACTOR = 1.1

# Calibrated on skimage's astronaut (64 to 2048 px, blurred, pasted small into 1200x900 canvases, twice side by
# side) and 25 face-free skimage pictures, with the CLAHE preprocessing below. Real faces got 7-44 neighbours
# from `default` and 6-36 from `alt2`; false boxes got up to 11 from `default` (coins) but at most 3 from
# `alt2` where the two overlapped, so a `default` box must overlap an `alt2` box of more than 4 neighbours
# (re-checked with `alt2` looking only around each candidate, as `_confirmed` does).
_CONFIRM_IOU = 0.3
# Two boxes are one face when most of the smaller one lies inside the larger one.
_DUPLICATE_OVERLAP = 0.5


@dataclass(frozen=True)
class _Detector:
    cascade: str
    min_neighbors: int
    confirm_cascade: str | None = None
    confirm_min_neighbors: int = 0


_DETECTORS: dict[str, _Detector] = {
    "human": _Detector("haarcascade_frontalface_default.xml", 5, "haarcascade_frontalface_alt2.xml", 4),
    # Not calibrated on a real cat face: both cat cascades find nothing on skimage's only cat (chelsea, a
    # close-up whose face runs off the frame), so no confirming cascade that could only lower recall.
    # 4 neighbours rejects the one false cat face (3 neighbours) found on the astronaut.
    "cat": _Detector("haarcascade_frontalcatface.xml", 4),
}

# OpenCV does not promise that one CascadeClassifier may run in several threads at once, and the UI runs
# callbacks on worker threads; detection takes ~0.1-0.3 s, so serialising it costs little.
_DETECT_LOCK = threading.Lock()
_RECENT_BOXES: collections.OrderedDict[tuple, tuple[tuple[int, int, int, int], ...]] = collections.OrderedDict()
_RECENT_BOXES_KEPT = 512


@dataclass(frozen=True)
class FaceBox:
    """A face's bounding box in pixels, in the coordinates of the image it was found in."""

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        if self.w < 1 or self.h < 1:
            raise ValidationError("face_box", (self.x, self.y, self.w, self.h), "must have a positive width and height")

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y + self.h / 2)

    @property
    def area(self) -> int:
        return self.w * self.h

    def expanded_square(self, scale: float, bounds: tuple[int, int]) -> tuple[int, int, int]:
        """A square around the face, `scale` times its longer side, moved (and if needed shrunk) to fit.

        Args:
            scale: side of the square relative to the face's longer side (2.5 gives head and shoulders).
            bounds: `(width, height)` of the image the square must stay inside.

        Returns:
            `(left, top, side)` of a square that lies entirely inside the image.

        Raises:
            ValidationError: `scale` is not positive or `bounds` is not a positive size.
        """
        if scale <= 0:
            raise ValidationError("scale", scale, "must be positive")
        width, height = bounds
        if width < 1 or height < 1:
            raise ValidationError("bounds", bounds, "must be a positive (width, height)")
        side = max(1, min(round(max(self.w, self.h) * scale), width, height))
        cx, cy = self.center
        left = _clamp(round(cx - side / 2), 0, width - side)
        top = _clamp(round(cy - side / 2), 0, height - side)
        return (left, top, side)


def detect_faces(image: Image.Image, *, kind: str = "human") -> list[FaceBox]:
    """Find frontal faces in an image.

    Args:
        image: any PIL image (converted to grayscale internally); works from 64 px up to any size.
        kind: `"human"` or `"cat"`.

    Returns:
        The faces found, largest first, without overlapping duplicates; empty when there is none.

    Raises:
        ValidationError: `kind` is not one of `FACE_KINDS`, or the image is empty.
        TunesError: the OpenCV cascade files are missing from the installation.
    """
    if kind not in _DETECTORS:
        raise ValidationError("kind", kind, f"must be one of {', '.join(FACE_KINDS)}")
    if image.width < 1 or image.height < 1:
        raise ValidationError("image", image.size, "must not be empty")
    gray, scale = _work_gray(image)
    found = _run_detector(_DETECTORS[kind], gray)
    boxes = [_to_original(box, scale, image.size) for box in found]
    return _drop_duplicates(sorted(boxes, key=lambda b: b.area, reverse=True))


def _work_gray(image: Image.Image) -> tuple[np.ndarray, float]:
    import cv2

    gray = np.asarray(image.convert("L"))
    long_side = max(gray.shape)
    scale = 1.0
    if long_side > _MAX_WORK_SIDE:
        scale = _MAX_WORK_SIDE / long_side
    elif long_side < _MIN_WORK_SIDE:
        scale = _MIN_WORK_SIDE / long_side
    if scale != 1.0:
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    # Adaptive (CLAHE) rather than global equalisation: a face on a large plain background was lost after
    # equalizeHist, which spends the whole contrast range on the background.
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    return clahe.apply(gray), scale


def _run_detector(detector: _Detector, gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    # A photo is checked when it is uploaded, again when the tune is created, and again when a job's training
    # set is cut: the boxes of the last few hundred images are kept by the work image's digest.
    key = (detector, gray.shape, hashlib.blake2b(gray.tobytes(), digest_size=16).digest())
    with _DETECT_LOCK:
        if key in _RECENT_BOXES:
            _RECENT_BOXES.move_to_end(key)
            return list(_RECENT_BOXES[key])
        boxes = _detect(detector, gray)
        _RECENT_BOXES[key] = tuple(boxes)
        if len(_RECENT_BOXES) > _RECENT_BOXES_KEPT:
            _RECENT_BOXES.popitem(last=False)
        return boxes


def _detect(detector: _Detector, gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    min_size = (_MIN_FACE_WORK_PX, _MIN_FACE_WORK_PX)
    found = _cascade(detector.cascade).detectMultiScale(
        gray, scaleFactor=_SCALE_FACTOR, minNeighbors=detector.min_neighbors, minSize=min_size
    )
    boxes = [_as_box(b) for b in found]
    if detector.confirm_cascade is None:
        return boxes
    return [box for box in boxes if _confirmed(detector, gray, box)]


def _confirmed(detector: _Detector, gray: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    # The second cascade only looks around the candidate, at similar sizes: much cheaper than a full pass.
    x, y, w, h = box
    left, top = max(0, x - w // 2), max(0, y - h // 2)
    region = gray[top : y + h + h // 2, left : x + w + w // 2]
    found = _cascade(detector.confirm_cascade).detectMultiScale(
        region,
        scaleFactor=_SCALE_FACTOR,
        minNeighbors=detector.confirm_min_neighbors,
        minSize=(max(_MIN_FACE_WORK_PX, w // 2),) * 2,
        maxSize=(w * 2,) * 2,
    )
    shifted = [(bx + left, by + top, bw, bh) for bx, by, bw, bh in map(_as_box, found)]
    return any(_iou(box, other) > _CONFIRM_IOU for other in shifted)


@functools.cache
def _cascade(filename: str):  # -> cv2.CascadeClassifier (cv2 is imported lazily)
    import cv2

    path = cv2.data.haarcascades + filename
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise TunesError(f"the OpenCV face model {path} could not be loaded; reinstall opencv-python-headless")
    return classifier


def _as_box(raw: np.ndarray) -> tuple[int, int, int, int]:
    x, y, w, h = (int(v) for v in raw)
    return (x, y, w, h)


def _to_original(box: tuple[int, int, int, int], scale: float, size: tuple[int, int]) -> FaceBox:
    x, y, w, h = box
    width, height = size
    left = _clamp(int(x / scale), 0, width - 1)
    top = _clamp(int(y / scale), 0, height - 1)
    right = _clamp(round((x + w) / scale), left + 1, width)
    bottom = _clamp(round((y + h) / scale), top + 1, height)
    return FaceBox(left, top, right - left, bottom - top)


def _drop_duplicates(boxes: list[FaceBox]) -> list[FaceBox]:
    kept: list[FaceBox] = []
    for box in boxes:  # largest first, so the larger of two overlapping boxes survives
        if all(_intersection(box, k) <= _DUPLICATE_OVERLAP * min(box.area, k.area) for k in kept):
            kept.append(box)
    return kept


def _intersection(a: FaceBox, b: FaceBox) -> int:
    dx = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    dy = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    return max(0, dx) * max(0, dy)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    box_a, box_b = FaceBox(*a), FaceBox(*b)
    inter = _intersection(box_a, box_b)
    return inter / (box_a.area + box_b.area - inter)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))
