"""All environment settings, read in one place into one immutable `Settings` object.

Nothing else in the project reads `os.environ` for its own configuration; the object is built once at
start (`Settings.from_env()`) and passed in explicitly. Every variable is listed in `SETTINGS_DOC` so the
README table can be checked against it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from pipelines.errors import SettingsError

# name -> (Settings attribute, description). Kept next to the parser so docs cannot drift.
SETTINGS_DOC: dict[str, tuple[str, str]] = {
    "TUNES_DATA_DIR": ("data_dir", "Folder for the database, photos, LoRAs, images and built tiny models."),
    "TUNES_DEFAULT_BRANCH": ("default_branch", "Branch used when a request names none (`tiny` on CPU)."),
    "TUNES_MIN_PHOTOS": ("min_photos", "Fewest photos a tune accepts."),
    "TUNES_MAX_PHOTOS": ("max_photos", "Most photos a tune accepts."),
    "TUNES_MIN_PHOTO_SIDE": ("min_photo_side", "Shortest accepted photo side, in pixels."),
    "TUNES_MAX_PHOTO_PIXELS": ("max_photo_pixels", "Largest accepted photo, in pixels (decompression-bomb guard)."),
    "TUNES_MAX_PHOTO_BYTES": ("max_photo_bytes", "Largest accepted photo file, in bytes."),
    "TUNES_BASE_MODEL_SD15": ("base_model_sd15", "Hub id or local diffusers folder of the `sd15` base model."),
    "TUNES_BASE_MODEL_SDXL1": ("base_model_sdxl1", "Hub id or local diffusers folder of the `sdxl1` base model."),
    "TUNES_BASE_MODEL_FLUX1": ("base_model_flux1", "Hub id or local diffusers folder of the `flux1` base model."),
    "HF_TOKEN": ("hf_token", "Hugging Face token: gated base models, private LoRA repos. Never logged."),
    "TUNES_HUB_NAMESPACE": ("hub_namespace", "User or org for private LoRA repos (with HF_TOKEN)."),
    "TUNES_HUB_TIMEOUT": (
        "hub_timeout_s",
        "Seconds a Hub call may wait to connect or for the next bytes of an answer before it is retried.",
    ),
    "TUNES_RETENTION_DAYS": ("retention_days", "Days a trained LoRA is kept before it expires."),
    "TUNES_ADMINS": ("admins", "Comma-separated user ids with admin rights (the admin tab and its actions)."),
    "TUNES_EDITORS": ("editors", "Comma-separated user ids who may edit packs (admins may too)."),
    "TUNES_LOCAL_USER": (
        "local_user",
        "The one user when nobody signs in (no accounts, no OAuth); an admin unless TUNES_ADMINS is set.",
    ),
    "TUNES_ACCOUNTS": ("accounts", "Accounts `name:password,name:password`; the app asks to sign in. Never logged."),
    "OAUTH_CLIENT_ID": ("oauth_client_id", "Set by Spaces with `hf_oauth: true`: users sign in with Hugging Face."),
    "TUNES_API_RATE_PER_MINUTE": (
        "api_rate_per_minute",
        "Requests a minute per user, REST and the Gradio API together, whatever the number of keys "
        "(bursts up to as many).",
    ),
    "TUNES_MAX_API_KEYS": ("max_api_keys", "Unrevoked API keys a user may hold at once."),
    "TUNES_LOGIN_FAILURES": (
        "login_failures",
        "Wrong passwords allowed per account and per client address before sign-in waits (then one more a minute).",
    ),
    "TUNES_ALLOWED_ORIGINS": (
        "allowed_origins",
        "Other sites (`https://host[:port]`, comma-separated) whose pages may call this server with a user's "
        "sign-in; empty: this server's own pages only.",
    ),
    "TUNES_FILE_CACHE_HOURS": (
        "file_cache_hours",
        "Hours the web UI keeps its copies of uploads and shown images before deleting them.",
    ),
    "SPACE_ID": ("space_id", "Set by Spaces (`owner/name`): the Hugging Face page may embed the app in a frame."),
    "TUNES_ALLOWED_FETCH_HOSTS": ("allowed_fetch_hosts", "Hosts photo URLs and callbacks may reach although private."),
    "TUNES_LORA_CACHE_SIZE": ("lora_cache_size", "LoRA adapters kept loaded per base pipeline (LRU)."),
    "TUNES_CHECKPOINT_EVERY": ("checkpoint_every", "Training steps between resumable checkpoints."),
    "TUNES_DEVICE": ("device", "`auto`, `cpu`, `cuda` or `cuda:N` for training and generation."),
    "TUNES_WORKER_DEVICES": (
        "worker_devices",
        "Comma-separated devices, one local worker process each (e.g. `cuda:0,cuda:1`); empty: one on "
        "TUNES_DEVICE; `none`: no local worker (the web process only queues).",
    ),
    "TUNES_TRAIN_ON": ("train_on", "`local` (worker processes) or `hf-jobs` (rented GPUs on Hugging Face Jobs)."),
    "TUNES_JOBS_FLAVOR": (
        "jobs_flavor",
        "Hugging Face Jobs hardware for trainings (`a10g-small`, `l40sx1`, `a100-large`, `h200`…).",
    ),
    "TUNES_JOBS_NAMESPACE": (
        "jobs_namespace",
        "User or org the jobs and training sets run under (default TUNES_HUB_NAMESPACE).",
    ),
    "TUNES_JOBS_IMAGE": ("jobs_image", "Docker image of the jobs (default: this Space's, `hf.co/spaces/$SPACE_ID`)."),
    "TUNES_JOBS_TIMEOUT": (
        "jobs_timeout_s",
        "Seconds a job may wait and run before it is cancelled and its tune fails.",
    ),
    "TUNES_JOBS_MAX_RUNNING": (
        "jobs_max_running",
        "Most jobs running at once (a cost cap: other tunes wait in the queue).",
    ),
    "TUNES_WORKER_LEASE_SECONDS": (
        "worker_lease_s",
        "Seconds a running job stays its worker's without a heartbeat; then another worker takes it over.",
    ),
    "TUNES_ADMIN_REFRESH_SECONDS": (
        "admin_refresh_s",
        "Seconds between refreshes of the admin dashboard while its tab is open (it stops when another tab is).",
    ),
    "TUNES_IMAGE_RETENTION_DAYS": ("image_retention_days", "Days generated images are kept; 0 keeps them forever."),
    "TUNES_DELETE_PHOTOS": ("delete_photos_after_training", "Delete training photos once a tune is trained (1/0)."),
}


@dataclass(frozen=True)
class Settings:
    """Process-wide configuration. Build with `Settings.from_env()`; override with `dataclasses.replace`."""

    data_dir: Path = Path("./data")
    default_branch: str = "tiny"
    min_photos: int = 4
    max_photos: int = 30
    min_photo_side: int = 256
    max_photo_pixels: int = 50_000_000
    max_photo_bytes: int = 25 * 1024 * 1024
    base_model_sd15: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    base_model_sdxl1: str = "stabilityai/stable-diffusion-xl-base-1.0"
    base_model_flux1: str = "black-forest-labs/FLUX.1-dev"
    hf_token: str | None = field(default=None, repr=False)
    hub_namespace: str | None = None
    hub_timeout_s: int = 60
    retention_days: int = 30
    admins: tuple[str, ...] = ()
    editors: tuple[str, ...] = ()
    local_user: str = "local"
    accounts: tuple[str, ...] = field(default=(), repr=False)
    oauth_client_id: str | None = None
    api_rate_per_minute: int = 120
    max_api_keys: int = 5
    login_failures: int = 5
    allowed_origins: tuple[str, ...] = ()
    file_cache_hours: int = 24
    space_id: str | None = None
    allowed_fetch_hosts: tuple[str, ...] = ()
    lora_cache_size: int = 4
    checkpoint_every: int = 100
    device: str = "auto"
    worker_devices: tuple[str, ...] = ()
    worker_lease_s: int = 30
    admin_refresh_s: int = 15
    train_on: str = "local"
    jobs_flavor: str = "a10g-small"
    jobs_namespace: str | None = None
    jobs_image: str | None = None
    jobs_timeout_s: int = 7200
    jobs_max_running: int = 2
    delete_photos_after_training: bool = True
    image_retention_days: int = 0

    def __post_init__(self) -> None:
        # absolute: stored file paths must not depend on the folder the process was started from
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().resolve())
        if not 1 <= self.min_photos <= self.max_photos:
            raise SettingsError(
                "TUNES_MIN_PHOTOS", self.min_photos, f"must be >= 1 and <= TUNES_MAX_PHOTOS={self.max_photos}"
            )
        positive = (
            "min_photo_side",
            "max_photo_pixels",
            "max_photo_bytes",
            "retention_days",
            "lora_cache_size",
            "hub_timeout_s",
        )
        for name in (
            *positive,
            "admin_refresh_s",
            "api_rate_per_minute",
            "max_api_keys",
            "login_failures",
            "file_cache_hours",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(_env_name(name), getattr(self, name), "must be a positive integer")
        if self.image_retention_days < 0:
            raise SettingsError("TUNES_IMAGE_RETENTION_DAYS", self.image_retention_days, "must be 0 (keep) or more")
        if self.checkpoint_every < 1:
            raise SettingsError("TUNES_CHECKPOINT_EVERY", self.checkpoint_every, "must be a positive integer")
        for account in self.accounts:
            name, _, password = account.partition(":")
            if not name.strip() or not password:
                # the value holds passwords: name the variable and the account, never the value
                raise SettingsError("TUNES_ACCOUNTS", name.strip() or "(empty)", "entries must read name:password")
        for origin in self.allowed_origins:
            if origin != _origin_form(origin):
                raise SettingsError(
                    "TUNES_ALLOWED_ORIGINS", origin, "entries must be origins like https://example.com (no path)"
                )
        if not self.local_user.strip():
            raise SettingsError("TUNES_LOCAL_USER", self.local_user, "must be a non-empty user id")
        if not _is_device(self.device):
            raise SettingsError("TUNES_DEVICE", self.device, "must be `auto`, `cpu`, `cuda` or `cuda:N`")
        devices = self.worker_devices
        if devices != ("none",) and not all(_is_device(device) for device in devices):
            message = "must be `none` or devices like `cpu`, `cuda:0,cuda:1` (`auto`, `cpu`, `cuda`, `cuda:N`)"
            raise SettingsError("TUNES_WORKER_DEVICES", ",".join(devices), message)
        self._check_jobs()
        if self.worker_lease_s < 3:
            raise SettingsError("TUNES_WORKER_LEASE_SECONDS", self.worker_lease_s, "must be at least 3 seconds")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every `SETTINGS_DOC` variable from `env` (default: `os.environ`).

        Raises:
            SettingsError: a variable is set to a value of the wrong type; the message names it.
        """
        env = os.environ if env is None else env
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, object] = {}
        for var, (attr, _) in SETTINGS_DOC.items():
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            values[attr] = _parse(var, raw.strip(), types[attr])
        return cls(**values)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)

    def _check_jobs(self) -> None:
        if self.train_on not in ("local", "hf-jobs"):
            raise SettingsError("TUNES_TRAIN_ON", self.train_on, "must be `local` or `hf-jobs`")
        for name in ("jobs_timeout_s", "jobs_max_running"):
            if getattr(self, name) < 1:
                raise SettingsError(_env_name(name), getattr(self, name), "must be a positive integer")
        if self.train_on != "hf-jobs":
            return
        if not self.hf_token:
            raise SettingsError("HF_TOKEN", "", "must be set to train on Hugging Face Jobs (TUNES_TRAIN_ON=hf-jobs)")
        if not self.jobs_owner:
            message = "must be set (or TUNES_HUB_NAMESPACE) to train on Hugging Face Jobs"
            raise SettingsError("TUNES_JOBS_NAMESPACE", "", message)
        if not self.jobs_docker_image:
            message = "must name the image the jobs run (this project's; on a Space it defaults to the Space's)"
            raise SettingsError("TUNES_JOBS_IMAGE", "", message)

    @property
    def jobs_owner(self) -> str | None:
        """The namespace of the jobs and the training-set repos."""
        return self.jobs_namespace or self.hub_namespace

    @property
    def jobs_docker_image(self) -> str | None:
        return self.jobs_image or (f"hf.co/spaces/{self.space_id}" if self.space_id else None)

    @property
    def local_workers(self) -> tuple[str, ...]:
        """The device of each local worker process to start (`TUNES_WORKER_DEVICES`, else one on `TUNES_DEVICE`)."""
        if self.worker_devices == ("none",):
            return ()
        return self.worker_devices or (self.device,)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def account_pairs(self) -> list[tuple[str, str]]:
        """(name, password) pairs for `launch(auth=...)`."""
        return [(name.strip(), password) for name, _, password in (a.partition(":") for a in self.accounts)]

    def base_model_override(self, branch: str) -> str | None:
        """The configured model id/path for a real branch, or None for branches without one."""
        return getattr(self, f"base_model_{branch}", None)


def _origin_form(origin: str) -> str:
    """`origin` as browsers send it in `Origin` (`scheme://host[:port]`, lower case), or "" when it is not one."""
    parsed = urlsplit(origin)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path or parsed.query:
        return ""
    return f"{parsed.scheme}://{parsed.netloc.lower()}" if origin == origin.lower() else ""


def _is_device(value: str) -> bool:
    return value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())


def _env_name(attr: str) -> str:
    return next(var for var, (a, _) in SETTINGS_DOC.items() if a == attr)


def _parse(var: str, raw: str, type_name: object) -> object:
    kind = str(type_name)
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(var, raw, "must be an integer") from None
    if kind == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(var, raw, "must be 1/0, true/false, yes/no or on/off")
    if kind == "Path":
        return Path(raw).expanduser()
    if kind.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw
