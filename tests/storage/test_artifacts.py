"""Artifact stores keep a tune's LoRA: a local folder, or a private Hub repo (the real client against a fake Hub)."""

from __future__ import annotations

import json
import logging
import shutil
import traceback
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from pipelines.errors import ArtifactError, SettingsError, ValidationError
from pipelines.settings import Settings
from pipelines.train import LORA_WEIGHTS_NAME, METADATA_NAME
from pipelines.train_pti import EMBEDDINGS_NAME
from storage.artifacts import (
    HubArtifactStore,
    LocalArtifactStore,
    ModelCard,
    RetryPolicy,
    artifact_name,
    open_store,
    render_model_card,
)
from tests.fakehub import FAKE_TOKEN, FakeHub, fake_hub_fixture  # noqa: F401 (registers `fake_hub`)

NAMESPACE = "studio"
BASE_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"


def make_lora(folder: Path, *, seed: int = 0) -> Path:
    """A LoRA folder as training leaves it: diffusers-named weights and the metadata JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    save_file(
        {
            "unet.down_blocks.0.attentions.0.to_q.lora_A.weight": torch.randn(4, 32, generator=generator),
            "unet.down_blocks.0.attentions.0.to_q.lora_B.weight": torch.randn(32, 4, generator=generator),
        },
        folder / LORA_WEIGHTS_NAME,
    )
    metadata = {"base_model": BASE_MODEL, "instance_prompt": "ohwx man", "branch": "sdxl1", "token": "ohwx"}
    (folder / METADATA_NAME).write_text(json.dumps(metadata))
    return folder


def make_card(tmp_path: Path, *, samples: int = 0) -> ModelCard:
    paths = []
    for index in range(samples):
        path = tmp_path / f"sample{index}.png"
        path.write_bytes(b"\x89PNG fake image %d" % index)
        paths.append(path)
    return ModelCard(
        base_model=BASE_MODEL, instance_prompt="ohwx man", branch="sdxl1", title="Me", sample_images=tuple(paths)
    )


def front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def hub_store(tmp_path: Path, hub: FakeHub, sleeps: Sleeps, *, token: str = FAKE_TOKEN) -> HubArtifactStore:
    settings = Settings(data_dir=tmp_path / "data", hf_token=token, hub_namespace=NAMESPACE)
    return HubArtifactStore(settings, endpoint=hub.url, retry=RetryPolicy(attempts=3, base_delay=0.5, sleep=sleeps))


# --- local store -----------------------------------------------------------------------------------------------


def test_local_put_keeps_weights_metadata_and_a_card_that_fetch_gives_back(tmp_path):
    lora = make_lora(tmp_path / "training")
    store = LocalArtifactStore(Settings(data_dir=tmp_path / "data"))

    location = store.put("7", lora, make_card(tmp_path, samples=1))

    folder = Path(location)
    assert folder == (tmp_path / "data" / "artifacts" / "7").resolve()
    assert (folder / LORA_WEIGHTS_NAME).read_bytes() == (lora / LORA_WEIGHTS_NAME).read_bytes()
    assert json.loads((folder / METADATA_NAME).read_text())["base_model"] == BASE_MODEL
    assert (folder / "samples" / "0.png").is_file()
    card = (folder / "README.md").read_text()
    assert front_matter(card)["instance_prompt"] == "ohwx man"
    assert f'load_lora_weights("{folder}"' in card
    assert store.fetch(location) == folder and store.exists(location) and store.url(location) is None
    shutil.rmtree(lora)  # training folders are removed once stored: the artifact must not depend on them
    assert load_file(store.fetch(location) / LORA_WEIGHTS_NAME)


def test_local_put_replaces_an_existing_artifact_and_leaves_no_staging_behind(tmp_path):
    store = LocalArtifactStore(Settings(data_dir=tmp_path / "data"))
    store.put("7", make_lora(tmp_path / "v1", seed=1), make_card(tmp_path))

    location = store.put("7", make_lora(tmp_path / "v2", seed=2), make_card(tmp_path))

    assert (Path(location) / LORA_WEIGHTS_NAME).read_bytes() == (tmp_path / "v2" / LORA_WEIGHTS_NAME).read_bytes()
    assert sorted(path.name for path in store.root.iterdir()) == ["7"]


def test_a_failed_local_put_keeps_the_previous_artifact(tmp_path, monkeypatch):
    store = LocalArtifactStore(Settings(data_dir=tmp_path / "data"))
    location = store.put("7", make_lora(tmp_path / "v1", seed=1), make_card(tmp_path))
    before = (Path(location) / LORA_WEIGHTS_NAME).read_bytes()

    def disk_full(source, destination, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copy2", disk_full)
    with pytest.raises(ArtifactError, match="No space left on device"):
        store.put("7", make_lora(tmp_path / "v2", seed=2), make_card(tmp_path))

    assert (Path(location) / LORA_WEIGHTS_NAME).read_bytes() == before
    assert sorted(path.name for path in store.root.iterdir()) == ["7"]


def test_local_delete_is_idempotent_and_never_leaves_the_store(tmp_path):
    store = LocalArtifactStore(Settings(data_dir=tmp_path / "data"))
    location = store.put("7", make_lora(tmp_path / "training"), make_card(tmp_path))

    store.delete(location)
    store.delete(location)

    assert not store.exists(location) and not Path(location).exists()
    with pytest.raises(ArtifactError) as gone:
        store.fetch(location)
    assert gone.value.missing
    outside = tmp_path / "precious"
    outside.mkdir()
    with pytest.raises(ValidationError, match="location"):
        store.delete(str(outside))
    with pytest.raises(ValidationError, match="location"):
        store.delete(str(store.root))
    assert outside.exists() and store.root.exists()


def test_a_folder_without_weights_is_refused_naming_the_argument(tmp_path):
    store = LocalArtifactStore(Settings(data_dir=tmp_path / "data"))
    (tmp_path / "empty").mkdir()

    with pytest.raises(ValidationError, match=r"`lora_dir`.*pytorch_lora_weights\.safetensors"):
        store.put("7", tmp_path / "empty", make_card(tmp_path))
    assert not store.root.exists() or not any(store.root.iterdir())


def test_tune_ids_become_safe_names_that_do_not_collide(tmp_path):
    assert artifact_name("42") == "42"
    names = {artifact_name(tune_id) for tune_id in ("a/b", "a-b", "a b", "../a-b")}
    assert len(names) == 4 and all(name.replace("-", "").isalnum() for name in names)
    store = LocalArtifactStore(Settings(data_dir=tmp_path / "data"))
    location = store.put("../../escape", make_lora(tmp_path / "training"), make_card(tmp_path))
    assert Path(location).parent == store.root
    with pytest.raises(ValidationError, match="tune_id"):
        artifact_name("///")


def test_the_local_store_explains_a_hub_location_it_cannot_reach(tmp_path):
    store = LocalArtifactStore(Settings(data_dir=tmp_path / "data"))
    with pytest.raises(ValidationError, match="HF_TOKEN and TUNES_HUB_NAMESPACE"):
        store.fetch("hub://studio/tune-7")


# --- choosing a store and writing the card ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "namespace", "kind"),
    [(None, None, "local"), (FAKE_TOKEN, None, "local"), (None, NAMESPACE, "local"), (FAKE_TOKEN, NAMESPACE, "hub")],
)
def test_open_store_picks_the_hub_only_with_a_token_and_a_namespace(tmp_path, token, namespace, kind):
    store = open_store(Settings(data_dir=tmp_path, hf_token=token, hub_namespace=namespace))
    assert store.kind == kind
    assert FAKE_TOKEN not in repr(store)


def test_a_bad_namespace_is_refused_naming_the_variable(tmp_path):
    with pytest.raises(SettingsError, match="TUNES_HUB_NAMESPACE"):
        open_store(Settings(data_dir=tmp_path, hf_token=FAKE_TOKEN, hub_namespace="no spaces/allowed"))


def test_a_card_for_a_local_base_model_keeps_it_out_of_the_hub_metadata():
    card = ModelCard(base_model="builtin:tiny-sd15", instance_prompt="sks thing", branch="tiny", title="")
    readme = render_model_card(card, load_from="studio/tune-1")
    metadata = front_matter(readme)
    assert "base_model" not in metadata and "license" not in metadata
    assert metadata["tags"] == ["lora", "diffusers", "text-to-image", "tune-studio"]
    assert "builtin:tiny-sd15" in readme


# --- Hub store -------------------------------------------------------------------------------------------------


def test_hub_put_creates_a_private_repo_with_one_commit_of_everything(tmp_path, fake_hub, sleeps):
    store = hub_store(tmp_path, fake_hub, sleeps)
    lora = make_lora(tmp_path / "training")

    location = store.put("42", lora, make_card(tmp_path, samples=2))

    repo_id = f"{NAMESPACE}/tune-42"
    assert location == f"hub://{repo_id}"
    assert store.url(location) == f"{fake_hub.url}/{repo_id}"
    repo = fake_hub.repos[repo_id]
    assert repo.private
    (commit,) = fake_hub.user_commits(repo_id)
    expected = {LORA_WEIGHTS_NAME, METADATA_NAME, "README.md", "samples/0.png", "samples/1.png"}
    assert set(commit.changed) == expected
    assert repo.files[LORA_WEIGHTS_NAME] == (lora / LORA_WEIGHTS_NAME).read_bytes()
    readme = repo.files["README.md"].decode()
    metadata = front_matter(readme)
    assert metadata["base_model"] == BASE_MODEL and metadata["instance_prompt"] == "ohwx man"
    assert metadata["tags"] == ["lora", "diffusers", "text-to-image", "tune-studio"]
    assert metadata["library_name"] == "diffusers" and metadata["license"] == "openrail++"
    assert metadata["widget"] == [
        {"text": "ohwx man", "output": {"url": "samples/0.png"}},
        {"text": "ohwx man", "output": {"url": "samples/1.png"}},
    ]
    assert f'pipe.load_lora_weights("{repo_id}"' in readme
    assert not fake_hub.calls("PUT", "/settings")  # created private: nothing to fix
    assert all(request.authorized for request in fake_hub.requests)


def test_a_public_repo_is_made_private_before_anything_is_uploaded(tmp_path, fake_hub, sleeps):
    repo_id = f"{NAMESPACE}/tune-42"
    fake_hub.add_repo(repo_id, private=False, files={"old.txt": b"from an earlier life"})
    store = hub_store(tmp_path, fake_hub, sleeps)

    store.put("42", make_lora(tmp_path / "training"), make_card(tmp_path))

    assert fake_hub.repos[repo_id].private
    paths = [(request.method, request.path) for request in fake_hub.requests]
    settings_call = paths.index(("PUT", f"/api/models/{repo_id}/settings"))
    commit_call = paths.index(("POST", f"/api/models/{repo_id}/commit/main"))
    assert settings_call < commit_call
    assert len(fake_hub.calls("GET", f"/api/models/{repo_id}")) == 2  # checked before and after the change


def test_a_repo_that_stays_public_is_refused_and_nothing_is_uploaded(tmp_path, fake_hub, sleeps):
    repo_id = f"{NAMESPACE}/tune-42"
    fake_hub.add_repo(repo_id, private=False, locked_public=True)
    store = hub_store(tmp_path, fake_hub, sleeps)

    with pytest.raises(ArtifactError, match="is public and could not be made private"):
        store.put("42", make_lora(tmp_path / "training"), make_card(tmp_path))

    assert not fake_hub.calls("POST", "/commit/") and not fake_hub.calls("POST", "/preupload/")
    assert fake_hub.user_commits(repo_id) == []


def test_fetch_downloads_the_exact_weights_into_the_data_dir_cache(tmp_path, fake_hub, sleeps):
    store = hub_store(tmp_path, fake_hub, sleeps)
    lora = make_lora(tmp_path / "training")
    location = store.put("42", lora, make_card(tmp_path, samples=1))

    folder = store.fetch(location)

    assert folder.is_relative_to(tmp_path / "data" / "hub_cache")
    assert (folder / LORA_WEIGHTS_NAME).read_bytes() == (lora / LORA_WEIGHTS_NAME).read_bytes()
    assert json.loads((folder / METADATA_NAME).read_text())["instance_prompt"] == "ohwx man"
    assert not (folder / "samples").exists()  # only what generation needs is downloaded
    original, fetched = load_file(lora / LORA_WEIGHTS_NAME), load_file(folder / LORA_WEIGHTS_NAME)
    assert all(torch.equal(original[key], fetched[key]) for key in original)


def test_fetch_uses_the_cached_copy_when_the_hub_is_down(tmp_path, fake_hub, sleeps):
    store = hub_store(tmp_path, fake_hub, sleeps)
    location = store.put("42", make_lora(tmp_path / "training"), make_card(tmp_path))
    first = store.fetch(location)

    fake_hub.fail_next("/api/models/", status=503, times=100)
    assert store.fetch(location) == first


def test_delete_removes_the_repo_and_its_cached_copy_and_a_second_delete_is_fine(tmp_path, fake_hub, sleeps):
    store = hub_store(tmp_path, fake_hub, sleeps)
    location = store.put("42", make_lora(tmp_path / "training"), make_card(tmp_path))
    cached = store.fetch(location)
    assert store.exists(location)

    store.delete(location)
    store.delete(location)

    assert f"{NAMESPACE}/tune-42" not in fake_hub.repos
    assert not store.exists(location)
    assert not cached.exists()  # an expired LoRA does not live on in the download cache
    with pytest.raises(ArtifactError) as gone:
        store.fetch(location)
    assert gone.value.missing and gone.value.location == location
    assert len(fake_hub.calls("DELETE", "/api/repos/delete")) == 2


def test_the_hub_store_still_serves_loras_stored_locally_before(tmp_path, fake_hub, sleeps):
    local = LocalArtifactStore(Settings(data_dir=tmp_path / "data"))
    old = local.put("7", make_lora(tmp_path / "training"), make_card(tmp_path))
    store = hub_store(tmp_path, fake_hub, sleeps)

    assert store.fetch(old) == Path(old) and store.exists(old) and store.url(old) is None
    store.delete(old)
    assert not Path(old).exists() and fake_hub.requests == []


def test_a_location_that_is_not_a_tune_repo_is_refused(tmp_path, fake_hub, sleeps):
    store = hub_store(tmp_path, fake_hub, sleeps)
    fake_hub.add_repo("studio/important-model")

    with pytest.raises(ValidationError, match="location"):
        store.delete("hub://studio/important-model")
    assert "studio/important-model" in fake_hub.repos


# --- failures --------------------------------------------------------------------------------------------------


def test_a_server_error_is_retried_with_backoff_then_succeeds(tmp_path, fake_hub, sleeps):
    fake_hub.fail_next("/api/repos/create", status=500, times=2)
    store = hub_store(tmp_path, fake_hub, sleeps)

    location = store.put("42", make_lora(tmp_path / "training"), make_card(tmp_path))

    assert store.exists(location)
    assert len(fake_hub.calls("POST", "/api/repos/create")) == 3
    assert sleeps == [0.5, 1.0]


def test_a_dropped_connection_during_the_commit_is_retried(tmp_path, fake_hub, sleeps):
    fake_hub.fail_next("/commit/main", disconnect=True)
    store = hub_store(tmp_path, fake_hub, sleeps)

    store.put("42", make_lora(tmp_path / "training"), make_card(tmp_path))

    assert len(fake_hub.user_commits(f"{NAMESPACE}/tune-42")) == 1
    assert len(fake_hub.calls("POST", "/commit/main")) == 2 and sleeps == [0.5]


def test_a_persistent_server_error_gives_up_after_a_bounded_number_of_tries(tmp_path, fake_hub, sleeps):
    fake_hub.fail_next("/commit/main", status=503, times=100, message="Service Unavailable")
    store = hub_store(tmp_path, fake_hub, sleeps)

    with pytest.raises(ArtifactError) as error:
        store.put("42", make_lora(tmp_path / "training"), make_card(tmp_path))

    message = str(error.value)
    assert "upload" in message and f"{NAMESPACE}/tune-42" in message and "503" in message
    assert "try again later" in message and not error.value.missing
    assert len(fake_hub.calls("POST", "/commit/main")) == 3 and len(sleeps) == 2
    assert FAKE_TOKEN not in message


def test_a_rejected_token_gives_an_actionable_error_without_the_token(tmp_path, fake_hub, sleeps, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    wrong = "hf_WrongTokenThatMustNeverBeShown0123"
    store = hub_store(tmp_path, fake_hub, sleeps, token=wrong)

    with pytest.raises(ArtifactError) as error:
        store.put("42", make_lora(tmp_path / "training"), make_card(tmp_path))

    assert "401" in str(error.value) and "HF_TOKEN" in str(error.value)
    assert sleeps == []  # a bad token is not retried
    assert_secret_nowhere(wrong, error.value, caplog)


def test_the_token_is_redacted_even_when_the_hub_echoes_it(tmp_path, fake_hub, sleeps, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    fake_hub.fail_next("/api/models/", status=500, times=100, message=f"upstream failed for Bearer {FAKE_TOKEN}")
    store = hub_store(tmp_path, fake_hub, sleeps)

    with pytest.raises(ArtifactError) as error:
        store.exists("hub://studio/tune-42")

    assert "upstream failed" in str(error.value) and "hf_***" in str(error.value)
    assert caplog.records  # the retries were logged...
    assert_secret_nowhere(FAKE_TOKEN, error.value, caplog)  # ...without the token


def assert_secret_nowhere(secret: str, error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    shown = "".join(traceback.format_exception(error)) + repr(error)
    assert secret not in shown
    assert secret not in caplog.text
    assert all(secret not in record.getMessage() for record in caplog.records)


# -- pivotal tuning (pti) and FLUX tunes ---------------------------------------------------------------------------

TOKENS = ("<s0>", "<s1>")


def make_pivotal(folder: Path) -> Path:
    """A pti training's output: the UNet LoRA, the tokens' embeddings (`clip_l`, `clip_g`) and the metadata."""
    make_lora(folder)
    generator = torch.Generator().manual_seed(1)
    embeddings = {
        "clip_l": torch.randn(2, 768, generator=generator),
        "clip_g": torch.randn(2, 1280, generator=generator),
    }
    save_file(embeddings, folder / EMBEDDINGS_NAME, metadata={"pti_tokens": json.dumps(list(TOKENS))})
    metadata = json.loads((folder / METADATA_NAME).read_text())
    metadata |= {"model_type": "pti", "pti_tokens": list(TOKENS), "instance_prompt": "<s0><s1> man"}
    (folder / METADATA_NAME).write_text(json.dumps(metadata))
    return folder


def pivotal_card(lora: Path) -> ModelCard:
    metadata = json.loads((lora / METADATA_NAME).read_text())
    return ModelCard.from_metadata(metadata, branch=metadata["branch"], base_model=BASE_MODEL, title="Me")


def test_the_hub_store_uploads_and_fetches_a_pti_tunes_embeddings_with_its_lora(tmp_path, fake_hub, sleeps):
    store = hub_store(tmp_path, fake_hub, sleeps)
    lora = make_pivotal(tmp_path / "training")

    location = store.put("42", lora, pivotal_card(lora))

    repo_id = f"{NAMESPACE}/tune-42"
    (commit,) = fake_hub.user_commits(repo_id)
    assert set(commit.changed) == {LORA_WEIGHTS_NAME, METADATA_NAME, EMBEDDINGS_NAME, "README.md"}
    assert fake_hub.repos[repo_id].files[EMBEDDINGS_NAME] == (lora / EMBEDDINGS_NAME).read_bytes()
    shutil.rmtree(lora)
    folder = store.fetch(location)
    fetched = load_file(folder / EMBEDDINGS_NAME)
    assert fetched["clip_l"].shape == (2, 768) and fetched["clip_g"].shape == (2, 1280)
    assert (folder / LORA_WEIGHTS_NAME).is_file()


def test_a_pti_card_shows_the_stock_two_call_load_with_the_trained_tokens(tmp_path, fake_hub, sleeps):
    store = hub_store(tmp_path, fake_hub, sleeps)
    lora = make_pivotal(tmp_path / "training")
    store.put("42", lora, pivotal_card(lora))

    repo_id = f"{NAMESPACE}/tune-42"
    readme = fake_hub.repos[repo_id].files["README.md"].decode()
    assert front_matter(readme)["instance_prompt"] == "<s0><s1> man"
    assert f'pipe.load_lora_weights("{repo_id}", weight_name="{LORA_WEIGHTS_NAME}")' in readme
    assert f'state_dict = load_file(hf_hub_download("{repo_id}", "{EMBEDDINGS_NAME}"))' in readme
    tokens = '["<s0>", "<s1>"]'
    assert (
        f'load_textual_inversion(state_dict["clip_l"], token={tokens}, text_encoder=pipe.text_encoder, '
        "tokenizer=pipe.tokenizer)"
    ) in readme
    assert (
        f'load_textual_inversion(state_dict["clip_g"], token={tokens}, text_encoder=pipe.text_encoder_2, '
        "tokenizer=pipe.tokenizer_2)"
    ) in readme
    assert 'pipe("<s0><s1> man, portrait photo")' in readme
    code = readme.split("```python\n")[1].split("```")[0]
    compile(code, "README.md", "exec")  # the snippet is valid Python


def test_the_local_store_keeps_the_embeddings_and_its_card_loads_them_from_the_folder(tmp_path):
    lora = make_pivotal(tmp_path / "training")
    store = LocalArtifactStore(Settings(data_dir=tmp_path / "data"))

    folder = Path(store.put("7", lora, pivotal_card(lora)))

    assert (folder / EMBEDDINGS_NAME).read_bytes() == (lora / EMBEDDINGS_NAME).read_bytes()
    assert f'load_file("{folder / EMBEDDINGS_NAME}")' in (folder / "README.md").read_text()


def test_a_pti_folder_without_embeddings_is_refused(tmp_path):
    lora = make_pivotal(tmp_path / "training")
    card = pivotal_card(lora)
    (lora / EMBEDDINGS_NAME).unlink()
    with pytest.raises(ValidationError, match=EMBEDDINGS_NAME) as error:
        LocalArtifactStore(Settings(data_dir=tmp_path / "data")).put("7", lora, card)
    assert error.value.field == "lora_dir"


def test_a_card_names_the_tokens_of_a_pti_tune_and_only_then():
    with pytest.raises(ValidationError) as error:
        ModelCard(BASE_MODEL, "<s0><s1> man", "sdxl1", "Me", model_type="pti")
    assert error.value.field == "card.tokens"
    with pytest.raises(ValidationError) as error:
        ModelCard(BASE_MODEL, "ohwx man", "sdxl1", "Me", model_type="dora")
    assert error.value.field == "card.model_type"


def test_a_flux_card_loads_the_lora_into_a_flux_pipeline():
    card = ModelCard("black-forest-labs/FLUX.1-dev", "ohwx woman", "flux1", "Me")
    readme = render_model_card(card, load_from="studio/tune-9")
    assert 'FluxPipeline.from_pretrained("black-forest-labs/FLUX.1-dev", torch_dtype=torch.bfloat16)' in readme
    assert 'pipe.load_lora_weights("studio/tune-9"' in readme and "load_textual_inversion" not in readme
    assert front_matter(readme)["base_model"] == "black-forest-labs/FLUX.1-dev"
    metadata = front_matter(readme)
    assert metadata["license"] == "other" and metadata["license_name"] == "flux-1-dev-non-commercial-license"
    assert metadata["license_link"].endswith("FLUX.1-dev/blob/main/LICENSE.md")
    assert "bound by the base model's license" in readme and "commercial use" in readme
    sd_card = render_model_card(
        ModelCard("stabilityai/stable-diffusion-xl-base-1.0", "ohwx woman", "sdxl1", ""), load_from="x/y"
    )
    assert "license_name" not in front_matter(sd_card) and "bound by the base model's license" not in sd_card
