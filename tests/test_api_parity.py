"""REST and the Gradio API offer the same fields for tunes and prompts, with the same checks and the same errors.

One server serves both; alice calls REST with an API key and the Gradio API with her password. The field
lists are read from what each interface publishes (OpenAPI, the Gradio API description), so a field added to
one and not the other fails here, as does a REST prompt field that a pack prompt cannot set.
"""

from __future__ import annotations

import io
from dataclasses import replace

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from packs.loader import parse_pack
from pipelines.errors import ValidationError
from storage.db import Database
from studio.service import Studio
from tests.conftest import astronaut_photos, served_app, settings_with_tiny, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_sd15_dir, tiny_flux_dir):
    settings = replace(
        settings_with_tiny(tmp_path_factory.mktemp("parity"), tiny_sd15_dir),
        default_branch="fast",
        accounts=("alice:alice-pw",),
        api_rate_per_minute=100_000,
    )
    (settings.models_dir / "tiny-flux").symlink_to(tiny_flux_dir, target_is_directory=True)  # built once per session
    with served_app(settings) as url:
        key = Studio(settings, Database(settings.data_dir / "tunes.db")).create_api_key("alice")
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as rest:
            yield rest, Client(url, auth=("alice", "alice-pw"), verbose=False)


@pytest.fixture(scope="module")
def rest(server):
    return server[0]


@pytest.fixture(scope="module")
def gradio(server):
    return server[1]


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory) -> list:
    """The photos as files the Gradio API uploads."""
    folder = tmp_path_factory.mktemp("photos")
    files = []
    for i, photo in enumerate(astronaut_photos()):
        photo.save(folder / f"me-{i}.jpg", quality=90)
        files.append(handle_file(str(folder / f"me-{i}.jpg")))
    return files


@pytest.fixture(scope="module")
def tune_id(rest):
    files = []
    for i, photo in enumerate(astronaut_photos()):
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=90)
        files.append(("tune[images][]", (f"me-{i}.jpg", buffer.getvalue(), "image/jpeg")))
    created = rest.post("/tunes", data={"tune[title]": "Parity", "tune[name]": "woman"}, files=files)
    assert created.status_code == 201, created.text
    tune = wait_for(lambda: rest.get(f"/tunes/{created.json()['id']}").json(), lambda t: t["status"] == "trained")
    return tune["id"]


def rest_fields(rest, schema: str) -> set[str]:
    properties = rest.get("/openapi.json").json()["components"]["schemas"][schema]["properties"]
    return set(properties)


def gradio_parameters(gradio, endpoint: str) -> set[str]:
    info = gradio.view_api(print_info=False, return_format="dict")["named_endpoints"][f"/{endpoint}"]
    return {parameter["parameter_name"] for parameter in info["parameters"]}


def test_every_rest_prompt_field_is_a_gradio_parameter_and_the_other_way_round(rest, gradio):
    fields = rest_fields(rest, "PromptFields")
    assert {"text", "num_images", "aspect_ratio", "face_correct", "callback"} <= fields
    assert gradio_parameters(gradio, "create_prompt") - {"tune_id"} == fields


def test_every_rest_tune_field_is_a_gradio_parameter_and_the_other_way_round(rest, gradio):
    fields = rest_fields(rest, "TuneFields") | rest_fields(rest, "PackTuneFields")
    assert {"image_urls", "prompts_attributes", "preset", "styles", "tune_ids"} <= fields
    # photos: REST uploads them as `tune[images][]` files; pack_id: REST has it in the path
    assert gradio_parameters(gradio, "create_tune_from_pack") - {"photos", "pack_id"} == fields
    assert gradio_parameters(gradio, "create_tune") == gradio_parameters(gradio, "create_tune_from_pack") - {
        "pack_id",
        "tune_ids",
    }


