"""The showcase: every visitor's view of public avatars, and the links that serve them.

An avatar is public while its tune exists and is public, its prompt is done, and neither its owner hid it nor an
admin blocked it (`Database.showcase` applies all four on every read). A public link names the image and is
signed with the key drawn when its tune last became public (`Tune.publication`): the file route checks both on every
request, so a link stops working the moment the tune is made private or deleted, or the image hidden, and making the
tune public again does not revive links handed out before. Training photos are never public: nothing here reads them.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import ValidationError
from storage.db import Database
from storage.records import ShowcaseKind
from storage.secrets import load_secret
from studio.errors import NotFoundError
from studio.requests import check_id

PAGE_SIZE = 48
MAX_PAGE = 200
KINDS = tuple(kind.value for kind in ShowcaseKind)
LINK_PREFIX = "/showcase/images/"


@dataclass(frozen=True)
class ShowcaseItem:
    """One public avatar as anyone may see it (no file path, no photo, nothing of the tune but its title)."""

    image_id: int
    owner: str
    tune_id: int
    title: str
    text: str  # the prompt as rendered
    kind: str  # a ShowcaseKind value
    liked: bool  # its owner likes it
    likeness: float | None
    width: int
    height: int
    created_at: str
    url: str  # its public link (a path on this server)


class Showcase:
    """Reads public avatars and signs and checks their links.

    Args:
        db: the records.
        data_dir: where the link key lives (`showcase-secret`, made once).
    """

    def __init__(self, db: Database, data_dir: Path):
        self.db = db
        self.secret = load_secret(Path(data_dir) / "showcase-secret")

    def items(
        self,
        *,
        user: str | None = None,
        tune_id: int | None = None,
        kind: str | None = None,
        limit: int = PAGE_SIZE,
        offset: int = 0,
    ) -> list[ShowcaseItem]:
        """Public avatars, newest first: of everyone, or of `user`, optionally of one of their tunes and one kind.

        Raises:
            ValidationError: a bad filter or page, naming it.
        """
        user = _check_user(user)
        if tune_id is not None:
            check_id(tune_id, "tune_id")
        if kind is not None and kind not in KINDS:
            raise ValidationError("kind", kind, f"must be one of {', '.join(KINDS)}")
        for name, value, low, high in (("limit", limit, 1, MAX_PAGE), ("offset", offset, 0, 10**9)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValidationError(name, value, f"must be an integer between {low} and {high}")
        rows = self.db.showcase(owner=user, tune_id=tune_id, kind=kind, limit=limit, offset=offset)
        return [
            ShowcaseItem(
                image_id=row["image_id"],
                owner=row["owner"],
                tune_id=row["tune_id"],
                title=row["title"],
                text=row["text"],
                kind=row["kind"],
                liked=bool(row["liked"]),
                likeness=row["likeness"],
                width=row["width"],
                height=row["height"],
                created_at=row["created_at"],
                url=self.link(row["image_id"], row["publication"]),
            )
            for row in rows
        ]

    def tunes(self, user: str) -> list[tuple[int, str]]:
        """(id, title) of `user`'s tunes that have public avatars: the showcase's tune filter."""
        return self.db.showcase_tunes(_check_user(user) or "")

    def link(self, image_id: int, publication: str | None) -> str:
        """The public link of an image of a tune made public with key `publication`."""
        return f"{LINK_PREFIX}{image_id}.png?v={self._mac(image_id, publication)}"

    def file(self, image_id: int, signature: str | None) -> Path:
        """The file a public link serves, checked now: the image must be public and the link signed for its tune's
        current publication.

        Raises:
            NotFoundError: anything else (a private, hidden, blocked or deleted image, or a stale or forged link);
                the same answer for all, so a link says nothing about what is behind it.
        """
        found = self.db.public_image(image_id) if isinstance(image_id, int) and image_id > 0 else None
        if found is None or not signature:
            raise NotFoundError("image", image_id)
        image, publication = found
        if not hmac.compare_digest(self._mac(image.id, publication), signature) or not Path(image.path).is_file():
            raise NotFoundError("image", image_id)
        return Path(image.path)

    def _mac(self, image_id: int, publication: str | None) -> str:
        message = f"public\n{image_id}\n{publication}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:32]


def _check_user(user: object) -> str | None:
    if user is None or user == "":
        return None
    if not isinstance(user, str) or len(user) > 200 or not user.strip() or not user.isprintable():
        raise ValidationError("user", user, "must be a user name")
    return user.strip()
