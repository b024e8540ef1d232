"""Pack files: load and validate them against the schema in `packs/SCHEMA.md`.

Prompts are rendered for a tune by `pipelines.prompts.render_prompt`, like every other prompt.

Every refusal names the file, the path to the key (`prompts.man[2].num_images`) and the value, so the
creative team can fix a pack without reading code. Unknown keys are errors, never ignored.
"""

from __future__ import annotations

import functools
import json
import re
import reprlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import ValidationError
from pipelines.prompt_spec import FIELDS, MAX_SIDE, PromptOptions, sampling_for
from pipelines.registry import BRANCHES

LIBRARY_DIR = Path(__file__).resolve().parent / "library"
COVERS_DIR = LIBRARY_DIR / "covers"  # cover and sample images; the shipped covers are placeholders
COVERS_FOLDER = "covers"  # a pack folder's images: `packs/library/covers/`, the team's `<data>/packs/covers/`
MAX_SAMPLES = 12
# Caps that keep a pack small enough for every `GET /packs` and every editor (the shipped packs are 6-23 KB,
# with 8-10 prompts per class): a 3 MB pack with 100k prompts was once accepted and served on every request.
MAX_PACK_BYTES = 256 * 1024  # one pack file, as written (YAML or JSON)
MAX_PROMPTS_PER_CLASS = 50  # at most 8 images each: 400 images for one tune
MAX_YAML_NODES = 100_000  # values once YAML aliases are expanded; a full-size pack has ~15k
MAX_ID_CHARS = 60
MAX_TITLE_CHARS = 80
MAX_DESCRIPTION_CHARS = 600
MAX_PROMPT_CHARS = 2000  # `text` and `negative_prompt` each
MIN_PACK_SIDE = 256  # a pack prompt's w/h: smaller avatars are not worth a pack slot
MAX_SHOWN_CHARS = 200  # of a value quoted in an error
KNOWN_CLASSES = ("man", "woman", "boy", "girl", "person", "couple", "baby", "cat", "dog")
PLACEHOLDERS = frozenset({"subject", "token", "class", "characteristics"})
_KNOWN_PLACEHOLDERS = ", ".join("{{" + name + "}}" for name in sorted(PLACEHOLDERS))
_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_PLACEHOLDER = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")
_PACK_KEYS = {
    "id",
    "title",
    "description",
    "cover",
    "classes",
    "default_branch",
    "preset",
    "published",
    "prompts",
    "samples",
}
_PROMPT_KEYS = set(FIELDS)  # every field of the prompt spec; `callback` is per request, not per pack


class PackError(ValidationError):
    """A pack file (or edit) breaks the schema. `field` is "file: path.to.key"; the message quotes the value
    cut short, so even a value of billions of items (a YAML alias bomb) is named at once."""

    def __init__(self, source: str, path: str, value: object, message: str):
        self.source = source
        self.path = path
        super().__init__(f"{source}: {path}", _Shown(value), message)
        self.value = value


class _Shown:
    """A value as an error quotes it: a bounded repr (a few items per level, a few levels) cut with "…"."""

    _repr = reprlib.Repr()
    _repr.maxlevel, _repr.maxstring, _repr.maxother = 3, MAX_SHOWN_CHARS, MAX_SHOWN_CHARS

    def __init__(self, value: object):
        text = self._repr.repr(value)
        self.text = text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 1] + "…"

    def __repr__(self) -> str:
        return self.text


def check_pack_id(value: object, *, field: str = "pack_id") -> str:
    """A pack id as every path that takes one needs it: a slug, never a path (`../../x`) or a file name.

    Raises:
        ValidationError: `value` is not lowercase letters, digits and single hyphens of at most 60 characters.
    """
    if not isinstance(value, str) or len(value) > MAX_ID_CHARS or not _ID.fullmatch(value):
        message = f"must be a pack id: lowercase letters, digits and single hyphens, at most {MAX_ID_CHARS} characters"
        raise ValidationError(field, value, f"{message} (like `corporate-headshots`)")
    return value


@dataclass(frozen=True, kw_only=True)
class PackPrompt(PromptOptions):
    """A prompt template of a pack: the spec's fields (`pipelines.prompt_spec`); `seed` None draws one per run."""


