"""The team's pack files mirrored to one private Hub dataset repo, `<namespace>/tune-studio-packs`.

The data folder stays the source of truth (the studio reads packs from there); the mirror shares the
team's work and keeps it safe off the machine. Configured by the same `HF_TOKEN` and `TUNES_HUB_NAMESPACE`
as the LoRA repos.
"""

from __future__ import annotations

import logging

from huggingface_hub import CommitOperationAdd

from pipelines.errors import ArtifactError
from pipelines.settings import Settings
from storage.artifacts import HubArtifactStore, RetryPolicy

logger = logging.getLogger(__name__)
PACKS_REPO_NAME = "tune-studio-packs"


class HubPackMirror:
    """Pushes pack files to a private dataset repo, one commit per saved edit.

    Args:
        settings: `hf_token` and `hub_namespace` must be set.
        endpoint: the Hub URL (tests point it at a fake Hub).
    """

    def __init__(self, settings: Settings, *, endpoint: str | None = None, retry: RetryPolicy | None = None):
        self._hub = HubArtifactStore(settings, endpoint=endpoint, retry=retry)  # auth, retries, redaction
        self.repo_id = f"{self._hub.namespace}/{PACKS_REPO_NAME}"
        self._ready = False

    def push(self, files: dict[str, bytes], *, message: str) -> None:
        """Upload `files` (path in repo -> contents) in one commit to the private dataset repo.

        Raises:
            ArtifactError: the Hub refused or is unreachable (token redacted), or the repo is public.
        """
        api, repo_id = self._hub._api, self.repo_id
        if not self._ready:
            self._hub._call(
                "create", repo_id, lambda: api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
            )
            info = self._hub._call("inspect", repo_id, lambda: api.repo_info(repo_id, repo_type="dataset"))
            if info.private is not True:
                raise ArtifactError(f"The Hub dataset {repo_id} is public; make it private before packs are pushed")
            self._ready = True
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
        self._hub._call(
            "push packs to",
            repo_id,
            lambda: api.create_commit(repo_id, operations, commit_message=message, repo_type="dataset"),
        )


def open_pack_mirror(settings: Settings) -> HubPackMirror | None:
    """The mirror when the Hub is configured (token and namespace), else None."""
    if settings.hf_token and settings.hub_namespace:
        return HubPackMirror(settings)
    return None
