"""Errors in words people use: the widget's label, not the request field; one log line, no traceback."""

from __future__ import annotations

import logging

import gradio as gr
import pytest

from pipelines.errors import TunesError, ValidationError
from rest.browser import QuietAccessLog
from ui.feedback import FieldErrors, refusal, user_errors


@pytest.fixture
def form() -> FieldErrors:
    with gr.Blocks():
        banner = gr.Markdown(visible=False)
        prompt = gr.Textbox(label="Prompt")
        characteristics = gr.Textbox(label="Characteristics")
        return FieldErrors(banner, {"text": prompt, "characteristics": characteristics})


def test_the_banner_and_the_field_say_the_label_not_the_request_field(form: FieldErrors):
    updates = form.show(ValidationError("text", "", "must be a non-empty prompt"))
    banner = updates[form.banner]["value"]
    assert banner == "**Could not do that.** Prompt must be a non-empty prompt (got '')"
    assert updates[form.fields["text"]]["info"] == "⚠ Prompt must be a non-empty prompt (got '')"


def test_a_part_of_a_field_and_fields_off_the_form_keep_their_name(form: FieldErrors):
    part = form.show(ValidationError("characteristics.eye_color", "{{x}}", "must not contain {{ }}"))
    assert "`characteristics.eye_color` must not contain" in part[form.banner]["value"]
    elsewhere = form.show(ValidationError("aspect_ratio", "1:999", "must be one of 1:1, 4:5"))
    assert "`aspect_ratio` must be one of" in elsewhere[form.banner]["value"]
    plain = form.show(TunesError("Pick a trained tune first."))
    assert plain[form.banner]["value"] == "**Could not do that.** Pick a trained tune first."


def test_a_refusal_is_one_log_line_and_gradio_prints_no_traceback(caplog):
    @user_errors
    def create() -> None:
        raise ValidationError("title", "", "must not be blank")

    with caplog.at_level(logging.INFO, logger="ui.feedback"), pytest.raises(gr.Error) as raised:
        create()
    assert raised.value.print_exception is False  # Gradio's queue prints a traceback for each gr.Error otherwise
    [line] = [record for record in caplog.records if record.name == "ui.feedback"]
    assert line.getMessage() == "refused: `title` must not be blank (got '')" and line.exc_info is None
    assert refusal("x").print_exception is False


def _access(path: str, status: int = 200, method: str = "GET") -> logging.LogRecord:
    args = ("127.0.0.1:5000", method, path, "1.1", status)
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None)


@pytest.mark.parametrize(
    "path",
    ["/assets/index-3f2a.js", "/static/fonts/ui.woff2", "/favicon.ico", "/theme.css", "/gradio_api/file=/tmp/x.png"],
)
def test_the_access_log_drops_static_files_served_fine(path: str):
    assert QuietAccessLog().filter(_access(path)) is False


def test_the_access_log_keeps_requests_that_matter():
    quiet = QuietAccessLog()
    assert quiet.filter(_access("/tunes")) and quiet.filter(_access("/gradio_api/queue/join", method="POST"))
    assert quiet.filter(_access("/assets/missing.js", status=404))  # a broken page still shows in the log
    assert quiet.filter(_access("/images/5?u=alice&k=1&exp=9&sig=secret"))  # a REST image: logged, redacted
