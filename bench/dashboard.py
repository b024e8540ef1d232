"""What one refresh of the admin tab costs with a busy week on record: the ops dashboard's figures
(`Operations.dashboard`, day and week) and the tables (`Operations.overview`), on SQLite.

    python -m bench.dashboard --workdir /tmp/b [--tunes 1000] [--prompts 50000] [--reps 5]

The history is written straight into the database (a week of tunes and prompts, one in ten failed, the rest done
or trained, 1% still waiting, a credit charge per record, hourly disk samples): the service would take minutes to
make it and is not what is measured. An open Admin tab repeats this every `TUNES_ADMIN_REFRESH_SECONDS` (15).
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import bench_main, median, progress, record, spread

ADMIN = "root"
BRANCHES = ("sd15", "sdxl1", "flux1")
ERRORS = ("CUDA out of memory: tried to allocate 2.00 GiB", "failed 3 times; last error: its worker stopped")


def seed(db: Any, *, tunes: int, prompts: int, now: datetime) -> None:
    """A week of history, straight into the tables (see the module's docstring)."""
    from storage.records import iso

    rng = random.Random(0)
    week = 7 * 24 * 3600

    def times() -> tuple[str, str | None, str | None, str]:
        created = now - timedelta(seconds=rng.uniform(0, week))
        if rng.random() < 0.01:
            return iso(created), None, None, "queued"
        started = created + timedelta(seconds=rng.expovariate(1 / 300))
        ended = started + timedelta(seconds=rng.expovariate(1 / 120))
        return iso(created), iso(started), iso(ended), "failed" if rng.random() < 0.1 else "ok"

    with db.transaction() as conn:
        for user in range(50):
            db.ensure_user(conn, f"user{user}")
        for tune_id in range(1, tunes + 1):
            created, started, ended, state = times()
            status = {"queued": "queued", "failed": "failed"}.get(state, "trained")
            conn.execute(
                "INSERT INTO tunes (id, owner, title, name, token, branch, base_model, status, error, created_at,"
                " updated_at, started_training_at, trained_at) VALUES (?, ?, ?, 'woman', 'ohwx', ?, 'x', ?, ?, ?, ?,"
                " ?, ?)",
                (tune_id, f"user{tune_id % 50}", f"tune {tune_id}", rng.choice(BRANCHES), status,
                 rng.choice(ERRORS) if status == "failed" else None, created, ended or created, started,
                 ended if status == "trained" else None),
            )  # fmt: skip
            conn.execute(
                "INSERT INTO credit_spends (owner, at, tunes, images) VALUES (?, ?, 1, 0)",
                (f"user{tune_id % 50}", created),
            )
        for prompt_id in range(1, prompts + 1):
            created, started, ended, state = times()
            status = {"queued": "queued", "failed": "failed"}.get(state, "done")
            conn.execute(
                "INSERT INTO prompts (id, tune_id, owner, text, rendered_text, num_images, cfg_scale, steps, scheduler,"
                " status, error, created_at, updated_at, started_at, completed_at) VALUES (?, ?, ?, 'p', 'p', 4, 7,"
                " 30, 'euler', ?, ?, ?, ?, ?, ?)",
                (prompt_id, 1 + prompt_id % tunes, f"user{(1 + prompt_id % tunes) % 50}", status,
                 rng.choice(ERRORS) if status == "failed" else None, created, ended or created, started,
                 ended if status == "done" else None),
            )  # fmt: skip
            conn.execute(
                "INSERT INTO credit_spends (owner, at, tunes, images) VALUES (?, ?, 0, 4)",
                (f"user{prompt_id % 50}", created),
            )
    for hours in range(7 * 24, -1, -1):
        grown = 7 * 24 - hours
        db.put_storage_sample(now - timedelta(hours=hours), {"LoRAs": (grown, grown * 2**20), "total": (grown, grown)})


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from admin.operations import Operations
    from pipelines.settings import Settings
    from studio.runtime import open_runtime

    args.workdir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    settings = Settings(data_dir=args.workdir / "data", device="cpu", admins=(ADMIN,))
    runtime = open_runtime(settings, start_worker=False)
    try:
        progress(f"seeding {args.tunes} tunes and {args.prompts} prompts over a week")
        seed(runtime.db, tunes=args.tunes, prompts=args.prompts, now=now)
        operations = Operations(runtime.studio, runtime.store)
        calls = {
            "dashboard_day": lambda: operations.dashboard(ADMIN, window="day"),
            "dashboard_week": lambda: operations.dashboard(ADMIN, window="week"),
            "tables": lambda: operations.overview(ADMIN),
        }
        records = []
        for name, call in calls.items():
            progress(f"timing {name}")
            call()  # warm: the first call imports and fills SQLite's cache
            seconds = []
            for _ in range(args.reps):
                started = time.perf_counter()
                call()
                seconds.append(time.perf_counter() - started)
            records.append(
                record(f"dashboard.{name}", median(seconds) * 1000, "ms", device="cpu", tunes=args.tunes,
                       prompts=args.prompts, **spread(seconds, scale=1000))
            )  # fmt: skip
        return records
    finally:
        runtime.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--tunes", type=int, default=1000)
    parser.add_argument("--prompts", type=int, default=50_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    bench_main(parse_args, run, argv)


if __name__ == "__main__":
    main()
