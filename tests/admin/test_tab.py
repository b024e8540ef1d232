"""The admin tab, launched with two accounts and driven through gradio_client: the admin's endpoints act,
everyone else's calls are refused, and none of them is listed in the API docs. An action answers with the
error banner (and the boxes it may mark) first and the status line last."""

from __future__ import annotations

import gradio as gr
import pandas as pd
import pytest
from gradio_client import Client

from admin.operations import TABLES, Operations
from admin.tab import EXPORT_DIR, build_admin_tab
from pipelines.settings import Settings
from studio.requests import PromptCreate, TuneCreate
from studio.runtime import open_runtime
from tests.admin.test_operations import PHOTOS
from ui.context import UIContext

# every endpoint of the tab, with arguments an admin could send
ENDPOINTS = {
    "/admin_show": (),
    "/admin_refresh": ("day", "all", 7),
    "/admin_cancel": ("tune", 1),
    "/admin_retry": ("tune", 1),
    "/admin_extend": ("tune", 1, 5),
    "/admin_expire_now": ("tune", 1),
    "/admin_delete": ("tune", 1, False),
    "/admin_grant_credits": ("bob", 5, 5),
    "/admin_set_credits": ("bob", None, None),
    "/admin_block_image": (1,),
    "/admin_unblock_image": (1,),
    **{f"/admin_export_{name}": ("week", "all", 7) for name in TABLES},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("admin-tab") / "data",
        device="cpu",
        admins=("root",),
        accounts=("root:pw", "bob:pw"),
    )
    runtime = open_runtime(settings, start_worker=False)
    with gr.Blocks() as app, gr.Tab("Admin") as tab:
        build_admin_tab(UIContext(runtime.studio, settings), Operations(runtime.studio, runtime.store))
    app.queue().launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, auth=[("root", "pw"), ("bob", "pw")]
    )
    try:
        yield runtime, app, tab
    finally:
        app.close()
        runtime.close()


@pytest.fixture(scope="module")
def root(served):
    return Client(served[1].local_url, auth=("root", "pw"), verbose=False)


@pytest.fixture(scope="module")
def bob(served):
    return Client(served[1].local_url, auth=("bob", "pw"), verbose=False)


def test_bob_is_refused_by_every_endpoint_and_does_not_see_the_tab(served, bob):
    runtime, _, _ = served
    runtime.db.set_credits("bob", tunes=0, images=0)
    runtime.db.worker_started("w-bob-cannot-see", device="cuda:0", pid=1, host="x")
    for endpoint, args in ENDPOINTS.items():
        if endpoint == "/admin_show":
            notice, *tables = bob.predict(api_name=endpoint)
            assert notice["visible"] is True and all("data" not in table for table in tables), "no data for bob"
            assert "w-bob-cannot-see" not in str(tables)
            continue
        with pytest.raises(Exception, match="'bob' is not an admin"):
            bob.predict(*args, api_name=endpoint)
    assert runtime.db.credits("bob") == (0, 0)


def tables(answer: tuple) -> list[dict]:
    """The eight tables of a refresh or page-load answer: after the ten dashboard widgets."""
    frames = [item for item in answer if isinstance(item, dict) and "headers" in item]
    return frames[-8:]


def said(answer: tuple) -> str:
    """The status line of an action's answer, once its error banner is hidden."""
    banner, *_, status = answer
    assert banner["visible"] is False, banner
    return status


def refused(answer: tuple) -> str:
    """The error banner of an action's answer (its status line is empty)."""
    banner, *_, status = answer
    assert banner["visible"] is True and status == "", answer
    return banner["value"]


def test_root_grants_credits_and_cancels_another_users_tune(served, root):
    runtime, _, _ = served
    runtime.db.set_credits("bob", tunes=0, images=0)
    tune = runtime.studio.create_tune(
        "alice",
        TuneCreate(title="me", name="woman", images=PHOTOS, branch="fast", prompts=[PromptCreate("{{subject}}")]),
    ).tune

    message = said(root.predict("bob", 1, 4, api_name="/admin_grant_credits"))
    assert message == "Granted credits: bob has 1 tune credit(s) and 4 image credit(s)."
    assert runtime.db.credits("bob") == (1, 4)

    message = said(root.predict("tune", tune.id, api_name="/admin_cancel"))
    assert message == f"Cancelled tune {tune.id} ('me' of alice); its queued prompts failed."
    assert runtime.studio.get_tune("alice", tune.id).status == "cancelled"

    queue, _, tunes, prompts, users, storage, expiries, _ = tables(
        root.predict("day", "all", 7, api_name="/admin_refresh")
    )
    assert [row[:6] for row in tunes["data"]] == [[tune.id, "alice", "me", "woman", "fast", "cancelled"]]
    assert [row[5] for row in prompts["data"]] == ["failed"]
    assert queue["data"] == [] and expiries["data"] == []
    assert {row[0]: row[5:] for row in users["data"]}["bob"] == [1, 4]
    assert storage["data"][-1][0] == "total"


