"""The pack library a studio serves (shipped packs plus the team's in the data folder) and the team's editor."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import warnings
from dataclasses import replace
from pathlib import Path

import yaml

from packs.loader import (
    COVERS_FOLDER,
    LIBRARY_DIR,
    MAX_ID_CHARS,
    Pack,
    PackError,
    check_pack_id,
    check_pack_size,
    cover_dirs,
    find_image,
    load_library,
    parse_pack,
    read_pack_text,
)
from pipelines.errors import TunesError, ValidationError
from storage.records import iso
from studio.errors import ConflictError, NotFoundError

logger = logging.getLogger(__name__)
MAX_COVER_UPLOAD_BYTES = 15 * 1024 * 1024  # a phone photo is 2-8 MB; larger is not a cover
MAX_COVER_PIXELS = 40_000_000  # decoded size; a bigger (or bomb-like) image is refused before it is decoded
MAX_COVER_SIDE = 1024  # a card is 384 px and the pack page ~600: stored covers are at most this on a side
COVER_JPEG_QUALITY = 88


class PackLibrary:
    """Loads packs once and on `reload()`; team packs (data folder) override shipped ones with the same id.

    Args:
        folders: folders of pack files, later ones overriding earlier ones.
    """

    def __init__(self, *folders: Path):
        self.folders = folders or (LIBRARY_DIR,)
        self._lock = threading.Lock()
        self._packs: dict[str, Pack] = {}
        self.reload()

    @property
    def cover_dirs(self) -> tuple[Path, ...]:
        """The folders the library's cover and sample images are in, first match wins (`packs.loader.cover_dirs`)."""
        return cover_dirs(*self.folders)

    def image_path(self, name: str) -> Path | None:
        """The file of a cover or sample image a pack names (a team cover or a shipped one), or None."""
        return find_image(name, self.cover_dirs)

    def reload(self) -> None:
        packs = load_library(*[folder for folder in self.folders if Path(folder).is_dir()])
        with self._lock:
            self._packs = packs

    def list(self, class_name: str | None = None, *, include_unpublished: bool = False) -> list[Pack]:
        """Packs by title, optionally only those supporting `class_name`."""
        with self._lock:
            packs = list(self._packs.values())
        return sorted(
            (
                pack
                for pack in packs
                if (include_unpublished or pack.published) and (class_name is None or class_name in pack.classes)
            ),
            key=lambda pack: pack.title.lower(),
        )

    def get(self, pack_id: str, *, include_unpublished: bool = False) -> Pack:
        """One pack by id.

        Raises:
            ValidationError: `pack_id` is not a pack id (a path, say).
            NotFoundError: no such pack, or it is unpublished and `include_unpublished` is false.
        """
        check_pack_id(pack_id)
        with self._lock:
            pack = self._packs.get(pack_id)
        if pack is None or not (pack.published or include_unpublished):
            raise NotFoundError("pack", pack_id)
        return pack


