"""What every benchmark shares: the record format, run context, progress output and training images.

A record is one measurement: `{"bench": name, **params, "value": x, "unit": u, **context}`. Records go
to stdout, one JSON object per line; everything else (progress, library warnings) goes to stderr, so a
parent process can read a child's stdout as records.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.photos import TrainingImage

ROOT = Path(__file__).resolve().parent.parent
# the suite's start, handed to its subprocesses so that all progress lines share one clock
_STARTED_ENV = "BENCH_STARTED_AT"
_STARTED = float(os.environ.get(_STARTED_ENV) or time.time())


def progress(message: str) -> None:
    """A progress line on stderr, stamped with the seconds since the suite (or this process) started."""
    print(f"[bench {time.time() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


@functools.cache
def context(device: str) -> dict[str, Any]:
    """Where a figure was measured: device, library versions, CPU, threads and code version."""
    import diffusers
    import peft
    import torch
    import transformers

    from pipelines.device import pick_placement

    placement = pick_placement(device)
    return {
        "device": str(placement.device),
        "dtype": str(placement.dtype).removeprefix("torch."),
        "device_name": _device_name(placement.device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "commit": _commit(),
    }


def record(bench: str, value: float, unit: str, *, device: str, **params: Any) -> dict[str, Any]:
    """One measurement with its parameters and the run context.

    `load_avg_1m` is the machine's load when the figure was taken: above ~0.5 on an idle machine,
    another process shared the CPU and the times are pessimistic.
    """
    item = {"bench": bench, **params, "value": round(value, 6), "unit": unit, **context(device)}
    item["load_avg_1m"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return item


def set_threads(threads: int | None) -> None:
    """Use `threads` CPU threads in torch (None: torch's default, one per core)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def quiet_libraries() -> None:
    """No progress bars from diffusers and transformers: stderr is for the benchmark's progress lines."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def emit(item: dict[str, Any]) -> None:
    """Print a record as one JSON line on stdout."""
    print(json.dumps(item), flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], scale: float = 1.0) -> dict[str, Any]:
    """Context for a median: how many samples and their range."""
    return {"samples": len(values), "min": round(min(values) * scale, 6), "max": round(max(values) * scale, 6)}


def percentiles_ms(seconds: Sequence[float]) -> dict[str, Any]:
    """p50 (`value`) and p99 in ms of durations in seconds, with the sample count and range."""
    if len(seconds) < 2:  # statistics.quantiles needs two samples
        return {"value": seconds[0] * 1000 if seconds else float("nan"), "p99": None}
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"value": cuts[49] * 1000, "p99": round(cuts[98] * 1000, 4), **spread(seconds, scale=1000)}


def bench_main(parse_args: Callable[[list[str] | None], Any], run: Callable[[Any], list[dict[str, Any]]],
               argv: list[str] | None = None) -> None:  # fmt: skip
    """The `main` of every bench module: parse, fix torch's threads, run, print each record as a JSON line."""
    args = parse_args(argv)
    set_threads(args.threads)
    for item in run(args):
        emit(item)


def training_images(caption: str, size: int, count: int = 4) -> list[TrainingImage]:
    """`count` subject images at `size` px, as the trainer takes them (random flips double them)."""
    from pipelines.photos import TrainingImage
    from pipelines.tiny import synthetic_subject

    return [TrainingImage(synthetic_subject(i, size), caption, source="synthetic", kind="full") for i in range(count)]


def child_env() -> dict[str, str]:
    """Environment of a benchmark subprocess: offline, quiet, and able to import `pipelines` and `bench`."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # warnings that every run repeats: transformers' torchvision notice, diffusers' "no text encoder LoRA keys"
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("DIFFUSERS_VERBOSITY", "error")
    env[_STARTED_ENV] = repr(_STARTED)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _device_name(device: Any) -> str:
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _commit() -> str | None:
    """The code version measured: short HEAD hash, with `+dirty` when files differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty.strip() else "")
