"""Assembles one process's service: database, artifact store, generator, service and worker."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.generate import Generator
from pipelines.settings import Settings
from storage.artifacts import ArtifactStore, open_store
from storage.db import Database
from storage.records import utc_now
from studio.callbacks import CallbackSender
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
    settings: Settings, *, clock: Clock = utc_now, start_worker: bool = True, callback_delays: list[float] | None = None
) -> Runtime:
    """Open the database (migrating it), pick the artifact store, and start the worker unless told not to."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.data_dir / "tunes.db", clock=clock)
    store = open_store(settings)
    studio = Studio(settings, db, store=store, clock=clock)
    generator = Generator(settings)
    worker = InProcessWorker(studio, generator, store, callbacks=CallbackSender(studio, delays=callback_delays))
    if start_worker:
        worker.start()
    return Runtime(settings, db, studio, store, generator, worker)
