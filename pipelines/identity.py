"""Whose face is it: dlib's face-recognition ResNet, offline on a CPU.

A face (a box from `pipelines.faces`) is aligned with dlib's 5-point landmark model and embedded by dlib's ResNet
into 128 numbers; two faces of one person lie close together. Both models are public domain and come from the
`face-recognition-models` package; the 68-point landmark model it also ships is never loaded (its licence forbids
commercial use). Where dlib or the models are missing, `identity_model()` is None and `identity_off_reason()`
says why: the studio works, without identity checks.

Scales (measured on real photos of three people: see tests/pipelines/test_identity.py and bench/README.md):
- distance: Euclidean between embeddings. One person's photos lie within ~0.45 of each other, two people's
  0.8 or more apart; dlib's own threshold for "the same person" is `SAME_PERSON_DISTANCE` (0.6).
- likeness: `1 - distance / 1.2`, clipped to 0-1. 0.5 is the threshold; one person scores about 0.6-1.0, another
  person about 0.35 or less.

An embedding is biometric data: it is never logged or returned by an API (`Face` and `Subject` hide it from repr).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.faces import FaceBox

MODELS_PACKAGE = "face_recognition_models"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
EMBEDDING_FILE = "dlib_face_recognition_resnet_model_v1.dat"
EMBEDDING_SIZE = 128
SAME_PERSON_DISTANCE = 0.6
LIKENESS_ZERO_DISTANCE = 2 * SAME_PERSON_DISTANCE  # likeness 0.5 at the threshold, 0 at twice it
# Faces are embedded from a copy whose long side is at most this: the ResNet sees a 150-px aligned chip anyway.
_MAX_WORK_SIDE = 1024


@dataclass(frozen=True)
class Face:
    """One face: where it is, and its embedding (not shown in repr)."""

    box: FaceBox
    embedding: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class Subject:
    """Who a tune is of: one mean embedding per person (two for a couple), from the photos that agree."""

    references: np.ndarray = field(repr=False, compare=False)  # (people, 128) float32

    @property
    def people(self) -> int:
        return int(self.references.shape[0])

    def to_bytes(self) -> bytes:
        return np.asarray(self.references, dtype="<f4").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Subject:
        return cls(np.frombuffer(data, dtype="<f4").reshape(-1, EMBEDDING_SIZE).copy())

    def likeness(self, faces: Sequence[Face]) -> float | None:
        """How much the faces in one image look like the subject, 0-1; None when there is no face.

        Each person of the subject takes the face most like them (a couple needs both in the picture); the score
        is the lowest of theirs, so an image with one of the two scores as low as the missing one's best match.
        """
        if not faces:
            return None
        embeddings = np.stack([face.embedding for face in faces])
        best = [likeness(float(np.linalg.norm(embeddings - ref, axis=1).min())) for ref in self.references]
        return round(min(best), 4)


class IdentityModel:
    """The loaded dlib models. One instance per process (`identity_model()`); calls are serialised."""

    def __init__(self, folder: Path):
        import dlib

        self._dlib = dlib
        self._landmarks = dlib.shape_predictor(str(folder / LANDMARKS_FILE))
        self._resnet = dlib.face_recognition_model_v1(str(folder / EMBEDDING_FILE))
        self._lock = threading.Lock()

    def embed(self, image: Image.Image, boxes: Sequence[FaceBox]) -> list[Face]:
        """The embedding of each face box of `image` (boxes in the image's own coordinates), in order.

        A photo is checked when it is uploaded and again when its tune is created: the embeddings of the last few
        hundred faces are kept in memory for `RECENT_FACES_S` at most (never written anywhere; the photos
        themselves are on disk meanwhile), and `forget_recent_faces` drops them all at once.
        """
        if not boxes:
            return []
        scale = min(1.0, _MAX_WORK_SIDE / max(image.size))
        work = image.convert("RGB")
        if scale < 1:
            work = work.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        pixels = np.ascontiguousarray(np.asarray(work))
        digest = hashlib.blake2b(pixels.tobytes(), digest_size=16).digest()
        faces = []
        with self._lock:
            for box in boxes:
                key = (digest, pixels.shape, box)
                vector = _RECENT_FACES.get(key)
                if vector is None:
                    vector = self._embed(pixels, box, scale)
                    _RECENT_FACES.put(key, vector)
                faces.append(Face(box, vector))
        return faces

    def _embed(self, pixels: np.ndarray, box: FaceBox, scale: float) -> np.ndarray:
        rect = self._dlib.rectangle(
            round(box.x * scale), round(box.y * scale), round((box.x + box.w) * scale), round((box.y + box.h) * scale)
        )
        shape = self._landmarks(pixels, rect)
        return np.asarray(self._resnet.compute_face_descriptor(pixels, shape, 0), dtype=np.float32)


class _RecentFaces:
    """At most `kept` embeddings, each for at most `seconds` after it was computed (oldest dropped first)."""

    def __init__(self, kept: int, seconds: float, clock=time.monotonic):
        self.kept, self.seconds, self.clock = kept, seconds, clock
        self._items: OrderedDict[tuple, tuple[float, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            self._expire()
            item = self._items.get(key)
            return None if item is None else item[1]

    def put(self, key: tuple, vector: np.ndarray) -> None:
        with self._lock:
            self._items[key] = (self.clock(), vector)
            while len(self._items) > self.kept:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def _expire(self) -> None:
        now = self.clock()
        while self._items and now - next(iter(self._items.values()))[0] > self.seconds:
            self._items.popitem(last=False)


RECENT_FACES_S = 600.0
_RECENT_FACES = _RecentFaces(kept=256, seconds=RECENT_FACES_S)


def forget_recent_faces() -> None:
    """Drop the embeddings kept in memory (`IdentityModel.embed`): when a tune and its photos are deleted."""
    _RECENT_FACES.clear()


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two embeddings (see the module's scales)."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def likeness(face_distance: float) -> float:
    """A distance on the documented 0-1 likeness scale: 1 identical, 0.5 dlib's same-person threshold, 0 far."""
    return float(np.clip(1.0 - face_distance / LIKENESS_ZERO_DISTANCE, 0.0, 1.0))


@functools.cache
def identity_model() -> IdentityModel | None:
    """The process's identity model, loaded on first use; None when it cannot be (see `identity_off_reason`)."""
    folder, _ = _models_folder()
    return None if folder is None else IdentityModel(folder)


def identity_off_reason() -> str | None:
    """Why identity checks are off ("dlib is not installed…"), or None when they are on."""
    return _models_folder()[1]


@functools.cache
def _models_folder() -> tuple[Path | None, str | None]:
    if importlib.util.find_spec("dlib") is None:
        return None, "identity checks are off: dlib is not installed (pip install dlib-bin)"
    # The package's __init__ imports pkg_resources, gone from current setuptools: find its folder without it.
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        folder = Path(location) / "models"
        if all((folder / name).is_file() for name in (LANDMARKS_FILE, EMBEDDING_FILE)):
            return folder, None
    return None, "identity checks are off: the face models are not installed (pip install face-recognition-models)"


# ---------------------------------------------------------------------------------------------------------
# Who the photos are of


@dataclass(frozen=True)
class SubjectMatch:
    """Which face of one photo is the subject's (`faces` indexes, one per person found) and its likeness."""

    faces: tuple[int, ...]
    likeness: float | None  # the photo's best match to the subject (None: no face in the photo)


def find_subject(photos: Sequence[Sequence[Face]], *, people: int = 1) -> tuple[Subject | None, list[SubjectMatch]]:
    """The identity (or, for a couple, the two identities) shared by most photos, and each photo's match to it.

    For each person in turn: the face that most photos have a face within `SAME_PERSON_DISTANCE` of is the seed
    (ties: the tighter group); the person's reference is the mean of the closest such face of every agreeing
    photo. A second person is looked for among the faces the first did not take.

    Args:
        photos: the faces of each photo, in photo order (an empty list for a photo without a face).
        people: 1, or 2 for a couple.

    Returns:
        The subject (None when no photo has a face) and, per photo, its matched faces and likeness.
    """
    references: list[np.ndarray] = []
    taken: set[tuple[int, int]] = set()
    for _ in range(people):
        candidates = [
            (p, f, face.embedding)
            for p, faces in enumerate(photos)
            for f, face in enumerate(faces)
            if (p, f) not in taken
        ]
        reference = _most_shared_identity(candidates)
        if reference is None:
            break
        references.append(reference)
        taken |= {(p, f) for p, (_, f, _) in _closest_faces(candidates, reference).items()}
    if not references:
        return None, [SubjectMatch((), None) for _ in photos]
    subject = Subject(np.stack(references).astype(np.float32))
    return subject, [_match(faces, subject) for faces in photos]


_Candidate = tuple[int, int, np.ndarray]  # (photo index, face index, embedding)


def _most_shared_identity(candidates: Sequence[_Candidate]) -> np.ndarray | None:
    """The mean embedding of the largest group of photos that agree on one face (ties: the tighter group)."""
    best: tuple[int, float] | None = None
    agreeing: list[np.ndarray] = []
    for _, _, embedding in candidates:
        closest = _closest_faces(candidates, embedding)  # itself included, so never empty
        score = (len(closest), -sum(d for d, _, _ in closest.values()) / len(closest))
        if best is None or score > best:
            best, agreeing = score, [other for _, _, other in closest.values()]
    return np.mean(agreeing, axis=0) if agreeing else None


def _closest_faces(candidates: Sequence[_Candidate], seed: np.ndarray) -> dict[int, tuple[float, int, np.ndarray]]:
    """Per photo, its face closest to `seed` within the same-person distance: (distance, face index, embedding)."""
    closest: dict[int, tuple[float, int, np.ndarray]] = {}
    for p, f, embedding in candidates:
        d = distance(seed, embedding)
        if d <= SAME_PERSON_DISTANCE and d < closest.get(p, (np.inf,))[0]:
            closest[p] = (d, f, embedding)
    return closest


def _match(faces: Sequence[Face], subject: Subject) -> SubjectMatch:
    if not faces:
        return SubjectMatch((), None)
    embeddings = np.stack([face.embedding for face in faces])
    matched, scores = [], []
    for reference in subject.references:
        distances = np.linalg.norm(embeddings - reference, axis=1)
        order = [int(i) for i in np.argsort(distances) if int(i) not in matched]
        if order:
            scores.append(likeness(float(distances[order[0]])))
            if distances[order[0]] <= SAME_PERSON_DISTANCE:
                matched.append(order[0])
    return SubjectMatch(tuple(matched), round(max(scores), 4) if scores else None)


def image_likeness(model: IdentityModel, subject: Subject, image: Image.Image) -> float | None:
    """How much a generated image looks like the subject (see `Subject.likeness`); None without a face."""
    from pipelines.faces import detect_faces

    boxes = detect_faces(image, kind="human")[: max(4, subject.people)]
    return subject.likeness(model.embed(image, boxes))


def most_alike(scores: Sequence[float | None], keep: int) -> list[int]:
    """The indexes of the `keep` highest scores (an image without a face last; ties: the earlier), in order."""
    ranked = sorted(range(len(scores)), key=lambda i: (-(scores[i] if scores[i] is not None else -1.0), i))
    return sorted(ranked[:keep])
