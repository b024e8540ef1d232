"""Every shipped pack loads; each kind of bad pack file is refused naming the file, the key and the value."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from packs.loader import LIBRARY_DIR, PackError, load_library, load_pack_file

GOOD = {
    "id": "test-pack",
    "title": "Test pack",
    "description": "Two prompts for checking the loader.",
    "classes": ["man", "woman"],
    "default_branch": "sdxl1",
    "preset": {"steps": 500, "face_crop": True},
    "prompts": {
        "man": [{"text": "photo of {{subject}}, {{characteristics}}", "num_images": 2, "aspect_ratio": "4:5"}],
        "woman": [{"text": "portrait of {{subject}}", "w": 832, "h": 1216, "seed": 7, "scheduler": "euler_a"}],
    },
}


def write(tmp_path, data, name="test-pack.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if name.endswith(".yaml") else json.dumps(data))
    return path


def test_every_shipped_pack_loads_with_prompts_for_each_of_its_classes():
    packs = load_library(LIBRARY_DIR)
    assert len(packs) >= 8
    for pack in packs.values():
        for class_name in pack.classes:
            assert pack.prompts[class_name], f"{pack.id}: no prompts for {class_name}"
            assert 1 <= pack.images_for(class_name) <= 64, f"{pack.id}/{class_name}: {pack.images_for(class_name)}"
    people = [p for p in packs.values() if set(p.classes) & {"man", "woman"}]
    assert all(40 <= p.images_for("man" if "man" in p.classes else "woman") <= 64 for p in people)
    assert any("cat" in p.classes and "dog" in p.classes for p in packs.values())


def test_a_good_file_loads_as_yaml_and_as_json(tmp_path):
    pack = load_pack_file(write(tmp_path, GOOD))
    assert pack.classes == ("man", "woman") and pack.preset_steps == 500
    assert pack.images_for("man") == 2 and pack.prompts["woman"][0].seed == 7
    assert pack.prompts["man"][0].size_for(1024) == (912, 1144)
    assert pack.prompts["woman"][0].size_for(1024) == (832, 1216)
    assert load_pack_file(write(tmp_path, GOOD, "test-pack.json")) == pack


def broken(change):
    data = copy.deepcopy(GOOD)
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        (lambda d: d.update(colour="red"), "colour", "not a known key"),
        (lambda d: d["prompts"]["man"][0].update(strength=2), "prompts.man[0].strength", "not a known key"),
        (lambda d: d.pop("title"), "title", "is required"),
        (lambda d: d["prompts"]["man"][0].pop("text"), "prompts.man[0].text", "is required"),
        (lambda d: d["prompts"].pop("woman"), "prompts.woman", "every class"),
        (lambda d: d["classes"].append("unicorn"), "classes[2]", "must be one of"),
        (lambda d: d.update(default_branch="sd9"), "default_branch", "must be one of"),
        (lambda d: d["prompts"]["man"][0].update(num_images=12), "prompts.man[0].num_images", "between 1 and 8"),
        (lambda d: d["prompts"]["man"][0].update(cfg_scale="high"), "prompts.man[0].cfg_scale", "a number"),
        (lambda d: d["prompts"]["man"][0].update(scheduler="k_fancy"), "prompts.man[0].scheduler", "one of"),
        (lambda d: d["prompts"]["man"][0].update(aspect_ratio="7:3"), "prompts.man[0].aspect_ratio", "one of"),
        (lambda d: d["prompts"]["woman"][0].update(w=830), "prompts.woman[0].w", "multiple of 8"),
        (lambda d: d["prompts"]["man"][0].update(w=512, h=512), "prompts.man[0].aspect_ratio", "cannot be combined"),
        (lambda d: d["prompts"]["man"][0].update(seed=-3), "prompts.man[0].seed", "between 0"),
        (lambda d: d["prompts"]["man"][0].update(inpaint_faces="yes"), "prompts.man[0].inpaint_faces", "true or false"),
        (
            lambda d: d["prompts"]["man"][0].update(text="{{subject}} with {{hat_colour}} hat"),
            "prompts.man[0].text",
            "placeholder no class can fill",
        ),
        (lambda d: d["prompts"]["man"][0].update(text="a castle at dusk"), "prompts.man[0].text", "{{subject}}"),
        (lambda d: d.update(id="Test Pack"), "id", "lowercase"),
        (lambda d: d.update(cover="missing.png"), "cover", "image file"),
        (
            lambda d: d.update(default_branch="flux1"),
            "prompts.woman[0].scheduler",
            "must be one of flow_match_euler on flux models (the pack's default_branch is flux1)",
        ),
        (
            lambda d: d["prompts"]["man"][0].update(scheduler="flow_match_euler"),
            "prompts.man[0].scheduler",
            "must be one of euler, euler_a",
        ),
    ],
)
def test_each_kind_of_bad_file_names_the_file_the_key_and_the_value(tmp_path, change, path, words):
    with pytest.raises(PackError) as error:
        load_pack_file(write(tmp_path, broken(change)))
    message = str(error.value)
    assert message.startswith(f"`test-pack.yaml: {path}`"), message
    assert words in message


def test_unparseable_yaml_and_a_mismatched_file_name_are_named(tmp_path):
    bad = tmp_path / "test-pack.yaml"
    bad.write_text("id: [unclosed")
    with pytest.raises(PackError, match=r"test-pack\.yaml: \(file\)"):
        load_pack_file(bad)
    with pytest.raises(PackError, match="must equal the file name"):
        load_pack_file(write(tmp_path, GOOD, "other-name.yaml"))


def test_a_pack_can_be_made_for_flux_leaving_the_sampler_to_the_model(tmp_path):
    data = broken(lambda d: d.update(default_branch="flux1"))
    data["prompts"]["woman"][0].pop("scheduler")
    data["prompts"]["man"][0]["scheduler"] = "flow_match_euler"
    pack = load_pack_file(write(tmp_path, data))
    assert pack.default_branch == "flux1"
    assert [pack.prompts[name][0].scheduler for name in ("man", "woman")] == ["flow_match_euler", None]
    demo = broken(lambda d: d.update(default_branch="tiny-flux"))
    demo["prompts"]["woman"][0].pop("scheduler")
    assert load_pack_file(write(tmp_path, demo)).default_branch == "tiny-flux"
