"""Gradio's copies of files: who may fetch each one, and when each one is deleted.

Gradio keeps a copy of every uploaded file and of every file a component shows (an avatar in a gallery, a zip
to download) in its upload folder, named by the content's hash, and serves it at `/gradio_api/file=PATH` to
anyone signed in. Here every copy belongs to the users who uploaded it or were shown it (`own`); a copy of a
record's file (`show`: an avatar, a photo) lives only while that file does, so deleting the prompt or the tune
ends it; a copy of uploaded photos goes once a tune has taken them (`discard`); and every copy is deleted after
`TUNES_FILE_CACHE_HOURS`. Copies nobody owns (left by an earlier run) are served to nobody.
`ui.guard.GradioGuard` calls `own`, `make_public` and `may_fetch` as requests pass.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gradio import processing_utils
from gradio_client.utils import strip_invalid_filename_characters

SWEEP_EVERY_S = 60.0


@dataclass
class _Copy:
    """One file in Gradio's folder: owner -> the record files it copies (empty: owned outright, like an upload)."""

    owners: dict[str, frozenset[Path]] = field(default_factory=dict)
    public: bool = False
    since: float = 0.0


class UIFiles:
    """The owners and lifetimes of Gradio's copies in `folder` (Gradio's upload folder).

    Args:
        folder: where Gradio keeps uploads and copies (`gradio.utils.get_upload_folder()`).
        lifetime_s: seconds a copy is kept at most.
        clock: seconds (tests pass a fake).
    """

    def __init__(self, folder: str | Path, lifetime_s: float, *, clock: Callable[[], float] = time.time):
        self.folder = Path(folder).resolve()
        # how Gradio may write the folder in what it sends (as configured, or resolved through links)
        self.spellings = tuple(dict.fromkeys((str(Path(folder)), str(self.folder))))
        self.lifetime_s = lifetime_s
        self.clock = clock
        self._copies: dict[Path, _Copy] = {}
        self._lock = threading.Lock()
        self._swept = float("-inf")

    def copy_path(self, source: str | Path) -> Path:
        """Where Gradio puts its copy of `source` (the folder is the content's hash, as Gradio names it)."""
        name = strip_invalid_filename_characters(Path(source).name)
        return self.folder / processing_utils.hash_file(source) / name

    def show(self, owner: str, source: str | Path, *, of: Iterable[str | Path] = ()) -> str:
        """Note that `owner` is about to be shown `source`, a record's file (or a file made `of` records' files,
        like a zip of images): Gradio's copy of it is theirs while that file (any of those) exists.
        Returns `source` as a string, for the component."""
        copy = self.copy_path(source)
        records = frozenset(Path(path) for path in of) or {Path(source)}
        with self._lock:
            entry = self._entry(copy)
            entry.owners[owner] = entry.owners.get(owner, frozenset()) | records
        return str(source)

    def own(self, owner: str, path: str | Path) -> None:
        """`owner` uploaded `path` or was sent it in an event's output (a copy in the folder; others are ignored)."""
        copy = self._inside(path)
        if copy is not None:
            with self._lock:
                self._entry(copy).owners.setdefault(owner, frozenset())

    def make_public(self, path: str | Path) -> None:
        """`path` is part of the page everyone gets (an icon, a default image)."""
        copy = self._inside(path)
        if copy is not None:
            with self._lock:
                self._entry(copy).public = True

    def may_fetch(self, user: str | None, path: str | Path) -> bool:
        """Whether `user` may download `path`. Copies of deleted record files and expired copies are deleted here."""
        self.sweep_now_and_then()
        copy = self._inside(path)
        if copy is None:
            return False
        with self._lock:
            entry = self._copies.get(copy)
            if entry is None:
                return False
            if entry.public:
                return True
            sources = entry.owners.get(user) if user is not None else None
            if sources is None:
                return False
            if sources and not any(source.exists() for source in sources):
                del entry.owners[user]  # the record is gone: so is this user's claim on the copy
                if not entry.owners:
                    self._delete(copy)
                return False
            return True

    def discard(self, owner: str, paths: Iterable[str | Path]) -> None:
        """Delete `owner`'s uploads in `paths` (taken by a tune: the service keeps its own copy of the photos)."""
        with self._lock:
            for path in paths:
                copy = self._inside(path)
                entry = self._copies.get(copy) if copy is not None else None
                if entry is None or owner not in entry.owners:
                    continue
                del entry.owners[owner]
                if not entry.owners and not entry.public:
                    self._delete(copy)

    def sweep(self) -> int:
        """Delete expired copies, copies of deleted record files, and files nobody owns older than the lifetime.
        Returns how many files were deleted."""
        now = self.clock()
        deleted = 0
        with self._lock:
            self._swept = now
            for copy, entry in list(self._copies.items()):
                for owner, sources in list(entry.owners.items()):
                    if sources and not any(source.exists() for source in sources):
                        del entry.owners[owner]
                expired = now - entry.since > self.lifetime_s
                if expired or not (entry.owners or entry.public):
                    deleted += self._delete(copy)
            for path in self.folder.glob("*/*") if self.folder.is_dir() else ():
                if path not in self._copies and path.is_file() and now - path.stat().st_mtime > self.lifetime_s:
                    deleted += self._delete(path)
        return deleted

    def sweep_now_and_then(self) -> None:
        if self.clock() - self._swept >= SWEEP_EVERY_S:
            self.sweep()

    def _inside(self, path: str | Path) -> Path | None:
        """`path` resolved, when it is a file in Gradio's folder (its own sub-folder), else None."""
        try:
            resolved = Path(path).resolve()
        except (OSError, ValueError):
            return None
        return resolved if resolved.parent.parent == self.folder else None

    def _entry(self, copy: Path) -> _Copy:
        entry = self._copies.get(copy)
        if entry is None:
            entry = self._copies[copy] = _Copy(since=self.clock())
        return entry

    def _delete(self, copy: Path) -> int:
        """Forget `copy` and delete it (and its hash folder once empty); 1 if a file was deleted."""
        self._copies.pop(copy, None)
        try:
            copy.unlink()
        except FileNotFoundError:
            return 0
        if copy.parent != self.folder and not any(copy.parent.iterdir()):
            shutil.rmtree(copy.parent, ignore_errors=True)
        return 1
