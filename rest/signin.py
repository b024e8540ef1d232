"""Sign-in throttle: Gradio's `POST /login` waits after too many wrong passwords.

Gradio checks passwords without any limit, so a program could guess them as fast as the server answers.
`SignInThrottle` counts failed sign-ins per account name and per client address: after `TUNES_LOGIN_FAILURES`
failures of either, a sign-in is answered 429 without the password being checked (the right one waits too),
then one more attempt is let through a minute. A success clears that account's failures from that address.
The address is the connection's (`scope["client"]`), never a header the client chose.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rest.security import read_body, replay

WAIT_S = 60.0  # after the allowance, one more attempt a minute
FORGET_S = 3600.0  # failures an hour old are forgotten (and their memory freed)
_NAME_CHARS = 200  # longer names share a counter: a client cannot fill memory with huge names


@dataclass
class _Failures:
    """Failed sign-ins of one account from one address."""

    count: int
    last: float


class SignInFailures:
    """Failed sign-ins counted per account name and per client address. Thread-safe.

    Every admitted attempt counts as a failure until `succeeded` is called, so attempts sent all at once
    cannot slip through together before their answers are counted.

    Args:
        allowed: failures (of an account, or from an address) before sign-in waits.
        wait_s: the wait after the last failure once `allowed` is reached (one more attempt each `wait_s`).
        forget_s: failures older than this are dropped.
        clock: seconds, monotonic (tests pass a fake).
    """

    def __init__(
        self,
        allowed: int,
        *,
        wait_s: float = WAIT_S,
        forget_s: float = FORGET_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        if allowed < 1:
            raise ValueError(f"`allowed` must be at least 1 (got {allowed!r})")
        self.allowed, self.wait_s, self.forget_s, self.clock = allowed, wait_s, forget_s, clock
        self._by_name: dict[str, dict[str, _Failures]] = {}
        self._by_host: dict[str, dict[str, _Failures]] = {}
        self._swept = clock()
        self._lock = threading.Lock()

    def attempt(self, name: str, host: str) -> float:
        """Admit one sign-in of `name` from `host` (counted as a failure until it succeeds), or refuse it.

        Returns:
            0.0 when the attempt may go ahead, else the seconds to wait (nothing is counted then).
        """
        name = name[:_NAME_CHARS]
        with self._lock:
            now = self.clock()
            self._forget_old(now)
            wait = max(self._wait(self._by_name.get(name), now), self._wait(self._by_host.get(host), now))
            if wait > 0:
                return wait
            record = self._by_name.setdefault(name, {}).setdefault(host, _Failures(0, now))
            self._by_host.setdefault(host, {})[name] = record
            record.count, record.last = record.count + 1, now
            return 0.0

    def succeeded(self, name: str, host: str) -> None:
        """The attempt was the right password: clear the failures of `name` from `host`."""
        name = name[:_NAME_CHARS]
        with self._lock:
            self._drop(name, host)

    def _wait(self, records: dict[str, _Failures] | None, now: float) -> float:
        if not records or sum(record.count for record in records.values()) < self.allowed:
            return 0.0
        last = max(record.last for record in records.values())
        return max(0.0, last + self.wait_s - now)

    def _forget_old(self, now: float) -> None:
        if now - self._swept < self.wait_s:  # a sweep reads every record: at most one a minute
            return
        self._swept = now
        old = [(n, h) for n, hosts in self._by_name.items() for h, r in hosts.items() if now - r.last > self.forget_s]
        for name, host in old:
            self._drop(name, host)

    def _drop(self, name: str, host: str) -> None:
        for outer, inner, table in ((name, host, self._by_name), (host, name, self._by_host)):
            entries = table.get(outer, {})
            entries.pop(inner, None)
            if not entries:
                table.pop(outer, None)


class SignInThrottle:
    """ASGI middleware on the outer app: throttles Gradio's `POST /login` (and `/login/`) with `SignInFailures`.

    A 200 answer is a success; any other answer counts as a failure. A refused attempt is answered 429 with
    `Retry-After` and `{"error": "too many failed sign-ins …; try again in N s"}`, before Gradio sees it.

    Args:
        app: the ASGI app (the REST API with the Gradio app mounted at `/`).
        allowed: `TUNES_LOGIN_FAILURES`.
        failures: the counters (default: new ones for `allowed`; tests pass ones with a fake clock).
    """

    PATHS = ("/login", "/login/")

    def __init__(self, app: ASGIApp, *, allowed: int, failures: SignInFailures | None = None):
        self.app = app
        self.failures = failures or SignInFailures(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.PATHS:
            await self.app(scope, receive, send)
            return
        messages, _ = await read_body(receive)
        name = await _username(scope, messages)
        host = (scope.get("client") or ("unknown", 0))[0]
        wait = self.failures.attempt(name, host)
        if wait > 0:
            await _refusal(wait)(scope, receive, send)
            return
        statuses: list[int] = []

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            await send(message)

        await self.app(scope, replay(messages, receive), watched)
        if statuses[:1] == [200]:
            self.failures.succeeded(name, host)


async def _username(scope: Scope, messages: list[Message]) -> str:
    """The `username` field of the sign-in form, stripped as Gradio strips it ("" when there is none)."""

    async def nothing_more() -> Message:
        return {"type": "http.disconnect"}

    request = Request(scope, replay(messages, nothing_more))
    try:
        async with request.form(max_files=0, max_fields=20) as form:
            value = form.get("username")
    except (HTTPException, MultiPartException, ClientDisconnect):  # Gradio refuses it too; it counts as a failure
        return ""
    return value.strip() if isinstance(value, str) else ""


def _refusal(wait: float) -> JSONResponse:
    seconds = max(1, math.ceil(wait))
    message = f"too many failed sign-ins for this account or from this address; try again in {seconds} s"
    return JSONResponse({"error": message}, status_code=429, headers={"Retry-After": str(seconds)})
