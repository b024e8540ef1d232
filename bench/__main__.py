"""Run the benchmark suite: `python -m bench [--only train|generate|real|service|load|jobs|likeness|dashboard]
[--quick]`.

Each configuration runs in a subprocess (`bench.train_step`, `bench.generation`, `bench.service`, …) so
that its peak memory is its own; this process only schedules them, relays their records to stdout (one
JSON object per line) and writes all of them to `bench/results.json`. See bench/README.md for what the
figures mean.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT, child_env, progress
from bench.report import write_table

SECTIONS = ("train", "generate", "real", "service", "load", "jobs", "likeness", "dashboard")
DEFAULT_OUTPUT = ROOT / "bench" / "results.json"
CHILD_TIMEOUT_S = 20 * 60


@dataclass(frozen=True)
class Job:
    """One subprocess: a label for progress lines and the `python -m` arguments."""

    label: str
    argv: tuple[str, ...]


def plan(sections: list[str], *, quick: bool, device: str, workdir: Path, threads: int | None = None) -> list[Job]:
    """The subprocesses to run, in order, for the chosen sections."""
    common = ["--device", device, *(["--threads", str(threads)] if threads else [])]
    jobs: list[Job] = []
    if "train" in sections:
        jobs += _tiny_training_jobs(workdir, quick=quick, common=common)
    if "generate" in sections:
        argv = ["bench.generation", "--workdir", str(workdir / "generate"), *common]
        argv += ["--steps", "4", "--reps", "1", "--switch-reps", "2", "--lora-steps", "2"] if quick else []
        jobs.append(Job("tiny generation", tuple(argv)))
    if "real" in sections:
        jobs += _real_training_jobs(workdir, quick=quick, common=common)
    if "service" in sections:
        argv = ["bench.service", "--workdir", str(workdir / "service"), *common]
        argv += ["--tunes", "3", "--calls", "300", "--calls-per-thread", "50"] if quick else []
        jobs.append(Job("service calls, fast branch", tuple(argv)))
    if "load" in sections:
        argv = ["bench.load", "--workdir", str(workdir / "load"), *common]
        argv += ["--clients", "4", "--seconds", "5"] if quick else []
        jobs.append(Job("polling under load over HTTP, REST and gradio_client, while training", tuple(argv)))
    if "jobs" in sections:
        argv = ["bench.jobs", "--workdir", str(workdir / "jobs"), *common]
        argv += ["--jobs", "1", "--steps", "6", "--images", "2"] if quick else []
        jobs.append(Job("studio overhead per Hugging Face job, tiny tunes on the fake Hub", tuple(argv)))
    if "likeness" in sections:
        argv = ["bench.likeness", "--workdir", str(workdir / "likeness"), "--device", device]
        argv += ["--reps", "3", "--prompts", "2", "--images", "4", "--steps", "4"] if quick else []
        jobs.append(Job("likeness: identity per photo and avatar, a scored pack run on tiny", tuple(argv)))
    if "dashboard" in sections:
        argv = ["bench.dashboard", "--workdir", str(workdir / "dashboard")]
        argv += ["--tunes", "100", "--prompts", "2000", "--reps", "2"] if quick else []
        jobs.append(Job("admin refresh: dashboard and tables over a busy week", tuple(argv)))
    return jobs


def _tiny_training_jobs(workdir: Path, *, quick: bool, common: list[str]) -> list[Job]:
    """Tiny SD: batch 1 and 4, each with cached latents and re-encoded ones; tiny FLUX: batch 1, both ways; 2
    warm-up steps."""
    tiny_dir = str(workdir / "tiny-sd15")  # built by the first job, then shared
    jobs = []
    for index, (batch, cache) in enumerate((b, c) for b in (1, 4) for c in (True, False)):
        argv = ["bench.train_step", "--model", "tiny", "--model-dir", tiny_dir]
        argv += ["--workdir", str(workdir / f"tiny-{index}")]
        argv += ["--steps", "8" if quick else "30", "--warmup", "2", "--batch-size", str(batch), *common]
        argv += ["--cache-latents" if cache else "--no-cache-latents", *(["--params"] if index == 0 else [])]
        jobs.append(Job(f"tiny training, batch {batch}, {_mode(cache)}", tuple(argv)))
    flux_dir = str(workdir / "tiny-flux")  # FLUX: text (T5 + CLIP) and latents cached, or re-encoded every step
    for index, cache in enumerate((True, False)):
        argv = ["bench.train_step", "--model", "tiny-flux", "--model-dir", flux_dir]
        argv += ["--workdir", str(workdir / f"tiny-flux-{index}")]
        argv += ["--steps", "8" if quick else "30", "--warmup", "2", "--batch-size", "1", *common]
        argv += ["--cache-latents" if cache else "--no-cache-latents", *(["--params"] if index == 0 else [])]
        jobs.append(Job(f"tiny FLUX training, batch 1, {_mode(cache)}", tuple(argv)))
    return jobs


def _real_training_jobs(workdir: Path, *, quick: bool, common: list[str]) -> list[Job]:
    """Cached and re-encoded, 1 warm-up + 4 measured steps (~4 s each on 2 idle CPU cores); quick: 1, cached."""
    jobs = []
    for index, cache in enumerate((True,) if quick else (True, False)):
        argv = ["bench.train_step", "--model", "sd15-arch", "--workdir", str(workdir / f"real-{index}")]
        argv += ["--steps", "2" if quick else "5", "--warmup", "1", *common]
        argv += ["--cache-latents" if cache else "--no-cache-latents", *(["--params"] if index == 0 else [])]
        jobs.append(Job(f"SD-1.5 architecture training at 256 px, {_mode(cache)}", tuple(argv)))
    return jobs


def _mode(cache_latents: bool) -> str:
    return "cached" if cache_latents else "re-encoded"


def run_job(job: Job) -> tuple[list[dict[str, Any]], bool]:
    """Run one subprocess, relaying its records to stdout as they come. Returns (records, succeeded)."""
    records: list[dict[str, Any]] = []
    command = [sys.executable, "-m", *job.argv]
    with subprocess.Popen(command, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True) as child:
        watchdog = threading.Timer(CHILD_TIMEOUT_S, child.kill)  # a hung job must not hang the suite
        watchdog.start()
        try:
            for line in child.stdout or ():
                item = _as_record(line)
                if item is None:  # a library printed to stdout: keep it out of the records
                    sys.stderr.write(line)
                    continue
                records.append(item)
                print(json.dumps(item), flush=True)
            code = child.wait()
        finally:
            watchdog.cancel()
    if code != 0:
        progress(f"FAILED ({code}): {job.label}: {' '.join(command)}")
    return records, code == 0


def _as_record(line: str) -> dict[str, Any] | None:
    try:
        item = json.loads(line)
    except json.JSONDecodeError:
        return None
    return item if isinstance(item, dict) and "bench" in item else None


def write_results(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=1) + "\n")
    tmp.replace(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Tune Studio benchmarks (see bench/README.md)."
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable): train = tiny training, generate = tiny generation, "
        "real = training the SD-1.5 architecture at 256 px, service = in-process service calls (fast branch), "
        "load = polling over HTTP (REST and gradio_client) while a tiny training runs, "
        "jobs = the studio's own cost per Hugging Face job (against the test fake Hub), "
        "likeness = face identity per photo and avatar and a scored 64-avatar pack run",
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions: a smoke run")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads in every job (default: one per core)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sections = args.only or list(SECTIONS)
    records: list[dict[str, Any]] = []
    failed: list[str] = []
    started = time.monotonic()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5:
        progress(f"the machine is busy (load average {load:.2f}): times will be pessimistic and noisy")
    with tempfile.TemporaryDirectory(prefix="tune-studio-bench-") as tmp:
        jobs = plan(sections, quick=args.quick, device=args.device, workdir=Path(tmp), threads=args.threads)
        for number, job in enumerate(jobs, 1):
            progress(f"({number}/{len(jobs)}) {job.label}")
            found, ok = run_job(job)
            records += found
            if not ok:
                failed.append(job.label)
            write_results(args.output, records)  # after each job: an interrupted run keeps what it measured
    if args.output == DEFAULT_OUTPUT:
        write_table(records)  # the table in bench/README.md
    progress(f"{len(records)} records in {time.monotonic() - started:.0f} s -> {args.output}")
    if failed:
        progress(f"{len(failed)} job(s) failed: {'; '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
