"""Errors as people read them: project errors become messages, shown next to the input that caused them.

`user_errors` turns a `TunesError`, or the server's own storage trouble (`studio.outages`), into a
`gr.Error` (a readable toast, and an error for API clients, never a stack trace).
`FieldErrors` also writes the message under the offending widget's label.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

import gradio as gr

from pipelines.errors import PhotoRejectedError, TunesError, ValidationError
from studio import outages

log = logging.getLogger(__name__)


# What a UI callback shows people: its own errors, and the server's storage trouble (`readable` re-raises the rest).
SHOWN_ERRORS = (TunesError, OSError, sqlite3.OperationalError)


def readable(error: BaseException) -> str:
    """The message people see for a project error or a storage outage; anything else is a bug and re-raised."""
    if isinstance(error, TunesError):
        return str(error)
    found = outages.describe(error)
    if found is None:
        raise error
    log.error("%s: %s", found.message, error)
    return found.message[:1].upper() + found.message[1:] + "."


def user_errors(call: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a UI or API callback so project errors reach the user as their message."""

    @functools.wraps(call)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except SHOWN_ERRORS as error:
            raise gr.Error(readable(error), duration=None) from None

    return wrapped


def error_field(error: TunesError) -> str | None:
    """The request field an error is about (`images` for rejected photos), or None."""
    if isinstance(error, PhotoRejectedError):
        return "images"
    if isinstance(error, ValidationError):
        return error.field.split("[")[0].split(".")[0]
    return None


class FieldErrors:
    """Inline errors for one form: a banner under the submit button and the message under the field's label.

    Args:
        banner: a `gr.Markdown` near the submit button.
        fields: request field name -> the widget that sets it.
    """

    def __init__(self, banner: gr.Markdown, fields: Mapping[str, gr.components.Component]):
        self.banner = banner
        self.fields = dict(fields)
        self._info = {name: getattr(widget, "info", None) for name, widget in self.fields.items()}
        # a file box has no info line: updating one with `info` fails the whole event
        self._has_info = {name: "info" in inspect.signature(type(w)).parameters for name, w in self.fields.items()}

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [self.banner, *self.fields.values()]

    def clear(self) -> dict[gr.components.Component, Any]:
        updates: dict[gr.components.Component, Any] = {self.banner: gr.update(value="", visible=False)}
        for name, widget in self.fields.items():
            info = {"info": self._info[name]} if self._has_info[name] else {}
            updates[widget] = gr.update(**info, elem_classes=[])
        return updates

    def show(self, error: BaseException) -> dict[gr.components.Component, Any]:
        """Updates that show `error` (one of `SHOWN_ERRORS`); the field it names, if on this form, gets it too."""
        message = readable(error)
        updates = self.clear()
        updates[self.banner] = gr.update(value=f"**Could not do that.** {message}", visible=True)
        name = error_field(error) if isinstance(error, TunesError) else None
        if name in self.fields:
            info = {"info": f"⚠ {message}"} if self._has_info[name] else {}  # else the banner says it
            updates[self.fields[name]] = gr.update(**info, elem_classes=["field-error"])
        return updates


CSS = """
.field-error { border-color: var(--error-border-color, #ef4444) !important; }
.field-error .info, .field-error [data-testid="block-info"] + div { color: var(--error-text-color, #b91c1c); }
.error-banner { color: var(--error-text-color, #b91c1c); }
.pack-card .caption-label { white-space: normal !important; max-width: calc(100% - 8px) !important; }
"""
