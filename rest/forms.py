"""Rails-style bracketed form fields (`tune[prompts_attributes][][text]`) into nested dicts and lists.

Astria clients send multipart and url-encoded bodies this way; JSON bodies arrive already nested. The rules
follow Rack's `normalize_params`: `a[b]` is a key of `a`, `a[]` appends to a list, and `a[][b]` appends
dicts to a list, starting a new dict whenever the last one already has `b`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pipelines.errors import ValidationError

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
MAX_DEPTH = 6


def split_key(key: str) -> list[str]:
    """`tune[prompts_attributes][][text]` -> ["tune", "prompts_attributes", "", "text"].

    Raises:
        ValidationError: unbalanced brackets or nesting deeper than `MAX_DEPTH`.
    """
    match = _KEY.match(key)
    if match is None:
        raise ValidationError(key, key, "is not a valid field name (use name[key] or name[] brackets)")
    parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
    if len(parts) > MAX_DEPTH:
        raise ValidationError(key, key, f"nests deeper than {MAX_DEPTH} levels")
    return parts


def nest_fields(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Build one nested dict from (bracketed key, value) pairs, in order.

    Raises:
        ValidationError: a key used both as a value and as a container, named by the key.
    """
    params: dict[str, Any] = {}
    for key, value in pairs:
        _place(params, split_key(key), value, key)
    return params


def _place(params: dict[str, Any], parts: list[str], value: Any, key: str) -> None:
    head, rest = parts[0], parts[1:]
    if not rest:
        params[head] = value
        return
    if rest == [""]:
        items = params.setdefault(head, [])
        _expect(items, list, key).append(value)
        return
    if rest[0] == "":
        items = _expect(params.setdefault(head, []), list, key)
        child = rest[1:]
        if items and isinstance(items[-1], dict) and not _has(items[-1], child):
            _place(items[-1], child, value, key)
        else:
            fresh: dict[str, Any] = {}
            _place(fresh, child, value, key)
            items.append(fresh)
        return
    _place(_expect(params.setdefault(head, {}), dict, key), rest, value, key)


def _has(params: dict[str, Any], parts: list[str]) -> bool:
    """Whether the path (up to its first list step) is already set, so the next value starts a new dict."""
    node: Any = params
    for part in parts:
        if part == "" or not isinstance(node, dict):
            return isinstance(node, dict) and bool(node)
        if part not in node:
            return False
        node = node[part]
    return True


def _expect(node: Any, kind: type, key: str) -> Any:
    if not isinstance(node, kind):
        raise ValidationError(key, key, "mixes a single value with nested fields of the same name")
    return node
