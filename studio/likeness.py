"""How much each avatar looks like its tune's subject, and keeping a prompt's best candidates (`best_of`).

The subject's face embeddings are stored when the tune's photos are checked for training (`keep_subject`) and
deleted when the tune loses its LoRA (`queue._after_tune_ended`); they never leave the database. Scoring runs
where the images are made (a local worker) or fetched (the Hugging Face Jobs backend).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

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


def score(db: Database, tune_id: int, images: Sequence[Image.Image]) -> list[float | None]:
    """The likeness (0-1) of each image to the tune's subject; all None when the tune has no stored subject (not a
    person, expired) or identity checks are off."""
    stored = db.subject_faces(tune_id)
    model = identity_model() if stored else None
    if model is None:
        return [None] * len(images)
    subject = Subject.from_bytes(stored)
    return [image_likeness(model, subject, image) for image in images]


def kept(prompt: Prompt, scores: Sequence[float | None]) -> list[int]:
    """Which of a prompt's rendered images it keeps: with `best_of`, the `num_images` most like the subject (in
    render order); otherwise all of them."""
    if not prompt.best_of or len(scores) <= prompt.num_images:
        return list(range(len(scores)))
    if all(value is None for value in scores):
        log.info("prompt %s: no likeness to choose by (no face or no subject); the first images are kept", prompt.id)
    return most_alike(scores, prompt.num_images)