class PackEditor:
    """The creative team's edits: team packs are files in `folder` (the data folder's `packs/`), each
    saved edit also kept as a numbered version in `folder/.versions/<id>/`, so any edit can be reverted.
    Shipped packs stay read-only: editing one saves a team copy that overrides it. New packs and copies
    start as drafts (unpublished): users see a pack only once an editor publishes it.

    Args:
        library: the library to reload after each edit.
        folder: where team packs live.
        clock: "now" for the version log.
        mirror: pushes every saved edit to a private Hub dataset repo (a failed push is logged and kept in
            `last_push_error`; the local save stands).
    """

    def __init__(self, library: PackLibrary, folder: Path, *, clock=None, mirror=None):
        from storage.records import utc_now

        self.library = library
        self.folder = Path(folder)
        self.clock = clock or utc_now
        self.mirror = mirror  # a HubPackMirror when the Hub is configured
        self.last_push_error: str | None = None
        self._lock = threading.Lock()

    def create(self, data: dict, *, editor: str) -> Pack:
        """A new pack, saved as a draft whatever its `published` says (publish it with `set_published`).

        Raises:
            PackError: `data` breaks the schema or a size limit.
            ConflictError: the id is taken.
        """
        pack = replace(self._parse(data, source=_new_pack_source(data)), published=False)
        if pack.id in {p.id for p in self.library.list(include_unpublished=True)}:
            raise ConflictError(f"a pack with id {pack.id!r} exists already; edit it or choose another id")
        return self._save(pack, editor=editor, action="create")

    def edit(self, pack_id: str, data: dict, *, editor: str) -> Pack:
        """Replace a pack with `data` (the whole pack). A refused edit leaves every file as it was."""
        self.library.get(pack_id, include_unpublished=True)
        pack = self._parse(data, source=f"edit of {pack_id}")
        if pack.id != pack_id:
            raise PackError(f"edit of {pack_id}", "id", pack.id, "cannot change; duplicate the pack instead")
        return self._save(pack, editor=editor, action="edit")

    def duplicate(self, pack_id: str, new_id: str, *, editor: str, title: str | None = None) -> Pack:
        """A copy under a new id (unpublished, so it can be worked on before users see it)."""
        data = self.library.get(pack_id, include_unpublished=True).to_file_data()
        data.update(id=check_pack_id(new_id, field="new_id"), title=title or f"{data['title']} (copy)")
        return self.create(data, editor=editor)

    def set_published(self, pack_id: str, published: bool, *, editor: str) -> Pack:
        """Show a pack to users (`published`) or hide it again; saved as a version like any edit."""
        data = self.library.get(pack_id, include_unpublished=True).to_file_data()
        data["published"] = published
        return self._save(
            self._parse(data, source=pack_id), editor=editor, action="publish" if published else "unpublish"
        )

    @property
    def covers_dir(self) -> Path:
        """Where uploaded covers are kept: the team's `covers/` in the data folder, never the code's library."""
        return self.folder / COVERS_FOLDER

    def set_cover(self, pack_id: str, upload: bytes, *, editor: str, filename: str | None = None) -> Pack:
        """Make an uploaded image the pack's cover: re-encoded (RGB, at most `MAX_COVER_SIDE` px a side), kept in
        `covers_dir` as `<pack id>-<hash>.jpg|png`, and saved as a new version (revert brings the old cover back;
        cover files are never deleted, so every version's cover stays).

        Raises:
            ValidationError: `cover` is not an image, or too large (names the field and the value).
            NotFoundError: no such pack.
        """
        data = self.library.get(pack_id, include_unpublished=True).to_file_data()
        encoded, suffix = encode_cover(upload, filename=filename)
        name = f"{pack_id}-{hashlib.sha256(encoded).hexdigest()[:10]}.{suffix}"
        self.covers_dir.mkdir(parents=True, exist_ok=True)
        path = self.covers_dir / name
        if not path.exists():
            _write_bytes_atomically(path, encoded)
        data["cover"] = name
        pack = self._parse(data, source=f"cover of {pack_id}")
        return self._save(pack, editor=editor, action="cover", files={f"covers/{name}": encoded})

    def versions(self, pack_id: str) -> list[dict]:
        """Saved versions of a team pack, oldest first: version, saved_at, saved_by, action."""
        log = self._versions_dir(pack_id) / "log.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def revert(self, pack_id: str, version: int, *, editor: str) -> Pack:
        """Make an earlier version current again (saved as a new version, so the revert can be undone).

        Raises:
            ValidationError: `pack_id` is not a pack id, or `version` is not a version number.
            NotFoundError: the pack has no such saved version.
        """
        versions = self._versions_dir(pack_id)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValidationError("version", version, "must be a version number (1 or more) from the saved versions")
        path = versions / f"{version:04d}.yaml"
        if not path.exists():
            raise NotFoundError(f"version of pack {pack_id}", version)
        pack = self._parse(read_pack_text(path.read_text(), source=path.name), source=path.name)
        return self._save(pack, editor=editor, action=f"revert to {version}")

    def _parse(self, data: object, *, source: str) -> Pack:
        """`parse_pack` with the library's image folders: a cover may be shipped or uploaded by the team."""
        return parse_pack(data, source=source, covers=self.library.cover_dirs)

    def _versions_dir(self, pack_id: str) -> Path:
        """Every path to a pack's files goes through here, so an id never names a folder outside `folder`."""
        return self.folder / ".versions" / check_pack_id(pack_id)

    def _save(self, pack: Pack, *, editor: str, action: str, files: dict[str, bytes] | None = None) -> Pack:
        text = yaml.safe_dump(pack.to_file_data(), sort_keys=False, allow_unicode=True)
        check_pack_size(len(text.encode()), source=f"{pack.id}.yaml")
        with self._lock:
            versions = self._versions_dir(pack.id)
            versions.mkdir(parents=True, exist_ok=True)
            number = len(self.versions(pack.id)) + 1
            _write_atomically(versions / f"{number:04d}.yaml", text)
            _write_atomically(self.folder / f"{pack.id}.yaml", text)
            entry = {"version": number, "saved_at": iso(self.clock()), "saved_by": editor, "action": action}
            with (versions / "log.jsonl").open("a") as log:
                log.write(json.dumps(entry) + "\n")
            self.library.reload()
            self._push(pack.id, number, text, entry, files or {})
        return self.library.get(pack.id, include_unpublished=True)

    def _push(self, pack_id: str, number: int, text: str, entry: dict, extra: dict[str, bytes]) -> None:
        if self.mirror is None:
            return
        files = {
            **extra,
            f"packs/{pack_id}.yaml": text.encode(),
            f"versions/{pack_id}/{number:04d}.yaml": text.encode(),
            f"versions/{pack_id}/log.jsonl": (self._versions_dir(pack_id) / "log.jsonl").read_bytes(),
        }
        try:
            self.mirror.push(files, message=f"{entry['action']} {pack_id} (version {number}) by {entry['saved_by']}")
            self.last_push_error = None
        except TunesError as error:
            self.last_push_error = str(error)
            logger.warning("pack %s saved locally but not pushed to the Hub: %s", pack_id, error)