def test_every_rest_prompt_field_but_the_callback_can_be_set_by_a_pack_prompt(rest):
    values = {"num_images": 2, "seed": 5, "cfg_scale": 6.5, "steps": 20, "scheduler": "euler", "aspect_ratio": "4:5"}
    values |= {"negative_prompt": "blurry", "super_resolution": True, "inpaint_faces": True, "hires_fix": True}
    values |= {"face_correct": True, "best_of": 4}
    fields = rest_fields(rest, "PromptFields") - {"callback", "text", "w", "h"}  # w/h: instead of aspect_ratio
    assert set(values) == fields  # a new REST field must be added here, and to the pack schema
    pack = {
        "id": "every-field",
        "title": "Every field",
        "description": "d",
        "classes": ["woman"],
        "default_branch": "fast",
    }
    pack["prompts"] = {"woman": [{"text": "{{subject}} in a garden", **values}]}
    [loaded] = parse_pack(pack, source="every-field.yaml").prompts["woman"]
    assert {name: getattr(loaded, name) for name in values} == values
    with pytest.raises(ValidationError, match="callback"):  # per request, not per pack
        parse_pack(
            {**pack, "prompts": {"woman": [{"text": "{{subject}}", "callback": "https://x.example"}]}}, source="p"
        )


BAD_PROMPT_VALUES = [
    ("num_images", 9, "must be an integer between 1 and 8"),
    ("steps", 0, "must be an integer between 1 and 150"),
    ("seed", -1, "must be an integer between 0 and"),
    ("w", 100, "must be a multiple of 8"),
    ("h", 4096, "must be an integer between 64 and 2048"),
    ("cfg_scale", 31, "must be a number between 0 and 30"),
    ("scheduler", "warp", "must be one of euler"),
    ("aspect_ratio", "1:2", "must be one of 1:1, 4:5"),
    ("negative_prompt", "x" * 2001, "must be text of at most 2000 characters"),
    ("text", "{{subject}} " + "x" * 4000, "must be text of at most 4000 characters"),
    ("super_resolution", "maybe", "must be true or false"),
    ("num_images", "lots", "must be an integer between 1 and 8"),
]


@pytest.mark.parametrize(
    ("field", "value", "message"), BAD_PROMPT_VALUES, ids=[f"{f}={v!r:.12}" for f, v, _ in BAD_PROMPT_VALUES]
)
def test_a_bad_prompt_value_gets_the_same_error_naming_the_field_from_both(
    rest, gradio, tune_id, field, value, message
):
    body = {"text": "{{subject}} on a beach", field: value}
    answer = rest.post(f"/tunes/{tune_id}/prompts", json={"prompt": body})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"] == {field: [answer.json()["errors"][field][0]]}
    assert message in answer.json()["errors"][field][0]
    with pytest.raises(Exception) as refused:  # gradio_client raises AppError with the message
        gradio.predict(tune_id=tune_id, **body, api_name="/create_prompt")
    assert f"`{field}` {answer.json()['errors'][field][0]}" in str(refused.value)


def test_a_bad_tune_prompt_is_named_by_its_place_in_both(rest, gradio):
    prompts = [{"text": "{{subject}} one"}, {"text": "{{subject}} two", "steps": 500}]
    answer = rest.post("/tunes", json={"tune": {"title": "Bad prompt", "name": "woman", "prompts_attributes": prompts}})
    assert answer.status_code == 422 and "prompts_attributes[1].steps" in answer.json()["errors"]
    with pytest.raises(Exception, match=r"prompts_attributes\[1\]\.steps` must be an integer between 1 and 150"):
        gradio.predict(title="Bad prompt", name="woman", prompts_attributes=prompts, api_name="/create_tune")
    assert all(t["title"] != "Bad prompt" for t in rest.get("/tunes").json())


