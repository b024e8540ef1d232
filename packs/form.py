"""A pack as the pack studio's form shows it: title, description, classes, and per class a table of prompts.

Pure conversions, no gradio: pack data (a parsed file or `Pack.to_file_data()`) <-> a `PackForm` of one pandas
frame per class; the row operations the form's buttons run; and where a `PackError` belongs in the form (class,
row, column). Saving still goes through `packs.loader.parse_pack`: the form only rearranges the data.

The table shows the prompt fields the team edits most (`SHOWN`). Every other key a prompt sets (cfg_scale, seed,
best_of, hires_fix...) rides in the row's `more` cell as JSON, so it moves with its row and survives a round trip;
keys left at the spec's default are left out there (the loader reads a missing key as its default).
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from packs.loader import KNOWN_CLASSES, PackError
from pipelines.errors import ValidationError
from pipelines.prompt_spec import FIELDS, default_of

NUMBER = "#"
TEXT, NEGATIVE, IMAGES, ASPECT, STEPS, SCHEDULER, MORE, CHECK = (
    "text",
    "negative prompt",
    "images",
    "aspect",
    "steps",
    "scheduler",
    "more",
    "check",
)
COLUMNS = (NUMBER, TEXT, NEGATIVE, IMAGES, ASPECT, STEPS, SCHEDULER, MORE, CHECK)
EDITABLE = (TEXT, NEGATIVE, IMAGES, ASPECT, STEPS, SCHEDULER, MORE)  # `#` and `check` are the form's own
# prompt key -> its column; `w`/`h` show as "832x1216" in the aspect column
SHOWN = {
    "text": TEXT,
    "negative_prompt": NEGATIVE,
    "num_images": IMAGES,
    "aspect_ratio": ASPECT,
    "w": ASPECT,
    "h": ASPECT,
    "steps": STEPS,
    "scheduler": SCHEDULER,
}
MARK = "⚠ "
MAX_SHOWN_VALUE = 80
_SIZE = re.compile(r"^\s*(\d+)\s*[x×]\s*(\d+)\s*$")
_PROMPT_PATH = re.compile(r"^prompts\.([a-z]+)(?:\[(\d+)\])?(?:\.([a-z_]+))?")


@dataclass
class PackForm:
    """The form's values. `frames` holds a frame for every known class (empty for classes not in `classes`), so
    a class unticked and ticked again gets its rows back until the form is saved."""

    title: str
    description: str
    classes: list[str]
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass(frozen=True)
class FormSpot:
    """Where an error belongs in the form: a pack field (`title`, `classes`...), or a class's table, a row of it
    (0-based, as in `prompts.woman[2]`) and a column (None: the whole row or table)."""

    field: str
    class_name: str | None = None
    row: int | None = None
    column: str | None = None


# -- pack data -> form ----------------------------------------------------------------------------------


def pack_form(data: Mapping[str, Any], *, source: str) -> PackForm:
    """The form of pack data as read from YAML (not yet validated: the form shows what the file says).

    Raises:
        PackError: the data is not shaped like a pack closely enough to show as a form (prompts of a class are not
            a list of mappings); names `source` and the key. Values are never checked here.
    """
    if not isinstance(data, Mapping):
        raise PackError(source, "(top level)", data, "must be a mapping of keys to values to show as a form")
    classes = data.get("classes") or []
    if not isinstance(classes, list):
        raise PackError(source, "classes", classes, "must be a list of classes to show as a form")
    prompts = data.get("prompts") or {}
    if not isinstance(prompts, Mapping):
        raise PackError(source, "prompts", prompts, "must be a mapping of class to prompts to show as a form")
    frames = {name: prompt_frame([]) for name in KNOWN_CLASSES}
    for name, items in prompts.items():
        if name not in frames:
            raise PackError(
                source, f"prompts.{name}", "...", f"is not a known class; known: {', '.join(KNOWN_CLASSES)}"
            )
        if not isinstance(items, list) or not all(isinstance(item, Mapping) for item in items):
            raise PackError(source, f"prompts.{name}", items, "must be a list of prompts to show as a form")
        frames[name] = prompt_frame(items)
    return PackForm(
        title=_as_text(data.get("title")),
        description=_as_text(data.get("description")),
        classes=[str(name) for name in classes],
        frames=frames,
    )


def prompt_frame(items: list[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per prompt: its shown fields, the rest as JSON in `more`, an empty `check`."""
    return renumber(pd.DataFrame([prompt_row(item) for item in items], columns=list(COLUMNS)))


