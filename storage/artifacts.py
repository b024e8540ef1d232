"""Artifact stores: where a tune's trained LoRA folder is kept, and how it comes back for generation.

Two kinds behind one `ArtifactStore` protocol; `open_store(settings)` picks one:

local   `data_dir/artifacts/<tune>/`: written to a hidden staging folder, then renamed into place
hub     one private Hugging Face model repo per tune, `<namespace>/tune-<tune>`, uploaded in one commit;
        `fetch` downloads it into `data_dir/hub_cache`

`put` returns a location string to keep with the tune: the folder path for `local`, `hub://<namespace>/<repo>`
for `hub`. The Hub store still serves folder locations written before the Hub was configured. Every failure is
an `ArtifactError` (a `ValidationError` for a bad argument) whose message never contains the Hugging Face token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable
from uuid import uuid4

import httpx2  # the HTTP client huggingface_hub 2.x speaks through; its transport errors are retried
from huggingface_hub import CommitOperationAdd, HfApi, ModelCardData, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import set_client_factory
from huggingface_hub.utils._http import default_client_factory  # no public way to keep its hooks (pinned 2.4.0)

from pipelines.errors import ArtifactError, SettingsError, ValidationError
from pipelines.registry import BRANCHES
from pipelines.settings import Settings
from pipelines.train import LORA_WEIGHTS_NAME, METADATA_NAME, MODEL_TYPES
from pipelines.train_pti import EMBEDDINGS_NAME, TEXT_ENCODERS

logger = logging.getLogger(__name__)

T = TypeVar("T")

HUB_SCHEME = "hub://"
README_NAME = "README.md"
# what generation needs of a stored artifact: the LoRA, its metadata and (pti tunes) the token embeddings
ARTIFACT_FILES = (LORA_WEIGHTS_NAME, METADATA_NAME, EMBEDDINGS_NAME)
SAMPLES_DIR = "samples"
HUB_TAGS = ("lora", "diffusers", "text-to-image", "tune-studio")
SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# Licenses a LoRA inherits from its base model, for branches where it is known and has a Hub license id.
BRANCH_LICENSES = {"sd15": "creativeml-openrail-m", "sdxl1": "openrail++", "flux1": "other"}
# A base model under a license the Hub has no id for ("other") is named and linked; the card says it in words.
OTHER_LICENSES = {
    "flux1": (
        "flux-1-dev-non-commercial-license",
        "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md",
    )
}
RETRY_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}", re.ASCII)
_HUB_NAMESPACE = re.compile(r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?", re.ASCII)


@dataclass(frozen=True)
class ModelCard:
    """What a stored LoRA says about itself (README.md): base model, trigger prompt, title, sample images.

    `license` defaults to the base model's license where the branch's is known (`BRANCH_LICENSES`).
    `model_type` "pti" (SDXL pivotal tuning) stores `embeddings.safetensors` beside the LoRA: the card shows how to
    load both, and `instance_prompt` uses the trained `tokens` (`<s0><s1> woman`).
    """

    base_model: str
    instance_prompt: str
    branch: str
    title: str
    sample_images: tuple[Path, ...] = ()
    license: str | None = None
    model_type: str = "lora"
    tokens: tuple[str, ...] = ()  # pti: the new tokens, in order

    def __post_init__(self) -> None:
        for name in ("base_model", "instance_prompt", "branch"):
            if not str(getattr(self, name)).strip():
                raise ValidationError(f"card.{name}", getattr(self, name), "must not be empty")
        samples = tuple(Path(path) for path in self.sample_images)
        for index, path in enumerate(samples):
            if path.suffix.lower() not in SAMPLE_SUFFIXES:
                raise ValidationError(f"card.sample_images[{index}]", str(path), f"must be one of {SAMPLE_SUFFIXES}")
        object.__setattr__(self, "sample_images", samples)
        if self.model_type not in MODEL_TYPES:
            raise ValidationError("card.model_type", self.model_type, f"must be one of {', '.join(MODEL_TYPES)}")
        object.__setattr__(self, "tokens", tuple(self.tokens))
        if (self.model_type == "pti") != bool(self.tokens):
            raise ValidationError("card.tokens", self.tokens, "must list the new tokens of a pti tune, and only then")

    @classmethod
    def from_metadata(
        cls, metadata: dict, *, branch: str, base_model: str, title: str, sample_images: Sequence[Path] = ()
    ) -> ModelCard:
        """The card of a tune's training output, from its `lora_metadata.json` (prompt, model type, tokens)."""
        return cls(
            base_model=base_model,
            instance_prompt=metadata["instance_prompt"],
            branch=branch,
            title=title,
            sample_images=tuple(sample_images),
            model_type=metadata.get("model_type", "lora"),
            tokens=tuple(metadata.get("pti_tokens") or ()),
        )

    @property
    def resolved_license(self) -> str | None:
        return self.license or BRANCH_LICENSES.get(self.branch)

    @property
    def family(self) -> str | None:
        branch = BRANCHES.get(self.branch)
        return branch.family if branch else None