def test_the_same_prompt_through_both_is_stored_the_same(rest, gradio, tune_id):
    body = {"text": "{{subject}} as a pilot", "num_images": 2, "aspect_ratio": "9:16", "face_correct": True, "seed": 7}
    by_rest = rest.post(f"/tunes/{tune_id}/prompts", json={"prompt": body}).json()
    by_gradio = gradio.predict(tune_id=tune_id, **body, api_name="/create_prompt")
    kept = ("text", "num_images", "w", "h", "inpaint_faces", "seed", "steps", "scheduler", "cfg_scale")
    assert {k: by_rest[k] for k in kept} == {k: by_gradio[k] for k in kept}
    assert by_rest["inpaint_faces"] is True and by_rest["h"] > by_rest["w"]  # face_correct and 9:16 took effect


BAD_MODEL_TYPES = [
    ("fast", "pti", "must be lora on branch fast; pti (pivotal tuning) trains on SDXL branches only (sdxl1)"),
    ("tiny", "pti", "must be lora on branch tiny; pti (pivotal tuning) trains on SDXL branches only (sdxl1)"),
    ("sdxl1", "dora", "must be one of lora, pti"),
]


@pytest.mark.parametrize(("branch", "model_type", "expected"), BAD_MODEL_TYPES)
def test_a_model_type_the_branch_cannot_train_gets_the_same_error_from_both(rest, gradio, branch, model_type, expected):
    tune = {"title": f"Type {branch}", "name": "woman", "branch": branch, "model_type": model_type}
    answer = rest.post("/tunes", json={"tune": tune})
    assert answer.status_code == 422 and list(answer.json()["errors"]) == ["model_type"], answer.text
    message = answer.json()["errors"]["model_type"][0]
    assert message.startswith(expected), message
    with pytest.raises(Exception) as refused:
        gradio.predict(**tune, api_name="/create_tune")
    assert f"`model_type` {message}" in str(refused.value)


def test_sdxl1_tunes_train_by_pivotal_tuning_by_default_through_both(rest, gradio, photo_files):
    by_gradio = gradio.predict(photos=photo_files, title="SDXL by Gradio", name="woman", branch="sdxl1",
                               api_name="/create_tune")  # fmt: skip
    asked_lora = gradio.predict(photos=photo_files, title="SDXL LoRA by Gradio", name="woman", branch="sdxl1",
                                model_type="lora", api_name="/create_tune")  # fmt: skip
    try:
        assert (by_gradio["model_type"], asked_lora["model_type"]) == ("pti", "lora")
        assert rest.get(f"/tunes/{by_gradio['id']}").json()["model_type"] == "pti"  # one record, one answer
    finally:  # no SDXL weights here: the worker would fail them
        for tune in (by_gradio, asked_lora):
            gradio.predict(tune_id=tune["id"], api_name="/delete_tune")


def test_a_tiny_flux_tune_trains_and_generates_through_the_gradio_api(gradio, photo_files):
    prompts = [{"text": "{{subject}} smiling", "num_images": 1, "steps": 2}]
    tune = gradio.predict(photos=photo_files, title="Tiny FLUX by Gradio", name="woman", branch="tiny-flux", steps=2,
                          prompts_attributes=prompts, api_name="/create_tune")  # fmt: skip
    assert (tune["branch"], tune["model_type"]) == ("tiny-flux", "lora")
    trained = wait_for(
        lambda: gradio.predict(tune_id=tune["id"], api_name="/get_tune"), lambda t: t["status"] in ("trained", "failed")
    )
    assert trained["status"] == "trained", trained["error"]
    [prompt] = wait_for(
        lambda: gradio.predict(tune_id=tune["id"], api_name="/list_prompts"),
        lambda ps: ps and ps[0]["status"] in ("done", "failed"),
    )
    assert prompt["status"] == "done", prompt["error"]
    assert (prompt["scheduler"], prompt["cfg_scale"], prompt["rendered_text"]) == (
        "flow_match_euler",
        3.5,
        "ohwx woman smiling",
    )
    record, gallery = gradio.predict(prompt_id=prompt["id"], api_name="/get_prompt")
    assert len(record["images"]) == 1 and Image.open(gallery[0]["image"]).size == (128, 128)
