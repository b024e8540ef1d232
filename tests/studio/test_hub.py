"""A tune whose LoRA lives in a private Hub repo: pushed after training, loaded back for prompts, deleted."""

from __future__ import annotations

from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from tests.fakehub import FAKE_TOKEN, fake_hub_fixture  # noqa: F401 (registers `fake_hub`)
from tests.studio.test_service import PHOTOS


def test_a_tiny_tune_goes_to_a_private_repo_with_a_card_and_comes_back_for_prompts(settings, fake_hub):
    settings = settings.with_overrides(hf_token=FAKE_TOKEN, hub_namespace="studio")
    runtime = open_runtime(settings, start_worker=False)
    try:
        request = TuneCreate(
            title="me",
            name="woman",
            images=PHOTOS,
            branch="tiny",
            steps=2,
            prompts=[PromptCreate("{{subject}} in a garden", num_images=1, steps=2)],
        )
        tune = runtime.studio.create_tune("alice", request).tune
        runtime.worker.drain()

        tune = runtime.studio.get_tune("alice", tune.id)
        assert tune.status == "trained", tune.error
        assert tune.artifact_location.startswith("hub://studio/tune-")
        repo_id = tune.artifact_location.removeprefix("hub://")
        repo = fake_hub.repos[repo_id]
        assert repo.private
        files = repo.files
        assert {"pytorch_lora_weights.safetensors", "lora_metadata.json", "README.md"} <= set(files)
        assert {"samples/0.png", "samples/1.png"} <= set(files)
        card = files["README.md"].decode()
        assert "instance_prompt: sks woman" in card and "- lora" in card and "samples/0.png" in card
        assert FAKE_TOKEN not in card

        [prompt] = runtime.studio.list_prompts("alice", tune_id=tune.id)
        assert prompt.status == "done" and len(prompt.images) == 1

        runtime.studio.delete_tune("alice", tune.id)
        assert repo_id not in fake_hub.repos
    finally:
        runtime.close()