def _new_pack_source(data: object) -> str:
    """How errors name a new pack: by its id when that is short text (never quoting a huge value)."""
    pack_id = data.get("id") if isinstance(data, dict) else None
    return f"new pack {pack_id!r}" if isinstance(pack_id, str) and len(pack_id) <= MAX_ID_CHARS else "new pack"


def encode_cover(upload: bytes, *, filename: str | None = None) -> tuple[bytes, str]:
    """An uploaded cover as the studio keeps it: decoded, turned upright (EXIF), RGB, at most `MAX_COVER_SIDE`
    px a side; PNG stays PNG (drawings), anything else becomes JPEG. Returns (bytes, "png" | "jpg"). Errors
    quote `filename` (the upload's name) when given.

    Raises:
        ValidationError: `cover` is empty, over `MAX_COVER_UPLOAD_BYTES`, not an image Pillow reads, or over
            `MAX_COVER_PIXELS` once decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    named = f"{filename}, " if filename else ""
    if not upload:
        raise ValidationError("cover", f"{named}an empty file", "must be an image file (PNG, JPEG or WebP)")
    if len(upload) > MAX_COVER_UPLOAD_BYTES:
        limit = f"{MAX_COVER_UPLOAD_BYTES // (1024 * 1024)} MB"
        raise ValidationError("cover", f"{named}{len(upload)} bytes", f"must be an image of at most {limit}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(upload)) as image:
                if image.width * image.height > MAX_COVER_PIXELS:
                    size = f"{named}{image.width}x{image.height} pixels"
                    raise ValidationError("cover", size, f"must be an image of at most {MAX_COVER_PIXELS} pixels")
                kind = image.format
                picture = ImageOps.exif_transpose(image).convert("RGB")
    except ValidationError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        shown = filename or repr(upload[:12])
        raise ValidationError("cover", shown, "must be an image file (PNG, JPEG or WebP) that opens") from None
    except Image.DecompressionBombWarning:
        raise ValidationError(
            "cover", filename or "the upload", f"must be an image of at most {MAX_COVER_PIXELS} pixels"
        ) from None
    picture.thumbnail((MAX_COVER_SIDE, MAX_COVER_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if kind == "PNG":
        picture.save(buffer, "PNG", optimize=True)
        return buffer.getvalue(), "png"
    picture.save(buffer, "JPEG", quality=COVER_JPEG_QUALITY, optimize=True, progressive=True)
    return buffer.getvalue(), "jpg"


def _write_bytes_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
