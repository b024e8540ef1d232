"""Inside the Gradio app: event streams go only to the user who started them, files only to the users they are of.

Gradio sends an event's results to whoever listens on `queue/data?session_hash=…` (a value the browser makes
up) and serves every file in its folder to anyone signed in. `GradioGuard` binds a session hash to the first
signed-in user who uses it (another user gets 403) and asks `ui.files.UIFiles` whether the caller may fetch a
file (uploaded by or shown to them; else 404). It notes who was sent which file by reading what Gradio sends:
upload answers, event results and the page config (files everyone gets).

It sits innermost in Gradio's app, after Gradio's session middleware has read the sign-in (OAuth) and before
any compression, so it reads the user and the plain bodies.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI
from gradio.routes import App
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rest.security import read_body, replay
from ui.context import UIContext
from ui.files import UIFiles

MAX_SESSIONS = 100_000  # session hashes remembered (oldest forgotten first)
_PAGE_PATHS = ("/", "/config", "/config/")  # what everyone gets: files in them are public
_TEXT_TYPES = (b"application/json", b"text/event-stream", b"text/html")


class GradioGuard:
    """ASGI middleware for the Gradio app.

    Args:
        app: Gradio's app (its inner layers).
        who: the signed-in user of a request scope, or None.
        files: the owners of Gradio's copies.
    """

    def __init__(self, app: ASGIApp, *, who: Callable[[Scope], str | None], files: UIFiles):
        self.app = app
        self.who = who
        self.files = files
        self.sessions: OrderedDict[str, str] = OrderedDict()
        folders = "|".join(re.escape(spelling) for spelling in files.spellings)
        self._path = re.compile(f"(?:{folders})" + r'/[0-9a-f]{64}/(?:[^"\\/<>\r\n]|\\[^/])+')

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route(scope)
        user = self.who(scope)
        if path.startswith("/gradio_api/file="):
            await self._file(scope, receive, send, user, path.removeprefix("/gradio_api/file="))
            return
        session, receive = await self._session_of(scope, receive, path)
        if session is not None and not self._bind(session, user):
            message = "this session belongs to another user: reload the page"
            await JSONResponse({"error": message}, status_code=403)(scope, receive, send)
            return
        send = self._noting_files(send, user, public=path in _PAGE_PATHS)
        if path.startswith(_JSON_CALL_PATHS):
            send = _scrubbing_json_errors(send)
        await self.app(scope, receive, send)

    async def _file(self, scope: Scope, receive: Receive, send: Send, user: str | None, path: str) -> None:
        if path.startswith(("http://", "https://")) or not self._in_folder(path):
            await self.app(scope, receive, send)  # not a copy: Gradio's own rules (static files, URLs)
        elif self.files.may_fetch(user, path):
            await self.app(scope, receive, send)
        else:
            await JSONResponse({"error": "no such file (or not yours)"}, status_code=404)(scope, receive, send)

    def _in_folder(self, path: str) -> bool:
        try:
            return Path(path).resolve().is_relative_to(self.files.folder)
        except (OSError, ValueError):
            return False

    async def _session_of(self, scope: Scope, receive: Receive, path: str) -> tuple[str | None, Receive]:
        """The session hash a request names (query, path or JSON body) and a `receive` that replays the body."""
        if path.startswith("/gradio_api/heartbeat/"):
            return path.removeprefix("/gradio_api/heartbeat/").strip("/"), receive
        if path.startswith("/gradio_api/queue/data"):
            return _first(parse_qs(scope.get("query_string", b"").decode()).get("session_hash")), receive
        if scope["method"] == "POST" and path in ("/gradio_api/queue/join", "/gradio_api/cancel"):
            messages, body = await read_body(receive)
            try:
                session = json.loads(body).get("session_hash")
            except (ValueError, AttributeError, RecursionError):
                session = None  # Gradio answers a bad body itself
            return (session if isinstance(session, str) else None), replay(messages, receive)
        return None, receive

    def _bind(self, session: str, user: str | None) -> bool:
        """Bind `session` to `user` on first use; False when it is another user's."""
        owner = self.sessions.get(session)
        if owner is None:
            self.sessions[session] = user or ""
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
            return True
        self.sessions.move_to_end(session)
        return owner == (user or "")

    def _noting_files(self, send: Send, user: str | None, *, public: bool) -> Send:
        """`send` that first notes the files named in a text body as the user's (or everyone's, for the page).

        Event streams go out line by line (a partial line waits for its end), each only after the files in it are
        noted, so the browser never asks for a file before it may have it; their error messages lose server paths
        (`scrub_errors`), as Gradio shows exception text to help callers fix their input.
        """
        state = {"kind": b"", "pending": b""}

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                kind = Headers(raw=message.get("headers", [])).get("content-type", "").encode().split(b";")[0]
                state["kind"] = kind if kind in _TEXT_TYPES else b""
            elif message["type"] == "http.response.body" and state["kind"]:
                data = state["pending"] + message.get("body", b"")
                complete, end, rest = data.rpartition(b"\n") if message.get("more_body") else (data, b"", b"")
                state["pending"] = rest
                text = complete.decode("utf-8", "replace")
                self._note(text, user, public=public)
                if state["kind"] == b"text/event-stream":
                    message = {**message, "body": (scrub_errors(text) + end.decode()).encode()}
            await send(message)

        return noting

    def _note(self, text: str, user: str | None, *, public: bool) -> None:
        for match in self._path.finditer(text):
            try:
                path = json.loads(f'"{match.group(0)}"')  # JSON escapes in the name (é as \u00e9)
            except ValueError:
                continue
            if public:
                self.files.make_public(path)
            elif user is not None:
                self.files.own(user, path)


