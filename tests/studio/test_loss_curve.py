"""The loss curve of a training as it trains (issue 19, item 4): the worker puts a point on the tune record with each
progress write (the mean loss of the steps since the previous point); a resumed run replaces the points past its
restart; the curve never grows past `MAX_LOSS_POINTS`; the Create tab draws it for the followed tune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.db import Database
from studio.queue import MAX_LOSS_POINTS, _with_point
from studio.requests import TuneCreate
from studio.runtime import open_runtime
from tests.security.conftest import call_raw
from tests.studio.test_service import PHOTOS
from tests.ui.test_likeness_views import OWNER, served, studio  # noqa: F401 (fixtures)
from ui.views import loss_frame

pytestmark = pytest.mark.usefixtures("no_card_samples")


def test_points_thin_out_evenly_and_a_resumed_run_replaces_what_it_redoes():
    curve: list[list[float]] = []
    for step in range(1, 3 * MAX_LOSS_POINTS + 1):
        curve = _with_point(curve, (step, 1.0 / step))
    assert len(curve) <= MAX_LOSS_POINTS and curve[-1] == [3 * MAX_LOSS_POINTS, pytest.approx(1 / 600, abs=1e-6)]
    steps = [point[0] for point in curve]
    assert steps == sorted(steps) and steps[0] == 1, "the start of the curve is kept"
    assert steps[len(steps) // 2] > MAX_LOSS_POINTS, "thinned along the whole run, not only its start kept"

    resumed = _with_point([[5, 0.5], [10, 0.4], [15, 0.3]], (11, 0.35))
    assert resumed == [[5, 0.5], [10, 0.4], [11, 0.35]], "the steps a resumed run redoes are its own"


def test_a_tiny_training_leaves_its_loss_curve_on_the_record_as_it_trains(settings):
    runtime = open_runtime(settings, start_worker=False)
    try:
        request = TuneCreate(title="curve", name="woman", images=PHOTOS, branch="tiny", steps=40)
        tune = runtime.studio.create_tune("alice", request).tune
        runtime.worker.drain()
        done = runtime.studio.get_tune("alice", tune.id)
    finally:
        runtime.close()
    assert done.status == "trained"
    curve = done.loss_curve
    steps = [step for step, _ in curve]
    assert len(curve) >= 2 and steps == sorted(set(steps)) and steps[-1] == 40
    trained = json.loads((Path(done_location(settings, tune.id)) / "lora_metadata.json").read_text())
    losses = trained["loss_curve"]["values"]  # one per step, as the trainer recorded them
    previous = 0
    for step, loss in curve:  # each point: the mean of the steps since the previous point
        window = losses[previous:step]
        assert loss == pytest.approx(sum(window) / len(window), rel=1e-4), (step, previous)
        previous = step


def done_location(settings, tune_id: int) -> str:
    db = Database(settings.data_dir / "tunes.db")
    try:
        with db.snapshot() as conn:
            return db.tune_by_id(conn, tune_id).artifact_location
    finally:
        db.close()


def test_the_create_tab_draws_the_followed_tunes_loss(served, studio):  # noqa: F811 (fixtures)
    tune = studio.create_tune(OWNER, TuneCreate(title="me", name="woman", images=PHOTOS, branch="fast")).tune
    kind, outputs = call_raw(served, "refresh", [tune.id, "newest"])
    assert kind == "complete" and outputs[-1]["visible"] is False, "no curve before the first steps"

    with studio.db.transaction() as conn:
        studio.db.set_tune(conn, tune.id, loss_curve=[[5, 0.31], [10, 0.22], [15, 0.18]])
    kind, outputs = call_raw(served, "refresh", [tune.id, "newest"])
    plot = outputs[-1]
    assert kind == "complete" and plot["visible"] is True
    rows = plot["value"]["data"]
    assert [row[:2] for row in rows] == [[5, 0.31], [10, 0.22], [15, 0.18]], plot["value"]
    assert list(loss_frame(studio.get_tune(OWNER, tune.id)).columns) == ["step", "loss"]