@runtime_checkable
class ArtifactStore(Protocol):
    """Keeps each tune's trained LoRA folder somewhere durable and gives it back for generation."""

    kind: str  # "local" or "hub"

    def put(self, tune_id: str, lora_dir: Path, card: ModelCard) -> str: ...

    def fetch(self, location: str) -> Path: ...

    def delete(self, location: str) -> None: ...

    def exists(self, location: str) -> bool: ...

    def url(self, location: str) -> str | None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How Hub calls are retried on 408/429/5xx answers and network errors: `attempts` tries in all,
    waiting `base_delay * 2**n` seconds (at most `max_delay`) in between, or longer when the answer's
    `Retry-After` asks for it (also at most `max_delay`). `sleep` is injectable for tests."""

    attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 8.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValidationError("attempts", self.attempts, "must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValidationError("base_delay", (self.base_delay, self.max_delay), "and `max_delay` must be >= 0")

    def delay(self, failed_attempts: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** (failed_attempts - 1))


def open_store(settings: Settings, *, retry: RetryPolicy | None = None) -> ArtifactStore:
    """The artifact store the settings ask for.

    Args:
        settings: `hf_token` and `hub_namespace` both set select private Hub repos; otherwise LoRAs stay in
            `data_dir/artifacts`.
        retry: how Hub calls are retried (default `RetryPolicy()`); unused by the local store.

    Returns:
        A `HubArtifactStore` or a `LocalArtifactStore`. Nothing touches the network here.

    Raises:
        SettingsError: `TUNES_HUB_NAMESPACE` is not a valid Hugging Face user or organisation name.
    """
    if settings.hf_token and settings.hub_namespace:
        return HubArtifactStore(settings, retry=retry or RetryPolicy())
    return LocalArtifactStore(settings)


def artifact_name(tune_id: str) -> str:
    """A file- and Hub-safe name for a tune id; ids that needed changes get a short hash so none collide.

    Raises:
        ValidationError: the id has no letter or digit at all.
    """
    text = str(tune_id).strip()
    clean = re.sub(r"-{2,}", "-", _UNSAFE_NAME_CHARS.sub("-", text))[:80].strip("-_")
    if not clean:
        raise ValidationError("tune_id", tune_id, "must contain a letter or a digit")
    if clean != text:
        clean = f"{clean}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return clean


def render_model_card(card: ModelCard, *, load_from: str, sample_paths: Sequence[str] = ()) -> str:
    """README.md for a stored LoRA: YAML front matter the Hub understands, then how to load it.

    Args:
        card: what to say.
        load_from: what `pipe.load_lora_weights(...)` is given: the Hub repo id or the local folder.
        sample_paths: sample images as stored next to the card (e.g. `samples/0.png`), shown as the widget.

    Returns:
        The Markdown text. `base_model` is only in the front matter when it is a Hub id (not a local path or a
        built-in model), since the Hub rejects anything else there.
    """
    is_hub_model = _HUB_ID.fullmatch(card.base_model) is not None and "--" not in card.base_model
    other = OTHER_LICENSES.get(card.branch) if card.license is None else None
    metadata = ModelCardData(
        base_model=card.base_model if is_hub_model else None,
        instance_prompt=card.instance_prompt,
        tags=list(HUB_TAGS),
        library_name="diffusers",
        license=card.resolved_license,
        license_name=other[0] if other else None,
        license_link=other[1] if other else None,
        widget=[{"text": card.instance_prompt, "output": {"url": path}} for path in sample_paths] or None,
    )
    pipeline_from = json.dumps(card.base_model if is_hub_model else "<the base model folder>")
    what = "A DreamBooth LoRA"
    if card.model_type == "pti":
        what = f"An SDXL pivotal tuning (new tokens {''.join(card.tokens)} in both text encoders, and a LoRA)"
    return (
        f"---\n{metadata.to_yaml()}\n---\n\n"
        f"# {card.title or 'Tune Studio LoRA'}\n\n"
        f"{what} trained with Tune Studio on `{card.base_model}` (branch `{card.branch}`). "
        f"Put `{card.instance_prompt}` in a prompt to bring in the subject.\n\n"
        f"{_license_note(other)}"
        "## Use it with diffusers\n\n"
        f"```python\n{_usage(card, pipeline_from, load_from)}```\n\n"
        "The repository is private: log in first (`hf auth login`) or pass `token=` to `load_lora_weights`"
        f"{' and `hf_hub_download`' if card.model_type == 'pti' else ''}.\n"
    )


def _license_note(other: tuple[str, str] | None) -> str:
    if other is None:
        return ""
    name, link = other
    return (
        f"This LoRA is a derivative of its base model and is bound by the base model's license, "
        f"[{name}]({link}): read it before any commercial use of the LoRA or its images.\n\n"
    )


def _usage(card: ModelCard, pipeline_from: str, load_from: str) -> str:
    """The model card's Python: load the base pipeline, the LoRA (and a pti tune's embeddings), make an image."""
    pipeline, dtype = "AutoPipelineForText2Image", "float16"
    if card.family == "flux":  # FLUX.1 [dev] runs in bf16 (fp16 overflows in its transformer)
        pipeline, dtype = "FluxPipeline", "bfloat16"
    imports = f"from diffusers import {pipeline}\n"
    lines = [f"pipe = {pipeline}.from_pretrained({pipeline_from}, torch_dtype=torch.{dtype}).to('cuda')"]
    lines.append(f"pipe.load_lora_weights({json.dumps(load_from)}, weight_name={json.dumps(LORA_WEIGHTS_NAME)})")
    if card.model_type == "pti":  # the tokens go into both text encoders, as diffusers' advanced SDXL script does
        if _HUB_ID.fullmatch(load_from):  # else a folder of the local store
            imports += "from huggingface_hub import hf_hub_download\n"
            embeddings = f"hf_hub_download({json.dumps(load_from)}, {json.dumps(EMBEDDINGS_NAME)})"
        else:
            embeddings = json.dumps(str(Path(load_from) / EMBEDDINGS_NAME))
        imports += "from safetensors.torch import load_file\n"
        lines.append(f"state_dict = load_file({embeddings})")
        tokens = json.dumps(list(card.tokens))
        for key, encoder, tokenizer in TEXT_ENCODERS:
            lines.append(
                f"pipe.load_textual_inversion(state_dict[{json.dumps(key)}], token={tokens}, "
                f"text_encoder=pipe.{encoder}, tokenizer=pipe.{tokenizer})"
            )
    lines.append(f"image = pipe({json.dumps(card.instance_prompt + ', portrait photo')}).images[0]")
    return f"import torch\n{imports}\n" + "".join(line + "\n" for line in lines)


class LocalArtifactStore:
    """LoRA folders under `data_dir/artifacts/<tune>`; a location is the folder's absolute path."""

    kind = "local"

    def __init__(self, settings: Settings):
        self.root = (settings.data_dir / "artifacts").resolve()

    def __repr__(self) -> str:
        return f"LocalArtifactStore(root={str(self.root)!r})"

    def put(self, tune_id: str, lora_dir: Path, card: ModelCard) -> str:
        """Copy the LoRA weights, its metadata, a pti tune's embeddings, a README.md card and samples into the store.

        The copy is made in a hidden staging folder and renamed into place, so readers see the old artifact or
        the new one, never half of one; an existing artifact is only removed once the new one is in place.

        Args:
            tune_id: the tune's id; made file-safe with `artifact_name`.
            lora_dir: the training output, with `pytorch_lora_weights.safetensors` (and `lora_metadata.json`).
            card: what the README.md says.

        Returns:
            The artifact folder's absolute path, as a string.

        Raises:
            ValidationError: `lora_dir` has no weights (or a pti tune no embeddings), or a sample image does not exist.
            ArtifactError: the files could not be written (disk full, permissions...).
        """
        files = _lora_files(lora_dir, card)
        target = self.root / artifact_name(tune_id)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=self.root))
            try:
                _write_artifact(staging, files, card, load_from=str(target))
                _swap_into_place(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        except OSError as error:
            raise ArtifactError(
                f"Could not store the LoRA of tune {tune_id!r} in {target}: {error}", location=str(target)
            ) from error
        logger.info("stored the LoRA of tune %s in %s", tune_id, target)
        return str(target)

    def fetch(self, location: str) -> Path:
        """The artifact folder itself (nothing is copied).

        Raises:
            ValidationError: `location` is a Hub location (the Hub is not configured).
            ArtifactError: the folder or its weights are gone (`missing=True`).
        """
        folder = self._folder(location)
        if not (folder / LORA_WEIGHTS_NAME).is_file():
            raise ArtifactError(
                f"The LoRA at {location} is gone (deleted or expired): {LORA_WEIGHTS_NAME} is missing",
                location=location,
                missing=True,
            )
        return folder

    def delete(self, location: str) -> None:
        """Remove the artifact folder; a folder already gone is fine.

        Raises:
            ValidationError: `location` is not a folder of this store (never deletes anything else).
            ArtifactError: the folder could not be removed.
        """
        folder = self._folder(location)
        if not folder.resolve().is_relative_to(self.root) or folder.resolve() == self.root:
            raise ValidationError("location", location, f"is not an artifact folder inside {self.root}")
        if not folder.exists():
            return
        # Renamed away first, so a half-deleted folder is never mistaken for an artifact.
        trash = folder.with_name(f".{folder.name}.{uuid4().hex}.deleting")
        try:
            os.replace(folder, trash)
        except FileNotFoundError:
            return
        except OSError as error:
            raise ArtifactError(f"Could not delete the LoRA at {location}: {error}", location=location) from error
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("deleted the LoRA at %s", location)

    def exists(self, location: str) -> bool:
        """Whether the folder and its weights are there."""
        return (self._folder(location) / LORA_WEIGHTS_NAME).is_file()

    def url(self, location: str) -> str | None:
        """Local artifacts have no URL."""
        self._folder(location)
        return None

    def _folder(self, location: str) -> Path:
        if location.startswith(HUB_SCHEME):
            raise ValidationError(
                "location",
                location,
                "is a Hugging Face Hub location, but the Hub is not configured: set HF_TOKEN and TUNES_HUB_NAMESPACE",
            )
        if not location.strip():
            raise ValidationError("location", location, "must not be empty")
        return Path(location)


class HubArtifactStore:
    """One private model repo per tune, `<namespace>/tune-<tune>`; a location is `hub://<namespace>/<repo>`.

    Args:
        settings: `hf_token` (write access to the namespace), `hub_namespace`, `hub_timeout_s` (see
            `bound_hub_calls`) and `data_dir` (download cache).
        endpoint: the Hub's URL; default: huggingface_hub's own (`HF_ENDPOINT` or https://huggingface.co).
        retry: how calls are retried on 408/429/5xx and network errors.

    Raises:
        SettingsError: the token or namespace is missing, or the namespace is not a valid name.
    """

    kind = "hub"

    def __init__(self, settings: Settings, *, endpoint: str | None = None, retry: RetryPolicy | None = None):
        if not settings.hf_token:
            raise SettingsError("HF_TOKEN", "", "must be set to keep LoRAs on the Hugging Face Hub")
        namespace = settings.hub_namespace or ""
        if not _HUB_NAMESPACE.fullmatch(namespace) or "--" in namespace or ".." in namespace:
            raise SettingsError(
                "TUNES_HUB_NAMESPACE",
                namespace,
                "must be a Hugging Face user or organisation name (letters, digits, '-', '_', '.')",
            )
        self.namespace = namespace
        self._token = settings.hf_token
        self._api = HfApi(endpoint=endpoint, token=settings.hf_token)
        self.timeout = float(settings.hub_timeout_s)
        bound_hub_calls(self.timeout)
        self.endpoint = self._api.endpoint.rstrip("/")
        self.cache_dir = settings.data_dir / "hub_cache"
        self.retry = retry or RetryPolicy()
        self._local = LocalArtifactStore(settings)  # locations written before the Hub was configured

    def __repr__(self) -> str:
        return f"HubArtifactStore(namespace={self.namespace!r}, endpoint={self.endpoint!r})"

    def repo_id(self, tune_id: str) -> str:
        return f"{self.namespace}/tune-{artifact_name(tune_id)}"

    def put(self, tune_id: str, lora_dir: Path, card: ModelCard) -> str:
        """Upload the LoRA to its private repo in one commit: weights, metadata, embeddings (pti), card, `samples/`.

        The repo is created private if missing; an existing repo is checked, and made private if it is public.

        Args:
            tune_id: the tune's id; the repo is `<namespace>/tune-<artifact_name(tune_id)>`.
            lora_dir: the training output, with `pytorch_lora_weights.safetensors` (and `lora_metadata.json`).
            card: what the README.md says.

        Returns:
            `hub://<namespace>/tune-<tune>`.

        Raises:
            ValidationError: `lora_dir` has no weights, or a sample image does not exist.
            ArtifactError: the Hub refused or failed (after retries), or the repo stays public (nothing is
                uploaded then).
        """
        # 1. Check inputs before any request.
        files = _lora_files(lora_dir, card)
        repo_id = self.repo_id(tune_id)
        location = HUB_SCHEME + repo_id
        # 2. A private repo, even when it already existed.
        self._call("create", repo_id, lambda: self._api.create_repo(repo_id, private=True, exist_ok=True))
        self._ensure_private(repo_id)  # outside the clean-up below: a repo that was public is the owner's
        # 3. One commit: a reader never sees weights without their card, or the other way round.
        try:
            self._call(
                "upload",
                repo_id,
                lambda: self._api.create_commit(
                    repo_id,
                    _commit_operations(files, card, repo_id),
                    commit_message=f"Tune Studio: LoRA of tune {tune_id}",
                ),
            )
        except ArtifactError:
            self._delete_if_empty(repo_id)  # a failed upload leaves no empty repo behind
            raise
        logger.info("uploaded the LoRA of tune %s to %s", tune_id, location)
        return location

    def fetch(self, location: str) -> Path:
        """Download the weights, metadata and embeddings (pti) (cached under `data_dir/hub_cache`); return their folder.

        When the Hub cannot be reached, a copy already in the cache is returned.

        Raises:
            ValidationError: `location` is not a Hub artifact location.
            ArtifactError: the repo is gone (`missing=True`) or could not be downloaded.
        """
        if not location.startswith(HUB_SCHEME):
            return self._local.fetch(location)
        repo_id = self._repo_from(location)
        try:  # the commit to download; asked with a timeout (snapshot_download would ask without one)
            revision = self._call("look up", repo_id, lambda: self._api.model_info(repo_id, timeout=self.timeout)).sha
        except ArtifactError as error:
            cached = None if error.missing else self._cached(repo_id)
            if cached is None:
                raise
            logger.warning("using the cached copy of %s: %s", repo_id, error)
            return cached
        folder = self._call("download", repo_id, lambda: self._download(repo_id, revision))
        path = Path(folder)
        if not (path / LORA_WEIGHTS_NAME).is_file():
            raise ArtifactError(
                f"The Hub repo {repo_id} has no {LORA_WEIGHTS_NAME}: its upload never finished or it was changed",
                location=location,
                missing=True,
            )
        return path

    def _download(self, repo_id: str, revision: str) -> str:
        return snapshot_download(
            repo_id,
            revision=revision,
            token=self._token,
            endpoint=self.endpoint,
            cache_dir=self.cache_dir,
            etag_timeout=self.timeout,
            allow_patterns=list(ARTIFACT_FILES),
        )

    def _cached(self, repo_id: str) -> Path | None:
        """The newest downloaded copy with weights (huggingface_hub's cache: `snapshots/<commit>`), or None."""
        snapshots = self.cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots"
        copies = [folder for folder in snapshots.glob("*") if (folder / LORA_WEIGHTS_NAME).is_file()]
        return max(copies, key=lambda folder: folder.stat().st_mtime, default=None)

    def delete(self, location: str) -> None:
        """Delete the repo and its downloaded copy; a repo already gone is fine.

        Raises:
            ValidationError: `location` is not an artifact location.
            ArtifactError: the Hub refused or failed (after retries).
        """
        if not location.startswith(HUB_SCHEME):
            self._local.delete(location)
            return
        repo_id = self._repo_from(location)
        self._call("delete", repo_id, lambda: self._api.delete_repo(repo_id, missing_ok=True))
        # An expired LoRA must not live on in the download cache.
        cached = repo_folder_name(repo_id=repo_id, repo_type="model")
        shutil.rmtree(self.cache_dir / cached, ignore_errors=True)
        shutil.rmtree(self.cache_dir / ".locks" / cached, ignore_errors=True)
        logger.info("deleted the Hub repo %s", repo_id)

    def exists(self, location: str) -> bool:
        """Whether the repo exists and holds the weights.

        Raises:
            ArtifactError: the Hub could not answer (after retries).
        """
        if not location.startswith(HUB_SCHEME):
            return self._local.exists(location)
        repo_id = self._repo_from(location)
        try:
            info = self._call("look up", repo_id, lambda: self._api.model_info(repo_id, timeout=self.timeout))
        except ArtifactError as error:
            if error.missing:
                return False
            raise
        return info.siblings is None or any(sibling.rfilename == LORA_WEIGHTS_NAME for sibling in info.siblings)

    def url(self, location: str) -> str | None:
        """The repo's page on the Hub (private: visible to the namespace's members), or None for a folder."""
        if not location.startswith(HUB_SCHEME):
            return self._local.url(location)
        return f"{self.endpoint}/{self._repo_from(location)}"

    def _ensure_private(self, repo_id: str) -> None:
        if self._is_private(repo_id):
            return
        logger.warning("the Hub repo %s is public; making it private before uploading", repo_id)
        self._call("make private", repo_id, lambda: self._api.update_repo_settings(repo_id, private=True))
        if not self._is_private(repo_id):
            raise ArtifactError(
                f"The Hub repo {repo_id} is public and could not be made private, so nothing was uploaded. "
                f"Make it private ({self.endpoint}/{repo_id}/settings) or delete it, then train again.",
                location=HUB_SCHEME + repo_id,
            )

    def _delete_if_empty(self, repo_id: str) -> None:
        """Delete a repo holding nothing but the `.gitattributes` of a new repo (never one with files); best effort."""
        try:
            info = self._call("look up", repo_id, lambda: self._api.model_info(repo_id, timeout=self.timeout))
            if info.siblings is None or {sibling.rfilename for sibling in info.siblings} - {".gitattributes"}:
                return
            self._call("delete", repo_id, lambda: self._api.delete_repo(repo_id, missing_ok=True))
        except ArtifactError as error:
            logger.warning("could not delete the empty Hub repo %s left by a failed upload: %s", repo_id, error)

    def _is_private(self, repo_id: str) -> bool:
        info = self._call(
            "check the visibility of", repo_id, lambda: self._api.model_info(repo_id, timeout=self.timeout)
        )
        return info.private is True  # unknown counts as public

    def _repo_from(self, location: str) -> str:
        repo_id = location.removeprefix(HUB_SCHEME)
        _, _, name = repo_id.partition("/")
        if not _HUB_ID.fullmatch(repo_id) or not name.startswith("tune-") or "--" in repo_id or ".." in repo_id:
            raise ValidationError("location", location, "is not a Hub artifact location (hub://<namespace>/tune-<id>)")
        return repo_id

    def _call(self, action: str, repo_id: str, call: Callable[[], T]) -> T:
        """Run one Hub call, retrying transient failures; every failure leaves as an `ArtifactError`."""
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return call()
            except (HfHubHTTPError, httpx2.HTTPError, OSError, ValueError) as error:
                detail = self._redact(describe_hub_error(error))
                if attempt < self.retry.attempts and _is_transient(error):
                    delay = max(self.retry.delay(attempt), min(_retry_after(error), self.retry.max_delay))
                    logger.warning(
                        "could not %s the Hub repo %s (%s); retrying in %.1fs [%d/%d]",
                        action,
                        repo_id,
                        detail,
                        delay,
                        attempt,
                        self.retry.attempts - 1,
                    )
                    self.retry.sleep(delay)
                    continue
                message = self._redact(self._message(action, repo_id, error, detail, attempt))
                translated = ArtifactError(message, location=HUB_SCHEME + repo_id, missing=is_missing_on_hub(error))
                # Keep the library error for debugging unless its text carries the token.
                raise translated from (None if self._token in hub_error_chain_text(error) else error)
        raise AssertionError("unreachable: RetryPolicy.attempts >= 1")

    def _message(self, action: str, repo_id: str, error: BaseException, detail: str, attempts: int) -> str:
        message = f"Could not {action} the Hugging Face Hub repo {repo_id}: {detail}"
        status = hub_error_status(error)
        if is_missing_on_hub(error):
            message += ". It does not exist (deleted or expired), or HF_TOKEN cannot see it"
        elif status in (401, 403):
            message += f". Check that HF_TOKEN is valid and may write to the namespace {self.namespace!r}"
        elif _is_transient(error):
            message += f" (tried {attempts} times). The Hub seems busy or unreachable; try again later"
        return message

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "hf_***") if self._token else text


