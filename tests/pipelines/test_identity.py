"""Face identity on real photos of three real people: Barack Obama and Joe Biden (the test images of the
face_recognition 1.3.0 sdist, MIT licence, unpacked by `make install-dev` into .venv/share/face-photos) and Eileen
Collins (skimage's astronaut)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from PIL import Image
from skimage import data

import pipelines.identity as identity
from pipelines.faces import detect_faces
from pipelines.identity import identity_model, identity_off_reason, image_likeness, most_alike
from pipelines.photos import Photo, check_photo_set, prepare_training_images
from tests.conftest import astronaut_photos

FACE_PHOTOS = Path(sys.prefix) / "share" / "face-photos"


def face_photo(name: str, long_side: int = 512) -> Image.Image:
    path = FACE_PHOTOS / name
    assert path.is_file(), f"{path} is missing: `make install-dev` unpacks the test photos"
    photo = Image.open(path).convert("RGB")
    scale = long_side / max(photo.size)
    return photo.resize((round(photo.width * scale), round(photo.height * scale)))


def embedding_of(image: Image.Image):
    (face,) = identity_model().embed(image, detect_faces(image)[:1])
    return face.embedding


def likeness_between(a: Image.Image, b: Image.Image) -> float:
    return identity.likeness(identity.distance(embedding_of(a), embedding_of(b)))


def photos_of(images: list[Image.Image]) -> list[Photo]:
    return [Photo(i, f"{i + 1}.jpg", image) for i, image in enumerate(images)]


def obamas() -> list[Image.Image]:
    """Six distinct photos of one man: three photos and their mirror images (not near-duplicates)."""
    originals = [face_photo(f"obama{n}.jpg") for n in ("", "2", "3")]
    return originals + [photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for photo in originals]


def side_by_side(left: Image.Image, right: Image.Image, *, left_scale: float = 1.0) -> Image.Image:
    left = left.resize((round(left.width * left_scale), round(left.height * left_scale)))
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    return canvas


def test_the_identity_model_is_installed_here():
    assert identity_off_reason() is None and identity_model() is not None


def test_one_persons_photos_score_high_and_different_people_low_with_a_wide_margin():
    people = {
        "obama": [face_photo("obama.jpg"), face_photo("obama2.jpg"), face_photo("obama3.jpg")],
        "collins": astronaut_photos(),
        "biden": [face_photo("biden.jpg")],
    }
    same = [likeness_between(a, b) for photos in people.values() for a, b in itertools.combinations(photos, 2)]
    different = [
        likeness_between(a, b)
        for (_, first), (_, second) in itertools.combinations(people.items(), 2)
        for a in first
        for b in second
    ]
    # measured: same person 0.63-0.95, different people 0.25-0.32 (README.md, Likeness)
    assert min(same) >= 0.6, same
    assert max(different) <= 0.35, different
    assert min(same) - max(different) >= 0.25


def test_six_photos_of_one_man_and_one_of_another_flag_exactly_that_one():
    photos = photos_of([*obamas()[:3], face_photo("biden.jpg"), *obamas()[3:]])
    checked = check_photo_set(photos, class_name="man")
    flagged = [r.index for r in checked.reports if any(w.code == "other_person" for w in r.warnings)]
    assert flagged == [3]
    biden = checked.reports[3]
    assert not biden.usable and biden.likeness < 0.5
    assert biden.warnings[-1].message.endswith("it will be skipped")
    assert biden.skipped_because.startswith("may show someone else: its face is not the person of the other photos")
    assert all(r.usable and r.likeness >= 0.6 for r in checked.reports if r.index != 3)
    assert checked.subject is not None and checked.subject.people == 1
    assert "references" not in repr(checked.subject), "the embedding never shows in logs"
    training = prepare_training_images(
        photos, checked.reports, resolution=256, token="ohwx", class_name="man", face_crop=False
    )
    assert [image.source for image in training] == [p.name for p in photos if p.index != 3]


def test_in_a_group_photo_the_crops_centre_on_the_subject_not_the_largest_face():
    group = side_by_side(face_photo("biden.jpg"), face_photo("obama.jpg"), left_scale=2.2)  # Biden drawn larger
    photos = photos_of([*obamas()[:4], group])
    biden_width = round(face_photo("biden.jpg").width * 2.2)
    assert detect_faces(group)[0].center[0] < biden_width, "the largest face is Biden's"
    report = check_photo_set(photos, class_name="man").reports[-1]
    assert report.usable and report.faces == 2
    assert report.face_box.center[0] > biden_width, "the subject's face is Obama's"
    assert "centres on the subject's face" in report.warnings[0].message
    checked = check_photo_set(photos, class_name="man")
    images = prepare_training_images(
        photos, checked.reports, resolution=256, token="ohwx", class_name="man", face_crop=True
    )
    face_crop = [image for image in images if image.source == "5.jpg" and image.kind == "face"]
    assert len(face_crop) == 1
    obama_face = embedding_of(face_photo("obama.jpg"))
    assert identity.distance(embedding_of(face_crop[0].image.resize((512, 512))), obama_face) < 0.45


def test_a_couple_is_two_people_and_its_crop_holds_both():
    pairs = [side_by_side(o, b) for o, b in zip(obamas()[:4], [face_photo("biden.jpg")] * 4, strict=True)]
    pairs[1] = side_by_side(face_photo("biden.jpg"), obamas()[1])  # the two swap places
    checked = check_photo_set(photos_of(pairs), class_name="couple")
    assert checked.subject.people == 2
    for report, pair in zip(checked.reports, pairs, strict=True):
        box = report.face_box
        assert box.w > pair.width / 3, "the box spans both faces"
        assert not any(w.code == "other_person" for w in report.warnings)


def test_classes_other_than_people_are_not_identified():
    checked = check_photo_set(photos_of([Image.fromarray(data.chelsea())] * 1), class_name="cat")
    assert checked.subject is None and checked.reports[0].likeness is None


def test_without_dlib_the_check_still_works_and_says_identity_is_off(monkeypatch):
    real_find_spec = identity.importlib.util.find_spec
    monkeypatch.setattr(
        identity.importlib.util, "find_spec", lambda name, *a: None if name == "dlib" else real_find_spec(name, *a)
    )
    identity._models_folder.cache_clear()
    identity.identity_model.cache_clear()
    try:
        photos = photos_of([*obamas()[:3], face_photo("biden.jpg")])
        checked = check_photo_set(photos, class_name="man")
        assert checked.subject is None and "identity checks are off: dlib is not installed" in checked.identity_off
        assert all(r.usable and r.likeness is None for r in checked.reports), "nobody is flagged without the model"
    finally:
        monkeypatch.undo()
        identity._models_folder.cache_clear()
        identity.identity_model.cache_clear()
    assert identity_model() is not None


def test_an_avatar_scores_its_likeness_and_best_of_keeps_the_most_alike():
    photos = photos_of(obamas())
    subject = check_photo_set(photos, class_name="man").subject
    model = identity_model()
    gray = Image.new("RGB", (256, 256), "gray")
    avatars = [face_photo("biden.jpg"), gray, face_photo("obama2.jpg"), astronaut_photos()[1]]
    scores = [image_likeness(model, subject, avatar) for avatar in avatars]
    assert scores[1] is None, "no face, no likeness"
    assert scores[2] >= 0.6 and scores[0] <= 0.35 and scores[3] <= 0.35
    assert most_alike(scores, 1) == [2]
    assert most_alike(scores, 3) == [0, 2, 3], "the faceless image goes first; the kept ones stay in render order"


def test_recent_embeddings_stay_in_memory_ten_minutes_at_most_and_go_at_once_when_asked():
    now = [0.0]
    recent = identity._RecentFaces(kept=2, seconds=identity.RECENT_FACES_S, clock=lambda: now[0])
    for name in ("a", "b", "c"):
        recent.put((name,), name)
    assert recent.get(("a",)) is None and recent.get(("c",)) == "c", "the oldest goes past `kept`"
    now[0] = identity.RECENT_FACES_S + 1
    assert recent.get(("b",)) is None and recent.get(("c",)) is None, "none outlives ten minutes"
    recent.put(("d",), "d")
    recent.clear()
    assert recent.get(("d",)) is None
    photo = face_photo("obama.jpg")
    first = identity_model().embed(photo, detect_faces(photo)[:1])[0].embedding
    again = identity_model().embed(photo, detect_faces(photo)[:1])[0].embedding
    assert again is first, "a photo checked twice is embedded once"
