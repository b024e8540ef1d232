"""Photos to LoRA in one go, on real photos (the astronaut) and the tiny branch."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from safetensors.torch import load_file

from pipelines.errors import PhotoRejectedError, ValidationError
from pipelines.generate import GenerationRequest, Generator, LoraSpec
from pipelines.tuning import TuneRequest, check_photos, train_tune, training_images
from tests.conftest import astronaut_photos


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def astronaut_set() -> list[tuple[str, bytes]]:
    return [(f"me-{i}.jpg", jpeg(photo)) for i, photo in enumerate(astronaut_photos())]


def test_photos_to_a_lora_that_generates(settings):
    checked = check_photos(settings, astronaut_set(), class_name="woman")
    assert [r.faces for r in checked.reports] == [1, 1, 1, 1]
    request = TuneRequest(class_name="Woman", branch="tiny", steps=3)
    images = training_images(checked, request)
    assert {i.caption for i in images} == {"sks woman"}
    assert {i.kind for i in images} == {"full", "face"}

    progress = []
    result = train_tune(settings, checked, request, settings.data_dir / "loras" / "t1", on_progress=progress.append)
    assert result.metadata["instance_prompt"] == "sks woman"
    assert result.metadata["num_training_images"] == len(images)
    assert load_file(result.lora_path)
    assert progress[-1].phase == "saving"

    generated = Generator(settings).generate(
        "tiny",
        GenerationRequest(text="sks woman", num_images=1, steps=2, seed=1, loras=(LoraSpec("t1", result.output_dir),)),
    )
    assert generated.images[0].image.size == (128, 128)


def test_bad_photos_are_refused_before_anything_trains(settings):
    inputs = [*astronaut_set()[:3], ("notes.jpg", b"just text")]
    with pytest.raises(PhotoRejectedError, match=r"notes\.jpg"):
        check_photos(settings, inputs, class_name="woman")


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"class_name": "", "branch": "tiny"}, "class_name"),
        ({"class_name": "m4n", "branch": "tiny"}, "class_name"),
        ({"class_name": "man", "branch": "fast"}, "branch"),
        ({"class_name": "man", "branch": "sd3"}, "branch"),
        ({"class_name": "man", "token": "Oh wx"}, "token"),
    ],
)
def test_bad_tune_requests_name_the_field(fields, name):
    with pytest.raises(ValidationError) as error:
        TuneRequest(**fields)
    assert error.value.field == name
