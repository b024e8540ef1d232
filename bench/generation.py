"""Generation on the `tiny` branch, through `pipelines.generate.Generator`, in a process of its own.

    python -m bench.generation --workdir /tmp/b

Figures: building the tiny model, the first load of the base pipeline, seconds per image (without a LoRA,
with one fused into the base weights, and with it unfused), what a LoRA costs over the base (target for one
fused LoRA: at most 1.05x), and the time a LoRA switch adds to a generation, with the adapter cached (warm) and
read from its file (cold). All times are wall-clock medians of repeated runs in one warm process.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import bench_main, median, progress, quiet_libraries, record, spread

BRANCH = "tiny"
PROMPT = "a photo of sks thing"


def _timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _train_loras(model_dir: Path, workdir: Path, steps: int, device: str) -> tuple[Any, Any]:
    """Two small LoRAs of the tiny model, with different seeds (so different weights)."""
    from bench.common import training_images
    from pipelines.generate import LoraSpec
    from pipelines.registry import get_branch
    from pipelines.train import TrainConfig, train_lora

    specs = []
    for name, seed in (("a", 1), ("b", 2)):
        config = TrainConfig.for_branch(
            get_branch(BRANCH), class_name="thing", base_model="tiny-sd15", steps=steps, seed=seed
        )
        images = training_images(config.instance_caption, config.resolution)
        result = train_lora(config, images, workdir / "loras" / name, model_dir=model_dir, device=device)
        specs.append(LoraSpec(name, result.output_dir))
    return specs[0], specs[1]


def _switch_times(generator: Any, request: Callable[[Any], Any], a: Any, b: Any, reps: int) -> dict[str, Any]:
    """Alternate A, A, B, B, A, ...: each call either keeps the last LoRA or switches to the other one.

    Returns the median time the switching calls spent making the other LoRA active (the generator's
    `_activate`: reading the file if it is not cached, enabling the adapter), the median extra time of a
    switching call over a same-LoRA call (`call_delta_ms`: the same cost seen from outside, with the
    spread of whole generations in it), and the file reads.
    """
    activations: list[float] = []
    activate = generator._activate  # timed from outside: the bench must not change what it measures

    def timed_activate(*args: Any, **kwargs: Any) -> None:
        activations.append(_timed(lambda: activate(*args, **kwargs)))

    for spec in (b, a):  # both read once (cached when warm); A is the last LoRA before the first measured call
        generator.generate(BRANCH, request(spec))
    reads_before = generator.lora_loads(BRANCH)
    same: list[float] = []
    switched: list[float] = []
    switch_costs: list[float] = []
    generator._activate = timed_activate
    try:
        for _ in range(reps):
            for spec, kind in ((a, same), (b, switched), (b, same), (a, switched)):
                kind.append(_timed(lambda spec=spec: generator.generate(BRANCH, request(spec))))
                if kind is switched:
                    switch_costs.append(activations[-1])
    finally:
        del generator._activate
    baseline = median(same)
    return {
        "value": median(switch_costs) * 1000,
        "call_delta_ms": round((median(switched) - baseline) * 1000, 3),
        "baseline_ms": round(baseline * 1000, 3),
        "lora_file_reads": generator.lora_loads(BRANCH) - reads_before,
        **spread(switch_costs, scale=1000),
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure generation on the tiny branch and return the records."""
    # 1. Import everything first, so that load times are not import times
    import diffusers

    from pipelines.generate import GenerationRequest, Generator
    from pipelines.settings import Settings
    from pipelines.tiny import build_tiny_sd15

    quiet_libraries()
    # peft warns each time a second adapter is added to the UNet: that is what the cache is for
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
    _ = diffusers.StableDiffusionPipeline  # diffusers imports a pipeline's modules on first access
    records: list[dict[str, Any]] = []
    workdir = Path(args.workdir)
    settings = Settings(data_dir=workdir / "data", device=args.device)
    size = {"w": args.size, "h": args.size}

    def add(bench: str, value: float, unit: str, **params: Any) -> None:
        records.append(record(bench, value, unit, device=args.device, branch=BRANCH, **params))

    # 2. The tiny model, built where the branch looks for it (what the first use of the branch does)
    progress("generate: building the tiny model")
    model_dir = settings.models_dir / "tiny-sd15"
    add("generate.tiny_build", _timed(lambda: build_tiny_sd15(model_dir)), "s")
    progress("generate: training two LoRAs to switch between")
    lora_a, lora_b = _train_loras(model_dir, workdir, args.lora_steps, args.device)

    # 3. First load of the base pipeline: the first generation minus a warm one
    generator = Generator(settings)
    one_step = GenerationRequest(text=PROMPT, num_images=1, seed=0, steps=1, **size)
    first = _timed(lambda: generator.generate(BRANCH, one_step))
    warm = median([_timed(lambda: generator.generate(BRANCH, one_step)) for _ in range(3)])
    add("generate.base_load", first - warm, "s", first_call_s=round(first, 4), warm_call_s=round(warm, 4))

    # 4. Seconds per image: the base; one LoRA (fused into the base weights); the same LoRA unfused (beside a
    # second one at weight 0, which draws the same image: what one LoRA cost before fusing)
    from pipelines.generate import LoraSpec

    variants = {"none": (), "fused": (lora_a,), "unfused": (lora_a, LoraSpec(lora_b.name, lora_b.path, weight=0.0))}
    base_time: dict[int, float] = {}
    for variant, loras in variants.items():
        for num_images in (1, 4):
            request = GenerationRequest(
                text=PROMPT, seed=0, steps=args.steps, num_images=num_images, loras=loras, **size
            )
            progress(f"generate: {num_images} image(s), {args.steps} steps, LoRA {variant}")
            generator.generate(BRANCH, request)  # warm-up (loads the LoRA the first time)
            per_image = [_timed(lambda r=request: generator.generate(BRANCH, r)) / num_images for _ in range(args.reps)]
            params = {"num_images": num_images, "steps": args.steps, **size, "lora": variant}
            add("generate.image_time", median(per_image), "s/image", **params, **spread(per_image))
            base_time.setdefault(num_images, median(per_image))
            if variant != "none":
                add("generate.lora_cost", median(per_image) / base_time[num_images], "x base", **params)

    # 5. LoRA switches: warm (both adapters cached) and cold (a cache of one: every switch reads the file)
    def switch_request(spec: Any) -> Any:
        return GenerationRequest(text=PROMPT, num_images=1, seed=0, steps=1, loras=(spec,), **size)

    cold = Generator(settings.with_overrides(lora_cache_size=1))
    for cache, gen in (("warm", generator), ("cold", cold)):
        progress(f"generate: LoRA switches, {cache}")
        found = _switch_times(gen, switch_request, lora_a, lora_b, args.switch_reps)
        value = found.pop("value")
        add("generate.lora_switch", value, "ms", cache=cache, lora_cache_size=gen.settings.lora_cache_size, **found)
    return records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.generation", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="data dir of the run (tiny model, LoRAs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: one per core)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per image")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per image-time figure")
    parser.add_argument("--switch-reps", type=int, default=5, help="rounds of A,B,B,A per switch figure")
    parser.add_argument("--lora-steps", type=int, default=5, help="training steps of each LoRA")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    bench_main(parse_args, run, argv)


if __name__ == "__main__":
    main()
