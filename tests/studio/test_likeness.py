"""Likeness through the service and the worker: the subject's embeddings are stored when the tune trains and go
with its LoRA (expiry, delete, failure); each avatar is scored; `best_of` keeps the most alike and is charged
as rendered.

No tiny model can draw a real person, so `DrawsThesePhotos` stands in for a trained one: it runs the real tiny
generation (the worker's whole path) and hands back real photos in place of its images, in order."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest
from PIL import Image

import pipelines.identity as identity
from admin.scheduler import sweep
from pipelines.generate import Generator
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from tests.admin.test_scheduler import FakeClock
from tests.conftest import wait_for
from tests.pipelines.test_identity import face_photo, obamas

pytestmark = pytest.mark.usefixtures("no_card_samples")


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=92)
    return out.getvalue()


OBAMA_PHOTOS = [(f"obama-{i}.jpg", jpeg(photo)) for i, photo in enumerate(obamas()[:4])]
BIDEN = face_photo("biden.jpg")
GRAY = Image.new("RGB", (256, 256), "gray")


class DrawsThesePhotos(Generator):
    """The real generator; its images are then replaced by `self.photos` (a trained model's stand-in)."""

    def generate(self, branch_name, request, **kwargs):
        result = super().generate(branch_name, request, **kwargs)
        images = [replace(item, image=self.photos[i]) for i, item in enumerate(result.images)]
        return replace(result, images=images)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def runtime(settings, clock):
    rt = open_runtime(settings.with_overrides(min_photos=4), clock=clock, start_worker=False)
    rt.worker.generator = DrawsThesePhotos(rt.settings)
    rt.worker.generator.photos = []
    yield rt
    rt.close()


def trained(runtime, title: str, photos=OBAMA_PHOTOS, name: str = "man"):
    request = TuneCreate(title=title, name=name, images=photos, branch="tiny", steps=1)
    tune = runtime.studio.create_tune("alice", request).tune
    runtime.worker.drain()
    return runtime.studio.get_tune("alice", tune.id)


def test_avatars_carry_their_likeness_and_best_of_keeps_the_most_alike(runtime):
    studio, db = runtime.studio, runtime.studio.db
    tune = trained(runtime, "obama", photos=[*OBAMA_PHOTOS, ("biden.jpg", jpeg(face_photo("biden.jpg", 800)))])
    assert tune.status == "trained"
    report = {row["name"]: row for row in tune.photo_report}
    assert [w["code"] for w in report["biden.jpg"]["warnings"]] == ["other_person"]
    assert not report["biden.jpg"]["usable"] and report["obama-0.jpg"]["likeness"] >= 0.6
    assert db.subject_faces(tune.id) is not None, "stored for scoring while the LoRA exists"
    assert "embedding" not in json.dumps(tune.to_dict()), "never part of the tune's record"

    db.set_credits("alice", tunes=None, images=100)
    runtime.worker.generator.photos = [BIDEN, face_photo("obama2.jpg"), GRAY, face_photo("obama3.jpg")]
    best = studio.create_prompt("alice", tune.id, PromptCreate("{{subject}}", num_images=2, best_of=4, steps=1))
    assert db.credits("alice")[1] == 96, "best_of is charged as rendered"
    runtime.worker.drain()
    runtime.worker.generator.photos = [BIDEN, GRAY]
    plain = studio.create_prompt("alice", tune.id, PromptCreate("{{subject}}", num_images=2, steps=1, seed=5))
    runtime.worker.drain()

    best = studio.get_prompt("alice", best.id)
    assert best.status == "done" and best.best_of == 4
    assert [image.seed for image in best.images] == [best.seed + 1, best.seed + 3], "the two Obamas are kept"
    assert all(image.likeness >= 0.6 for image in best.images)
    assert len(list(studio.images_dir(best.id).glob("*.png"))) == 2, "the candidates left out are not kept"

    plain = studio.get_prompt("alice", plain.id)
    assert [image.seed for image in plain.images] == [5, 6]
    assert plain.images[0].likeness <= 0.35, "Biden, scored against Obama"
    assert plain.images[1].likeness is None, "no face, no likeness"
    assert plain.to_dict()["images"][0]["likeness"] == plain.images[0].likeness


def test_best_of_must_exceed_num_images_and_names_the_field(runtime):
    tune = trained(runtime, "obama")
    with pytest.raises(Exception, match="best_of") as raised:
        runtime.studio.create_prompt("alice", tune.id, PromptCreate("{{subject}}", num_images=4, best_of=4))
    assert "must be more than num_images (4)" in str(raised.value)
    assert runtime.studio.list_prompts("alice", tune_id=tune.id) == []


def test_the_subjects_embeddings_go_with_the_lora_on_expiry_and_on_delete(runtime, clock):
    db = runtime.studio.db
    expiring, deleted = trained(runtime, "expiring"), trained(runtime, "deleted")
    runtime.worker.generator.photos = [face_photo("obama2.jpg")]
    prompt = runtime.studio.create_prompt("alice", expiring.id, PromptCreate("{{subject}}", num_images=1, steps=1))
    runtime.worker.drain()
    assert db.subject_faces(expiring.id) and db.subject_faces(deleted.id)

    clock.advance(31)
    assert expiring.id in sweep(runtime.studio, runtime.store).expired
    assert db.subject_faces(expiring.id) is None, "expired with the LoRA"
    assert runtime.studio.get_prompt("alice", prompt.id).images[0].likeness >= 0.6, "the avatar keeps its score"

    runtime.studio.delete_tune("alice", deleted.id)
    assert db.subject_faces(deleted.id) is None
    assert not identity._RECENT_FACES._items, "nor kept in this process's memory"


def test_a_dog_has_no_subject_and_its_avatars_no_likeness(runtime):
    dog = trained(runtime, "dog", name="dog")
    assert runtime.studio.db.subject_faces(dog.id) is None
    runtime.worker.generator.photos = [face_photo("obama2.jpg")]
    prompt = runtime.studio.create_prompt("alice", dog.id, PromptCreate("{{subject}}", num_images=1, steps=1))
    runtime.worker.drain()
    assert runtime.studio.get_prompt("alice", prompt.id).images[0].likeness is None


def test_the_serving_worker_scores_a_prompt_while_the_next_one_generates(runtime, monkeypatch):
    """A pack run does not wait for the scoring: prompt 1's likeness is measured (in the scoring process) while
    prompt 2 generates."""
    import threading
    from concurrent.futures import Future

    import studio.likeness

    tune = trained(runtime, "obama")
    second_generating, overlapped, submitted = threading.Event(), [], []
    real_submit, real_generate = studio.likeness.Scorer.submit, DrawsThesePhotos.generate
    generated: list[int] = []

    def generate(self, branch_name, request, **kwargs):
        generated.append(request.seed)
        if len(generated) == 2:
            second_generating.set()
        return real_generate(self, branch_name, request, **kwargs)

    def submit(self, db, tune_id, images):
        scores = real_submit(self, db, tune_id, images)
        submitted.append(tune_id)
        if len(submitted) > 1:
            return scores
        gated: Future = Future()  # prompt 1's scores come once prompt 2 is generating (never, if the worker waited)

        def release() -> None:
            overlapped.append(second_generating.wait(timeout=30))
            gated.set_result(scores.result())

        threading.Thread(target=release, daemon=True).start()
        return gated

    monkeypatch.setattr(DrawsThesePhotos, "generate", generate)
    monkeypatch.setattr(studio.likeness.Scorer, "submit", submit)
    runtime.worker.generator.photos = [face_photo("obama2.jpg")]
    prompts = [
        runtime.studio.create_prompt("alice", tune.id, PromptCreate("{{subject}}", num_images=1, steps=1, seed=s))
        for s in (10, 20)
    ]
    runtime.worker.start()
    done = wait_for(
        lambda: [runtime.studio.get_prompt("alice", p.id) for p in prompts],
        lambda ps: all(p.status == "done" for p in ps),
        what="both prompts done",
    )
    assert overlapped == [True], "prompt 1 was scored while prompt 2 generated"
    assert [p.images[0].seed for p in done] == [10, 20] and all(p.images[0].likeness >= 0.6 for p in done)
