"""What a browser may do with this server: which other sites may call it with a user's sign-in (none by default),
which requests must come from this server's own pages, how its cookies travel, and who may frame it.

Gradio answers any `Origin` with `Access-Control-Allow-Credentials: true` and sets its sign-in cookie
`SameSite=None`: without the guards here any web page a signed-in user visits could call the app's events as
that user (create an API key, read it from the event stream). The guards wrap the whole server (REST routes
and the Gradio app mounted beside them):

- `add_cross_site_guards`: CORS for `TUNES_ALLOWED_ORIGINS` only (Gradio then keeps out of CORS), and
  `SameOriginWrites`, the CSRF check: a state-changing request sent by a page of another site is refused.
- `BrowserHeaders`: `SameSite=Lax` on every cookie, `frame-ancestors` (the Hugging Face page may embed a
  Space), `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin` (signed links stay on this site).
- `QuietAccessLog`: session hashes and link signatures never reach the access log, nor a line per static file.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelines.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SPACE_EMBED = "https://huggingface.co"  # the Space page frames the app (https://huggingface.co/spaces/OWNER/NAME)


def add_cross_site_guards(server: FastAPI, settings: Settings) -> None:
    """CORS for the allowed origins only, then the same-origin check on writes (outermost: it runs first).

    Gradio's own CORS layer steps aside when the app it is mounted in has a `CORSMiddleware`.
    """
    server.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.allowed_origins),
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
    )
    server.add_middleware(SameOriginWrites, allowed_origins=settings.allowed_origins)


def origin_of(value: str | None) -> str | None:
    """`scheme://host[:port]` of an `Origin` or `Referer` value (lower case), or None for none or `null`."""
    if not value or value == "null":
        return None
    parts = urlsplit(value)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else None


class SameOriginWrites:
    """ASGI middleware (CSRF check): a POST, PUT, PATCH or DELETE sent by a browser from a page of another site
    answers 403 before anything runs.

    A browser names the page's site in `Origin` (or, failing that, `Referer`, and `Sec-Fetch-Site`); the request
    is the server's own when that host equals the `Host` it was sent to (or `X-Forwarded-Host` behind a proxy:
    a page cannot set either without a CORS preflight, which other sites fail). Programs (curl, gradio_client,
    the REST clients) send no `Origin` and pass. `allowed_origins` are other sites trusted like this one.
    """

    def __init__(self, app: ASGIApp, *, allowed_origins: tuple[str, ...] = ()):
        self.app = app
        self.allowed = frozenset(origin.lower() for origin in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            refused = self.refusal(Headers(scope=scope))
            if refused:
                await JSONResponse({"error": refused}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, headers: Headers) -> str | None:
        """Why a write with these headers is refused, or None when it comes from this site (or no browser)."""
        sent = headers.get("origin")
        origin = origin_of(sent) or origin_of(headers.get("referer"))
        if origin is None:
            if sent == "null" or headers.get("sec-fetch-site") == "cross-site":
                return "cross-site request refused: it came from a page of another site (Origin: null)"
            return None  # not sent by a browser page
        hosts = {headers.get("host", "").lower(), headers.get("x-forwarded-host", "").split(",")[0].strip().lower()}
        if urlsplit(origin).netloc in hosts - {""} or origin in self.allowed:
            return None
        return (
            f"cross-site request refused: pages of {origin} may not act for users of this server "
            "(an operator can allow a site with TUNES_ALLOWED_ORIGINS)"
        )


class BrowserHeaders:
    """ASGI middleware: every response gets the frame, type-sniffing and referrer rules, and every cookie it sets
    `SameSite=Lax` (Gradio's sign-in cookies say `None`, which sends them along with other sites' requests).

    Args:
        app: the server.
        space_embed: also allow the Hugging Face page to frame the app (on a Space).
    """

    def __init__(self, app: ASGIApp, *, space_embed: bool = False):
        self.app = app
        ancestors = f"'self' {SPACE_EMBED}" if space_embed else "'self'"
        self.headers = {
            "Content-Security-Policy": f"frame-ancestors {ancestors}",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        }
        if not space_embed:  # for browsers without CSP frame-ancestors; it cannot name huggingface.co
            self.headers["X-Frame-Options"] = "SAMEORIGIN"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
                cookies = [lax(value) for value in headers.getlist("set-cookie")]
                if cookies:
                    del headers["set-cookie"]
                    for cookie in cookies:
                        headers.append("set-cookie", cookie)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def lax(cookie: str) -> str:
    """A `Set-Cookie` value with `SameSite=Lax` (replacing any other SameSite attribute)."""
    kept = [part for part in cookie.split(";") if not part.strip().lower().startswith("samesite")]
    return "; ".join(part.strip() for part in kept) + "; SameSite=Lax"


_SECRETS = re.compile(r"((?:session_hash|sig|__sign|token)=)[^&\s]+|(/heartbeat/)[^/?\s]+", re.IGNORECASE)


def redact(path: str) -> str:
    """A request path with session hashes and signatures replaced by `…` (what an access log may keep)."""
    return _SECRETS.sub(lambda m: (m.group(1) or m.group(2)) + "…", path)


# what a page load fetches: the app's scripts, styles, fonts and icons, and files Gradio serves (`file=`)
_STATIC_PREFIXES = (
    "/assets/",
    "/static/",
    "/svelte/",
    "/favicon.ico",
    "/theme.css",
    "/manifest.json",
    "/pwa_icon",
    "/robots.txt",
    "/gradio_api/file=",
    "/gradio_api/file/",
    "/gradio_api/theme.css",
    "/gradio_api/custom_component/",
)


def is_static(method: str, path: str, status: object) -> bool:
    """Whether an access-log line is a static file served fine (a page load fetches dozens; errors still log)."""
    return method in ("GET", "HEAD") and path.startswith(_STATIC_PREFIXES) and isinstance(status, int) and status < 400


class QuietAccessLog(logging.Filter):
    """On uvicorn's access logger: the logged path without session hashes or link signatures, and no line for a
    static file served fine.

    A signed link works for a week and a session hash names a user's event stream; neither belongs in a log
    file that operators share. A line per script, font and icon buries the requests that matter.
    uvicorn logs `(client, method, path, http version, status)` as the arguments.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 5 and is_static(str(args[1]), str(args[2]), args[4]):
            return False
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True


def quiet_access_log() -> None:
    """Install `QuietAccessLog` on uvicorn's access logger (once)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, QuietAccessLog) for f in logger.filters):
        logger.addFilter(QuietAccessLog())
