import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from pipelines.errors import ValidationError
from pipelines.faces import FaceBox, detect_faces

# Where the astronaut's face is in skimage's 512x512 picture (checked by eye).
ASTRONAUT_FACE_CENTER = (224, 114)


def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def assert_on_astronaut_face(box: FaceBox, scale: float = 1.0) -> None:
    cx, cy = box.center
    assert abs(cx - ASTRONAUT_FACE_CENTER[0] * scale) < 25 * scale
    assert abs(cy - ASTRONAUT_FACE_CENTER[1] * scale) < 25 * scale
    assert 70 * scale < box.w < 130 * scale


def test_finds_the_one_face_of_the_astronaut():
    faces = detect_faces(astronaut())

    assert len(faces) == 1
    assert_on_astronaut_face(faces[0])


@pytest.mark.parametrize("side", [64, 256, 1024])
def test_boxes_are_in_the_coordinates_of_the_image_given_at_any_size(side):
    # 64 px: the size of a face crop from a generated image that gets re-painted.
    faces = detect_faces(astronaut().resize((side, side), Image.Resampling.LANCZOS))

    assert len(faces) == 1
    assert_on_astronaut_face(faces[0], scale=side / 512)


def test_finds_no_human_face_on_a_cat_and_no_cat_face_on_a_human():
    assert detect_faces(Image.fromarray(data.chelsea())) == []
    assert detect_faces(astronaut(), kind="cat") == []


def test_finds_both_faces_largest_first():
    canvas = Image.new("RGB", (900, 512), (120, 120, 120))
    canvas.paste(astronaut().resize((320, 320)), (0, 96))
    canvas.paste(astronaut(), (388, 0))

    faces = detect_faces(canvas)

    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].center[0] > 388  # the big astronaut is on the right
    assert faces[1].center[0] < 320


def test_photo_without_faces_gives_an_empty_list():
    plain = Image.fromarray(np.full((300, 400, 3), 180, dtype=np.uint8))

    assert detect_faces(plain) == []


def test_unknown_kind_is_refused_by_name():
    with pytest.raises(ValidationError) as excinfo:
        detect_faces(astronaut(), kind="dog")

    assert excinfo.value.field == "kind"
    assert "human, cat" in str(excinfo.value)


def test_expanded_square_stays_inside_the_image_near_an_edge():
    face = FaceBox(x=5, y=300, w=100, h=100)

    left, top, side = face.expanded_square(2.5, (1000, 400))

    assert side == 250
    assert left == 0 and top == 150  # moved right and up rather than cut off
    assert left + side <= 1000 and top + side <= 400


def test_expanded_square_shrinks_to_fit_a_small_image():
    assert FaceBox(x=40, y=40, w=80, h=80).expanded_square(3.0, (200, 160)) == (0, 0, 160)


def test_expanded_square_refuses_a_non_positive_scale():
    with pytest.raises(ValidationError) as excinfo:
        FaceBox(0, 0, 10, 10).expanded_square(0, (100, 100))

    assert excinfo.value.field == "scale"


def test_importing_loads_no_face_model():
    # The UI must start fast and without OpenCV work; cascades load on the first detection only.
    code = "import sys, pipelines.faces, pipelines.photos; print('cv2' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "False"
