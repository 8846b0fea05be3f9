"""The job journal: every accepted job, its state and its inputs, in SQLite under the data dir.

Only the bot process touches it. A state change is committed before the bot acts on it, so after
a crash (kill -9 included) the journal says what to do next: queue the waiting jobs again,
repaint the ones that were painting, deliver the painted ones. Inputs and a painted result live
as files beside the database (`jobs/<id>/`) until the job ends; finished records are pruned after
`keep_days`.

The same database holds each server's own styles (`bot.server_styles`) and the recipes
(`bot.recipes`), each reached through the journal (`journal.styles`, `journal.recipes`).

The database runs in WAL mode with `synchronous=NORMAL`: a committed transaction survives the
process being killed at any moment (the OS holds the write); only a power cut may lose the last
few commits, and even then the file stays consistent. Checkpoints (copying the WAL into the
database, with an fsync) are not left to whichever write crosses SQLite's threshold, which may be
one the event loop makes: the journal's connection checkpoints when a job ends (`end`, which the
bot runs in a worker thread).
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bot import files
from bot.options import Options
from bot.recipes import RecipeBook
from bot.server_styles import ServerStyles

log = logging.getLogger(__name__)

ACCEPTED = "accepted"
WAITING = "waiting"
PAINTING = "painting"
PAINTED = "painted"
DELIVERED = "delivered"
FAILED = "failed"
CANCELLED = "cancelled"
UNFINISHED = (ACCEPTED, WAITING, PAINTING, PAINTED)
ENDED = (DELIVERED, FAILED, CANCELLED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    owner_id INTEGER NOT NULL,
    guild_id INTEGER,
    channel_id INTEGER NOT NULL,
    source_id INTEGER,
    status_id INTEGER,
    reply_to_id INTEGER,
    result_id INTEGER,
    upload_limit INTEGER NOT NULL,
    options TEXT NOT NULL,
    inputs_on_result INTEGER NOT NULL DEFAULT 0,
    has_style_image INTEGER NOT NULL DEFAULT 0,  -- how many style image files the job has
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
"""

PHOTO = "photo"
STYLE = "style"
RESULT = "result.png"
START = "start"  # Bigger: the earlier result a job starts from


def style_file(index: int) -> str:
    """The name of a job's style image file number `index` (0-based): `style`, `style-2`, ..."""
    return STYLE if index == 0 else f"{STYLE}-{index + 1}"


@dataclass(eq=False)
class Job:
    """A job as the bot knows it: who asked, where to answer, what to paint, how far it got.

    `inputs_on_result` marks jobs (slash commands, their buttons) whose inputs exist nowhere in
    the channel, so the result message carries copies of them for its buttons. `style_images`
    counts the job's style image files: one per attached style image and per server style of
    its blend, in blend order.
    """

    id: str
    owner_id: int
    guild_id: int | None
    channel_id: int
    options: Options
    upload_limit: int
    source_id: int | None = None
    reply_to_id: int | None = None
    status_id: int | None = None
    result_id: int | None = None
    inputs_on_result: bool = False
    style_images: int = 0
    state: str = ACCEPTED
    seq: int = 0
    error: str | None = None
    created: float = field(default_factory=time.time)


_COLUMNS = (
    "id, state, owner_id, guild_id, channel_id, source_id, status_id, reply_to_id, result_id, "
    "upload_limit, options, inputs_on_result, has_style_image, error, created, seq"
)


def _options(row: sqlite3.Row) -> Options:
    values = json.loads(row["options"])
    if values.get("style") is None and row["has_style_image"]:
        values["style"] = "~"  # written before blends: no style name meant one style image
    return Options(**values)


def _row_to_job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        state=row["state"],
        owner_id=row["owner_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        source_id=row["source_id"],
        status_id=row["status_id"],
        reply_to_id=row["reply_to_id"],
        result_id=row["result_id"],
        upload_limit=row["upload_limit"],
        options=_options(row),
        inputs_on_result=bool(row["inputs_on_result"]),
        style_images=row["has_style_image"],
        error=row["error"],
        created=row["created"],
        seq=row["seq"],
    )


