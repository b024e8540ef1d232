"""Secrets the server makes for itself and keeps in the data folder (link signing keys)."""

from __future__ import annotations

import secrets
from pathlib import Path


def load_secret(path: Path) -> bytes:
    """The 32 random bytes in `path`, made once (written to a temporary file first, mode 0600)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(secrets.token_bytes(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_bytes()