_JSON_CALL_PATHS = ("/gradio_api/run/", "/gradio_api/api/")  # calls answered as one JSON document, not a stream


def _scrubbing_json_errors(send: Send) -> Send:
    """`send` for a call answered as JSON: an `error` message loses this server's folders, as in event streams.
    The (small) answer is held until complete, so its Content-Length can follow the change."""
    held: dict[str, Any] = {"start": None, "body": b""}

    async def scrubbing(message: Message) -> None:
        if message["type"] == "http.response.start":
            held["start"] = message
            return
        if message["type"] != "http.response.body" or held["start"] is None:
            await send(message)
            return
        held["body"] += message.get("body", b"")
        if message.get("more_body"):
            return
        body = _scrub_json_error(held["body"])
        headers = [(k, v) for k, v in held["start"].get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**held["start"], "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return scrubbing


def _scrub_json_error(body: bytes) -> bytes:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body
    if not isinstance(payload, dict) or not isinstance(payload.get("error"), str):
        return body
    scrubbed = _SERVER_PATH.sub(r"\1", payload["error"])
    return body if scrubbed == payload["error"] else json.dumps({**payload, "error": scrubbed}).encode()


_SERVER_PATH = re.compile(r"(?<![\w:/.])/(?:[\w.@+-]+/)+([\w.@+-]*)")


def scrub_errors(stream: str) -> str:
    """Event-stream lines with the error messages in them cut down to file names: no folders of this server
    (`/srv/data/images/3/00-42.png` reads `00-42.png`). Other lines are left as they are."""
    return "\n".join(_scrub_line(line) for line in stream.split("\n"))


def _scrub_line(line: str) -> str:
    if not line.startswith("data:") or "error" not in line:
        return line
    try:
        payload = json.loads(line[5:])
    except ValueError:
        return line
    if not isinstance(payload, dict):
        return line
    holder = payload.get("output") if payload.get("msg") == "process_completed" else payload
    if not isinstance(holder, dict) or not isinstance(holder.get("error"), str):
        return line
    scrubbed = _SERVER_PATH.sub(r"\1", holder["error"])
    if scrubbed == holder["error"]:
        return line
    holder["error"] = scrubbed
    return "data: " + json.dumps(payload)


def install_guard(server: FastAPI, ctx: UIContext) -> None:
    """Put `GradioGuard` innermost in the Gradio app mounted in `server` (before the server starts)."""
    gradio_app = next(route.app for route in server.routes if isinstance(getattr(route, "app", None), App))

    def who(scope: Scope) -> str | None:
        cookies = cookie_parser(Headers(scope=scope).get("cookie", ""))
        token = cookies.get(f"access-token-{gradio_app.cookie_id}") or cookies.get(
            f"access-token-unsecure-{gradio_app.cookie_id}"
        )
        return ctx.caller(gradio_app.tokens.get(token) if token else None, scope.get("session"))

    # appended: inside Gradio's session middleware (which reads the OAuth sign-in) and its compression
    gradio_app.user_middleware.append(Middleware(GradioGuard, who=who, files=ctx.files))


def _route(scope: Scope) -> str:
    """The request path inside the Gradio app (without the mount point)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path or "/"


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None