def bound_hub_calls(seconds: float) -> None:
    """Give every huggingface_hub request of this process a timeout: `seconds` to connect, and between two
    chunks sent or received (a slow upload keeps going; a Hub that stops answering does not hold a worker).

    huggingface_hub's own client waits forever; its session is process-wide, so this is too. A timed-out call
    is a transport error, which huggingface_hub itself retries a few times for uploads, then
    `HubArtifactStore` retries and reports. Not covered: files the Hub asks to receive through Xet storage
    (the `hf_xet` package has its own client and time limits) and a Hub that keeps trickling bytes.
    """
    timeout = httpx2.Timeout(seconds)
    if _HUB_TIMEOUT.get("value") == timeout:
        return

    def client() -> httpx2.Client:
        session = default_client_factory()
        session.timeout = timeout
        return session

    set_client_factory(client)
    _HUB_TIMEOUT["value"] = timeout


_HUB_TIMEOUT: dict[str, httpx2.Timeout] = {}


def _lora_files(lora_dir: Path, card: ModelCard) -> dict[str, Path]:
    """Repo-relative name -> local file, after checking everything that will be copied is there."""
    lora_dir = Path(lora_dir)
    weights = lora_dir / LORA_WEIGHTS_NAME
    if not weights.is_file():
        raise ValidationError("lora_dir", str(lora_dir), f"has no {LORA_WEIGHTS_NAME}: has training finished?")
    files = {LORA_WEIGHTS_NAME: weights}
    for name in (METADATA_NAME, EMBEDDINGS_NAME):
        if (lora_dir / name).is_file():
            files[name] = lora_dir / name
    if card.model_type == "pti" and EMBEDDINGS_NAME not in files:
        raise ValidationError("lora_dir", str(lora_dir), f"has no {EMBEDDINGS_NAME}, which a pti tune needs")
    for index, path in enumerate(card.sample_images):
        if not path.is_file():
            raise ValidationError(f"card.sample_images[{index}]", str(path), "does not exist")
        files[f"{SAMPLES_DIR}/{index}{path.suffix.lower()}"] = path
    return files


