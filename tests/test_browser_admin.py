"""The ops dashboard in a browser (issue 19): its plots draw the seeded records (each bar and point read from the
plot's own marks, checked against the database), it refreshes itself while the Admin tab is open and stops when
another tab is, an admin selects a tune by clicking its row and cancels it after the question says what is lost,
and a signed-in non-admin reaches none of it, in the page or through its events."""

from __future__ import annotations

import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from app import serving
from pipelines.settings import Settings
from storage.records import utc_now
from studio.requests import TuneCreate
from studio.runtime import open_runtime
from tests.admin.history import seed_history
from tests.admin.test_operations import PHOTOS
from tests.test_browser import CHROMIUM, DOCS, person

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (.ci/run installs it)")

PASSWORDS = {"root": "root-pw", "bob": "bob-pw"}
REFRESH_S = 2


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("admin-browser") / "data",
        device="cpu",
        accounts=tuple(f"{user}:{password}" for user, password in PASSWORDS.items()),
        admins=("root",),
        admin_refresh_s=REFRESH_S,
    )
    runtime = open_runtime(settings, start_worker=False)
    seeded = seed_history(runtime, utc_now())
    try:
        with serving(runtime) as url:
            yield runtime, seeded, url
    finally:
        runtime.close()


@contextmanager
def signed_in(chromium, url: str, user: str) -> Iterator[Any]:
    """A page of `user`, signed in with their password, open on the app."""
    with person(chromium, url, user, PASSWORDS[user]) as page:
        page.goto(url)
        yield page


@pytest.fixture(scope="module")
def root_page(chromium, served) -> Iterator[Any]:
    """The admin's page, shared by the tests that look at the dashboard and act on it."""
    with signed_in(chromium, served[2], "root") as page:
        yield page


def marks(page, plot: str) -> list[dict[str, str]]:
    """The data marks (bars, line points) a plot drew, each as {field: value} from its accessible label."""
    page.locator(f"#{plot} svg [aria-roledescription]").first.wait_for()
    labels = page.locator(f"#{plot} svg [aria-roledescription='bar'], #{plot} svg [aria-roledescription='point']")
    return [
        dict(part.split(": ", 1) for part in label.split("; "))
        for label in labels.evaluate_all("marks => marks.map((mark) => mark.getAttribute('aria-label'))")
    ]


def totals(drawn: list[dict[str, str]], key: str, value: str) -> dict[str, float]:
    summed: dict[str, float] = defaultdict(float)
    for mark in drawn:
        summed[mark[key]] += float(mark[value])
    return dict(summed)


def tick_requests(page) -> list[int]:
    """Every request the page makes for the dashboard timer's tick, as it makes them (a list that grows)."""
    config = page.evaluate("() => window.gradio_config")
    [summary] = [c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "admin-summary"]
    [tick] = [
        dep["id"]
        for dep in config["dependencies"]
        if any(event == "tick" for _, event in dep["targets"]) and summary in dep["outputs"]
    ]
    made: list[int] = []

    def count(request) -> None:
        if "/queue/join" in request.url and (request.post_data_json or {}).get("fn_index") == tick:
            made.append(tick)

    page.on("request", count)
    return made


def test_the_dashboard_refreshes_while_its_tab_is_open_and_stops_on_another(served, root_page):
    from playwright.sync_api import expect

    runtime = served[0]
    page = root_page  # fresh: the Admin tab has not been opened yet
    ticks = tick_requests(page)
    time.sleep(REFRESH_S + 1)
    assert ticks == [], "the timer does not run before the Admin tab is opened"
    page.get_by_role("tab", name="Admin").click()
    page.locator("#admin-tunes [role=gridcell]", has_text="seeded 0").first.wait_for()
    runtime.studio.create_tune("dora", TuneCreate(title="arrived later", name="man", images=PHOTOS, branch="tiny"))
    tunes = page.locator("#admin-tunes [role=gridcell]", has_text="arrived later")
    expect(tunes).to_have_count(1, timeout=REFRESH_S * 5000)  # no click: the timer refreshed the table
    assert ticks, "the timer ticked"
    page.get_by_role("tab", name="Generate").click()
    time.sleep(1)  # a tick already sent may still land
    before = len(ticks)
    time.sleep(REFRESH_S * 2 + 1)
    assert len(ticks) == before, "no refresh while another tab is open"
    page.get_by_role("tab", name="Admin").click()
    deadline = time.monotonic() + REFRESH_S * 5
    while len(ticks) == before and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert len(ticks) > before, "opening the tab again starts the timer again"


