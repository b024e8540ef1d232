"""Training sets as private `datasets` repos on the Hugging Face Hub: what a training job on a rented GPU reads.

A tune's prepared training images (the square crops) and their captions become an image dataset with the columns
`image` (a `datasets.Image`, PNG bytes) and `text` (the caption, e.g. "ohwx woman") — the layout the diffusers
training scripts read with `--dataset_name` — in one `train` split, pushed to a private dataset repo of the
studio's namespace, `<namespace>/tune-<tune>-photos` (`training_set_repo`). The job loads it with
`load_training_set`; the studio deletes it in every end state of the tune (`delete_training_set`), and `sweep`
removes the ones left behind (a crash between push and record, a failed delete).

The endpoint is huggingface_hub's and `datasets`'s own (`HF_ENDPOINT`, default https://huggingface.co): `datasets`
has no per-call endpoint. Every failure is an `ArtifactError` (a `ValidationError` for a bad argument) whose message
names the repo and never contains the token. `datasets` is imported where it is used: the web tier imports this
module without paying for it until it pushes.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.file_download import repo_folder_name
from PIL import Image

from pipelines.errors import ArtifactError, ValidationError
from storage.artifacts import (
    describe_hub_error,
    hub_error_chain_text,
    hub_error_status,
    is_missing_on_hub,
)  # one reading of Hub errors

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRAINING_SET_PREFIX = "tune-"
TRAINING_SET_SUFFIX = "-photos"
SPLIT = "train"
IMAGE_COLUMN = "image"
CAPTION_COLUMN = "text"

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}", re.ASCII)


def training_set_repo(namespace: str, tune_id: int | str) -> str:
    """The dataset repo of a tune's training set: `<namespace>/tune-<tune>-photos`."""
    return f"{namespace}/{TRAINING_SET_PREFIX}{tune_id}{TRAINING_SET_SUFFIX}"


def push_training_set(
    photos: Sequence[Path | Image.Image], caption: str | Sequence[str], *, repo_id: str, token: str
) -> str:
    """Push the photos and their caption(s) as the `train` split of the private dataset repo `repo_id`.

    The repo is created private if missing; an existing one must be private and its training set is replaced.
    If anything fails after the repo was created, the repo is deleted: no photos are left on the Hub.

    Args:
        photos: the prepared photos: PNG files (stored byte for byte) or images (stored as PNG).
        caption: one caption for every photo, or one per photo.
        repo_id: `<namespace>/<name>`, e.g. `training_set_repo(namespace, tune_id)`.
        token: a Hugging Face token that may write to the namespace.

    Returns:
        `repo_id`.

    Raises:
        ValidationError: no photos, a photo that is not a file, a blank caption, captions not one per photo, or a
            repo id that is not `<namespace>/<name>`.
        ArtifactError: the Hub refused or failed, or the repo exists and is public (nothing is pushed then).
    """
    # 1. Check the inputs and build the rows before any request.
    _check_repo_id(repo_id)
    images = [_png_bytes(photo, index) for index, photo in enumerate(photos)]
    if not images:
        raise ValidationError("photos", list(photos), "must hold at least one photo")
    captions = _captions(caption, len(images))
    dataset = _dataset(images, captions)
    api = HfApi(token=token)
    # 2. A private repo; one that exists already and is public is not ours to fill with someone's photos.
    _hub_call(
        "create", repo_id, token, lambda: api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
    )
    info = _hub_call("check", repo_id, token, lambda: api.dataset_info(repo_id))
    if info.private is not True:
        raise ArtifactError(
            f"The Hugging Face Hub dataset repo {repo_id} is public, so the training photos were not pushed. "
            "Delete it or make it private, then try again.",
            location=repo_id,
        )
    # 3. Push; on failure take the repo away again, photos and all.
    try:
        _hub_call(
            "push the training set to",
            repo_id,
            token,
            lambda: dataset.push_to_hub(
                repo_id, split=SPLIT, private=True, token=token, commit_message="Tune Studio: training set"
            ),
        )
    except ArtifactError:
        _delete_quietly(api, repo_id, token)
        raise
    logger.info("pushed a training set of %d photos to the dataset repo %s", len(images), repo_id)
    return repo_id


def load_training_set(repo_id: str, *, token: str) -> list[tuple[Image.Image, str]]:
    """Load the training set pushed to `repo_id`: `(photo, caption)` pairs in the order they were pushed.

    The downloaded files (huggingface_hub's cache) and the prepared dataset (a temporary cache) are removed before
    returning: the photos are left only in memory.

    Raises:
        ValidationError: `repo_id` is not `<namespace>/<name>`.
        ArtifactError: the repo is missing (`missing=True`), unreadable, or not a training set.
    """
    import datasets

    _check_repo_id(repo_id)
    downloads = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="dataset")
    try:
        with tempfile.TemporaryDirectory(prefix="training-set-") as cache:
            rows = _hub_call(
                "load the training set from",
                repo_id,
                token,
                lambda: datasets.load_dataset(repo_id, split=SPLIT, token=token, cache_dir=cache),
            )
            missing = {IMAGE_COLUMN, CAPTION_COLUMN} - set(rows.column_names)
            if missing:
                raise ArtifactError(
                    f"The dataset repo {repo_id} is not a training set: it has no {', '.join(sorted(missing))} column",
                    location=repo_id,
                )
            # copy() reads every pixel now, while the cached files still exist
            return [(row[IMAGE_COLUMN].copy(), row[CAPTION_COLUMN]) for row in rows]
    finally:
        shutil.rmtree(downloads, ignore_errors=True)
        shutil.rmtree(downloads.parent / ".locks" / downloads.name, ignore_errors=True)


