"""Who may do what: users are plain ids (a Hugging Face username, an account name or the local user).

Every record already belongs to an owner; this module only decides the two extra roles: admins (the
admin tab and operator actions) and pack editors (the creative team).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.settings import Settings
from studio.errors import PermissionDeniedError


@dataclass(frozen=True)
class Roles:
    """Role checks from the settings: `TUNES_ADMINS`, `TUNES_EDITORS`, and the single local user."""

    settings: Settings

    @property
    def single_user(self) -> bool:
        """No sign-in is configured: everyone is the local user (a laptop, a private box)."""
        return not self.settings.accounts and not self.settings.oauth_client_id

    def is_admin(self, user: str) -> bool:
        if user in self.settings.admins:
            return True
        # on one's own machine the one user runs the place, unless admins were named explicitly
        return self.single_user and not self.settings.admins and user == self.settings.local_user

    def is_editor(self, user: str) -> bool:
        return user in self.settings.editors or self.is_admin(user)

    def require_admin(self, user: str) -> str:
        if not self.is_admin(user):
            raise PermissionDeniedError(f"user {user!r} is not an admin (admins are named by TUNES_ADMINS)")
        return user

    def require_editor(self, user: str) -> str:
        if not self.is_editor(user):
            raise PermissionDeniedError(f"user {user!r} may not edit packs (editors are named by TUNES_EDITORS)")
        return user
