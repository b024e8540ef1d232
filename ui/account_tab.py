"""Account: who you are, your credits, and your API keys for the REST API (shown once, stored hashed)."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from ui.context import UIContext
from ui.feedback import notify, required_int, user_errors


def build_account_tab(ctx: UIContext, app: gr.Blocks) -> None:
    """Add the tab's widgets and events to the enclosing `gr.Tab`."""
    studio = ctx.studio
    gr.Markdown("## Account")
    who = gr.Markdown(elem_id="account-who")
    gr.Markdown(
        "### API keys\nFor programs using the REST API: `Authorization: Bearer <key>`. A new key is shown "
        "**once**; only a hash is stored. Revoke a key you no longer use or that may have leaked. You may hold "
        f"{ctx.settings.max_api_keys} unrevoked keys at once (`TUNES_MAX_API_KEYS`)."
    )
    with gr.Row():
        create = gr.Button("Create a new API key", variant="primary", scale=1)
        new_key = gr.Textbox(
            label="Your new key (copy it now)",
            interactive=False,
            buttons=["copy"],
            visible=False,
            scale=3,
            elem_id="new-api-key",
        )
    keys = gr.Dataframe(label="Your keys", interactive=False, elem_id="account-keys")
    with gr.Row():
        key_id = gr.Textbox(label="Key id to revoke", placeholder="an id from the table above")
        revoke = gr.Button("Revoke", variant="stop")

    def keys_table(owner: str) -> pd.DataFrame:
        rows = studio.list_api_keys(owner)
        columns = ["id", "prefix", "created_at", "revoked_at"]
        return pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns)

    @user_errors
    def load(request: gr.Request):
        owner = ctx.user(request)
        tunes, images = studio.credits(owner)
        credits = f"{_credit(tunes)} tune credits, {_credit(images)} image credits"
        role = " · admin" if ctx.roles.is_admin(owner) else (" · pack editor" if ctx.roles.is_editor(owner) else "")
        return f"Signed in as **{owner}**{role}. {credits}.", keys_table(owner)

    @user_errors
    def create_key(request: gr.Request):
        owner = ctx.acting_user(request)
        key = studio.create_api_key(owner)
        return gr.update(value=key, visible=True), keys_table(owner)

    @user_errors
    def revoke_key(typed: str | None, request: gr.Request):
        owner = ctx.user(request)
        number = required_int(typed, "key_id", where="the id of one of your keys (see the table)")
        studio.revoke_api_key(owner, number)
        notify(f"Key #{number} revoked.")
        return keys_table(owner)

    private = {"api_visibility": "private"}
    app.load(load, None, [who, keys], **private)
    create.click(create_key, None, [new_key, keys], **private)
    revoke.click(revoke_key, key_id, keys, **private)


def _credit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)
