"""What every tab needs: the service, the settings, and who the caller is.

One `UIContext` is built by `app.py` and handed to each `build_*_tab` function; tabs keep no state of
their own beyond Gradio's per-session state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr
from gradio.utils import get_upload_folder

from pipelines.settings import Settings
from studio.errors import SignInRequiredError
from studio.service import Studio
from studio.users import Roles
from ui.files import UIFiles


@dataclass(frozen=True)
class UIContext:
    studio: Studio
    settings: Settings
    roles: Roles = field(init=False)
    files: UIFiles = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", Roles(self.settings))
        lifetime_s = self.settings.file_cache_hours * 3600
        object.__setattr__(self, "files", UIFiles(get_upload_folder(), lifetime_s))

    def user(self, request: gr.Request | None) -> str:
        """The caller's user id.

        Signed-in account (`TUNES_ACCOUNTS`) first, then the Hugging Face account (OAuth on a Space),
        else the single local user when no sign-in is configured.

        Raises:
            SignInRequiredError: sign-in is configured and the caller has not signed in.
        """
        username = getattr(request, "username", None) if request is not None else None
        user = self.caller(username, _session(request))
        if user is not None:
            return user
        if self.settings.oauth_client_id:
            raise SignInRequiredError("Sign in with Hugging Face first (the button at the top of the page).")
        raise SignInRequiredError("Sign in first.")

    def acting_user(self, request: gr.Request | None) -> str:
        """The caller of an action that makes or changes something (a named API call, a tune, a prompt, a key),
        once it is taken from the caller's allowance: one bucket per user with REST (`TUNES_API_RATE_PER_MINUTE`).

        Raises:
            SignInRequiredError: nobody is signed in where sign-in is required.
            RateLimitedError: the caller is over the rate; the message says how long to wait.
        """
        owner = self.user(request)
        self.studio.check_rate(owner)
        return owner

    def caller(self, username: str | None, session: dict | None) -> str | None:
        """The user id from a signed-in account name or Gradio's OAuth session, the local user when nobody signs
        in, else None (not signed in)."""
        if username:
            return str(username)
        if self.settings.oauth_client_id:
            info = (session or {}).get("oauth_info") or {}
            return (info.get("userinfo") or {}).get("preferred_username") or None
        if self.settings.accounts:
            return None
        return self.settings.local_user

    def admin(self, request: gr.Request | None) -> str:
        """The caller, who must be an admin. Raises PermissionDeniedError otherwise."""
        return self.roles.require_admin(self.user(request))

    def editor(self, request: gr.Request | None) -> str:
        """The caller, who must be a pack editor or an admin. Raises PermissionDeniedError otherwise."""
        return self.roles.require_editor(self.user(request))


def _session(request: gr.Request | None) -> dict | None:
    """The OAuth session Gradio keeps (set by the "Sign in" button), or None."""
    try:
        return request.session if request is not None else None  # raises without the session middleware
    except (AssertionError, AttributeError):
        return None
