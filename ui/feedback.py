"""Errors as people read them: project errors become messages, shown next to the input that caused them.

`user_errors` turns a `TunesError`, or the server's own storage trouble (`studio.outages`), into a
`gr.Error` (a readable toast that fades, and an error for API clients, never a stack trace).
`FieldErrors` writes the message in a banner by the form's button and under the offending widget's label, and
takes it away once that widget changes.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any, Literal

import gradio as gr

from pipelines.errors import PhotoRejectedError, TunesError, ValidationError
from studio import outages

log = logging.getLogger(__name__)

# Toasts fade: they float above every tab, so one that stays follows people to pages it is not about.
INFO_TOAST_S = 4.0
ERROR_TOAST_S = 10.0


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


def refusal(message: str) -> gr.Error:
    """The `gr.Error` a refused action raises, logged in one line: Gradio would print a full traceback for an
    ordinary mistake (a blank prompt), which buries the server's real trouble in the log."""
    log.warning("refused: %s", message)
    return gr.Error(message, duration=ERROR_TOAST_S, print_exception=False)


def notify(message: str) -> None:
    """A short note that an action worked (a toast that fades after `INFO_TOAST_S`)."""
    gr.Info(message, duration=INFO_TOAST_S)


def labelled(error: BaseException, label: str | None) -> str:
    """`readable(error)` with the widget's label for the request field it names ("Prompt must be a non-empty
    prompt", not "`text` must be ..."): people know the form by its labels. Other fields keep their name."""
    message = readable(error)
    field = f"`{error.field}`" if isinstance(error, ValidationError) else None
    if label and field and message.startswith(field):
        return label + message[len(field) :]
    return message


def user_errors(call: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a UI or API callback so project errors reach the user as their message."""

    @functools.wraps(call)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except SHOWN_ERRORS as error:
            raise refusal(readable(error)) from None

    return wrapped


def optional_int(value: str | float | None, field: str) -> int | None:
    """A whole number typed in a text box (Gradio's number box shows 0 when empty): empty is None, not 0.

    Raises:
        ValidationError: anything but digits (with an optional minus sign), naming `field` and what was typed.
    """
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValidationError(field, text, "must be a whole number") from None


def required_int(value: str | float | None, field: str, *, where: str) -> int:
    """`optional_int` for a box that must be filled; `where` tells people where to find a value.

    Raises:
        ValidationError: the box is empty, or holds anything but a whole number.
    """
    number = optional_int(value, field)
    if number is None:
        raise ValidationError(field, None, f"is empty: type {where}")
    return number


def error_field(error: TunesError) -> str | None:
    """The request field an error is about (`images` for rejected photos), or None."""
    if isinstance(error, PhotoRejectedError):
        return "images"
    if isinstance(error, ValidationError):
        return error.field.split("[")[0].split(".")[0]
    return None


NO_FIELD = ""  # `FieldErrors.shown` for an error about no field of the form


class FieldErrors:
    """Inline errors for one form: a banner under the submit button and the message under the field's label.

    Build it inside the form's Blocks: it adds a `gr.State` remembering which field the shown error is about.

    Args:
        banner: a `gr.Markdown` near the submit button.
        fields: request field name -> the widget that sets it.
    """

    def __init__(self, banner: gr.Markdown, fields: Mapping[str, gr.components.Component]):
        self.banner = banner
        self.fields = dict(fields)
        # the field the banner is about: None when no error is shown, NO_FIELD when it names none on this form
        self.shown = gr.State(None)
        self._info = {name: getattr(widget, "info", None) for name, widget in self.fields.items()}
        # a file box has no info line: updating one with `info` fails the whole event
        self._has_info = {name: "info" in inspect.signature(type(w)).parameters for name, w in self.fields.items()}

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [self.banner, *self.fields.values(), self.shown]

    def clear(self) -> dict[gr.components.Component, Any]:
        updates: dict[gr.components.Component, Any] = {
            self.banner: gr.update(value="", visible=False),
            self.shown: None,
        }
        for name, widget in self.fields.items():
            info = {"info": self._info[name]} if self._has_info[name] else {}
            updates[widget] = gr.update(**info, elem_classes=[])
        return updates

    def _label(self, name: str | None) -> str | None:
        """The label of the widget that sets request field `name`, when it is on this form."""
        widget = self.fields.get(name) if name else None
        return getattr(widget, "label", None) or None

    def show(self, error: BaseException) -> dict[gr.components.Component, Any]:
        """Updates that show `error` (one of `SHOWN_ERRORS`); the field it names, if on this form, gets it too."""
        name = error_field(error) if isinstance(error, TunesError) else None
        message = labelled(error, self._label(error.field if isinstance(error, ValidationError) else None))
        updates = self.clear()
        updates[self.banner] = gr.update(value=f"**Could not do that.** {message}", visible=True)
        updates[self.shown] = name if name in self.fields else NO_FIELD
        if name in self.fields:
            info = {"info": f"⚠ {message}"} if self._has_info[name] else {}  # else the banner says it
            updates[self.fields[name]] = gr.update(**info, elem_classes=["field-error"])
        return updates

    def clear_on_change(self, *, api_visibility: Literal["private", "undocumented"] = "private") -> None:
        """When a widget of this form changes, take away the error it was marked with (banner and mark): the
        message is about a value that is gone. An error naming no field of the form goes on any change.

        Args:
            api_visibility: of the events added (never in the API docs; "undocumented" for admin-only tabs).
        """
        for widget in {id(w): w for w in self.fields.values()}.values():
            widget.change(
                self._clearer(widget),
                self.shown,
                [self.banner, widget, self.shown],
                api_visibility=api_visibility,
                show_progress="hidden",
                trigger_mode="always_last",
                concurrency_limit=None,
            )

    def _clearer(self, widget: gr.components.Component) -> Callable[[str | None], tuple[Any, Any, Any]]:
        def clear_field_error(shown: str | None) -> tuple[Any, Any, Any]:
            return self._cleared(widget, shown)

        return clear_field_error

    def _cleared(self, widget: gr.components.Component, shown: str | None) -> tuple[Any, Any, Any]:
        if shown is None or (shown != NO_FIELD and self.fields.get(shown) is not widget):
            return gr.skip(), gr.skip(), gr.skip()
        names = [name for name, w in self.fields.items() if w is widget]
        info = {"info": self._info[names[0]]} if self._has_info[names[0]] else {}
        return gr.update(value="", visible=False), gr.update(**info, elem_classes=[]), None


CSS = """
.field-error { border-color: var(--error-border-color, #ef4444) !important; }
.field-error .info, .field-error [data-testid="block-info"] + div { color: var(--error-text-color, #b91c1c); }
.error-banner { color: var(--error-text-color, #b91c1c); }
.pack-card .caption-label { white-space: normal !important; max-width: calc(100% - 8px) !important; }
/* Gradio caps an auto-height gallery at 55vh and hides the rest: every row of pack cards shows */
#pack-cards .grid-wrap { max-height: none !important; }
/* a picked option's text stops before the dropdown's caret */
.secondary-wrap input[role="combobox"] { padding-right: calc(var(--size-5) * 2); text-overflow: ellipsis; }
"""
