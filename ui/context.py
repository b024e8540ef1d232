"""What every tab needs: the service, the settings, and who the caller is.

One `UIContext` is built by `app.py` and handed to each `build_*_tab` function; tabs keep no state of
their own beyond Gradio's per-session state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from pipelines.errors import SignInRequiredError
from pipelines.settings import Settings
from studio.service import Studio
from studio.users import Roles


@dataclass(frozen=True)
class UIContext:
    studio: Studio
    settings: Settings
    roles: Roles = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", Roles(self.settings))

    def user(self, request: gr.Request | None) -> str:
        """The caller's user id.

        Signed-in account (`TUNES_ACCOUNTS`) first, then the Hugging Face account (OAuth on a Space),
        else the single local user when no sign-in is configured.

        Raises:
            SignInRequiredError: sign-in is configured and the caller has not signed in.
        """
        username = getattr(request, "username", None) if request is not None else None
        if username:
            return str(username)
        if self.settings.oauth_client_id:
            profile = _oauth_username(request)
            if profile:
                return profile
            raise SignInRequiredError("Sign in with Hugging Face first (the button at the top of the page).")
        if self.settings.accounts:
            raise SignInRequiredError("Sign in first.")
        return self.settings.local_user

    def admin(self, request: gr.Request | None) -> str:
        """The caller, who must be an admin. Raises PermissionDeniedError otherwise."""
        return self.roles.require_admin(self.user(request))

    def editor(self, request: gr.Request | None) -> str:
        """The caller, who must be a pack editor or an admin. Raises PermissionDeniedError otherwise."""
        return self.roles.require_editor(self.user(request))


def _oauth_username(request: gr.Request | None) -> str | None:
    """The Hugging Face username from the OAuth session Gradio keeps (set by the "Sign in" button)."""
    try:
        session = request.session if request is not None else None  # raises without the session middleware
    except (AssertionError, AttributeError):
        return None
    info = (session or {}).get("oauth_info") or {}
    return (info.get("userinfo") or {}).get("preferred_username")
