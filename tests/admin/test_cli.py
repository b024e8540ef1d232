"""`python -m admin create-key USER` prints a working key once and stores only its hash."""

from __future__ import annotations

import os
import subprocess
import sys

from storage.db import Database
from studio.service import Studio


def test_create_key_prints_a_key_that_authenticates_the_user(settings):
    env = {**os.environ, "TUNES_DATA_DIR": str(settings.data_dir), "PYTHONPATH": os.getcwd()}
    result = subprocess.run(
        [sys.executable, "-m", "admin", "create-key", "carol"], env=env, capture_output=True, text=True, check=True
    )
    key = result.stdout.strip()
    assert key.startswith("tsk_") and "shown once" in result.stderr
    db = Database(settings.data_dir / "tunes.db")
    try:
        assert Studio(settings, db).owner_for_api_key(key) == "carol"
        stored = b"".join(path.read_bytes() for path in settings.data_dir.glob("tunes.db*"))
        assert stored and key[4:].encode() not in stored
    finally:
        db.close()
