"""`<lora:ID:weight>` tags combine the caller's tunes in one prompt: checked when queued, applied when run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import ValidationError
from pipelines.prompts import split_lora_tags
from studio import queue
from studio.errors import ConflictError, NotFoundError
from studio.requests import PromptCreate
from studio.runtime import open_runtime
from tests.studio.test_service import tune_request


@pytest.fixture
def runtime(settings):
    rt = open_runtime(settings, start_worker=False)
    yield rt
    rt.close()


def trained(runtime, owner: str, title: str, **changes):
    tune = runtime.studio.create_tune(owner, tune_request(title, **changes)).tune
    runtime.worker.drain()
    return runtime.studio.get_tune(owner, tune.id)


def nothing_queued(runtime, owner: str) -> bool:
    return runtime.studio.list_prompts(owner) == []


# -- parsing ---------------------------------------------------------------------------------------


def test_tags_are_taken_out_of_the_text_with_their_weights():
    text, tags = split_lora_tags("<lora:12:0.6> {{subject}} in a forest <lora:7>, at dusk <lora:9:.25>")
    assert text == "{{subject}} in a forest, at dusk"
    assert [(t.tune_id, t.weight) for t in tags] == [(12, 0.6), (7, 1.0), (9, 0.25)]
    assert split_lora_tags("no tags <here>") == ("no tags <here>", ())


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("<lora:1:3> x", "<lora:1:3>"),  # weight above 2
        ("<lora:1:0> x", "<lora:1:0>"),  # weight must be above 0
        ("<lora:1:-0.5> x", "<lora:1:-0.5>"),
        ("<lora:0> x", "<lora:0>"),  # ids are positive
        ("<lora:abc:1> x", "<lora:abc:1>"),
        ("<LORA:1> x", "<LORA:1>"),
        ("<lora: 1> x", "<lora: 1>"),
        ("x <lora:1", "<lora:1"),  # unclosed
        ("<lora:1> <lora:1:0.5> x", "<lora:1:0.5>"),  # the same tune twice
        ("".join(f"<lora:{i}>" for i in range(1, 6)) + " x", "5 <lora:...> tags"),
    ],
)
def test_a_bad_tag_is_refused_naming_text_and_the_tag(text, value):
    with pytest.raises(ValidationError) as error:
        PromptCreate(text)
    assert error.value.field == "text" and error.value.value == value


# -- queuing: every tag is checked before anything is written ------------------------------------


def test_a_tag_adds_another_tune_and_is_stored_while_the_text_keeps_what_was_written(runtime):
    studio = runtime.studio
    me = trained(runtime, "alice", "me")
    friend = trained(runtime, "alice", "friend")
    text = f"<lora:{friend.id}:0.6> {{{{subject}}}} in a forest"

    prompt = studio.create_prompt("alice", me.id, PromptCreate(text, num_images=1, seed=3))

    assert prompt.text == text and prompt.rendered_text == "sks woman in a forest"
    assert prompt.loras == [{"tune_id": friend.id, "weight": 0.6}]
    assert json.loads(json.dumps(prompt.to_dict()))["loras"] == [{"tune_id": friend.id, "weight": 0.6}]
    runtime.worker.drain()
    done = studio.get_prompt("alice", prompt.id)
    assert done.status == "done" and len(done.images) == 1 and done.loras == prompt.loras


def test_a_tag_naming_the_prompts_own_tune_sets_its_weight(runtime):
    me = trained(runtime, "alice", "me")
    prompt = runtime.studio.create_prompt("alice", me.id, PromptCreate(f"{{{{subject}}}} <lora:{me.id}:0.5>"))
    assert prompt.loras == [{"tune_id": me.id, "weight": 0.5}] and prompt.rendered_text == "sks woman"


def test_another_owners_tune_is_not_found_and_nothing_is_written(runtime):
    me = trained(runtime, "alice", "me")
    theirs = trained(runtime, "bob", "theirs")
    for tune_id in (theirs.id, 999):
        with pytest.raises(NotFoundError) as error:
            runtime.studio.create_prompt("alice", me.id, PromptCreate(f"<lora:{tune_id}> {{{{subject}}}}"))
        assert (error.value.kind, error.value.record_id) == ("tune", tune_id)
        assert "bob" not in str(error.value)
    assert nothing_queued(runtime, "alice")


def test_a_tune_of_another_branch_is_refused_naming_the_tag(runtime):
    me = trained(runtime, "alice", "me")
    other = runtime.studio.create_tune("alice", tune_request("tiny one", branch="tiny")).tune  # queued
    tag = f"<lora:{other.id}:0.8>"
    with pytest.raises(ValidationError) as error:
        runtime.studio.create_prompt("alice", me.id, PromptCreate(f"{tag} {{{{subject}}}}"))
    assert error.value.field == "text" and error.value.value == tag and "branch tiny" in str(error.value)
    assert nothing_queued(runtime, "alice")


def test_a_failed_or_cancelled_tune_cannot_be_tagged(runtime):
    me = trained(runtime, "alice", "me")
    gone = runtime.studio.create_tune("alice", tune_request("gone")).tune
    runtime.studio.cancel_tune("alice", gone.id)
    with pytest.raises(ConflictError, match=f"<lora:{gone.id}> names tune {gone.id}, which is cancelled"):
        runtime.studio.create_prompt("alice", me.id, PromptCreate(f"<lora:{gone.id}> {{{{subject}}}}"))
    assert nothing_queued(runtime, "alice")


def test_a_prompt_of_only_tags_is_refused(runtime):
    me = trained(runtime, "alice", "me")
    with pytest.raises(ValidationError, match=r"nothing but <lora:\.\.\.> tags") as error:
        runtime.studio.create_prompt("alice", me.id, PromptCreate(f"<lora:{me.id}:0.5>"))
    assert error.value.field == "text"


def test_tags_in_a_new_tunes_prompts_are_checked_before_the_tune_is_written(runtime):
    other = runtime.studio.create_tune("alice", tune_request("tiny one", branch="tiny")).tune
    prompts = [PromptCreate("{{subject}}"), PromptCreate(f"<lora:{other.id}> {{{{subject}}}}")]
    with pytest.raises(ValidationError) as error:
        runtime.studio.create_tune("alice", tune_request("me", prompts=prompts))
    assert error.value.field == "prompts_attributes[1].text"
    assert [t.title for t in runtime.studio.list_tunes("alice")] == ["tiny one"]


# -- running ---------------------------------------------------------------------------------------


def test_a_prompt_waits_for_a_tagged_tune_that_is_still_training(runtime):
    studio = runtime.studio
    me = trained(runtime, "alice", "me")
    friend = studio.create_tune("alice", tune_request("friend")).tune  # queued
    prompt = studio.create_prompt("alice", me.id, PromptCreate(f"<lora:{friend.id}> {{{{subject}}}}", num_images=1))

    kind, record = queue.claim_next_job(runtime.db)
    assert (kind, record.id) == ("tune", friend.id), "the prompt must not run before its tagged tune is trained"
    runtime.worker.run(kind, record)
    runtime.worker.drain()
    assert studio.get_prompt("alice", prompt.id).status == "done"


def test_a_prompt_whose_tagged_tune_was_deleted_fails_with_the_reason(runtime):
    studio = runtime.studio
    me = trained(runtime, "alice", "me")
    friend = trained(runtime, "alice", "friend")
    prompt = studio.create_prompt("alice", me.id, PromptCreate(f"<lora:{friend.id}> {{{{subject}}}}"))
    studio.delete_tune("alice", friend.id)

    runtime.worker.drain()

    failed = studio.get_prompt("alice", prompt.id)
    assert failed.status == "failed" and failed.images == []
    assert failed.error == f"<lora:{friend.id}> names tune {friend.id}, which is deleted; it has no LoRA to add"


@pytest.mark.usefixtures("no_card_samples")
def test_on_tiny_a_tagged_tune_changes_the_images_and_each_lora_gets_its_weight(runtime, monkeypatch):
    studio = runtime.studio
    me = trained(runtime, "alice", "me", branch="tiny", steps=8, seed=1)
    friend = trained(runtime, "alice", "friend", branch="tiny", steps=8, seed=2)
    assert me.status == friend.status == "trained", (me.error, friend.error)
    seen = []
    generate = runtime.generator.generate
    monkeypatch.setattr(runtime.generator, "generate", lambda *a, **k: seen.append(a[1].loras) or generate(*a, **k))

    texts = ["{{subject}}", f"<lora:{friend.id}:0.8> {{{{subject}}}}", f"{{{{subject}}}}, <lora:{me.id}:0.5>"]
    ids = [studio.create_prompt("alice", me.id, PromptCreate(t, num_images=1, seed=7, steps=4)).id for t in texts]
    runtime.worker.drain()

    prompts = [studio.get_prompt("alice", prompt_id) for prompt_id in ids]
    assert [p.status for p in prompts] == ["done"] * 3, [p.error for p in prompts]
    assert prompts[1].loras == [{"tune_id": friend.id, "weight": 0.8}]
    assert [[(spec.name, spec.weight) for spec in loras] for loras in seen] == [
        [(f"tune-{me.id}", 1.0)],
        [(f"tune-{me.id}", 1.0), (f"tune-{friend.id}", 0.8)],
        [(f"tune-{me.id}", 0.5)],
    ]
    plain, combined, half = (pixels(studio, p) for p in prompts)
    assert np.abs(plain - combined).max() > 1, "adding a second tune must change the image for the same seed"
    assert np.abs(plain - half).max() > 1, "the own tune's weight must change the image"


def pixels(studio, prompt) -> np.ndarray:
    return np.asarray(Image.open(studio.image_file("alice", prompt.images[0].id)), dtype=np.int16)
