"""The photo report as a table: every upload in its place, real headers even when empty."""

from __future__ import annotations

from pipelines.errors import PhotoProblem
from ui.views import PHOTO_REPORT_HEADERS, PHOTO_REPORT_WIDTHS, photo_report_table


def report(index: int, name: str, *, usable: bool = True, warnings: tuple[str, ...] = ()) -> dict:
    return {
        "index": index,
        "name": name,
        "width": 512,
        "height": 512,
        "faces": 1,
        "sharpness": 914.4,
        "usable": usable,
        "warnings": [{"code": "duplicate", "message": message} for message in warnings],
    }


def test_an_empty_report_has_the_real_headers():
    table = photo_report_table([])

    assert list(table.columns) == PHOTO_REPORT_HEADERS
    assert PHOTO_REPORT_HEADERS == ["photo", "size", "faces", "likeness", "sharpness", "used", "advice"]
    assert len(PHOTO_REPORT_WIDTHS) == len(PHOTO_REPORT_HEADERS) and table.empty


def test_a_refused_file_is_marked_in_its_place_among_the_checked_photos():
    skipped = "is nearly the same as photo 1 ('a.jpg'); it will be skipped"
    refused = PhotoProblem(index=1, name="notes.jpg", code="not_image", message="is not an image (a text file?)")

    table = photo_report_table([report(0, "a.jpg"), report(2, "b.jpg", usable=False, warnings=(skipped,))], [refused])

    assert table["photo"].tolist() == ["a.jpg", "notes.jpg", "b.jpg"]
    assert table["used"].tolist() == ["yes", "no", "no"]
    assert table["advice"].tolist() == ["looks good", "refused: is not an image (a text file?)", skipped]
    assert table.iloc[1][["size", "faces", "likeness", "sharpness"]].tolist() == ["-", "-", "-", "-"]
