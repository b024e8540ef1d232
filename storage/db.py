"""SQLite storage: one file in the data folder, WAL mode, schema created and migrated on open.

Every read or write of a user's record takes the owner and filters on it; there is no helper that can
return another owner's record. The queue's primitives (reads and writes by id inside a transaction) are the
only owner-less queries; `studio.queue` composes them and hands records to the worker, never to an interface.
This module runs SQL only: which job goes next and what ending a job entails are decided in `studio.queue`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from storage.records import (
    PROMPT_PENDING,
    TUNE_ACTIVE,
    Delivery,
    DeliveryStatus,
    Image,
    Prompt,
    PromptStatus,
    Tune,
    TuneStatus,
    Visibility,
    WorkerRecord,
    from_row,
    iso,
    new_publication,
    utc_now,
)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        tune_credits INTEGER,            -- NULL: unlimited
        image_credits INTEGER
    );
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL REFERENCES users(id),
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE tunes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL REFERENCES users(id),
        title TEXT NOT NULL,
        name TEXT NOT NULL,
        token TEXT NOT NULL,
        branch TEXT NOT NULL,
        base_model TEXT NOT NULL,
        model_type TEXT NOT NULL DEFAULT 'lora',
        steps INTEGER,
        face_crop INTEGER NOT NULL DEFAULT 1,
        characteristics TEXT NOT NULL DEFAULT '{}',
        callback TEXT,
        prompts_callback TEXT,
        auto_extend INTEGER NOT NULL DEFAULT 0,
        pack_id TEXT,
        status TEXT NOT NULL,
        progress REAL NOT NULL DEFAULT 0,
        eta_seconds REAL,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        seed INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        started_training_at TEXT,
        trained_at TEXT,
        expires_at TEXT,
        artifact_location TEXT,
        photo_report TEXT NOT NULL DEFAULT '[]',
        orig_images TEXT NOT NULL DEFAULT '[]',
        UNIQUE (owner, title)
    );
    CREATE INDEX tunes_queue ON tunes(status, id);
    CREATE TABLE prompts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tune_id INTEGER NOT NULL REFERENCES tunes(id) ON DELETE CASCADE,
        owner TEXT NOT NULL REFERENCES users(id),
        text TEXT NOT NULL,
        rendered_text TEXT NOT NULL,
        negative_prompt TEXT NOT NULL DEFAULT '',
        num_images INTEGER NOT NULL,
        seed INTEGER,
        w INTEGER,
        h INTEGER,
        cfg_scale REAL NOT NULL,
        steps INTEGER NOT NULL,
        scheduler TEXT NOT NULL,
        super_resolution INTEGER NOT NULL DEFAULT 0,
        inpaint_faces INTEGER NOT NULL DEFAULT 0,
        hires_fix INTEGER NOT NULL DEFAULT 0,
        callback TEXT,
        status TEXT NOT NULL,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        started_at TEXT,
        completed_at TEXT
    );
    CREATE INDEX prompts_queue ON prompts(status, id);
    CREATE INDEX prompts_tune ON prompts(tune_id);
    CREATE TABLE images (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        prompt_id INTEGER NOT NULL,      -- no FK: images outlive their prompt and tune
        owner TEXT NOT NULL,
        path TEXT NOT NULL,
        seed INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        liked INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE INDEX images_prompt ON images(prompt_id);
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        url TEXT NOT NULL,
        kind TEXT NOT NULL,              -- tune | prompt | prompts
        record_id INTEGER NOT NULL,
        status TEXT NOT NULL,            -- pending | delivered | failed
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_status INTEGER,
        last_error TEXT,
        created_at TEXT NOT NULL,
        delivered_at TEXT
    );
    CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at);
    """,
    # 2: prompts remember the pack prompt they came from, so likes roll up to it
    """
    ALTER TABLE prompts ADD COLUMN pack_id TEXT;
    ALTER TABLE prompts ADD COLUMN pack_prompt TEXT;
    CREATE INDEX prompts_pack ON prompts(pack_id, pack_prompt);
    """,
    # 3: prompts combine tunes with `<lora:ID:weight>` tags; tunes keep Astria's compatibility fields
    """
    ALTER TABLE prompts ADD COLUMN loras TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE tunes ADD COLUMN api_fields TEXT NOT NULL DEFAULT '{}';
    """,
    # 4: worker processes hold running jobs by a lease (renewed by a heartbeat) and report themselves
    """
    ALTER TABLE tunes ADD COLUMN worker_id TEXT;
    ALTER TABLE tunes ADD COLUMN lease_until TEXT;
    ALTER TABLE prompts ADD COLUMN worker_id TEXT;
    ALTER TABLE prompts ADD COLUMN lease_until TEXT;
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        device TEXT NOT NULL,
        pid INTEGER,
        host TEXT,
        started_at TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL,
        stopped_at TEXT,
        job TEXT,                        -- "tune 12" / "prompt 40" while it runs one
        jobs_done INTEGER NOT NULL DEFAULT 0,
        branches TEXT NOT NULL DEFAULT '[]'   -- base pipelines it has loaded (prompt affinity)
    );
    """,
    # 5: a tune trained on Hugging Face Jobs remembers its job and its training-set dataset repo
    """
    ALTER TABLE tunes ADD COLUMN job_id TEXT;
    ALTER TABLE tunes ADD COLUMN training_set TEXT;
    """,
    # 6: likeness. The subject's face embeddings (biometric) live in their own table, never read by an interface,
    # and go with the LoRA; each image keeps its likeness to the subject
    """
    CREATE TABLE subject_faces (
        tune_id INTEGER PRIMARY KEY REFERENCES tunes(id) ON DELETE CASCADE,
        embeddings BLOB NOT NULL,        -- float32 little-endian, 128 per person
        created_at TEXT NOT NULL
    );
    ALTER TABLE images ADD COLUMN likeness REAL;
    ALTER TABLE prompts ADD COLUMN best_of INTEGER;
    """,
    # 7: a training's loss curve as it trains ([[step, mean loss since the previous point], ...]), for the Create tab
    """
    ALTER TABLE tunes ADD COLUMN loss_curve TEXT NOT NULL DEFAULT '[]';
    """,
    # 8: the ops dashboard's history: credits spent (one row per charge, unlimited users too) and disk used by kind
    # (sampled by the scheduler)
    """
    CREATE TABLE credit_spends (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        at TEXT NOT NULL,
        tunes INTEGER NOT NULL,
        images INTEGER NOT NULL
    );
    CREATE INDEX credit_spends_at ON credit_spends(at);
    CREATE TABLE storage_samples (
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        files INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        PRIMARY KEY (at, kind)
    );
    """,
    # 9: public avatars: a tune's visibility and its publication key (drawn each time it becomes public; its public
    # links are signed with it), an image hidden by its owner or blocked by an admin
    """
    ALTER TABLE tunes ADD COLUMN visibility TEXT NOT NULL DEFAULT 'private';
    ALTER TABLE tunes ADD COLUMN publication TEXT;
    ALTER TABLE images ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE images ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX tunes_public ON tunes(visibility, id);
    """,
)