@dataclass(frozen=True)
class Pack:
    id: str
    title: str
    description: str
    cover: str | None
    classes: tuple[str, ...]
    default_branch: str
    preset_steps: int | None
    preset_face_crop: bool
    published: bool
    prompts: dict[str, tuple[PackPrompt, ...]]
    samples: tuple[str, ...] = ()  # image files in a covers folder showing what the pack produces

    def images_for(self, class_name: str) -> int:
        """How many images the pack produces for one class (its cost)."""
        return sum(prompt.images_rendered for prompt in self.prompts.get(class_name, ()))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["images_per_class"] = {name: self.images_for(name) for name in self.classes}
        return data

    def to_file_data(self) -> dict[str, Any]:
        """The pack as its file says it (for saving edits)."""
        preset: dict[str, Any] = {"face_crop": self.preset_face_crop}
        if self.preset_steps is not None:
            preset["steps"] = self.preset_steps
        prompts = {
            name: [{k: v for k, v in asdict(p).items() if v is not None} for p in items]
            for name, items in self.prompts.items()
        }
        for items in prompts.values():
            for item in items:
                item.setdefault("seed", "random")
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "cover": self.cover,
            "classes": list(self.classes),
            "default_branch": self.default_branch,
            "preset": preset,
            "published": self.published,
            "prompts": prompts,
            **({"samples": list(self.samples)} if self.samples else {}),
        }


def cover_dirs(*folders: Path) -> tuple[Path, ...]:
    """Where the images that packs in `folders` name are looked up, first match wins: each folder's `covers/`
    (a later folder's first, as its packs override), then the shipped covers (a team copy keeps its cover)."""
    found: list[Path] = []
    for folder in [*(Path(f) / COVERS_FOLDER for f in reversed(folders)), COVERS_DIR]:
        if folder not in found:
            found.append(folder)
    return tuple(found)


