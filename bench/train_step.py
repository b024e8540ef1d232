"""One training configuration, measured in a process of its own so that its peak memory is its own.

    python -m bench.train_step --model tiny --batch-size 4 --no-cache-latents --steps 30 --workdir /tmp/b

Step time is the median gap between consecutive "training" progress reports of `train_lora` (one report
per finished step), leaving out the first `--warmup` steps. Memory is the peak resident set size of the
process (everything: Python, torch, the model, the data), and the peak during the training loop alone,
measured by resetting the kernel's high-water mark after the first step (Linux only).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    bench_main,
    median,
    progress,
    quiet_libraries,
    record,
    spread,
    training_images,
)

MODELS = ("tiny", "tiny-flux", "sd15-arch")
SD15_ARCH_RESOLUTION = 256


class _StepClock:
    """Receives `TrainProgress` reports: stamps each finished step and resets the memory high-water mark."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.perf_counter()  # made just before `train_lora` is called
        self.stamps: dict[int, float] = {}
        self.peak_before_loop_mb: float | None = None
        self.loop_peak_tracked = False

    def __call__(self, report: Any) -> None:
        now = time.perf_counter()
        if report.phase != "training":
            progress(f"{self.label}: {report.phase} {report.message}".rstrip())
            return
        self.stamps[report.step] = now
        if self.peak_before_loop_mb is None:
            from pipelines.device import peak_rss_mb

            # after step 1 the encoders are freed (when caching) and the loop's buffers exist
            self.peak_before_loop_mb = peak_rss_mb()
            self.loop_peak_tracked = _reset_peak_rss()
        if report.step % 10 == 0 or report.step == report.total_steps:
            progress(f"{self.label}: step {report.step}/{report.total_steps} loss {report.loss:.4f}")

    def step_seconds(self, warmup: int) -> list[float]:
        """Durations of steps warmup+1 .. last (a step's duration needs the stamp of the step before it)."""
        return [self.stamps[k] - self.stamps[k - 1] for k in sorted(self.stamps) if k > warmup and k - 1 in self.stamps]


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (`/proc/self/clear_refs`, Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


def _lora_parameter_count(lora_path: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(lora_path), framework="pt") as weights:
        for key in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
            count = 1
            for side in weights.get_slice(key).get_shape():
                count *= side
            total += count
    return total


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train one configuration and return its records."""
    from pipelines.device import peak_rss_mb
    from pipelines.train import train_lora

    quiet_libraries()
    records: list[dict[str, Any]] = []
    label = f"train {args.model} batch {args.batch_size} {'cached' if args.cache_latents else 're-encoded'}"

    def add(bench: str, value: float, unit: str, **params: Any) -> None:
        records.append(record(bench, value, unit, device=args.device, **params))

    # 1. The model and the config
    config, source = _tiny(args) if args.model.startswith("tiny") else _sd15_arch(args, label, add)
    params = {
        "model": args.model,
        "batch_size": args.batch_size,
        "cache_latents": args.cache_latents,
        "resolution": config.resolution,
        "steps": args.steps,
        "warmup": args.warmup,
    }

    # 2. Train
    clock = _StepClock(label)
    images = training_images(config.instance_caption, config.resolution)
    result = train_lora(config, images, Path(args.workdir) / "lora", device=args.device, on_progress=clock, **source)

    # 3. Records
    if 1 in clock.stamps:
        add("train.time_to_first_step", clock.stamps[1] - clock.started, "s", **params)
    steps = clock.step_seconds(args.warmup)
    if steps:
        add("train.step_time", median(steps), "s/step", **params, **spread(steps))
    add("train.peak_rss", max(clock.peak_before_loop_mb or 0.0, peak_rss_mb()), "MiB", **params)
    if clock.loop_peak_tracked:
        add("train.peak_rss_loop", _vm_hwm_mb(), "MiB", **params)
    if args.device.startswith("cuda"):
        import torch

        add("train.peak_gpu_memory", torch.cuda.max_memory_allocated(args.device) / 2**20, "MiB", **params)
    if args.params:
        lora = _lora_parameter_count(result.lora_path)
        add("train.params", lora, "params", model=args.model, component=f"lora_r{config.rank}")
    return records


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "cache_latents": args.cache_latents,
        "checkpoint_every": 1_000_000,  # no checkpoint among the measured steps
    }


def _tiny(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The `tiny` (SD-1.5-shaped) or `tiny-flux` (FLUX.1-shaped) branch's config and model folder (built if
    missing)."""
    from pipelines.registry import get_branch
    from pipelines.tiny import build_tiny_flux, build_tiny_sd15
    from pipelines.train import TrainConfig

    build, name = (build_tiny_flux, "tiny-flux") if args.model == "tiny-flux" else (build_tiny_sd15, "tiny-sd15")
    model_dir = build(Path(args.model_dir or Path(args.workdir) / name))
    config = TrainConfig.for_branch(get_branch(args.model), class_name="thing", base_model=name, **_overrides(args))
    return config, {"model_dir": model_dir}


def _sd15_arch(args: argparse.Namespace, label: str, add: Callable[..., None]) -> tuple[Any, dict[str, Any]]:
    """The `sd15` branch's config at 256 px and the SD-1.5 architecture with random weights (reports its build)."""
    from bench.sd15_arch import build_sd15_arch, parameter_counts
    from pipelines.registry import get_branch
    from pipelines.train import TrainConfig

    progress(f"{label}: building the SD-1.5 architecture with random weights")
    started = time.perf_counter()
    pipe = build_sd15_arch()
    add("train.model_build", time.perf_counter() - started, "s", model=args.model)
    if args.params:
        for component, count in parameter_counts(pipe).items():
            add("train.params", count, "params", model=args.model, component=component)
    config = TrainConfig.for_branch(
        get_branch("sd15"),
        class_name="man",
        base_model="random-sd15-arch",
        resolution=SD15_ARCH_RESOLUTION,
        **_overrides(args),
    )
    return config, {"pipeline": pipe}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="tiny")
    parser.add_argument("--model-dir", help="tiny model folder (built there if missing); default: WORKDIR/tiny")
    parser.add_argument("--workdir", required=True, help="where the LoRA is written")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--cache-latents", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--steps", type=int, default=30, help="total steps, warm-up included")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the median (at least 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: one per core)")
    parser.add_argument("--params", action="store_true", help="also report parameter counts")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps <= args.warmup:
        parser.error(f"need 1 <= --warmup < --steps, got --warmup {args.warmup} --steps {args.steps}")
    return args


def main(argv: list[str] | None = None) -> None:
    bench_main(parse_args, run, argv)


if __name__ == "__main__":
    main()
