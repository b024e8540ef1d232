"""Who is calling (API keys) and links that work without a header (the per-user rate limit is `studio.limits`).

Image and LoRA URLs in responses are signed (HMAC, with an expiry), so an `<img src>` or a plain download
works while the link is fresh, and nobody can reach another owner's file by changing an id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from gradio.utils import get_upload_folder
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage.secrets import load_secret

LINK_LIFETIME_S = 7 * 24 * 3600


class UrlSigner:
    """Signs `path` for one owner and the API key that asked, until an expiry; the secret lives in the data folder
    (created once, 0600). A link names the key (`k`): revoking that key ends every link made with it."""

    def __init__(self, data_dir: Path, *, clock=time.time):
        self.secret = load_secret(data_dir / "url-secret")
        self.clock = clock

    def sign(self, base: str, path: str, owner: str, key_id: int) -> str:
        expires = int(self.clock()) + LINK_LIFETIME_S
        query = urlencode({"u": owner, "k": key_id, "exp": expires, "sig": self._mac(path, owner, key_id, expires)})
        return f"{base.rstrip('/')}{path}?{query}"

    def verify(self, path: str, owner: str, key_id: str | None, expires: str | None, signature: str | None) -> bool:
        """Whether the link parts are a fresh signature of `path` for `owner` and key `key_id` (its key's state is
        the caller's to check)."""
        if not _digits(key_id) or not _digits(expires) or int(expires) < self.clock() or not signature:
            return False
        return hmac.compare_digest(self._mac(path, owner, int(key_id), int(expires)), signature)

    def _mac(self, path: str, owner: str, key_id: int, expires: int) -> str:
        message = f"{path}\n{owner}\n{key_id}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:32]


def _digits(value: str | None) -> bool:
    return bool(value) and value.isascii() and value.isdigit() and len(value) < 19


def bearer_key(header: str | None) -> str | None:
    """The key from `Authorization: Bearer <key>`, or None."""
    if not header:
        return None
    scheme, _, key = header.partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


class UploadedFilesOnly:
    """ASGI middleware: a Gradio API call may name a file only by a path in Gradio's upload folder.

    Gradio refuses other paths itself only in apps it launched (`Blocks.launch`); `gr.mount_gradio_app`,
    which serves the app beside this API, leaves that check off. Without this guard a client could pass any
    file of the server (another user's image, the database) to an endpoint that reads or previews it. URLs
    are left to Gradio, which fetches them with its own SSRF-safe client.

    Args:
        app: the ASGI app (the REST API with the Gradio app mounted in it).
        prefix: where Gradio's API routes are (`/gradio_api/`, with the app mounted at `/`).
    """

    def __init__(self, app: ASGIApp, *, prefix: str = "/gradio_api/"):
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._is_gradio_call(scope):  # uploads (multipart) stream through untouched
            await self.app(scope, receive, send)
            return
        messages, body = await read_body(receive)
        foreign = _foreign_file(body)
        if foreign is not None:
            message = f"{Path(foreign).name!r} was not uploaded: upload files first (POST {self.prefix}upload)"
            await JSONResponse({"error": message}, status_code=403)(scope, receive, send)
            return
        await self.app(scope, replay(messages, receive), send)

    def _is_gradio_call(self, scope: Scope) -> bool:
        """A POST to Gradio's API with a body that may be JSON (FastAPI parses JSON whatever the type says,
        or with none); forms are left alone (the upload route's files, which it streams to disk)."""
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(self.prefix):
            return False
        content_type = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
        return content_type not in (b"multipart/form-data", b"application/x-www-form-urlencoded")


async def read_body(receive: Receive) -> tuple[list[Message], bytes]:
    messages, chunks = [], []
    while True:
        message = await receive()
        messages.append(message)
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages, b"".join(chunks)


def replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


def _foreign_file(body: bytes) -> str | None:
    """The first Gradio file (`{"path": ..., "meta": {"_type": "gradio.FileData"}}`) in a JSON body whose
    path is not in the upload folder, or None (also for bodies that are not JSON: Gradio answers those)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    folder = Path(get_upload_folder()).resolve()
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            path = item.get("path")
            # any {"path": ...} counts, with or without Gradio's `meta` marker: components accept both
            if isinstance(path, str) and not path.startswith(("http://", "https://")) and not _is_in(path, folder):
                return path
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _is_in(path: str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder)