def test_mistakes_are_shown_by_the_actions_and_an_empty_id_is_empty_not_0(root):
    empty = "Id is empty: type an id from the tables below, or click its row"
    assert empty in refused(root.predict("tune", None, api_name="/admin_cancel"))
    assert "is empty: type an id" in refused(root.predict("tune", "", api_name="/admin_expire_now"))
    assert "must be a whole number" in refused(root.predict("tune", "twelve", False, api_name="/admin_delete"))
    assert "tune 999 was not found" in refused(root.predict("tune", 999, 5, api_name="/admin_extend"))
    assert "(got 0)" not in refused(root.predict("tune", "", api_name="/admin_cancel"))
    # a selected prompt's id is never taken for a tune's
    assert "Record must be a tune" in refused(root.predict("prompt", 1, api_name="/admin_cancel"))


def test_empty_credits_grant_nothing_and_set_unlimited(served, root):
    runtime, _, _ = served
    runtime.db.set_credits("carol", tunes=2, images=3)
    said(root.predict("carol", "", "5", api_name="/admin_grant_credits"))
    assert runtime.db.credits("carol") == (2, 8)
    said(root.predict("carol", "", "", api_name="/admin_set_credits"))
    assert runtime.db.credits("carol") == (None, None)


def test_expire_and_delete_act_only_from_their_confirm_buttons_and_the_tab_refreshes_when_opened(served):
    _, app, tab = served
    triggers = {fn.api_name: [app.blocks.get(block_id) for block_id, _ in fn.targets] for fn in app.fns.values()}
    for api_name, question in [("admin_expire_now", "Yes, expire it"), ("admin_delete", "Yes, delete it")]:
        [button] = triggers[api_name]
        assert isinstance(button, gr.Button) and button.value == question and button.variant == "stop"
    [cancel] = triggers["admin_cancel"]
    assert cancel.value == "Yes, cancel it" and cancel.variant == "stop"
    refreshes = [fn for fn in app.fns.values() if (tab._id, "select") in fn.targets]
    assert len(refreshes) == 1 and refreshes[0].fn.__name__ == "refresh"


def test_the_tab_is_shown_to_admins_only_and_left_out_of_the_api_docs(served, root):
    _, app, tab = served
    answer = root.predict(api_name="/admin_show")
    assert answer[0]["visible"] is False and tables(answer)[0]["headers"][:2] == ["position", "state"]
    [show] = [fn for fn in app.fns.values() if fn.api_name == "admin_show"]
    assert tab in show.outputs, "the load event hides or shows the whole tab"
    assert {fn.api_visibility for fn in app.fns.values()} == {"undocumented"}
    assert root.view_api(print_info=False, return_format="dict")["named_endpoints"] == {}


def test_the_workers_table_shows_each_worker_to_an_admin(served, root):
    runtime, app, _ = served
    runtime.db.worker_started("w1", device="cuda:0", pid=4242, host="gpu-box")
    runtime.db.worker_heartbeat("w1", job="tune 12", branches=["fast"], done=5)

    _, workers, *_ = tables(root.predict("day", "all", 7, api_name="/admin_refresh"))
    [row] = [row for row in workers["data"] if row[0] == "w1"]
    columns = dict(zip(workers["headers"], row, strict=True))
    assert (columns["device"], columns["state"], columns["job"]) == ("cuda:0", "alive", "tune 12")
    assert (columns["jobs done"], columns["branches loaded"], columns["pid"]) == (5, "fast", 4242)
    _, shown_workers, *_ = tables(root.predict(api_name="/admin_show"))
    assert "w1" in [row[0] for row in shown_workers["data"]], "the table is filled when the page loads"
    markdowns = [block.value or "" for block in app.blocks.values() if isinstance(block, gr.Markdown)]
    [header] = [text for text in markdowns if text.startswith("### Workers")]
    assert "heartbeat every 10 s" in header and "**dead**: none for over 30 s" in header  # the default lease


def test_each_table_downloads_as_csv_with_the_rows_shown(served, root):
    runtime, _, _ = served
    tune = runtime.studio.create_tune("dora", TuneCreate(title="csv me", name="man", images=PHOTOS, branch="fast")).tune
    answer = root.predict("day", "all", 7, api_name="/admin_export_tunes")
    path = answer["value"] if isinstance(answer, dict) and "value" in answer else answer
    frame = pd.read_csv(path)
    assert list(frame.columns[:3]) == ["id", "owner", "title"]
    assert frame[frame["id"] == tune.id][["owner", "title"]].values.tolist() == [["dora", "csv me"]]
    mine = sorted(EXPORT_DIR.glob("tunes-*.csv"), key=lambda path: path.stat().st_mtime)[-1]
    assert mine.stat().st_mode & 0o777 == 0o600 and EXPORT_DIR.stat().st_mode & 0o777 == 0o700, "other users' records"
    times = pd.read_csv(_path(root.predict("week", "all", 7, api_name="/admin_export_times")))
    assert list(times.columns) == [
        "branch",
        "kind",
        "jobs",
        *[f"{w} {p} (min)" for w in ("wait", "run") for p in ("p50", "p95")],
    ]


def _path(answer) -> str:
    return answer["value"] if isinstance(answer, dict) and "value" in answer else answer
