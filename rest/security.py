"""Who is calling (API keys), how often (a per-key rate limit), and links that work without a header.

Image and LoRA URLs in responses are signed (HMAC, with an expiry), so an `<img src>` or a plain download
works while the link is fresh, and nobody can reach another owner's file by changing an id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

LINK_LIFETIME_S = 7 * 24 * 3600


class RateLimiter:
    """A token bucket per key: `per_minute` requests a minute on average, bursts up to `burst`.

    Args:
        per_minute: refill rate. burst: bucket size. clock: seconds (tests pass a fake).
    """

    def __init__(self, per_minute: int, *, burst: int | None = None, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = burst or max(1, per_minute)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> float:
        """0.0 when the request may go ahead, else the seconds to wait before the next one."""
        with self._lock:
            now = self.clock()
            tokens, since = self._buckets.get(key, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - since) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


class UrlSigner:
    """Signs `path` for one owner until an expiry; the secret lives in the data folder (created once, 0600)."""

    def __init__(self, data_dir: Path, *, clock=time.time):
        self.secret = _load_secret(data_dir / "url-secret")
        self.clock = clock

    def sign(self, base: str, path: str, owner: str) -> str:
        expires = int(self.clock()) + LINK_LIFETIME_S
        query = urlencode({"u": owner, "exp": expires, "sig": self._mac(path, owner, expires)})
        return f"{base.rstrip('/')}{path}?{query}"

    def verify(self, path: str, owner: str, expires: str | None, signature: str | None) -> bool:
        if not expires or not signature or not (expires.isascii() and expires.isdigit()) or int(expires) < self.clock():
            return False
        return hmac.compare_digest(self._mac(path, owner, int(expires)), signature)

    def _mac(self, path: str, owner: str, expires: int) -> str:
        message = f"{path}\n{owner}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:32]


def bearer_key(header: str | None) -> str | None:
    """The key from `Authorization: Bearer <key>`, or None."""
    if not header:
        return None
    scheme, _, key = header.partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


def _load_secret(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(secrets.token_bytes(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_bytes()