def _write_artifact(folder: Path, files: dict[str, Path], card: ModelCard, *, load_from: str) -> None:
    for name, source in files.items():
        destination = folder / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    samples = [name for name in files if name.startswith(f"{SAMPLES_DIR}/")]
    (folder / README_NAME).write_text(render_model_card(card, load_from=load_from, sample_paths=samples))


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename `staging` to `target`; an existing `target` is moved aside first and restored on failure."""
    previous = target.with_name(f".{target.name}.{uuid4().hex}.previous") if target.exists() else None
    if previous is not None:
        os.replace(target, previous)
    try:
        os.replace(staging, target)
    except OSError:
        if previous is not None:
            os.replace(previous, target)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _commit_operations(files: dict[str, Path], card: ModelCard, repo_id: str) -> list[CommitOperationAdd]:
    samples = [name for name in files if name.startswith(f"{SAMPLES_DIR}/")]
    readme = render_model_card(card, load_from=repo_id, sample_paths=samples)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=path) for name, path in files.items()]
    operations.append(CommitOperationAdd(path_in_repo=README_NAME, path_or_fileobj=readme.encode()))
    return operations


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def hub_error_chain_text(error: BaseException) -> str:
    return "\n".join(f"{type(cause).__name__}: {cause}" for cause in _causes(error))


def hub_error_status(error: BaseException) -> int | None:
    for cause in _causes(error):
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            return cause.response.status_code
    return None


def _retry_after(error: BaseException) -> float:
    """The seconds a 429/503 answer asks to wait (`Retry-After: 5`); 0 when it does not say (or gives a date)."""
    for cause in _causes(error):
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            try:
                return max(0.0, float(cause.response.headers.get("Retry-After", "")))
            except ValueError:
                return 0.0
    return 0.0


def is_missing_on_hub(error: BaseException) -> bool:
    return any(isinstance(cause, RepositoryNotFoundError) for cause in _causes(error))


def _is_transient(error: BaseException) -> bool:
    """429, 5xx and network errors, also when snapshot_download wrapped them (LocalEntryNotFoundError)."""
    if is_missing_on_hub(error):
        return False
    status = hub_error_status(error)
    if status is not None:
        return status in RETRY_STATUS_CODES
    return any(isinstance(cause, httpx2.TransportError) for cause in _causes(error))


def describe_hub_error(error: BaseException) -> str:
    status = hub_error_status(error)
    for cause in _causes(error):
        if isinstance(cause, HfHubHTTPError):
            text = cause.server_message or next((line for line in str(cause).splitlines() if line.strip()), "")
            return f"HTTP {status}: {text.strip()}" if status else text.strip()
    first_line = next((line for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first_line.strip()}" if first_line else type(error).__name__
