"""How much each avatar looks like its tune's subject, and keeping a prompt's best candidates (`best_of`).

The subject's face embeddings are stored when the tune's photos are checked for training (`keep_subject`) and
deleted when the tune loses its LoRA (`queue._after_tune_ended`); they never leave the database. Scoring runs
where the images are made (a local worker) or fetched (the Hugging Face Jobs backend).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from PIL import Image

from pipelines.identity import Subject, identity_model, image_likeness, most_alike
from storage.db import Database
from storage.records import Prompt, TuneStatus

log = logging.getLogger(__name__)


def keep_subject(db: Database, tune_id: int, subject: Subject | None) -> None:
    """Store (or replace) a training tune's subject embeddings; nothing for a tune with no subject, or one that has
    ended meanwhile (its LoRA will never exist, so neither may its biometric data)."""
    if subject is None:
        return
    with db.transaction() as conn:
        db.put_subject_faces(conn, tune_id, subject.to_bytes(), statuses=(TuneStatus.QUEUED, TuneStatus.TRAINING))


def score_images(subject: bytes | None, images: list[Image.Image]) -> list[float | None]:
    """The likeness (0-1) of each image to a stored subject (`Subject.to_bytes`); all None without one (not a
    person, expired) or with identity checks off. What the scoring process runs."""
    model = identity_model() if subject else None
    if model is None:
        return [None] * len(images)
    found = Subject.from_bytes(subject)
    return [image_likeness(model, found, image) for image in images]


class Scorer:
    """Scores a worker's images in a process of its own, started on first use and kept.

    Not a thread: dlib holds Python's GIL while it embeds a face (a pure-Python loop ran 12x slower beside it), and
    the generation that runs meanwhile launches its GPU work from Python. A scoring process that dies is started
    again for the next prompt; the prompt it was scoring keeps its images without likeness.
    """

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, db: Database, tune_id: int, images: Sequence[Image.Image]) -> Future:
        """A future of the images' likeness to the tune's subject; already done (all None) with nothing to measure."""
        subject = db.subject_faces(tune_id)
        if subject is None or identity_model() is None:
            done: Future = Future()
            done.set_result([None] * len(images))
            return done
        with self._lock:
            try:
                return self._process().submit(score_images, subject, list(images))
            except BrokenProcessPool:  # it died (out of memory, killed): a new one for this and later prompts
                log.warning("the likeness scoring process died; starting another")
                self._pool = None
                return self._process().submit(score_images, subject, list(images))

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None

    def _process(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool


def kept(prompt: Prompt, scores: Sequence[float | None]) -> list[int]:
    """Which of a prompt's rendered images it keeps: with `best_of`, the `num_images` most like the subject (in
    render order); otherwise all of them."""
    if not prompt.best_of or len(scores) <= prompt.num_images:
        return list(range(len(scores)))
    if all(value is None for value in scores):
        log.info("prompt %s: no likeness to choose by (no face or no subject); the first images are kept", prompt.id)
    return most_alike(scores, prompt.num_images)
