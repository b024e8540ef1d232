"""Uploaded files into what the service takes: (name, contents) pairs, with the server's own limits.

Gradio stores uploads in its cache and hands callbacks their paths. The widget's limits can be bypassed
by any HTTP client, so the count and the size are checked here again before a byte is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipelines.errors import ValidationError
from pipelines.settings import Settings

# a client may send a few files more than the service accepts; the service then names the exact bounds
_READ_SLACK = 5


def read_uploads(
    paths: Sequence[str | Path] | None, settings: Settings, *, field: str = "images"
) -> list[tuple[str, bytes]]:
    """Read uploaded files as (file name, contents).

    Raises:
        ValidationError: too many files, or a file over `TUNES_MAX_PHOTO_BYTES` (named by its file name).
    """
    paths = list(paths or [])
    if len(paths) > settings.max_photos + _READ_SLACK:
        raise ValidationError(
            field, len(paths), f"must be between {settings.min_photos} and {settings.max_photos} photos"
        )
    photos = []
    for index, raw in enumerate(paths):
        path = Path(raw)
        size = path.stat().st_size
        if size > settings.max_photo_bytes:
            limit = _readable(settings.max_photo_bytes)
            raise ValidationError(f"{field}[{index}]", path.name, f"is {_readable(size)}; the limit is {limit}")
        photos.append((path.name, path.read_bytes()))  # only the base name: never a client-chosen path
    return photos


def _readable(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    return f"{size / 1024:.1f} KB" if size < 2**20 else f"{size / 2**20:.1f} MB"