def find_image(name: str, dirs: tuple[Path, ...] | None = None) -> Path | None:
    """The file of a cover or sample image named in a pack: the first of `dirs` (default: the shipped covers)
    that has it; None when none has or `name` is not a plain file name."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        return None
    for folder in dirs or (COVERS_DIR,):
        if (folder / name).is_file():
            return folder / name
    return None


def load_pack_file(path: Path, *, covers: tuple[Path, ...] | None = None) -> Pack:
    """Read and validate one pack file (YAML or JSON); `covers` are the folders its images may be in (default:
    the shipped covers).

    Raises:
        PackError: the file cannot be parsed or breaks the schema; names the file, key and value.
    """
    path = Path(path)
    source = path.name
    try:
        check_pack_size(path.stat().st_size, source=source)
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PackError(source, "(file)", str(path.name), f"cannot be read: {error}") from None
    pack = _parse_file_text(text, source=source, is_json=path.suffix == ".json", covers=covers)
    if pack.id != path.stem:
        raise PackError(source, "id", pack.id, f"must equal the file name ({path.stem!r})")
    return pack


@functools.lru_cache(maxsize=256)
def _parse_file_text(text: str, *, source: str, is_json: bool, covers: tuple[Path, ...] | None) -> Pack:
    """One pack file's text, parsed and checked. Every studio opened reads the whole library and the parse is
    most of the cost (~20 ms a file), so a file's pack is kept by its exact text: an edited file parses again,
    and a file that fails is not remembered. Packs are frozen and never changed by their readers."""
    if not is_json:
        return parse_pack(read_pack_text(text, source=source), source=source, covers=covers)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise PackError(source, "(file)", source, f"cannot be read as YAML/JSON: {error}") from None
    return parse_pack(data, source=source, covers=covers)


def read_pack_text(text: str, *, source: str) -> object:
    """Parse pack text as the team writes it (YAML, or JSON, which YAML reads too); `parse_pack` checks it.

    Raises:
        PackError: the text is over `MAX_PACK_BYTES`, is not YAML/JSON (names the parser's line and column), or
            its aliases expand past `MAX_YAML_NODES` values (a "billion laughs" bomb); names `source`.
    """
    import yaml

    check_pack_size(len(text.encode("utf-8", "replace")), source=source)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source=source)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise _unreadable(error, text, source=source) from None
    except RecursionError:
        raise PackError(source, "(file)", source, "nests too deeply to be a pack; see packs/SCHEMA.md") from None
    finally:
        loader.dispose()


def check_pack_size(size: int, *, source: str) -> None:
    """Raises PackError when a pack file of `size` bytes is over `MAX_PACK_BYTES`."""
    if size > MAX_PACK_BYTES:
        limit = f"the {MAX_PACK_BYTES} byte ({MAX_PACK_BYTES // 1024} KB) limit for a pack file"
        raise PackError(source, "(file)", f"{size} bytes", f"is larger than {limit}; split it into smaller packs")


def _check_expansion(root: object, *, source: str) -> None:
    """Refuse YAML whose anchors and aliases expand past `MAX_YAML_NODES` values. The walk stops at the
    limit, so a bomb (or an alias cycle) costs at most that many steps, never its expanded size."""
    import yaml

    stack, seen = [root], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_YAML_NODES:
            message = (
                f"has more than {MAX_YAML_NODES} values once its YAML aliases (*name) are expanded; "
                "write the values out instead of nesting anchors and aliases"
            )
            raise PackError(source, "(file)", f"over {MAX_YAML_NODES} values", message)
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)


def _unreadable(error: Exception, text: str, *, source: str) -> PackError:
    """The parser's reason, with the line and column it stopped at (and that line) when it knows them."""
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        reason = str(error).replace("\n", " ")
        return PackError(source, "(file)", source, f"cannot be read as YAML/JSON: {reason}")
    lines = text.splitlines()
    line = lines[mark.line].strip() if mark.line < len(lines) else ""
    problem = getattr(error, "problem", None) or "syntax error"
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    return PackError(source, "(file)", line, f"cannot be read as YAML/JSON: {problem} at {where}")


def load_library(*folders: Path) -> dict[str, Pack]:
    """All packs in the folders (default: the shipped library), by id; a later folder overrides. Images are
    looked up in every folder's `covers/` (`cover_dirs`)."""
    packs: dict[str, Pack] = {}
    folders = folders or (LIBRARY_DIR,)
    covers = cover_dirs(*folders)
    for folder in folders:
        for path in sorted(Path(folder).glob("*.yaml")) + sorted(Path(folder).glob("*.json")):
            pack = load_pack_file(path, covers=covers)
            packs[pack.id] = pack
    return packs


def parse_pack(data: object, *, source: str, covers: tuple[Path, ...] | None = None) -> Pack:
    """Validate pack data (a parsed file or an edit) and build a `Pack`; `cover` and `samples` must name image
    files in one of the `covers` folders (default: the shipped covers, `packs/library/covers/`).

    Raises:
        PackError: the first problem found, naming `source`, the key path and the value.
    """
    obj = _mapping(source, "(top level)", data, _PACK_KEYS, required={"id", "title", "description", "classes"})
    for key in ("default_branch", "prompts"):
        if key not in obj:
            raise PackError(source, key, None, "is required")
    pack_id = _text(source, "id", obj["id"], MAX_ID_CHARS)
    if not _ID.fullmatch(pack_id):
        raise PackError(source, "id", pack_id, "must be lowercase letters, digits and single hyphens")
    classes = obj["classes"]
    if not isinstance(classes, list) or not classes:
        raise PackError(source, "classes", classes, "must be a non-empty list of classes")
    for i, name in enumerate(classes):
        if name not in KNOWN_CLASSES:
            raise PackError(source, f"classes[{i}]", name, f"must be one of {', '.join(KNOWN_CLASSES)}")
    if len(set(classes)) != len(classes):
        raise PackError(source, "classes", classes, "must not repeat a class")
    branch = obj["default_branch"]
    if branch not in BRANCHES:
        raise PackError(source, "default_branch", branch, f"must be one of {', '.join(BRANCHES)}")
    preset = _mapping(source, "preset", obj.get("preset") or {}, {"steps", "face_crop"}, required=set())
    steps = preset.get("steps")
    if steps is not None:
        _int(source, "preset.steps", steps, 1, 20_000)
    cover = obj.get("cover")
    if cover is not None:
        _image_file(source, "cover", cover, covers)
    samples = obj.get("samples") or []
    if not isinstance(samples, list) or len(samples) > MAX_SAMPLES:
        raise PackError(source, "samples", samples, f"must be a list of at most {MAX_SAMPLES} image file names")
    for i, name in enumerate(samples):
        _image_file(source, f"samples[{i}]", name, covers)
    prompts = _mapping(source, "prompts", obj["prompts"], set(KNOWN_CLASSES), required=set())
    missing = [name for name in classes if name not in prompts]
    if missing:
        raise PackError(source, f"prompts.{missing[0]}", None, "is required: every class in `classes` needs prompts")
    extra = [name for name in prompts if name not in classes]
    if extra:
        raise PackError(source, f"prompts.{extra[0]}", "...", "is not in `classes`; add the class or remove these")
    parsed = {name: tuple(_prompts(source, f"prompts.{name}", prompts[name])) for name in classes}
    _check_samplers(source, parsed, branch)
    return Pack(
        id=pack_id,
        title=_text(source, "title", obj["title"], MAX_TITLE_CHARS),
        description=_text(source, "description", obj["description"], MAX_DESCRIPTION_CHARS),
        cover=cover,
        classes=tuple(classes),
        default_branch=branch,
        preset_steps=steps,
        preset_face_crop=_bool(source, "preset.face_crop", preset.get("face_crop", True)),
        published=_bool(source, "published", obj.get("published", False)),
        prompts=parsed,
        samples=tuple(samples),
    )


# -- validation helpers ----------------------------------------------------------------------------


def _mapping(source: str, path: str, value: object, allowed: set[str], *, required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PackError(source, path, value, "must be a mapping of keys to values")
    for key in value:
        if key not in allowed:
            where = key if path == "(top level)" else f"{path}.{key}"
            raise PackError(source, where, value[key], f"is not a known key; known: {', '.join(sorted(allowed))}")
    for key in sorted(required):
        if key not in value:
            raise PackError(source, key if path == "(top level)" else f"{path}.{key}", None, "is required")
    return value


def _text(source: str, path: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise PackError(source, path, value, f"must be non-empty text of at most {limit} characters")
    return value.strip()


def _image_file(source: str, path: str, value: object, covers: tuple[Path, ...] | None) -> str:
    name = _text(source, path, value, 200)
    if find_image(name, covers) is None:
        where = f"packs/{COVERS_DIR.parent.name}/{COVERS_DIR.name}/"
        team = " or the team's covers (upload one in the pack studio)" if covers and len(covers) > 1 else ""
        raise PackError(source, path, value, f"must be the name of an image file in {where}{team}")
    return name


def _int(source: str, path: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PackError(source, path, value, f"must be an integer between {low} and {high}")
    return value


def _bool(source: str, path: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise PackError(source, path, value, "must be true or false")
    return value


def _check_samplers(source: str, prompts: dict[str, tuple[PackPrompt, ...]], branch: str) -> None:
    """Every `scheduler` a prompt names must run on the pack's default branch (FLUX runs only its own)."""
    family = BRANCHES[branch].family
    for name, items in prompts.items():
        for index, item in enumerate(items):
            path = f"prompts.{name}[{index}].scheduler"
            try:
                sampling_for(family, item.scheduler, item.cfg_scale, field=path)
            except ValidationError as error:
                message = f"{error.message} (the pack's default_branch is {branch}); leave it out for the model's own"
                raise PackError(source, path, item.scheduler, message) from None


def _prompts(source: str, path: str, items: object) -> list[PackPrompt]:
    if not isinstance(items, list) or not items:
        raise PackError(source, path, items, "must be a non-empty list of prompts")
    if len(items) > MAX_PROMPTS_PER_CLASS:
        message = f"must be a list of at most {MAX_PROMPTS_PER_CLASS} prompts per class; split the pack in two"
        raise PackError(source, path, f"{len(items)} prompts", message)
    return [_prompt(source, f"{path}[{i}]", item) for i, item in enumerate(items)]


def _prompt(source: str, path: str, item: object) -> PackPrompt:
    obj = _mapping(source, path, item, _PROMPT_KEYS, required={"text"})
    text = _text(source, f"{path}.text", obj["text"], MAX_PROMPT_CHARS)
    negative = obj.get("negative_prompt", "")
    if not isinstance(negative, str) or len(negative) > MAX_PROMPT_CHARS:
        message = f"must be text of at most {MAX_PROMPT_CHARS} characters"
        raise PackError(source, f"{path}.negative_prompt", negative, message)
    for key, template in (("text", text), ("negative_prompt", negative)):
        for name in _PLACEHOLDER.findall(template):
            if name not in PLACEHOLDERS:
                raise PackError(
                    source,
                    f"{path}.{key}",
                    "{{" + name + "}}",
                    f"is a placeholder no class can fill; use {_KNOWN_PLACEHOLDERS}",
                )
    if not re.search(r"\{\{\s*(subject|token)\s*\}\}", text):
        raise PackError(source, f"{path}.text", text, "must name the subject with {{subject}} or {{token}}")
    ratio, w, h = obj.get("aspect_ratio"), obj.get("w"), obj.get("h")
    if ratio is not None and (w is not None or h is not None):
        raise PackError(source, f"{path}.aspect_ratio", ratio, "cannot be combined with w/h; use one of them")
    if (w is None) != (h is None):
        raise PackError(source, f"{path}.{'h' if h is None else 'w'}", None, "is required together with the other side")
    for key, side in (("w", w), ("h", h)):
        if side is not None:
            _int(source, f"{path}.{key}", side, MIN_PACK_SIDE, MAX_SIDE)
    values = {**obj, "text": text, "negative_prompt": negative.strip()}
    if values.get("seed") == "random":
        values["seed"] = None
    try:
        return PackPrompt(**values)
    except ValidationError as error:  # the spec's checks, named by their place in the pack
        raise PackError(source, f"{path}.{error.field}", error.value, error.message) from None
