"""The ops dashboard's figures: pandas frames from the records' history, one per plot of the admin tab.

Plain functions of rows (`Database.job_history`, `credit_spends`, `storage_samples`) and a window, so each figure
is checked against the rows it came from without a browser. No gradio here; `admin.tab` draws the frames with
Gradio's native plots and `admin.operations.Operations.dashboard` reads the rows.

Times are UTC and naive in the frames (the plots' axes); buckets are aligned to the hour (a day's window) or to
the hour as well for a week, so a bar is "jobs finished in that hour" in both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from pipelines.errors import ValidationError
from storage.records import PromptStatus, TuneStatus

WINDOWS = {"day": timedelta(days=1), "week": timedelta(days=7)}
QUEUE_STEP = {"day": timedelta(minutes=10), "week": timedelta(hours=1)}  # how often queue depth is sampled
CREDIT_BUCKET = {"day": "h", "week": "D"}  # credits spent per hour over a day, per day over a week
KIND_NAMES = {"train": "training", "generate": "generation"}
FINISHED = {TuneStatus.TRAINED, TuneStatus.EXPIRED, TuneStatus.FAILED, PromptStatus.DONE, PromptStatus.FAILED}
SUCCEEDED = {TuneStatus.TRAINED, TuneStatus.EXPIRED, PromptStatus.DONE}
FAILED = {TuneStatus.FAILED, PromptStatus.FAILED}
PERCENTILES = {"p50": 0.5, "p95": 0.95}
REASON_CHARS = 60

FINISHED_COLUMNS = ["hour", "kind", "jobs"]
DEPTH_COLUMNS = ["time", "kind", "waiting"]
TIMES_COLUMNS = ["branch", "kind", "jobs", "wait p50 (min)", "wait p95 (min)", "run p50 (min)", "run p95 (min)"]
TIME_BARS_COLUMNS = ["bar", "percentile", "minutes"]
FAILURE_COLUMNS = ["reason", "kind", "failures"]
STORAGE_COLUMNS = ["time", "kind", "MiB"]
CREDIT_COLUMNS = ["time", "credits", "spent"]


@dataclass(frozen=True)
class Dashboard:
    """Every figure of one refresh of the ops dashboard, over `window` ("day" or "week") ending at `end`."""

    window: str
    end: datetime
    summary: str
    finished: pd.DataFrame  # jobs finished per hour and kind (every hour of the window, zeros included)
    queue_depth: pd.DataFrame  # jobs waiting (created, not yet started) at each sample time, by kind
    times: pd.DataFrame  # per branch and kind: finished jobs, wait and run time p50/p95 in minutes
    wait_bars: pd.DataFrame  # `times` as bars to draw: "sd15 training p50" -> minutes
    run_bars: pd.DataFrame
    failures: pd.DataFrame  # failures in the window by reason and kind, most first
    storage: pd.DataFrame  # MiB by kind at each storage sample
    credits: pd.DataFrame  # tune and image credits spent per hour (day) or per day (week)


def window_start(window: str, end: datetime) -> datetime:
    """The start of `window` ("day" or "week") ending at `end`.

    Raises:
        ValidationError: `window` is neither.
    """
    if window not in WINDOWS:
        raise ValidationError("window", window, f"must be one of {', '.join(WINDOWS)}")
    return end - WINDOWS[window]


def build_dashboard(
    window: str,
    end: datetime,
    *,
    jobs: Sequence[dict[str, Any]],
    spends: Sequence[dict[str, Any]],
    samples: Sequence[dict[str, Any]],
) -> Dashboard:
    """Every figure of the dashboard from the history rows (see the module's readers).

    Args:
        window: "day" or "week".
        end: now (UTC).
        jobs: `Database.job_history(start)` rows.
        spends: `Database.credit_spends(start)` rows (credits taken per hour).
        samples: `Database.storage_samples(start)` rows.
    """
    start = window_start(window, end)
    history = job_frame(jobs)
    times = wait_and_run_times(history, start, end)
    return Dashboard(
        window=window,
        end=end,
        summary=summary_line(window, history, spends, samples, start, end),
        finished=jobs_finished(history, start, end),
        queue_depth=queue_depth(history, start, end, QUEUE_STEP[window]),
        times=times,
        wait_bars=time_bars(times, "wait"),
        run_bars=time_bars(times, "run"),
        failures=failures_by_reason(history, start, end),
        storage=storage_over_time(samples),
        credits=credits_spent(spends, start, end, CREDIT_BUCKET[window]),
    )


def job_frame(jobs: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The history rows as a frame with naive UTC datetimes (NaT where a job never started or has not ended)."""
    columns = ["kind", "id", "branch", "status", "error", "created_at", "started_at", "ended_at"]
    frame = pd.DataFrame(list(jobs), columns=columns)
    for column in ("created_at", "started_at", "ended_at"):
        frame[column] = _naive(frame[column])
    frame["kind"] = frame["kind"].map(KIND_NAMES)
    return frame


def jobs_finished(history: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """Trainings and generations that ended (done, trained or failed, not cancelled) per hour of the window."""
    hours = pd.date_range(_hour(start), _hour(end), freq="h")
    ended = history[history["status"].isin(FINISHED) & _within(history["ended_at"], start, end)]
    counts = ended.groupby([ended["ended_at"].dt.floor("h"), "kind"]).size()
    rows = [[hour, kind, int(counts.get((hour, kind), 0))] for hour in hours for kind in KIND_NAMES.values()]
    return pd.DataFrame(rows, columns=FINISHED_COLUMNS)


def queue_depth(history: pd.DataFrame, start: datetime, end: datetime, step: timedelta) -> pd.DataFrame:
    """How many jobs were waiting at each `step` of the window (at whole steps: 12:10, 12:20…): created, and not yet
    started nor ended then."""
    created = history["created_at"].to_numpy()
    left = history["started_at"].fillna(history["ended_at"]).fillna(pd.Timestamp.max).to_numpy()
    of_kind = {kind: (history["kind"] == kind).to_numpy() for kind in KIND_NAMES.values()}
    rows = []
    first = pd.Timestamp(_naive_time(start)).ceil(step)  # on the step's grid: the same samples until the next step
    for time in pd.date_range(first, _naive_time(end), freq=step):
        waiting = (created <= time.to_datetime64()) & (left > time.to_datetime64())
        rows += [[time, kind, int((waiting & mask).sum())] for kind, mask in of_kind.items()]
    return pd.DataFrame(rows, columns=DEPTH_COLUMNS)


def wait_and_run_times(history: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """Per branch and kind, over the jobs that ended well in the window: how long they waited (created -> started)
    and ran (started -> ended), p50 and p95 in minutes (linear interpolation, as numpy's), one decimal."""
    done = history[history["status"].isin(SUCCEEDED) & _within(history["ended_at"], start, end)]
    done = done[done["started_at"].notna()]
    minutes = done.assign(
        wait=(done["started_at"] - done["created_at"]).dt.total_seconds().clip(lower=0) / 60,
        run=(done["ended_at"] - done["started_at"]).dt.total_seconds().clip(lower=0) / 60,
    )
    rows = []
    for (branch, kind), group in minutes.groupby(["branch", "kind"], sort=True):
        figures = [round(float(group[what].quantile(q)), 1) for what in ("wait", "run") for q in PERCENTILES.values()]
        rows.append([branch, kind, len(group), *figures])
    return pd.DataFrame(rows, columns=TIMES_COLUMNS)


def time_bars(times: pd.DataFrame, what: str) -> pd.DataFrame:
    """`times`' wait or run percentiles as one bar each ("sd15 training p50"), for a bar chart without stacking."""
    rows = [
        [f"{row['branch']} {row['kind']} {name}", name, row[f"{what} {name} (min)"]]
        for _, row in times.iterrows()
        for name in PERCENTILES
    ]
    return pd.DataFrame(rows, columns=TIME_BARS_COLUMNS)


def failure_reason(error: str | None) -> str:
    """A failure's reason for grouping: the last error of a job that failed several times, up to its first colon,
    numbers as N ("its worker stopped or stopped answering", "the job could not be started", "CUDA out of
    memory")."""
    text = (error or "").strip().splitlines()[0] if (error or "").strip() else "no reason recorded"
    text = re.sub(r"^failed \d+ times; last error: ", "", text)
    text = text.split(": ", 1)[0]
    text = re.sub(r"\d+(?:\.\d+)?", "N", text)
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


def failures_by_reason(history: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """Jobs that failed in the window, counted by reason (`failure_reason`) and kind, most first."""
    failed = history[history["status"].isin(FAILED) & _within(history["ended_at"], start, end)]
    counts = failed.assign(reason=failed["error"].map(failure_reason)).groupby(["reason", "kind"]).size()
    frame = counts.rename("failures").reset_index()
    frame["total"] = frame.groupby("reason")["failures"].transform("sum")
    frame = frame.sort_values(["total", "reason", "kind"], ascending=[False, True, True])
    return frame[FAILURE_COLUMNS].reset_index(drop=True)


def storage_over_time(samples: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The disk samples as MiB by kind over time (the total row left out: the kinds add up to it)."""
    frame = pd.DataFrame(list(samples), columns=["at", "kind", "files", "bytes"])
    frame = frame[frame["kind"] != "total"]
    return pd.DataFrame(
        {"time": _naive(frame["at"]), "kind": frame["kind"], "MiB": (frame["bytes"] / 2**20).round(2)}
    ).reset_index(drop=True)[STORAGE_COLUMNS]


def credits_spent(spends: Sequence[dict[str, Any]], start: datetime, end: datetime, bucket: str) -> pd.DataFrame:
    """Tune and image credits spent per `bucket` ("h" or "D") of the window, every bucket present (zeros too)."""
    frame = _spends(spends)
    slots = pd.date_range(pd.Timestamp(_naive_time(start)).floor(bucket), _naive_time(end), freq=bucket)
    sums = frame.groupby(frame["at"].dt.floor(bucket))[["tunes", "images"]].sum()
    rows = []
    for slot in slots:
        for column, name in (("tunes", "tune credits"), ("images", "image credits")):
            rows.append([slot, name, int(sums[column].get(slot, 0))])
    return pd.DataFrame(rows, columns=CREDIT_COLUMNS)


def summary_line(
    window: str,
    history: pd.DataFrame,
    spends: Sequence[dict[str, Any]],
    samples: Sequence[dict[str, Any]],
    start: datetime,
    end: datetime,
) -> str:
    """One line an operator reads first: what finished and failed in the window, what waits now, credits spent,
    and the disk used at the last sample."""
    in_window = _within(history["ended_at"], start, end)
    finished = history[history["status"].isin(FINISHED) & in_window]
    failed = int(history[history["status"].isin(FAILED) & in_window].shape[0])
    waiting = int((history["started_at"].isna() & history["ended_at"].isna()).sum())
    running = int((history["started_at"].notna() & history["ended_at"].isna()).sum())
    spent = _spends(spends)
    last = [row for row in samples if row["kind"] == "total"][-1:]
    disk = f"; {last[0]['bytes'] / 2**30:.2f} GiB on disk" if last else ""
    trainings = int((finished["kind"] == KIND_NAMES["train"]).sum())
    return (
        f"**Last {window}:** {_count(len(finished), 'job')} finished ({_count(trainings, 'training')}, "
        f"{_count(len(finished) - trainings, 'generation')}), {failed} failed · **now:** {waiting} waiting, "
        f"{running} running · **credits spent:** {int(spent['tunes'].sum())} tune, {int(spent['images'].sum())} "
        f"image{disk}"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _spends(spends: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The hourly credit rows with their hour as a naive UTC datetime (`at`)."""
    frame = pd.DataFrame(list(spends), columns=["hour", "tunes", "images", "charges"])
    return frame.assign(at=pd.to_datetime(frame["hour"], format="%Y-%m-%dT%H"))


def _naive(column: pd.Series) -> pd.Series:
    """ISO timestamps (with or without an offset) as naive UTC datetimes."""
    return pd.to_datetime(column, utc=True, format="ISO8601").dt.tz_localize(None)


def _naive_time(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None) if moment.tzinfo is None else pd.Timestamp(moment).tz_convert(None)


def _hour(moment: datetime) -> pd.Timestamp:
    return pd.Timestamp(_naive_time(moment)).floor("h")


def _within(column: pd.Series, start: datetime, end: datetime) -> pd.Series:
    return (column >= _naive_time(start)) & (column <= _naive_time(end))