def test_the_dashboard_plots_the_records_in_the_database(served, root_page, tmp_path):
    runtime = served[0]
    db = runtime.db
    with db.snapshot() as conn:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        trainings = one("SELECT COUNT(*) FROM tunes WHERE status IN ('trained', 'failed')")
        generations = one("SELECT COUNT(*) FROM prompts WHERE status IN ('done', 'failed')")
        out_of_memory = one("SELECT COUNT(*) FROM prompts WHERE status = 'failed' AND error LIKE 'CUDA out of memory%'")
        tune_credits, image_credits = conn.execute("SELECT SUM(tunes), SUM(images) FROM credit_spends").fetchone()
        last = {row[0]: row[1] for row in conn.execute("SELECT kind, bytes FROM storage_samples ORDER BY at")}
        waiting = one("SELECT COUNT(*) FROM tunes WHERE status = 'queued'")
        waiting += one("SELECT COUNT(*) FROM prompts WHERE status = 'queued'")
    page = root_page
    page.get_by_role("tab", name="Admin").click()
    assert totals(marks(page, "admin-plot-finished"), "kind", "jobs") == {
        "training": trainings,
        "generation": generations,
    }
    failures = {mark["reason"]: (mark["kind"], float(mark["failures"])) for mark in marks(page, "admin-plot-failures")}
    assert failures["CUDA out of memory"] == ("generation", out_of_memory)
    assert failures["its worker stopped or stopped answering"] == ("training", 1)
    waits = {mark["branch, job, percentile"]: float(mark["minutes"]) for mark in marks(page, "admin-plot-wait")}
    assert waits == {  # by hand from the seeded times (tests/admin/test_dashboard.py works them out)
        "sd15 generation p50": 9,
        "sd15 generation p95": 17.1,
        "sd15 training p50": 30,
        "sd15 training p95": 30,
        "sdxl1 training p50": 60,
        "sdxl1 training p95": 60,
    }
    spent = totals(marks(page, "admin-plot-credits"), "credits", "spent")
    assert spent == {"tune credits": tune_credits, "image credits": image_credits}
    storage = defaultdict(float)
    for mark in marks(page, "admin-plot-storage"):
        storage[mark["kind"]] = max(storage[mark["kind"]], float(mark["MiB"]))
    assert dict(storage) == {kind: last[kind] / 2**20 for kind in ("LoRAs", "generated images")}
    depth = totals(marks(page, "admin-plot-queue"), "kind", "waiting")
    assert depth["training"] > 0 and depth["generation"] > 0
    summary = page.locator("#admin-summary").inner_text()
    assert f"{trainings + generations} jobs finished" in summary and f"{waiting} waiting, 0 running" in summary
    dashboard_screenshot(page, tmp_path)


def dashboard_screenshot(page, tmp_path: Path) -> None:
    """The dashboard's part of the page (summary to the credits plot); into docs/ with TUNES_UPDATE_SCREENSHOTS=1."""
    bottom = page.locator("#admin-plot-credits").bounding_box()
    path = tmp_path / "admin-dashboard.png"
    page.screenshot(
        path=str(path),
        full_page=True,
        clip={"x": 0, "y": 0, "width": 1280, "height": bottom["y"] + bottom["height"] + 16},
    )
    if os.environ.get("TUNES_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(path, DOCS / "admin-dashboard.png")


def test_select_a_tune_by_its_row_and_cancel_it_after_the_question(served, root_page):
    from playwright.sync_api import expect

    runtime, seeded, _ = served
    queued = seeded.tune_ids[3]
    page = root_page
    page.get_by_role("tab", name="Admin").click()
    page.locator("#admin-tunes [role=gridcell]", has_text="seeded 3").first.click()
    expect(page.locator("#admin-selected")).to_contain_text(f"Tune {queued} 'seeded 3' of alice (woman, sd15): queued")
    page.locator("#admin-cancel").click()
    question = page.locator("#admin-question")
    expect(question).to_contain_text(f"Cancel tune {queued} ('seeded 3' of alice, queued)?")
    expect(question).to_contain_text("its training photos are deleted. This cannot be undone.")
    page.get_by_role("button", name="No, keep it").click()
    expect(page.locator("#admin-confirm")).to_be_hidden()
    assert runtime.studio.get_tune("alice", queued).status == "queued", "keeping it changes nothing"

    page.locator("#admin-cancel").click()
    page.locator("#admin-confirm-cancel").click()
    expect(page.locator("#admin-status")).to_contain_text(f"Cancelled tune {queued} ('seeded 3' of alice)")
    assert runtime.studio.get_tune("alice", queued).status == "cancelled"
    expect(page.locator("#admin-selected")).to_contain_text(
        f"Tune {queued} 'seeded 3' of alice (woman, sd15): cancelled"
    )
    row = page.locator("#admin-tunes").get_by_role("row").filter(has_text="seeded 3")
    expect(row).to_contain_text("cancelled")  # the table shows the result in place


def test_a_non_admin_reaches_none_of_it(served, chromium):
    from playwright.sync_api import expect

    runtime, seeded, url = served
    with signed_in(chromium, url, "bob") as page:
        page.get_by_role("tab", name="Generate").wait_for()
        expect(page.get_by_role("tab", name="Admin")).to_have_count(0)
        time.sleep(1)
        assert "seeded 0" not in page.content() and "CUDA out of memory" not in page.content()
    bob = Client(url, auth=("bob", PASSWORDS["bob"]), verbose=False)
    for api_name, arguments in [
        ("/admin_refresh", ("day", "all", 7)),
        ("/admin_export_tunes", ("day", "all", 7)),
        ("/admin_cancel", ("tune", seeded.tune_ids[0])),
        ("/admin_delete", ("tune", seeded.tune_ids[0], True)),
    ]:
        with pytest.raises(AppError, match="'bob' is not an admin"):
            bob.predict(*arguments, api_name=api_name)
    assert runtime.studio.get_tune("alice", seeded.tune_ids[0]).status == "trained"