class Journal:
    """The SQLite journal and the job files under `data_dir` (created if missing)."""

    def __init__(self, data_dir: str | Path, *, keep_days: float = 7.0) -> None:
        self.dir = Path(data_dir)
        self.jobs_dir = self.dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.keep_days = keep_days
        # One connection, used from the event loop and from worker threads (file writes run
        # there), one statement at a time.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.dir / "stylebot.db", isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # see the module's docstring
        self._db.executescript(SCHEMA)
        self.styles = ServerStyles(self.dir, self.dir / "stylebot.db")
        self.recipes = RecipeBook(self.dir / "stylebot.db", keep_days=keep_days)

    def _execute(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, params)

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        self.recipes.close()
        self.styles.close()
        with self._lock:
            self._db.close()

    # ---------------------------------------------------------------- records

    def add(
        self,
        job: Job,
        photo: bytes,
        style_images: Sequence[bytes] = (),
        start: bytes | None = None,
    ) -> None:
        """Store the inputs (the photo, every style image and the picture a Bigger job starts
        from), then the record (state `accepted`); sets `job.seq`.

        Files first: a crash in between leaves an orphan folder that `prune` removes, never a
        record without its inputs.
        """
        folder = self.jobs_dir / job.id
        folder.mkdir(exist_ok=True)
        files.write_file(folder / PHOTO, photo)
        for index, data in enumerate(style_images):
            files.write_file(folder / style_file(index), data)
        if start is not None:
            files.write_file(folder / START, start)
        job.style_images = len(style_images)
        now = time.time()
        cursor = self._execute(
            "INSERT INTO jobs (id, state, owner_id, guild_id, channel_id, source_id, status_id, "
            "reply_to_id, upload_limit, options, inputs_on_result, has_style_image, created, "
            "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.id,
                job.state,
                job.owner_id,
                job.guild_id,
                job.channel_id,
                job.source_id,
                job.status_id,
                job.reply_to_id,
                job.upload_limit,
                json.dumps(asdict(job.options)),
                int(job.inputs_on_result),
                job.style_images,
                job.created,
                now,
            ),
        )
        job.seq = int(cursor.lastrowid or 0)

    def exists(self, job_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM jobs WHERE id = ?", (job_id,)))

    def update(self, job: Job, **changes: object) -> None:
        """Commit changed fields (state, status_id, result_id, error, ...) of `job`, then set
        them on the object."""
        allowed = {"state", "status_id", "reply_to_id", "result_id", "error"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"not journalled: {sorted(unknown)}")
        sets = ", ".join(f"{name} = ?" for name in changes)
        self._execute(
            f"UPDATE jobs SET {sets}, updated = ? WHERE id = ?",
            (*changes.values(), time.time(), job.id),
        )
        for name, value in changes.items():
            setattr(job, name, value)

    def end(
        self, job: Job, state: str, error: str | None = None, result_id: int | None = None
    ) -> None:
        """Record how the job ended (with its result message, in the same transaction), then
        delete its files and checkpoint the database (both wait on the disk: call it off the
        event loop)."""
        if state not in ENDED:
            raise ValueError(f"{state!r} is not an end state")
        result = {} if result_id is None else {"result_id": result_id}
        self.update(job, state=state, error=error, **result)
        shutil.rmtree(self.jobs_dir / job.id, ignore_errors=True)
        self._execute("PRAGMA wal_checkpoint(PASSIVE)")

    def unfinished(self) -> list[Job]:
        """Every job not yet ended, oldest first."""
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM jobs WHERE state IN (?, ?, ?, ?) ORDER BY seq", UNFINISHED
        )
        return [_row_to_job(row) for row in rows]

    def get(self, job_id: str) -> Job | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _row_to_job(rows[0]) if rows else None

    # ---------------------------------------------------------------- files

    def inputs(self, job: Job) -> tuple[bytes, list[bytes]]:
        """The photo and the style images (in blend order), as they were accepted."""
        folder = self.jobs_dir / job.id
        photo = (folder / PHOTO).read_bytes()
        return photo, [(folder / style_file(i)).read_bytes() for i in range(job.style_images)]

    def start(self, job: Job) -> bytes | None:
        """The picture a Bigger job starts from, if it is one."""
        path = self.jobs_dir / job.id / START
        return path.read_bytes() if path.is_file() else None

    def save_result(self, job: Job, png: bytes, copies: dict[str, bytes]) -> None:
        """Keep the painted image (and input copies for the result message) until delivered,
        then mark the job painted."""
        folder = self.jobs_dir / job.id
        folder.mkdir(exist_ok=True)
        for name, data in copies.items():
            files.write_file(folder / f"copy-{name}", data)
        files.write_file(folder / RESULT, png)
        self.update(job, state=PAINTED)

    def result(self, job: Job) -> tuple[bytes, dict[str, bytes]]:
        folder = self.jobs_dir / job.id
        copies = {
            path.name.removeprefix("copy-"): path.read_bytes()
            for path in sorted(folder.glob("copy-*"))
        }
        return (folder / RESULT).read_bytes(), copies

    # ---------------------------------------------------------------- housekeeping

    def prune(self, now: float | None = None, *, orphan_age: float = 0.0) -> int:
        """Forget ended jobs older than `keep_days` and remove folders no live job owns that
        were last written over `orphan_age` s ago (a running bot passes a margin: `add` writes
        a new job's folder before its record)."""
        now = time.time() if now is None else now
        cursor = self._execute(
            "DELETE FROM jobs WHERE state IN (?, ?, ?) AND updated < ?",
            (*ENDED, now - self.keep_days * 86400),
        )
        live = {job.id for job in self.unfinished()}
        for folder in self.jobs_dir.iterdir():
            if folder.name not in live and (not orphan_age or files.age(folder, now) > orphan_age):
                shutil.rmtree(folder, ignore_errors=True)
        self.recipes.prune(now)
        return cursor.rowcount

    def recent(self, owner_id: int, guild_id: int | None, limit: int = 10) -> list[Job]:
        """A user's last `limit` jobs in a server (`guild_id` None: anywhere), newest first."""
        where = "owner_id = ?" + ("" if guild_id is None else " AND guild_id = ?")
        params = (owner_id,) if guild_id is None else (owner_id, guild_id)
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM jobs WHERE {where} ORDER BY seq DESC LIMIT ?", (*params, limit)
        )
        return [_row_to_job(row) for row in rows]