def delete_training_set(repo_id: str, *, token: str) -> None:
    """Delete the dataset repo `repo_id`; one that does not exist is fine.

    Raises:
        ValidationError: `repo_id` is not `<namespace>/<name>`.
        ArtifactError: the Hub refused or failed.
    """
    _check_repo_id(repo_id)
    api = HfApi(token=token)
    _hub_call("delete", repo_id, token, lambda: api.delete_repo(repo_id, repo_type="dataset", missing_ok=True))
    logger.info("deleted the training set %s", repo_id)


def sweep(
    namespace: str,
    keep: set[str],
    *,
    token: str,
    prefix: str = TRAINING_SET_PREFIX,
    min_age: timedelta = timedelta(0),
) -> list[str]:
    """Delete the studio's training sets in `namespace` that are not in `keep`: dataset repos named
    `<prefix>…-photos` and created at least `min_age` ago (so a set being pushed right now is spared).

    A repo that cannot be deleted is logged and left for the next sweep.

    Args:
        namespace: the user or organisation holding the training sets.
        keep: the repos still needed, as `<namespace>/<name>` or `<name>`.
        token: a Hugging Face token that may list and delete the namespace's datasets.
        prefix: the start of the names this studio gives its training sets.
        min_age: spare repos younger than this.

    Returns:
        The ids of the repos deleted.

    Raises:
        ArtifactError: the namespace's datasets could not be listed.
    """
    api = HfApi(token=token)
    kept = {name if "/" in name else f"{namespace}/{name}" for name in keep}
    found = _hub_call(
        "list",
        namespace,
        token,
        lambda: list(api.list_datasets(author=namespace, search=prefix)),
        subject=f"the datasets of {namespace!r} on the Hugging Face Hub",
    )
    now = datetime.now(UTC)
    deleted = []
    for info in found:
        name = info.id.split("/", 1)[-1]
        if not (name.startswith(prefix) and name.endswith(TRAINING_SET_SUFFIX)) or info.id in kept:
            continue
        if min_age and info.created_at is not None and now - info.created_at < min_age:
            continue
        try:
            delete_training_set(info.id, token=token)
        except ArtifactError as error:
            logger.warning("the sweep could not delete the training set %s: %s", info.id, error)
            continue
        deleted.append(info.id)
    return deleted


def _dataset(images: list[bytes], captions: list[str]):
    import datasets

    features = datasets.Features({IMAGE_COLUMN: datasets.Image(), CAPTION_COLUMN: datasets.Value("string")})
    # Only a file name travels with each photo: never a folder of the studio's machine.
    rows = [{"bytes": data, "path": f"{index:02d}.png"} for index, data in enumerate(images)]
    return datasets.Dataset.from_dict({IMAGE_COLUMN: rows, CAPTION_COLUMN: captions}, features=features)


def _png_bytes(photo: Path | Image.Image, index: int) -> bytes:
    if isinstance(photo, Image.Image):
        buffer = io.BytesIO()
        photo.save(buffer, format="PNG")
        return buffer.getvalue()
    path = Path(photo)
    if not path.is_file():
        raise ValidationError(f"photos[{index}]", str(path), "is not a file")
    return path.read_bytes()


def _captions(caption: str | Sequence[str], count: int) -> list[str]:
    captions = [caption] * count if isinstance(caption, str) else list(caption)
    if len(captions) != count:
        raise ValidationError("caption", caption, f"must be one caption, or one per photo ({count})")
    for index, text in enumerate(captions):
        if not isinstance(text, str) or not text.strip():
            raise ValidationError(
                "caption" if isinstance(caption, str) else f"caption[{index}]", text, "must not be blank"
            )
    return captions


def _check_repo_id(repo_id: str) -> None:
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id:
        raise ValidationError("repo_id", repo_id, "must be `<namespace>/<name>` (letters, digits, '-', '_', '.')")


def _delete_quietly(api: HfApi, repo_id: str, token: str) -> None:
    try:
        _hub_call("delete", repo_id, token, lambda: api.delete_repo(repo_id, repo_type="dataset", missing_ok=True))
    except ArtifactError as error:
        logger.warning("could not delete the dataset repo %s after a failed push: %s", repo_id, error)


def _hub_call(action: str, repo_id: str, token: str, call: Callable[[], T], *, subject: str | None = None) -> T:
    """Run one Hub or `datasets` call; every failure leaves as an `ArtifactError` without the token. The message
    says what could not be done to `subject` (default: the dataset repo `repo_id`) and why."""
    try:
        return call()
    except (HfHubHTTPError, httpx2.HTTPError, OSError, ValueError) as error:
        detail = describe_hub_error(error).rstrip(".")
        subject = subject or f"the Hugging Face Hub dataset repo {repo_id}"
        message = f"Could not {action} {subject}: {detail}"
        status = hub_error_status(error)
        missing = is_missing_on_hub(error) or type(error).__name__ == "DatasetNotFoundError"
        if missing:
            message += ". It does not exist (deleted or swept), or the token cannot see it"
        elif status in (401, 403):
            message += f". Check that the token is valid and may write to {repo_id.split('/')[0]!r}"
        message = message.replace(token, "hf_***") if token else message
        translated = ArtifactError(message, location=repo_id, missing=missing)
        # Keep the library error for debugging unless its text carries the token.
        raise translated from (None if token and token in hub_error_chain_text(error) else error)