def prompt_row(item: Mapping[str, Any]) -> list[Any]:
    """A prompt's row (without its number, which `renumber` sets)."""
    w, h, ratio = item.get("w"), item.get("h"), item.get("aspect_ratio")
    as_size = w is not None and h is not None and ratio is None
    aspect = f"{w}x{h}" if as_size else _as_text(ratio)
    more = {key: value for key, value in item.items() if key not in SHOWN and not _is_default(key, value)}
    if not as_size:  # a half-given size (an error the loader names) still rides with its row
        more.update({key: item[key] for key in ("w", "h") if item.get(key) is not None})
    return [
        0,
        _as_text(item.get("text")),
        _as_text(item.get("negative_prompt")),
        _cell(item.get("num_images")),
        aspect,
        _cell(item.get("steps")),
        _as_text(item.get("scheduler")),
        json.dumps(more, ensure_ascii=False) if more else "",
        "",
    ]


# -- form -> pack data ----------------------------------------------------------------------------------


def form_data(form: PackForm, base: Mapping[str, Any] | None, *, source: str) -> dict[str, Any]:
    """Pack data: `base` (the pack as its YAML says, for the keys the form does not show: id, cover, preset...)
    with the form's title, description, classes and the prompts of those classes. Blank rows are left out.

    Raises:
        PackError: a `more` cell is not a JSON object, or sets a key that has its own column; names the row.
    """
    data = copy.deepcopy(dict(base)) if isinstance(base, Mapping) else {}
    data.update(title=form.title, description=form.description, classes=list(form.classes))
    data["prompts"] = {
        name: frame_items(form.frames.get(name, prompt_frame([])), class_name=name, source=source)
        for name in form.classes
        if name in KNOWN_CLASSES
    }
    return data


def frame_items(frame: pd.DataFrame, *, class_name: str, source: str) -> list[dict[str, Any]]:
    """The prompts of one class's table, in row order; rows with every cell blank are left out."""
    items = []
    for row in _rows(frame):
        if all(_blank(row.get(column)) for column in EDITABLE):
            continue
        items.append(_item(row, path=f"prompts.{class_name}[{len(items)}]", source=source))
    return items


def _item(row: Mapping[str, Any], *, path: str, source: str) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for key, column in (("text", TEXT), ("negative_prompt", NEGATIVE)):
        if not _blank(row.get(column)):
            item[key] = str(row[column])
    for key, column in (("num_images", IMAGES), ("steps", STEPS)):
        if not _blank(row.get(column)):
            item[key] = _number(row[column])
    aspect = row.get(ASPECT)
    if not _blank(aspect):
        size = _SIZE.match(str(aspect))
        item.update({"w": int(size[1]), "h": int(size[2])} if size else {"aspect_ratio": str(aspect).strip()})
    if not _blank(row.get(SCHEDULER)):
        item["scheduler"] = str(row[SCHEDULER]).strip()
    more = _more(row.get(MORE), path=path, source=source)
    taken = sorted(set(more) & set(SHOWN))
    if taken:
        message = f"sets `{taken[0]}`, which has its own column (or comes from `aspect`); set it there"
        raise PackError(source, f"{path}.{taken[0]}", more[taken[0]], message)
    return {**item, **more}


def _more(cell: object, *, path: str, source: str) -> dict[str, Any]:
    if _blank(cell):
        return {}
    try:
        more = json.loads(str(cell))
    except ValueError:
        more = None
    if not isinstance(more, dict):
        example = '{"cfg_scale": 6.5, "hires_fix": true}'
        raise PackError(source, f"{path}.{MORE}", cell, f"must be a JSON object of more prompt keys, like {example}")
    return more


# -- row operations (the form's buttons) -----------------------------------------------------------------


def add_row(frame: pd.DataFrame, after: int | None) -> tuple[pd.DataFrame, int]:
    """A blank row after row `after` (at the end when None or past the end); returns the frame and its index."""
    rows = _rows(frame)
    at = len(rows) if after is None or not 0 <= after < len(rows) else after + 1
    rows.insert(at, dict.fromkeys(COLUMNS, ""))
    return _frame(rows), at


def remove_row(frame: pd.DataFrame, index: int) -> tuple[pd.DataFrame, int | None]:
    """The frame without row `index`; returns it and the row to select next (None when none is left)."""
    rows = _rows(frame)
    _check_row(index, rows)
    del rows[index]
    return _frame(rows), (min(index, len(rows) - 1) if rows else None)


