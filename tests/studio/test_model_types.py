"""Model types and the FLUX branches through the service: what a tune trains (`lora`, or `pti` on SDXL and its
default there) is checked, stored on the tune and handed to the trainer by the worker and by a Hugging Face Job;
a `tiny-flux` tune trains and generates end to end; pack prompts with an SD sampler are refused on FLUX."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from pipelines.errors import ValidationError
from pipelines.train import LORA_WEIGHTS_NAME, METADATA_NAME, TrainResult
from pipelines.train_pti import EMBEDDINGS_NAME
from pipelines.tuning import TuneRequest
from studio import job as job_module
from studio.hf_jobs import JobsBackend
from studio.job import JobSpec
from studio.requests import PromptCreate
from studio.runtime import open_runtime
from tests.studio.test_service import tune_request


@pytest.fixture
def runtime(settings):
    rt = open_runtime(settings, start_worker=False, callback_delays=[0.0, 0.0])
    yield rt
    rt.close()


def photos_left(runtime) -> list[Path]:
    folder = runtime.settings.data_dir / "photos"
    return list(folder.iterdir()) if folder.exists() else []


def test_an_sdxl1_tune_trains_by_pivotal_tuning_unless_it_asks_for_a_lora(runtime):
    studio = runtime.studio
    default = studio.create_tune("alice", tune_request("default", branch="sdxl1")).tune
    lora = studio.create_tune("alice", tune_request("plain", branch="sdxl1", model_type="lora")).tune
    pti = studio.create_tune("alice", tune_request("asked", branch="sdxl1", model_type="pti")).tune

    assert (default.model_type, lora.model_type, pti.model_type) == ("pti", "lora", "pti")
    assert studio.get_tune("alice", default.id).model_type == "pti"  # stored, not only returned
    assert default.to_dict()["model_type"] == "pti" and "model_type" not in default.api_fields


@pytest.mark.parametrize("branch", ["tiny", "sd15", "flux1", "tiny-flux", "fast"])
def test_pti_off_an_sdxl_branch_is_refused_naming_the_field_and_nothing_is_written(runtime, branch):
    with pytest.raises(ValidationError) as error:
        runtime.studio.create_tune("alice", tune_request(branch=branch, model_type="pti"))

    assert (error.value.field, error.value.value) == ("model_type", "pti")
    assert f"`model_type` must be lora on branch {branch}; pti (pivotal tuning) trains on SDXL branches only " in str(
        error.value
    )
    assert "sdxl1" in error.value.message
    assert runtime.studio.list_tunes("alice") == [] and photos_left(runtime) == []


def test_other_branches_default_to_a_lora_and_an_unknown_type_lists_the_known_ones(runtime):
    assert runtime.studio.create_tune("alice", tune_request(branch="tiny")).tune.model_type == "lora"
    assert runtime.studio.create_tune("alice", tune_request("mock")).tune.model_type == "lora"
    with pytest.raises(ValidationError, match=r"`model_type` must be one of lora, pti \(got 'faceid'\)"):
        runtime.studio.create_tune("alice", tune_request("other", model_type="faceid"))


def test_the_training_request_resolves_the_branch_default():
    assert TuneRequest(class_name="woman", branch="sdxl1").resolved_model_type == "pti"
    assert TuneRequest(class_name="woman", branch="sdxl1", model_type="lora").resolved_model_type == "lora"
    assert TuneRequest(class_name="woman", branch="flux1").resolved_model_type == "lora"
    with pytest.raises(ValidationError) as error:
        TuneRequest(class_name="woman", branch="sd15", model_type="pti")
    assert error.value.field == "model_type" and "must be lora on branch sd15" in error.value.message


def fake_pivotal_output(folder: Path) -> TrainResult:
    """What the pti trainer leaves (tiny tensors): the LoRA, the tokens' embeddings and the metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"unet.a.lora_A.weight": torch.zeros(2, 4)}, folder / LORA_WEIGHTS_NAME)
    save_file({"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(2, 1280)}, folder / EMBEDDINGS_NAME)
    metadata = {
        "branch": "sdxl1",
        "model_type": "pti",
        "pti_tokens": ["<s0>", "<s1>"],
        "instance_prompt": "<s0><s1> woman",
    }
    (folder / METADATA_NAME).write_text(json.dumps(metadata))
    return TrainResult(folder, folder / LORA_WEIGHTS_NAME, metadata)


def test_the_worker_trains_the_tunes_model_type_and_stores_the_embeddings_with_its_card(runtime, monkeypatch):
    asked: list[TuneRequest] = []

    def train_tune(settings, checked, request, output_dir, **_):
        asked.append(request)
        return fake_pivotal_output(output_dir)

    monkeypatch.setattr("studio.worker.train_tune", train_tune)
    tune = runtime.studio.create_tune("alice", tune_request(branch="sdxl1")).tune
    runtime.worker.drain()

    tune = runtime.studio.get_tune("alice", tune.id)
    assert tune.status == "trained", tune.error
    [request] = asked
    assert (request.branch, request.resolved_model_type) == ("sdxl1", "pti")
    folder = runtime.store.fetch(tune.artifact_location)
    assert (folder / EMBEDDINGS_NAME).is_file()
    card = (folder / "README.md").read_text()
    assert 'load_textual_inversion(state_dict["clip_g"]' in card and "<s0><s1> woman" in card


def test_a_hugging_face_job_trains_the_tunes_model_type(runtime, monkeypatch, tmp_path):
    tune = runtime.studio.create_tune("alice", tune_request(branch="sdxl1", model_type="lora")).tune
    spec = JobsBackend(runtime.studio, runtime.store, api=object())._spec(tune, renders="r", training_set="ds/set")
    assert JobSpec.from_json(spec.to_json()).model_type == "lora"
    old = json.loads(spec.to_json())
    del old["model_type"]  # a job started before model types: a LoRA, as it was then
    assert JobSpec.from_json(json.dumps(old)).model_type == "lora"

    asked: list[TuneRequest] = []

    def train_on_images(settings, images, request, output_dir, **_):
        asked.append(request)
        return fake_pivotal_output(output_dir)

    class Store:
        def put(self, name, lora_dir, card):
            assert card.model_type == "pti" and card.tokens == ("<s0>", "<s1>")
            return "hub://ns/tune-1"

    monkeypatch.setattr("storage.training_sets.load_training_set", lambda *a, **k: [(Image.new("RGB", (8, 8)), "x")])
    monkeypatch.setattr("pipelines.tuning.train_on_images", train_on_images)
    monkeypatch.setattr("storage.artifacts.open_store", lambda settings: Store())
    pivotal = JobSpec(**{**json.loads(spec.to_json()), "model_type": "pti"})
    job_module._train(runtime.settings, pivotal, tmp_path)
    assert [request.resolved_model_type for request in asked] == ["pti"]


@pytest.fixture
def flux_runtime(settings, tiny_flux_dir):
    (settings.models_dir / "tiny-flux").symlink_to(tiny_flux_dir, target_is_directory=True)
    rt = open_runtime(settings, start_worker=False, callback_delays=[0.0, 0.0])
    yield rt
    rt.close()


def test_a_tiny_flux_tune_trains_a_lora_and_generates_with_flux_sampling(flux_runtime):
    studio = flux_runtime.studio
    prompt = PromptCreate("{{subject}} smiling", num_images=1, steps=2)
    tune = studio.create_tune("alice", tune_request(branch="tiny-flux", steps=2, prompts=[prompt])).tune
    assert (tune.model_type, tune.token) == ("lora", "ohwx")

    flux_runtime.worker.drain()

    tune = studio.get_tune("alice", tune.id)
    assert tune.status == "trained", tune.error
    folder = flux_runtime.store.fetch(tune.artifact_location)
    metadata = json.loads((folder / METADATA_NAME).read_text())
    assert (metadata["family"], metadata["model_type"]) == ("flux", "lora")
    assert "FluxPipeline" in (folder / "README.md").read_text()
    [done] = studio.list_prompts("alice", tune_id=tune.id)
    assert done.status == "done", done.error
    assert (done.scheduler, done.cfg_scale) == ("flow_match_euler", 3.5)  # FLUX's own, as the record says
    assert Image.open(studio.image_file("alice", done.images[0].id)).size == (128, 128)


def test_pack_prompts_with_an_sd_sampler_are_refused_on_flux_naming_the_branch_and_the_pack(runtime):
    studio = runtime.studio
    pack = studio.get_pack("fantasy")
    index = next(i for i, prompt in enumerate(pack.prompts["woman"]) if prompt.scheduler is not None)
    assert pack.prompts["woman"][index].scheduler == "euler_a"  # chosen by the pack's author: an SD sampler

    with pytest.raises(ValidationError) as error:
        studio.create_tune_from_pack("alice", "fantasy", tune_request(branch="tiny-flux"))
    assert (error.value.field, error.value.value) == ("branch", "tiny-flux")
    assert f"cannot run prompt woman[{index}] of pack 'fantasy'" in error.value.message
    assert "flow_match_euler" in error.value.message
    with pytest.raises(ValidationError) as error:
        studio.create_tune("alice", tune_request(branch="flux1", styles=[f"fantasy/woman/{index}"]))
    assert error.value.field == "branch" and f"woman[{index}] of pack 'fantasy'" in error.value.message
    assert studio.list_tunes("alice") == [] and photos_left(runtime) == []
    # a pack that leaves the sampler to the model runs on FLUX with FLUX's own
    [created] = studio.create_tune_from_pack("alice", "corporate-headshots", tune_request(branch="tiny-flux"))
    prompts = studio.list_prompts("alice", tune_id=created.tune.id, limit=100)
    assert prompts and {(p.scheduler, p.cfg_scale) for p in prompts} <= {
        ("flow_match_euler", c) for c in (3.5, 6, 6.5, 7)
    }