_TUNE_UPDATABLE = {
    "status",
    "progress",
    "eta_seconds",
    "error",
    "attempts",
    "started_training_at",
    "trained_at",
    "expires_at",
    "artifact_location",
    "orig_images",
    "auto_extend",
    "worker_id",
    "lease_until",
    "job_id",
    "training_set",
    "loss_curve",
}
_PROMPT_UPDATABLE = {"status", "error", "attempts", "started_at", "completed_at", "seed", "worker_id", "lease_until"}


class Database:
    """A SQLite database shared by the threads of one process (one connection, serialised by a lock).

    Args:
        path: the database file; its folder is created. Schema migrations run on open.
        clock: "now" for the timestamps it writes (tests inject a fake clock).
    """

    def __init__(self, path: Path, *, clock: Callable[[], datetime] = utc_now):
        path = Path(path)
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work: everything inside commits together or not at all."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error:  # a full disk or a lock at commit: end the transaction, or every later BEGIN fails
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads that see one moment (a read transaction: nothing is written inside it)."""
        with self._lock:
            self._conn.execute("BEGIN DEFERRED")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = row["version"] if row else 0
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT version FROM schema_version").fetchone()["version"]

    # -- users -----------------------------------------------------------------------------------

    def ensure_user(self, conn: sqlite3.Connection, owner: str) -> None:
        conn.execute("INSERT OR IGNORE INTO users (id, created_at) VALUES (?, ?)", (owner, iso(self.clock())))

    def credits(self, owner: str) -> tuple[int | None, int | None]:
        """(tune credits, image credits) of a user; None means unlimited."""
        with self._lock:
            row = self._conn.execute("SELECT tune_credits, image_credits FROM users WHERE id = ?", (owner,)).fetchone()
        return (row["tune_credits"], row["image_credits"]) if row else (None, None)

    def set_credits(self, owner: str, *, tunes: int | None, images: int | None) -> None:
        with self.transaction() as conn:
            self.ensure_user(conn, owner)
            conn.execute("UPDATE users SET tune_credits = ?, image_credits = ? WHERE id = ?", (tunes, images, owner))

    def spend_credits(self, conn: sqlite3.Connection, owner: str, *, tunes: int = 0, images: int = 0) -> bool:
        """Take credits inside a transaction; False (and nothing taken) when there are not enough."""
        self.ensure_user(conn, owner)
        row = conn.execute("SELECT tune_credits, image_credits FROM users WHERE id = ?", (owner,)).fetchone()
        if (row["tune_credits"] is not None and row["tune_credits"] < tunes) or (
            row["image_credits"] is not None and row["image_credits"] < images
        ):
            return False
        conn.execute(
            "UPDATE users SET tune_credits = tune_credits - ?, image_credits = image_credits - ? WHERE id = ?",
            (tunes, images, owner),
        )
        conn.execute(
            "INSERT INTO credit_spends (owner, at, tunes, images) VALUES (?, ?, ?, ?)",
            (owner, iso(self.clock()), tunes, images),
        )
        return True

    # -- API keys ------------------------------------------------------------------------------------

    def add_api_key(self, owner: str, key_hash: str, prefix: str) -> int:
        with self.transaction() as conn:
            return self.insert_api_key(conn, owner, key_hash, prefix)

    def insert_api_key(self, conn: sqlite3.Connection, owner: str, key_hash: str, prefix: str) -> int:
        """Add a key inside a transaction; returns its id."""
        self.ensure_user(conn, owner)
        return conn.execute(
            "INSERT INTO api_keys (owner, key_hash, prefix, created_at) VALUES (?, ?, ?, ?)",
            (owner, key_hash, prefix, iso(self.clock())),
        ).lastrowid

    def count_api_keys(self, conn: sqlite3.Connection, owner: str) -> int:
        """The owner's unrevoked keys, inside a transaction (to check a cap and add a key at once)."""
        row = conn.execute("SELECT COUNT(*) AS n FROM api_keys WHERE owner = ? AND revoked_at IS NULL", (owner,))
        return row.fetchone()["n"]

    def key_of(self, key_hash: str) -> tuple[str, int] | None:
        """(owner, key id) of an unrevoked key, else None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT owner, id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,)
            ).fetchone()
        return (row["owner"], row["id"]) if row else None

    def key_is_active(self, owner: str, key_id: int) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM api_keys WHERE owner = ? AND id = ? AND revoked_at IS NULL", (owner, key_id)
            ).fetchone()
        return row is not None

    def list_api_keys(self, owner: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, prefix, created_at, revoked_at FROM api_keys WHERE owner = ? ORDER BY id", (owner,)
            ).fetchall()
        return [dict(row) for row in rows]

    def revoke_api_key(self, owner: str, key_id: int) -> bool:
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE owner = ? AND id = ? AND revoked_at IS NULL",
                (iso(self.clock()), owner, key_id),
            )
            return cursor.rowcount == 1

    # -- tunes -----------------------------------------------------------------------------------

    def insert_tune(self, conn: sqlite3.Connection, owner: str, values: dict[str, Any]) -> int:
        now = iso(self.clock())
        row = {"owner": owner, "status": TuneStatus.QUEUED, "created_at": now, "updated_at": now, **values}
        for key in ("characteristics", "photo_report", "orig_images", "api_fields"):
            if key in row:
                row[key] = json.dumps(row[key])
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        return conn.execute(f"INSERT INTO tunes ({columns}) VALUES ({marks})", tuple(row.values())).lastrowid

    def get_tune(self, owner: str, tune_id: int) -> Tune | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM tunes WHERE owner = ? AND id = ?", (owner, tune_id)).fetchone()
        return from_row(Tune, row) if row else None

    def training_sets_of(self, statuses: Sequence[str]) -> set[str]:
        """The training-set repos (`Tune.training_set`) of the tunes in `statuses`."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT training_set FROM tunes WHERE training_set IS NOT NULL AND status IN ({_marks(statuses)})",
                tuple(statuses),
            ).fetchall()
        return {row["training_set"] for row in rows}

    def tune_by_title(self, owner: str, title: str) -> Tune | None:
        with self._lock:
            return self.find_tune_by_title(self._conn, owner, title)

    def find_tune(self, conn: sqlite3.Connection, owner: str, tune_id: int) -> Tune | None:
        """One of `owner`'s tunes, read inside a transaction (to check its status and write in one step)."""
        row = conn.execute("SELECT * FROM tunes WHERE owner = ? AND id = ?", (owner, tune_id)).fetchone()
        return from_row(Tune, row) if row else None

    def find_tune_by_title(self, conn: sqlite3.Connection, owner: str, title: str) -> Tune | None:
        row = conn.execute("SELECT * FROM tunes WHERE owner = ? AND title = ?", (owner, title)).fetchone()
        return from_row(Tune, row) if row else None

    def list_tunes(self, owner: str, *, limit: int, offset: int) -> list[Tune]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM tunes WHERE owner = ? ORDER BY id DESC LIMIT ? OFFSET ?", (owner, limit, offset)
            ).fetchall()
        return [from_row(Tune, row) for row in rows]

    def update_tune(self, owner: str, tune_id: int, *, only_if_status: str | None = None, **changes: Any) -> bool:
        """Change columns of one tune. With `only_if_status`, only while it still has that status (the
        worker uses this so a tune cancelled or deleted meanwhile is not brought back). Returns whether a
        row changed."""
        return self._update("tunes", _TUNE_UPDATABLE, owner, tune_id, only_if_status, changes)

    def _update(
        self, table: str, allowed: set[str], owner: str, record_id: int, status: str | None, changes: dict[str, Any]
    ) -> bool:
        statuses = None if status is None else (status,)
        with self.transaction() as conn:
            return self._set(conn, table, allowed, {"owner": owner, "id": record_id}, statuses, changes) == 1

    def _set(
        self,
        conn: sqlite3.Connection,
        table: str,
        allowed: set[str],
        where: dict[str, Any],
        statuses: Sequence[str] | None,
        changes: dict[str, Any],
    ) -> int:
        """UPDATE the rows of `table` matching `where` (and in one of `statuses`, when given); returns how many."""
        unknown = set(changes) - allowed - {"updated_at"}
        if unknown:
            raise ValueError(f"{table} columns cannot be updated: {sorted(unknown)}")
        changes = dict(changes)
        for key in ("orig_images", "loss_curve"):
            if key in changes:
                changes[key] = json.dumps(changes[key])
        changes.setdefault("updated_at", iso(self.clock()))
        assignments = ", ".join(f"{key} = ?" for key in changes)  # keys come from `allowed`, never from users
        conditions = [f"{key} = ?" for key in where]  # keys come from this module
        params: list[Any] = [*changes.values(), *where.values()]
        if statuses is not None:
            conditions.append(f"status IN ({_marks(statuses)})")
            params.extend(statuses)
        return conn.execute(f"UPDATE {table} SET {assignments} WHERE {' AND '.join(conditions)}", params).rowcount

    def delete_tune(self, owner: str, tune_id: int, *, with_images: bool = False) -> None:
        """Delete a tune and its prompts; its images stay (they outlive the tune) unless `with_images`."""
        with self.transaction() as conn:
            if with_images:
                conn.execute(
                    "DELETE FROM images WHERE owner = ? AND prompt_id IN (SELECT id FROM prompts WHERE tune_id = ?)",
                    (owner, tune_id),
                )
            conn.execute("DELETE FROM tunes WHERE owner = ? AND id = ?", (owner, tune_id))

    # -- prompts and images ----------------------------------------------------------------------

    def insert_prompt(self, conn: sqlite3.Connection, owner: str, values: dict[str, Any]) -> int:
        now = iso(self.clock())
        row = {"owner": owner, "status": PromptStatus.QUEUED, "created_at": now, "updated_at": now, **values}
        if "loras" in row:
            row["loras"] = json.dumps(row["loras"])
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        return conn.execute(f"INSERT INTO prompts ({columns}) VALUES ({marks})", tuple(row.values())).lastrowid

    def get_prompt(self, owner: str, prompt_id: int) -> Prompt | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM prompts WHERE owner = ? AND id = ?", (owner, prompt_id)).fetchone()
            return self._with_images(from_row(Prompt, row)) if row else None

    def list_prompts(self, owner: str, *, tune_id: int | None, limit: int, offset: int) -> list[Prompt]:
        query = "SELECT * FROM prompts WHERE owner = ?"
        params: list[Any] = [owner]
        if tune_id is not None:
            query += " AND tune_id = ?"
            params.append(tune_id)
        query += " ORDER BY id DESC LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._conn.execute(query, (*params, limit, offset)).fetchall()
            return [self._with_images(from_row(Prompt, row)) for row in rows]

    def update_prompt(self, owner: str, prompt_id: int, *, only_if_status: str | None = None, **changes: Any) -> bool:
        """Change columns of one prompt (see `update_tune` for `only_if_status`)."""
        return self._update("prompts", _PROMPT_UPDATABLE, owner, prompt_id, only_if_status, changes)

    def delete_prompt(self, owner: str, prompt_id: int) -> None:
        """Delete a prompt and its image rows (the caller removes the files)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM images WHERE owner = ? AND prompt_id = ?", (owner, prompt_id))
            conn.execute("DELETE FROM prompts WHERE owner = ? AND id = ?", (owner, prompt_id))

    def get_image(self, owner: str, image_id: int) -> Image | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM images WHERE owner = ? AND id = ?", (owner, image_id)).fetchone()
        return from_row(Image, row) if row else None

    def set_liked(self, owner: str, image_id: int, liked: bool) -> bool:
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE images SET liked = ? WHERE owner = ? AND id = ?", (int(liked), owner, image_id)
            )
            return cursor.rowcount == 1

    def set_image_hidden(self, owner: str, image_id: int, hidden: bool) -> bool:
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE images SET hidden = ? WHERE owner = ? AND id = ?", (int(hidden), owner, image_id)
            )
            return cursor.rowcount == 1

    def set_tune_visibility(self, owner: str, tune_id: int, visibility: str) -> bool:
        """Set a tune's visibility; becoming public (again) draws a new `publication` key, which public links are
        signed with: a link handed out before the tune was last made private stays dead."""
        with self.transaction() as conn:
            tune = self.find_tune(conn, owner, tune_id)
            if tune is None:
                return False
            if tune.visibility != visibility:
                publication = new_publication() if visibility == Visibility.PUBLIC else tune.publication
                conn.execute(
                    "UPDATE tunes SET visibility = ?, publication = ?, updated_at = ? WHERE id = ?",
                    (visibility, publication, iso(self.clock()), tune_id),
                )
            return True

    # -- the showcase: public avatars, read by anyone ---------------------------------------------------
    # An image is public while its tune exists and is public, its prompt is done, and it is neither hidden by its
    # owner nor blocked by an admin; every read below applies all four conditions.

    _PUBLIC = (
        " FROM images i JOIN prompts p ON p.id = i.prompt_id JOIN tunes t ON t.id = p.tune_id"
        " WHERE t.visibility = 'public' AND p.status = 'done' AND i.hidden = 0 AND i.blocked = 0"
    )

    def showcase(
        self, *, owner: str | None, tune_id: int | None, kind: str | None, limit: int, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Public images, newest first, optionally of one owner, one tune, one `ShowcaseKind`: `image_id`, `owner`,
        `tune_id`, `title`, `text` (the prompt as rendered), `kind`, `liked`, `likeness`, `width`, `height`,
        `created_at`, `publication` (the tune's)."""
        conditions, params = [], []
        for column, value in (("t.owner", owner), ("t.id", tune_id)):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        if kind is not None:
            conditions.append(f"{_SHOWCASE_KIND} = ?")
            params.append(kind)
        where = "".join(f" AND {condition}" for condition in conditions)
        query = (
            "SELECT i.id AS image_id, t.owner, t.id AS tune_id, t.title, p.rendered_text AS text,"
            f" {_SHOWCASE_KIND} AS kind, i.liked, i.likeness, i.width, i.height, i.created_at, t.publication"
            f"{self._PUBLIC}{where} ORDER BY i.id DESC LIMIT ? OFFSET ?"
        )
        with self._lock:
            rows = self._conn.execute(query, (*params, limit, offset)).fetchall()
        return [dict(row) for row in rows]

    def showcase_tunes(self, owner: str) -> list[tuple[int, str]]:
        """(id, title) of `owner`'s tunes with public images, newest first: the showcase's tune filter."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT DISTINCT t.id, t.title{self._PUBLIC} AND t.owner = ? ORDER BY t.id DESC", (owner,)
            ).fetchall()
        return [(row["id"], row["title"]) for row in rows]

    def public_image(self, image_id: int) -> tuple[Image, str] | None:
        """A public image and its tune's `publication`; None when it is not public (or not there)."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT i.*, t.publication AS tune_publication{self._PUBLIC} AND i.id = ?", (image_id,)
            ).fetchone()
        if row is None:
            return None
        return from_row(Image, row), row["tune_publication"]

    def set_image_blocked(self, image_id: int, blocked: bool) -> str | None:
        """An admin blocks (or unblocks) any image; returns its owner, None when there is no such image."""
        with self.transaction() as conn:
            row = conn.execute("SELECT owner FROM images WHERE id = ?", (image_id,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE images SET blocked = ? WHERE id = ?", (int(blocked), image_id))
        return row["owner"]

    def _with_images(self, prompt: Prompt) -> Prompt:
        rows = self._conn.execute(
            "SELECT * FROM images WHERE owner = ? AND prompt_id = ? ORDER BY id", (prompt.owner, prompt.id)
        ).fetchall()
        prompt.images = [from_row(Image, row) for row in rows]
        return prompt

    # -- the queue's primitives ------------------------------------------------------------------
    # Owner-less reads and writes by id, each inside the caller's transaction (`Database.transaction()`).
    # Only `studio.queue` composes them: it decides which job goes next and what ending one entails, and it
    # hands the records to the worker, never to an interface.

    def tune_by_id(self, conn: sqlite3.Connection, tune_id: int) -> Tune | None:
        row = conn.execute("SELECT * FROM tunes WHERE id = ?", (tune_id,)).fetchone()
        return from_row(Tune, row) if row else None

    def prompt_by_id(self, conn: sqlite3.Connection, prompt_id: int) -> Prompt | None:
        """A prompt without its images (the worker's view of a job)."""
        row = conn.execute("SELECT * FROM prompts WHERE id = ?", (prompt_id,)).fetchone()
        return from_row(Prompt, row) if row else None

    def tunes_in(self, conn: sqlite3.Connection, status: str) -> list[Tune]:
        """Every tune in `status`, oldest first."""
        rows = conn.execute("SELECT * FROM tunes WHERE status = ? ORDER BY id", (status,)).fetchall()
        return [from_row(Tune, row) for row in rows]

    def oldest_tune_in(
        self, conn: sqlite3.Connection, status: str, *, branches: Sequence[str] | None = None
    ) -> Tune | None:
        """The oldest tune in `status` (on one of `branches`, when given)."""
        on_branch = f" AND branch IN ({_marks(branches)})" if branches is not None else ""
        row = conn.execute(
            f"SELECT * FROM tunes WHERE status = ?{on_branch} ORDER BY id LIMIT 1", (status, *(branches or ()))
        ).fetchone()
        return from_row(Tune, row) if row else None

    def prompts_in(
        self,
        conn: sqlite3.Connection,
        status: str,
        *,
        tune_id: int | None = None,
        tune_statuses: Sequence[str] | None = None,
    ) -> list[Prompt]:
        """Every prompt in `status` (without images), oldest first; optionally only those of one tune, or only
        those whose tune is in one of `tune_statuses`."""
        query = "SELECT p.* FROM prompts p JOIN tunes t ON t.id = p.tune_id WHERE p.status = ?"
        params: list[Any] = [status]
        if tune_id is not None:
            query += " AND p.tune_id = ?"
            params.append(tune_id)
        if tune_statuses is not None:
            query += f" AND t.status IN ({_marks(tune_statuses)})"
            params.extend(tune_statuses)
        rows = conn.execute(query + " ORDER BY p.id", params).fetchall()
        return [from_row(Prompt, row) for row in rows]

    def oldest_ready_prompt(
        self,
        conn: sqlite3.Connection,
        status: str,
        *,
        tune_status: str,
        unless_tagged_in: Sequence[str],
        branches: Sequence[str] | None = None,
        tune_id: int | None = None,
    ) -> Prompt | None:
        """The oldest prompt in `status` whose tune is in `tune_status` (and on one of `branches`, and is `tune_id`,
        when given) and none of whose `<lora:…>` tags names a tune of its owner in one of `unless_tagged_in`."""
        on_branch = f" AND t.branch IN ({_marks(branches)})" if branches is not None else ""
        of_tune = " AND t.id = ?" if tune_id is not None else ""
        row = conn.execute(
            "SELECT p.* FROM prompts p JOIN tunes t ON t.id = p.tune_id"
            f" WHERE p.status = ? AND t.status = ?{on_branch}{of_tune} AND NOT EXISTS (SELECT 1"
            " FROM json_each(p.loras) tag JOIN tunes other ON other.id = json_extract(tag.value, '$.tune_id')"
            f" WHERE other.owner = p.owner AND other.status IN ({_marks(unless_tagged_in)}))"
            " ORDER BY p.id LIMIT 1",
            (status, tune_status, *(branches or ()), *(() if tune_id is None else (tune_id,)), *unless_tagged_in),
        ).fetchone()
        return from_row(Prompt, row) if row else None

    def extend_lease(
        self, conn: sqlite3.Connection, table: str, record_id: int, *, worker: str, running: str, until: str
    ) -> bool:
        """Move the lease of a running job `worker` holds to `until` (its `updated_at` stays: nothing changed for
        its owner). False when the job is no longer running or another worker holds it."""
        return (
            conn.execute(
                f"UPDATE {_table(table)} SET lease_until = ? WHERE id = ? AND worker_id = ? AND status = ?",
                (until, record_id, worker, running),
            ).rowcount
            == 1
        )

    def count_tunes(self, conn: sqlite3.Connection, status: str, *, before_id: int | None = None) -> int:
        """Tunes in `status`; with `before_id`, only those created before that tune."""
        query, params = "SELECT COUNT(*) AS n FROM tunes WHERE status = ?", [status]
        if before_id is not None:
            query += " AND id < ?"
            params.append(before_id)
        return conn.execute(query, params).fetchone()["n"]

    def count_prompts(
        self,
        conn: sqlite3.Connection,
        statuses: Sequence[str],
        *,
        tune_id: int | None = None,
        tune_status: str | None = None,
    ) -> int:
        """Prompts in one of `statuses`; optionally only one tune's, or only those whose tune is in `tune_status`."""
        query = "SELECT COUNT(*) AS n FROM prompts p JOIN tunes t ON t.id = p.tune_id"
        query += f" WHERE p.status IN ({_marks(statuses)})"
        params: list[Any] = [*statuses]
        if tune_id is not None:
            query += " AND p.tune_id = ?"
            params.append(tune_id)
        if tune_status is not None:
            query += " AND t.status = ?"
            params.append(tune_status)
        return conn.execute(query, params).fetchone()["n"]

    def set_tune(
        self,
        conn: sqlite3.Connection,
        tune_id: int,
        *,
        owner: str | None = None,
        from_statuses: Sequence[str] | None = None,
        held_by: str | None = None,
        **changes: Any,
    ) -> bool:
        """Change columns of one tune (only `owner`'s, only while in one of `from_statuses`, only while the worker
        `held_by` holds it, when given); `updated_at` is now unless given. Returns whether it changed."""
        where = _where(tune_id, owner, held_by)
        return self._set(conn, "tunes", _TUNE_UPDATABLE, where, from_statuses, changes) == 1

    def set_prompt(
        self,
        conn: sqlite3.Connection,
        prompt_id: int,
        *,
        owner: str | None = None,
        from_statuses: Sequence[str] | None = None,
        held_by: str | None = None,
        **changes: Any,
    ) -> bool:
        """Change columns of one prompt (see `set_tune`). Returns whether it changed."""
        where = _where(prompt_id, owner, held_by)
        return self._set(conn, "prompts", _PROMPT_UPDATABLE, where, from_statuses, changes) == 1

    def set_every_tune_in(self, conn: sqlite3.Connection, current: str, /, **changes: Any) -> int:
        """Change columns (`status` among them) of every tune whose status is `current`; returns how many changed."""
        return self._set(conn, "tunes", _TUNE_UPDATABLE, {}, (current,), changes)

    def set_every_prompt_in(self, conn: sqlite3.Connection, current: str, /, **changes: Any) -> int:
        """Change columns of every prompt whose status is `current`; returns how many changed."""
        return self._set(conn, "prompts", _PROMPT_UPDATABLE, {}, (current,), changes)

    def running_past_lease(self, conn: sqlite3.Connection, table: str, status: str, now: str) -> list[Any]:
        """Jobs of `table` ("tunes" or "prompts") in the running `status` whose lease ended before `now` (or that
        never had one: left by a server from before leases). Tunes training on Hugging Face Jobs are not among
        them: their job runs on without the studio, which re-attaches to it."""
        record = Tune if table == "tunes" else Prompt
        remote = " AND job_id IS NULL" if table == "tunes" else ""
        rows = conn.execute(
            f"SELECT * FROM {_table(table)} WHERE status = ? AND (lease_until IS NULL OR lease_until < ?){remote}"
            " ORDER BY id",
            (status, now),
        ).fetchall()
        return [from_row(record, row) for row in rows]

    def held_by_name(self, conn: sqlite3.Connection, table: str, status: str, name: str) -> list[tuple[Any, int]]:
        """Jobs of `table` in the running `status` held by a process of the worker `name` (holders `name.PID`), each
        with that process id."""
        record = Tune if table == "tunes" else Prompt
        rows = conn.execute(
            f"SELECT * FROM {_table(table)} WHERE status = ? AND substr(worker_id, 1, ?) = ? ORDER BY id",
            (status, len(name) + 1, f"{name}."),
        ).fetchall()
        held = []
        for row in rows:
            pid = row["worker_id"][len(name) + 1 :]
            if pid.isdigit():
                held.append((from_row(record, row), int(pid)))
        return held

    def holder(self, conn: sqlite3.Connection, table: str, record_id: int) -> tuple[str, str | None] | None:
        """(status, worker_id) of a job, or None when it is gone."""
        row = conn.execute(f"SELECT status, worker_id FROM {_table(table)} WHERE id = ?", (record_id,)).fetchone()
        return (row["status"], row["worker_id"]) if row else None

    def has_claimable(self, now: str, *, queued: str, training: str, generating: str) -> bool:
        """Whether anything is `queued`, or running with a lapsed lease: a cheap read before a claim's write."""
        lapsed = "(lease_until IS NULL OR lease_until < ?)"
        with self._lock:
            row = self._conn.execute(
                "SELECT EXISTS (SELECT 1 FROM tunes WHERE status = ?)"
                " OR EXISTS (SELECT 1 FROM prompts WHERE status = ?)"
                f" OR EXISTS (SELECT 1 FROM tunes WHERE status = ? AND {lapsed})"
                f" OR EXISTS (SELECT 1 FROM prompts WHERE status = ? AND {lapsed}) AS claimable",
                (queued, queued, training, now, generating, now),
            ).fetchone()
        return bool(row["claimable"])

    def branch_of_prompt(self, conn: sqlite3.Connection, prompt_id: int) -> str | None:
        row = conn.execute(
            "SELECT t.branch FROM prompts p JOIN tunes t ON t.id = p.tune_id WHERE p.id = ?", (prompt_id,)
        ).fetchone()
        return row["branch"] if row else None

    # -- workers ---------------------------------------------------------------------------------

    def worker_started(self, worker: str, *, device: str, pid: int, host: str) -> None:
        """Record a worker (re)starting: a new start time and heartbeat, no job, not stopped."""
        now = iso(self.clock())
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO workers (id, device, pid, host, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET device = excluded.device, pid = excluded.pid, host = excluded.host,"
                " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, stopped_at = NULL,"
                " job = NULL",
                (worker, device, pid, host, now, now),
            )

    def worker_heartbeat(self, worker: str, *, job: str | None, branches: Sequence[str], done: int = 0) -> None:
        """The worker is alive now, running `job` with `branches` loaded; `done` more jobs finished."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE workers SET heartbeat_at = ?, job = ?, branches = ?, jobs_done = jobs_done + ? WHERE id = ?",
                (iso(self.clock()), job, json.dumps(list(branches)), done, worker),
            )

    def worker_stopped(self, worker: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE workers SET stopped_at = ?, job = NULL WHERE id = ?", (iso(self.clock()), worker))

    def list_workers(self) -> list[WorkerRecord]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM workers ORDER BY id").fetchall()
        return [from_row(WorkerRecord, row) for row in rows]

    def insert_image(
        self,
        conn: sqlite3.Connection,
        owner: str,
        prompt_id: int,
        *,
        path: str,
        seed: int,
        width: int,
        height: int,
        likeness: float | None = None,
    ) -> int:
        return conn.execute(
            "INSERT INTO images (prompt_id, owner, path, seed, width, height, likeness, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (prompt_id, owner, path, seed, width, height, likeness, iso(self.clock())),
        ).lastrowid

    # -- the subject's face embeddings (biometric: kept only while the tune has a LoRA) ------------------------

    def put_subject_faces(self, conn: sqlite3.Connection, tune_id: int, embeddings: bytes, *, statuses) -> bool:
        """Keep (or replace) a tune's subject embeddings, only while the tune is in one of `statuses`."""
        return (
            conn.execute(
                "INSERT OR REPLACE INTO subject_faces (tune_id, embeddings, created_at)"
                f" SELECT id, ?, ? FROM tunes WHERE id = ? AND status IN ({_marks(statuses)})",
                (embeddings, iso(self.clock()), tune_id, *statuses),
            ).rowcount
            == 1
        )

    def subject_faces(self, tune_id: int) -> bytes | None:
        """The stored embeddings of a tune's subject, for the worker that scores its images; None when gone."""
        with self._lock:
            row = self._conn.execute("SELECT embeddings FROM subject_faces WHERE tune_id = ?", (tune_id,)).fetchone()
        return bytes(row["embeddings"]) if row else None

    def delete_subject_faces(self, conn: sqlite3.Connection, tune_id: int) -> None:
        conn.execute("DELETE FROM subject_faces WHERE tune_id = ?", (tune_id,))

    def insert_delivery(self, conn: sqlite3.Connection, owner: str, url: str, kind: str, record_id: int) -> int:
        """Queue a callback, due now."""
        now = iso(self.clock())
        return conn.execute(
            "INSERT INTO deliveries (owner, url, kind, record_id, status, next_attempt_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (owner, url, kind, record_id, DeliveryStatus.PENDING, now, now),
        ).lastrowid

    def has_delivery(self, conn: sqlite3.Connection, kind: str, record_id: int) -> bool:
        """Whether a callback of `kind` was ever queued for the record (in any status)."""
        row = conn.execute("SELECT 1 FROM deliveries WHERE kind = ? AND record_id = ?", (kind, record_id)).fetchone()
        return row is not None

    def tunes_due_for_expiry(self, now: datetime) -> list[Tune]:
        """Trained tunes whose LoRA has passed its expiry (the retention sweep's work list)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM tunes WHERE status = ? AND expires_at IS NOT NULL AND expires_at <= ?"
                " ORDER BY expires_at",
                (TuneStatus.TRAINED, iso(now)),
            ).fetchall()
        return [from_row(Tune, row) for row in rows]

    def purge_images_before(self, cutoff: datetime) -> list[str]:
        """Delete the rows of images created before `cutoff` (the retention sweep); returns their file paths."""
        with self.transaction() as conn:
            rows = conn.execute("SELECT path FROM images WHERE created_at < ?", (iso(cutoff),)).fetchall()
            conn.execute("DELETE FROM images WHERE created_at < ?", (iso(cutoff),))
        return [row["path"] for row in rows]

    def pack_likes(self, pack_id: str) -> dict[str, dict[str, Any]]:
        """Per pack prompt ("class/index"): images generated, images liked and the mean likeness of those with one
        (None when none has), over every owner (team stats)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT p.pack_prompt AS key, COUNT(i.id) AS images, COALESCE(SUM(i.liked), 0) AS likes,"
                " AVG(i.likeness) AS likeness"
                " FROM prompts p JOIN images i ON i.prompt_id = p.id WHERE p.pack_id = ? GROUP BY p.pack_prompt",
                (pack_id,),
            ).fetchall()
        return {
            row["key"]: {"images": row["images"], "likes": row["likes"], "likeness": row["likeness"]} for row in rows
        }

    def pack_image_likeness(self) -> list[dict[str, Any]]:
        """Every image made from a pack prompt, over every owner (admin only): its pack, pack prompt
        ("class/index"), whether it is liked and its likeness to its subject (None: not measured). Plain rows, for
        statistics; no biometric data."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT p.pack_id AS pack, p.pack_prompt AS prompt, i.liked AS liked, i.likeness AS likeness"
                " FROM prompts p JOIN images i ON i.prompt_id = p.id WHERE p.pack_id IS NOT NULL ORDER BY i.id"
            ).fetchall()
        return [dict(row) for row in rows]

    # -- callback deliveries ---------------------------------------------------------------------

    def due_deliveries(self, now: datetime) -> list[Delivery]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM deliveries WHERE status = ? AND next_attempt_at <= ? ORDER BY id",
                (DeliveryStatus.PENDING, iso(now)),
            ).fetchall()
        return [from_row(Delivery, row) for row in rows]

    def record_delivery(
        self, delivery_id: int, *, status: str, http_status: int | None, error: str | None, next_at: datetime | None
    ) -> None:
        now = iso(self.clock())
        with self.transaction() as conn:
            conn.execute(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1, last_status = ?, last_error = ?,"
                " next_attempt_at = COALESCE(?, next_attempt_at),"
                " delivered_at = CASE WHEN ? = ? THEN ? ELSE delivered_at END WHERE id = ?",
                (status, http_status, error, iso(next_at), status, DeliveryStatus.DELIVERED, now, delivery_id),
            )

    def deliveries_for(self, owner: str, kind: str, record_id: int) -> list[Delivery]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM deliveries WHERE owner = ? AND kind = ? AND record_id = ? ORDER BY id",
                (owner, kind, record_id),
            ).fetchall()
        return [from_row(Delivery, row) for row in rows]

    # -- operator views and actions ----------------------------------------------------------------
    # Only `admin.operations.Operations` calls the methods below, after checking the caller is an admin:
    # they read across owners (the admin tables) or change records in ways no owner-facing use case does.

    def owner_of_tune(self, tune_id: int) -> str | None:
        """The owner of a tune, or None when it does not exist (admin only: it reveals who owns what)."""
        with self._lock:
            row = self._conn.execute("SELECT owner FROM tunes WHERE id = ?", (tune_id,)).fetchone()
        return row["owner"] if row else None

    def owner_of_prompt(self, prompt_id: int) -> str | None:
        """The owner of a prompt, or None when it does not exist (admin only)."""
        with self._lock:
            row = self._conn.execute("SELECT owner FROM prompts WHERE id = ?", (prompt_id,)).fetchone()
        return row["owner"] if row else None

    def admin_list_tunes(self, *, status: str | None, limit: int) -> list[Tune]:
        """Every owner's tunes, newest first, optionally only those in `status` (admin only)."""
        query, params = "SELECT * FROM tunes", []
        if status is not None:
            query += " WHERE status = ?"
            params.append(status)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
        return [from_row(Tune, row) for row in rows]

    def admin_list_prompts(self, *, status: str | None, tune_id: int | None, limit: int) -> list[Prompt]:
        """Every owner's prompts with their images, newest first, optionally filtered (admin only)."""
        conditions, params = [], []
        if status is not None:
            conditions.append("status = ?")
            params.append(status)
        if tune_id is not None:
            conditions.append("tune_id = ?")
            params.append(tune_id)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._lock:
            rows = self._conn.execute(f"SELECT * FROM prompts{where} ORDER BY id DESC LIMIT ?", (*params, limit))
            return [self._with_images(from_row(Prompt, row)) for row in rows.fetchall()]

    def admin_queue(self) -> tuple[list[Tune], list[tuple[Prompt, str]]]:
        """All pending work, read at one moment (admin only): tunes `queued`/`training` by id, and prompts
        `queued`/`generating` by id, each with its tune's status (the worker's order depends on it)."""
        with self._lock:
            tunes = self._conn.execute(
                f"SELECT * FROM tunes WHERE status IN ({_marks(TUNE_ACTIVE)}) ORDER BY id", TUNE_ACTIVE
            ).fetchall()
            prompts = self._conn.execute(
                "SELECT p.*, t.status AS tune_status FROM prompts p JOIN tunes t ON t.id = p.tune_id"
                f" WHERE p.status IN ({_marks(PROMPT_PENDING)}) ORDER BY p.id",
                PROMPT_PENDING,
            ).fetchall()
        return [from_row(Tune, row) for row in tunes], [(from_row(Prompt, row), row["tune_status"]) for row in prompts]

    def user_summaries(self) -> list[dict[str, Any]]:
        """Per user: tunes, prompts and images owned, and credits (None: unlimited), by user id (admin only)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT u.id AS user, u.tune_credits, u.image_credits,"
                " (SELECT COUNT(*) FROM tunes t WHERE t.owner = u.id) AS tunes,"
                " (SELECT COUNT(*) FROM prompts p WHERE p.owner = u.id) AS prompts,"
                " (SELECT COUNT(*) FROM images i WHERE i.owner = u.id) AS images"
                " FROM users u ORDER BY u.id"
            ).fetchall()
        return [dict(row) for row in rows]

    def add_credits(self, owner: str, *, tunes: int, images: int) -> tuple[int | None, int | None]:
        """Add credits to a user (created if new); unlimited (None) stays unlimited. Returns the new credits."""
        with self.transaction() as conn:
            self.ensure_user(conn, owner)
            conn.execute(
                "UPDATE users SET tune_credits = tune_credits + ?, image_credits = image_credits + ? WHERE id = ?",
                (tunes, images, owner),  # NULL + n is NULL: unlimited stays unlimited
            )
            row = conn.execute("SELECT tune_credits, image_credits FROM users WHERE id = ?", (owner,)).fetchone()
        return row["tune_credits"], row["image_credits"]

    # -- the ops dashboard's history (admin only) ------------------------------------------------------

    def job_history(self, since: datetime) -> list[dict[str, Any]]:
        """Every training and generation that was pending or ended at `since` or later, as plain rows: `kind`
        ("train" or "generate"), `id`, `branch` (a prompt's tune's), `status`, `error`, `created_at`, `started_at`
        (None: it never ran), `ended_at` (None: still pending; a tune's training end, its cancel or failure; a
        prompt's completion or failure)."""
        query = (
            "SELECT * FROM ("
            " SELECT 'train' AS kind, id, branch, status, error, created_at, started_training_at AS started_at,"
            "  CASE WHEN trained_at IS NOT NULL THEN trained_at"
            "   WHEN status IN (?, ?) THEN updated_at END AS ended_at FROM tunes"
            " UNION ALL"
            " SELECT 'generate', p.id, t.branch, p.status, p.error, p.created_at, p.started_at,"
            "  CASE WHEN p.status = ? THEN p.completed_at WHEN p.status = ? THEN p.updated_at END"
            " FROM prompts p JOIN tunes t ON t.id = p.tune_id"
            ") WHERE ended_at IS NULL OR ended_at >= ? ORDER BY created_at"
        )
        params = (TuneStatus.FAILED, TuneStatus.CANCELLED, PromptStatus.DONE, PromptStatus.FAILED, iso(since))
        with self._lock:
            cursor = self._conn.execute(query, params)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, tuple(row), strict=True)) for row in cursor.fetchall()]

    def credit_spends(self, since: datetime) -> list[dict[str, Any]]:
        """The credits taken since `since` per hour, oldest first: `hour` (ISO, UTC, e.g. "2026-03-04T12"),
        `tunes`, `images`, `charges` (how many)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT substr(at, 1, 13) AS hour, SUM(tunes) AS tunes, SUM(images) AS images, COUNT(*) AS charges"
                " FROM credit_spends WHERE at >= ? GROUP BY hour ORDER BY hour",
                (iso(since),),
            ).fetchall()
        return [dict(row) for row in rows]

    def put_storage_sample(self, at: datetime, usage: dict[str, tuple[int, int]]) -> None:
        """Record the disk used by kind at `at`: {kind: (files, bytes)} (a second sample at the same time replaces)."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO storage_samples (at, kind, files, bytes) VALUES (?, ?, ?, ?)",
                [(iso(at), kind, files, size) for kind, (files, size) in usage.items()],
            )

    def storage_samples(self, since: datetime) -> list[dict[str, Any]]:
        """The disk samples since `since`, oldest first: `at`, `kind`, `files`, `bytes`."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT at, kind, files, bytes FROM storage_samples WHERE at >= ? ORDER BY at, kind", (iso(since),)
            ).fetchall()
        return [dict(row) for row in rows]


# a showcased image's `ShowcaseKind`: its prompt came from a pack, or was sent with the tune, or came later
_SHOWCASE_KIND = (
    "CASE WHEN p.pack_id IS NOT NULL THEN 'pack' WHEN p.created_at <= t.created_at THEN 'sample' ELSE 'prompt' END"
)


def _marks(values: Sequence[object]) -> str:
    """The `?, ?, …` of an `IN (…)` with one parameter per value."""
    return ", ".join("?" for _ in values)


def _where(record_id: int, owner: str | None, held_by: str | None) -> dict[str, Any]:
    where: dict[str, Any] = {"id": record_id}
    if owner is not None:
        where["owner"] = owner
    if held_by is not None:
        where["worker_id"] = held_by
    return where


def _table(name: str) -> str:
    if name not in ("tunes", "prompts"):
        raise ValueError(f"not a job table: {name!r}")
    return name
