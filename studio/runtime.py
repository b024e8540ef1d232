"""Assembles one process's service: database, artifact store, generator, service and worker."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import SettingsError
from pipelines.generate import Generator
from pipelines.settings import Settings
from storage.artifacts import ArtifactStore, open_store
from storage.db import Database
from storage.records import utc_now
from studio.callbacks import CallbackSender
from studio.queue import LOCAL_WORKER
from studio.service import Clock, Studio
from studio.worker import InProcessWorker


@dataclass
class Runtime:
    settings: Settings
    db: Database
    studio: Studio
    store: ArtifactStore
    generator: Generator
    worker: InProcessWorker

    def close(self) -> None:
        self.worker.stop()
        self.db.close()


def open_runtime(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    start_worker: bool = True,
    callback_delays: list[float] | None = None,
    worker_id: str = LOCAL_WORKER,
    device: str | None = None,
) -> Runtime:
    """Open the database (migrating it), pick the artifact store, and start a worker thread unless told not to.

    The web process of `python app.py` starts none (its workers are processes: `studio.supervisor`); nothing here
    imports torch until the worker runs a job.

    Raises:
        SettingsError: the data folder cannot be created or written (`TUNES_DATA_DIR`).
    """
    _check_writable(settings.data_dir)
    db = Database(settings.data_dir / "tunes.db", clock=clock)
    store = open_store(settings)
    studio = Studio(settings, db, store=store, clock=clock)
    generator = Generator(settings, device=device)
    callbacks = CallbackSender(studio, delays=callback_delays)
    worker = InProcessWorker(studio, generator, store, callbacks=callbacks, worker_id=worker_id, device=device)
    if start_worker:
        worker.start()
    return Runtime(settings, db, studio, store, generator, worker)


def _check_writable(folder: Path) -> None:
    """Create the data folder if needed and prove a file can be written there, or say which setting to fix."""
    probe = folder / f".write-check-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise SettingsError(
            "TUNES_DATA_DIR", str(folder), f"must be a folder this server can write to ({reason})"
        ) from None
