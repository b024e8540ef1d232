"""What likeness costs (`pipelines.identity`, `studio.likeness`), on real photos of one real face (skimage's
astronaut) on a CPU.

    python -m bench.likeness --workdir /tmp/b [--reps 10] [--prompts 8] [--images 8] [--steps 12]

Figures:
- per photo (512 px): the face detection the photo check already ran, and the embedding identity adds;
- per photo set: `check_photo_set` of 8 photos with identity on, and the part identity adds;
- per avatar: the likeness of a generated image (detection + embedding) at 512 and 1024 px, and of one without a
  face (detection only);
- a pack run of `--prompts` x `--images` avatars on `tiny` through the worker, three ways: no subject (nothing
  scored), scored before each prompt ends (`run_once()`), and scored while the next prompt generates (the serving
  loop's `run_once(overlap=True)`). No tiny model draws a face, so a stand-in hands back real photos in place of
  the generated images (as tests/studio/test_likeness.py does): the scoring sees faces, the generation is real.
  The added time is each way's wall time over the unscored run's.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import bench_main, median, progress, record, spread

OWNER = "bench"


def astronaut_variants(count: int) -> list[Any]:
    """`count` distinct ~512-px photos of one face: shifted crops, mirrored every other one."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    variants = []
    for i in range(count):
        left = 20 * (i // 2)
        crop = photo.crop((left, 0, left + 440, 440)).resize((512, 512))
        variants.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else crop)
    return variants


def timed(fn, reps: int) -> list[float]:
    seconds = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return seconds


def fresh_detection(fn):
    """`fn` with the recent-boxes memory emptied first: every call detects for real."""
    from pipelines import faces

    def run():
        faces._RECENT_BOXES.clear()
        return fn()

    return run


def bench_photos(args: argparse.Namespace) -> list[dict[str, Any]]:
    from PIL import Image

    from pipelines.faces import detect_faces
    from pipelines.identity import identity_model, image_likeness
    from pipelines.photos import Photo, check_photo_set

    model = identity_model()
    photo = astronaut_variants(1)[0]
    boxes = detect_faces(photo)[:1]
    detect = timed(fresh_detection(lambda: detect_faces(photo)), args.reps)
    embed = timed(lambda: model.embed(photo, boxes), args.reps)
    out = [
        record("likeness.photo_detect", median(detect) * 1000, "ms", device="cpu", side=512, **spread(detect, 1000)),
        record("likeness.photo_embed", median(embed) * 1000, "ms", device="cpu", side=512, **spread(embed, 1000)),
    ]
    photos = [Photo(i, f"{i}.jpg", image) for i, image in enumerate(astronaut_variants(8))]
    with_identity = timed(fresh_detection(lambda: check_photo_set(photos, class_name="woman")), 3)
    without = timed(fresh_detection(lambda: _without_identity(check_photo_set, photos)), 3)
    out.append(record("likeness.photo_set_check", median(with_identity), "s", device="cpu", photos=8,
                      without_identity_s=round(median(without), 4), **spread(with_identity)))  # fmt: skip
    subject = check_photo_set(photos, class_name="woman").subject
    faceless = Image.effect_noise((512, 512), 60).convert("RGB")
    for side, image in ((512, photo), (1024, photo.resize((1024, 1024))), (512, faceless)):
        seconds = timed(fresh_detection(lambda image=image: image_likeness(model, subject, image)), args.reps)
        name = "likeness.avatar" if image is not faceless else "likeness.avatar_no_face"
        out.append(record(name, median(seconds) * 1000, "ms", device="cpu", side=side, **spread(seconds, 1000)))
    return out


def _without_identity(check_photo_set, photos):
    """The same check as a studio without dlib runs it (identity off): the baseline of what identity adds."""
    from pipelines import photos as module

    real, module.identity_model = module.identity_model, lambda: None
    try:
        return check_photo_set(photos, class_name="woman")
    finally:
        module.identity_model = real


def bench_pack_run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from pipelines.generate import Generator
    from pipelines.tiny import build_tiny_sd15
    from studio.requests import PromptCreate, TuneCreate
    from studio.runtime import open_runtime
    from tests.conftest import astronaut_photos, settings_with_tiny
    from tests.studio.test_likeness import jpeg

    avatars = astronaut_variants(args.images)

    class DrawsTheSubject(Generator):
        def generate(self, branch_name, request, **kwargs):
            result = super().generate(branch_name, request, **kwargs)
            images = [dataclasses.replace(item, image=avatars[i]) for i, item in enumerate(result.images)]
            return dataclasses.replace(result, images=images)

    tiny = build_tiny_sd15(args.workdir / "tiny-sd15")
    walls: dict[str, float] = {}
    for mode in ("unscored", "scored", "overlapped"):
        progress(f"pack run of {args.prompts} x {args.images} avatars, {mode}")
        settings = settings_with_tiny(Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=args.workdir)), tiny)
        runtime = open_runtime(settings, start_worker=False)
        runtime.worker.generator = DrawsTheSubject(settings)
        try:
            photos = [(f"{i}.jpg", jpeg(image)) for i, image in enumerate(astronaut_photos())]
            request = TuneCreate(title=mode, name="woman", images=photos, branch="tiny", steps=1)
            tune = runtime.studio.create_tune(OWNER, request).tune
            runtime.worker.drain()
            if mode == "unscored":
                with runtime.db.transaction() as conn:
                    runtime.db.delete_subject_faces(conn, tune.id)
            warm_up = PromptCreate("{{subject}}", num_images=args.images, steps=args.steps, seed=1)
            runtime.studio.create_prompt(OWNER, tune.id, warm_up)  # loads the pipeline and the LoRA: not measured
            runtime.worker.drain()
            for n in range(args.prompts):
                prompt = PromptCreate("{{subject}}", num_images=args.images, steps=args.steps, seed=n * 100)
                runtime.studio.create_prompt(OWNER, tune.id, prompt)
            started = time.perf_counter()
            while runtime.worker.run_once(overlap=mode == "overlapped"):
                pass
            walls[mode] = time.perf_counter() - started
            done = runtime.studio.list_prompts(OWNER, tune_id=tune.id, limit=args.prompts, offset=0)
            scored = sum(image.likeness is not None for prompt in done for image in prompt.images)
            assert (scored == 0) == (mode == "unscored"), (mode, scored)
        finally:
            runtime.close()
    base = walls["unscored"]
    avatars_made = args.prompts * args.images
    return [
        record(f"likeness.pack_run_{mode}", wall, "s", device="cpu", avatars=avatars_made, steps=args.steps,
               added_percent=round(100 * (wall - base) / base, 2), per_avatar_s=round(wall / avatars_made, 4))
        for mode, wall in walls.items()
    ]  # fmt: skip


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    args.workdir.mkdir(parents=True, exist_ok=True)
    return bench_photos(args) + bench_pack_run(args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.likeness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--reps", type=int, default=10, help="repetitions of each per-photo figure")
    parser.add_argument("--prompts", type=int, default=8, help="prompts in the pack run")
    parser.add_argument("--images", type=int, default=8, help="avatars per prompt")
    parser.add_argument("--steps", type=int, default=12, help="denoising steps per avatar (tiny)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a core left to scoring)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    bench_main(parse_args, run, argv)


if __name__ == "__main__":
    main()
