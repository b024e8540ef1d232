"""The ops dashboard's figures against a seeded day of history (tests/admin/history.py): jobs finished per hour,
queue depth, wait and run percentiles per branch, failures by reason, storage and credits over time; a selected
record's line and what a destructive action would lose; tables as CSV. Expected values come from the seed, worked
out by hand where a percentile is involved."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from admin.dashboard import failure_reason
from admin.operations import TABLES, Operations
from admin.scheduler import start_scheduler
from pipelines.errors import ValidationError
from pipelines.settings import Settings
from studio.errors import PermissionDeniedError
from studio.runtime import open_runtime
from tests.admin.history import IMAGES_PER_PROMPT, LOST, OOM, PROMPTS, TUNES, seed_history
from tests.admin.test_operations import FakeClock

NOW = datetime(2026, 3, 4, 12, 30, tzinfo=UTC)
FINISHED = ("trained", "failed", "done")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    clock = FakeClock()
    clock.now = NOW
    settings = Settings(data_dir=tmp_path_factory.mktemp("dashboard") / "data", device="cpu", admins=("root",))
    runtime = open_runtime(settings, start_worker=False, clock=clock)
    seeded = seed_history(runtime, NOW)
    try:
        yield Operations(runtime.studio, runtime.store), seeded
    finally:
        runtime.close()


def hour_of(hours_ago: float) -> pd.Timestamp:
    return pd.Timestamp(NOW - timedelta(hours=hours_ago)).tz_convert(None).floor("h")


def test_jobs_finished_per_hour_count_each_seeded_end_in_its_hour(seeded):
    operations, _ = seeded
    finished = operations.dashboard("root", window="day").finished
    shown = {(row.hour, row.kind): row.jobs for row in finished.itertuples() if row.jobs}
    expected = Counter(
        (hour_of(job.ended), "training" if job.kind == "train" else "generation")
        for job in [*TUNES, *PROMPTS]
        if job.status in FINISHED and job.ended <= 24
    )
    assert shown == dict(expected)
    assert sum(shown.values()) == 9 and len(finished) == 25 * 2, "every hour of the day, both kinds, zeros too"


def test_queue_depth_counts_what_waited_at_each_moment(seeded):
    operations, _ = seeded
    depth = operations.dashboard("root", window="day").queue_depth
    at = {(row.time, row.kind): row.waiting for row in depth.itertuples()}
    now = pd.Timestamp(NOW).tz_convert(None)
    assert at[(now, "training")] == 1 and at[(now, "generation")] == 2  # the queued tune and two prompts
    # carol's tune was created 3 h ago and started 2 h 54 min ago: it waited at the sample 3 h ago only
    assert [at[(now - timedelta(minutes=minutes), "training")] for minutes in (190, 180, 170)] == [0, 1, 0]
    assert at[(now - timedelta(hours=18, minutes=50), "generation")] == 2  # both early prompts, before either ran


def test_wait_and_run_percentiles_per_branch(seeded):
    operations, _ = seeded
    times = operations.dashboard("root", window="day").times
    rows = {(row[0], row[1]): list(row[2:]) for row in times.itertuples(index=False)}
    # the four done prompts waited 6, 18, 6 and 12 minutes and ran 6, 6, 6 and 3: p50 9, p95 12 + 0.85 * 6
    assert rows[("sd15", "generation")] == [4, 9.0, 17.1, 6.0, 6.0]
    assert rows[("sd15", "training")] == [1, 30.0, 30.0, 30.0, 30.0]  # failed ones are not timed
    assert rows[("sdxl1", "training")] == [1, 60.0, 60.0, 60.0, 60.0]
    bars = operations.dashboard("root", window="day").wait_bars
    assert dict(zip(bars["bar"], bars["minutes"], strict=True))["sd15 generation p95"] == 17.1


def test_failures_are_grouped_by_reason_most_first(seeded):
    operations, _ = seeded
    failures = operations.dashboard("root", window="day").failures
    assert failures.values.tolist() == [
        ["CUDA out of memory", "generation", 2],
        ["its worker stopped or stopped answering", "training", 1],
    ]
    assert failure_reason(LOST) == "its worker stopped or stopped answering"
    assert failure_reason(OOM) == "CUDA out of memory"
    assert failure_reason("the job could not be started: 503") == "the job could not be started"
    assert failure_reason("attempt 3 of 5 ran out") == "attempt N of N ran out"
    assert failure_reason(None) == "no reason recorded"


def test_storage_and_credits_over_time(seeded):
    operations, _ = seeded
    day = operations.dashboard("root", window="day")
    last = day.storage[day.storage["time"] == day.storage["time"].max()]
    assert dict(zip(last["kind"], last["MiB"], strict=True)) == {"LoRAs": 24.0, "generated images": 72.0}
    assert "total" not in set(day.storage["kind"])
    spent = day.credits.groupby("credits")["spent"].sum().to_dict()
    in_day = [job for job in PROMPTS if job.created <= 24]
    assert spent == {"tune credits": len(TUNES), "image credits": IMAGES_PER_PROMPT * len(in_day)}
    by_hour = day.credits[(day.credits["credits"] == "image credits") & (day.credits["spent"] > 0)]
    assert dict(zip(by_hour["time"], by_hour["spent"], strict=True))[hour_of(18.9)] == 2 * IMAGES_PER_PROMPT
    assert day.summary == (
        "**Last day:** 9 jobs finished (3 trainings, 6 generations), 3 failed · **now:** 3 waiting, 0 running · "
        "**credits spent:** 4 tune, 16 image; 0.09 GiB on disk"
    )
    week = operations.dashboard("root", window="week")
    assert len(week.credits) == 2 * 8 and week.credits["spent"].sum() == len(TUNES) + 16  # per day over 7 days
    assert week.finished["jobs"].sum() == 9 and len(week.finished) == 2 * (7 * 24 + 1)


def test_every_charge_is_in_the_ledger(seeded):
    operations, _ = seeded
    with operations.db.snapshot() as conn:
        charges = conn.execute("SELECT owner, tunes, images FROM credit_spends").fetchall()
    taken = Counter(tuple(row) for row in charges)
    assert taken == {("alice", 1, 0): 2, ("bob", 1, 0): 1, ("carol", 1, 0): 1, ("alice", 0, 2): len(PROMPTS)}
    hourly = operations.db.credit_spends(NOW - timedelta(days=1))
    assert sum(row["charges"] for row in hourly) == len(charges) and hourly[0]["hour"] == "2026-03-03T16"


def test_a_selected_tune_says_what_an_action_would_lose(seeded):
    operations, ids = seeded
    trained, queued = ids.tune_ids[0], ids.tune_ids[3]
    line = operations.describe("root", "tune", trained)
    assert line.startswith(f"Tune {trained} 'seeded 0' of alice (woman, sd15): trained;")
    assert line.endswith("2 prompt(s) waiting, 0 image(s).")
    assert operations.question("root", "expire", trained) == (
        f"**Expire tune {trained} ('seeded 0' of alice, trained) now?** Its LoRA is deleted and its 2 waiting "
        "prompt(s) fail; its 0 image(s) stay. This cannot be undone."
    )
    assert "its training photos are deleted" in operations.question("root", "cancel", queued)
    assert "no prompt is waiting" in operations.question("root", "cancel", queued)
    assert "and so are its 0 image(s)" in operations.question("root", "delete", trained, delete_images=True)
    assert operations.describe("root", "prompt", ids.prompt_ids[0]).startswith(
        f"Prompt {ids.prompt_ids[0]} of alice (tune {trained}): done, 0/2 images."
    )
    with pytest.raises(ValidationError, match="action"):
        operations.question("root", "shred", trained)
    with pytest.raises(PermissionDeniedError):
        operations.question("bob", "cancel", queued)


def test_tables_by_name_for_csv_and_bad_names_and_windows_are_refused(seeded):
    operations, ids = seeded
    tunes = operations.table("root", "tunes", tune_status="failed")
    assert tunes["id"].tolist() == [ids.tune_ids[2]]
    assert operations.table("root", "times")["kind"].tolist() == ["generation", "training", "training"]
    assert {name for name in TABLES if not operations.table("root", name).columns.empty} == set(TABLES)
    with pytest.raises(ValidationError, match=r"`table`.*'secrets'"):
        operations.table("root", "secrets")
    with pytest.raises(ValidationError, match=r"`window`.*'month'"):
        operations.dashboard("root", window="month")
    with pytest.raises(PermissionDeniedError):
        operations.dashboard("bob")


def test_the_scheduler_samples_the_disk_at_start(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", device="cpu", admins=("root",))
    runtime = open_runtime(settings, start_worker=False)
    try:
        (settings.data_dir / "images").mkdir(parents=True, exist_ok=True)
        (settings.data_dir / "images" / "a.png").write_bytes(b"x" * 5000)
        scheduler = start_scheduler(runtime.studio, runtime.store)
        try:
            assert scheduler.get_job("storage-sample") is not None
            for _ in range(100):
                samples = runtime.db.storage_samples(datetime.now(UTC) - timedelta(minutes=5))
                if samples:
                    break
                time.sleep(0.05)
        finally:
            scheduler.shutdown()
        kinds = {row["kind"]: row for row in samples}
        assert kinds["generated images"]["files"] == 1 and kinds["generated images"]["bytes"] == 5000
        assert kinds["total"]["bytes"] >= 5000 and kinds["LoRAs"]["files"] == 0
    finally:
        runtime.close()