def move_row(frame: pd.DataFrame, index: int, by: int) -> tuple[pd.DataFrame, int]:
    """Row `index` moved `by` places (-1 up, +1 down), with every cell of it (its `more` too); stops at the ends.
    Returns the frame and the row's new index."""
    rows = _rows(frame)
    _check_row(index, rows)
    to = max(0, min(len(rows) - 1, index + by))
    rows.insert(to, rows.pop(index))
    return _frame(rows), to


def renumber(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows numbered 1, 2, 3... in `#`, as the pack's page numbers them."""
    frame = frame.reset_index(drop=True)
    frame[NUMBER] = list(range(1, len(frame) + 1))
    return frame


def _check_row(index: int, rows: list[dict[str, Any]]) -> None:
    if not 0 <= index < len(rows):
        raise ValidationError("row", index + 1, f"must be a row number between 1 and {len(rows)}; click a row first")


# -- errors in the form --------------------------------------------------------------------------------


def error_spot(path: str) -> FormSpot:
    """Where the key path of a `PackError` (`prompts.woman[2].num_images`) is in the form: the class's table, row
    2, column `images`. Keys without a column of their own (`cfg_scale`) are in `more`; pack keys map to their
    own field (`classes[1]` -> `classes`)."""
    found = _PROMPT_PATH.match(path)
    if found is None:
        return FormSpot(field=re.split(r"[.\[]", path, maxsplit=1)[0])
    name, row, key = found[1], found[2], found[3]
    column = None if key is None else SHOWN.get(key, MORE if key in FIELDS or key == MORE else key)
    return FormSpot(field="prompts", class_name=name, row=None if row is None else int(row), column=column)


def error_banner(error: PackError) -> str:
    """The line the form shows for a refused save: the key path, the value and what is wrong, then the row and
    column it is in, e.g. `prompts.woman[2].num_images: 12 — must be an integer between 1 and 8 (woman row 3,
    column "images")`."""
    spot = error_spot(error.path)
    line = f"{error.path}: {shown_value(error.value)} — {error.message}"
    if spot.class_name is None:
        return line
    where = f"{spot.class_name} row {spot.row + 1}" if spot.row is not None else f"the {spot.class_name} table"
    column = f', column "{spot.column}"' if spot.column else ""
    return f"{line} ({where}{column})"


def mark_error(frames: Mapping[str, pd.DataFrame], error: PackError) -> dict[str, pd.DataFrame]:
    """The frames with every `check` cleared and the error's message in the `check` cell of its row."""
    marked = {name: _with_check(frame) for name, frame in frames.items()}
    spot = error_spot(error.path)
    frame = marked.get(spot.class_name or "")
    if frame is not None and spot.row is not None and spot.row < len(frame):
        column = f"{spot.column}: " if spot.column else ""
        frame.loc[spot.row, CHECK] = f"{MARK}{column}{shown_value(error.value)} — {error.message}"
    return marked


def shown_value(value: object) -> str:
    """A value as the banner quotes it: text in quotes, other values as written, cut at `MAX_SHOWN_VALUE`."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= MAX_SHOWN_VALUE else text[: MAX_SHOWN_VALUE - 1] + "…"


def _with_check(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame[CHECK] = ""
    return frame


# -- cells ---------------------------------------------------------------------------------------------


def _rows(frame: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The frame's rows as dicts of every column (missing columns blank), in order."""
    if frame is None or len(frame) == 0:
        return []
    return [{column: row.get(column, "") for column in COLUMNS} for row in frame.to_dict("records")]


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return renumber(pd.DataFrame(rows, columns=list(COLUMNS)))


def _blank(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _number(value: object) -> object:
    """A number as the table hands it back (8, 8.0 or "8") as the pack writes it; anything else as typed, for the
    validator to name."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text
    return value.item() if hasattr(value, "item") else value  # numpy scalars


def _cell(value: object) -> object:
    return "" if value is None else value


def _as_text(value: object) -> str:
    return "" if value is None else str(value)


def _is_default(key: str, value: object) -> bool:
    """Whether a prompt key left out would read the same (so `more` need not carry it)."""
    if key == "seed":
        return value in (None, "random")
    if key not in FIELDS:
        return False
    default = default_of(key)
    return type(value) is type(default) and value == default
