"""Recipes: how a result was painted, under a short code its header shows as `recipe:CODE`.

A recipe keeps a job's resolved options (the blend in its stored form, strength, size, preset,
colour keeping, seed), the server it was painted in, copies of its picture styles (the `~` parts:
a user's style images; built-ins and server styles are kept by name) and how the painting went
(size, time, device, engine, steps) for the result's About button. Pasting the code with a new
photo repaints with the same options; options given beside it override them.

Recipes live in the journal's database (table `recipes`), their picture copies in
`recipes/<code>/`. One recipe per delivered job. They are pruned once their job's record is gone,
unless someone used them within `keep_days`.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.options import IMAGE, Options
from nst_engine import styles
from nst_engine.api import InputError

ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: codes are read and typed
CODE_LENGTH = 10
CODE = re.compile(rf"[{ALPHABET}]{{{CODE_LENGTH}}}")
WORD = re.compile(r"recipe[:=](\S*)", re.IGNORECASE)

SCHEMA = """
CREATE TABLE IF NOT EXISTS recipes (
    code TEXT PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    guild_id INTEGER,
    options TEXT NOT NULL,
    images INTEGER NOT NULL,
    made TEXT NOT NULL,
    created REAL NOT NULL,
    used REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Recipe:
    """A kept recipe. `images` counts its picture-style copies (its blend's `~` parts, in
    order); `made` says how its job was painted (width, height, seconds, device, engine,
    steps)."""

    code: str
    job_id: str
    guild_id: int | None
    options: Options
    images: int
    made: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    used: float = 0.0

    def server_styles(self) -> list[str]:
        """The server styles its blend names (by name: they belong to `guild_id`)."""
        return [
            p.name for p in self.options.parts() if p.name != IMAGE and p.name not in styles.STYLES
        ]


def code_in(text: str) -> str:
    """The code of a pasted recipe (`recipe:CODE`, `CODE`, any case); raises `InputError`."""
    code = text.strip().strip("`").lower().removeprefix("recipe:").removeprefix("recipe=")
    if not CODE.fullmatch(code):
        raise InputError(
            f"`{text.strip()[:40]}` is not a recipe code: it looks like `recipe:` and "
            f"{CODE_LENGTH} letters and digits, as under a result."
        )
    return code


def split_words(words: list[str]) -> tuple[str | None, list[str]]:
    """A prefix command's `recipe:CODE` word (its code, checked) and the other words."""
    found = [w for w in words if WORD.fullmatch(w)]
    if len(found) > 1:
        raise InputError("Give one recipe at a time.")
    rest = [w for w in words if not WORD.fullmatch(w)]
    return (code_in(found[0]) if found else None), rest


def apply(recipe: Recipe, given: Mapping[str, object]) -> tuple[Options, int]:
    """The recipe's options with `given` ones (what the user typed beside it) on top, and how
    many of its picture copies the job takes (none when a style was given)."""
    options = replace(recipe.options, **({"timelapse": False} | dict(given)))  # type: ignore[arg-type]
    return options, 0 if "style" in given else recipe.images


def _row(row: sqlite3.Row) -> Recipe:
    return Recipe(
        code=row["code"],
        job_id=row["job_id"],
        guild_id=row["guild_id"],
        options=Options(**json.loads(row["options"])),
        images=row["images"],
        made=json.loads(row["made"]),
        created=row["created"],
        used=row["used"],
    )


class RecipeBook:
    """The recipes of one bot, in the journal's database `db_path` (beside the jobs table)."""

    def __init__(self, db_path: Path, *, keep_days: float) -> None:
        self.dir = db_path.parent / "recipes"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep_days = keep_days
        self._lock = threading.Lock()
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA synchronous=NORMAL")  # the journal's durability (WAL mode)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def keep(
        self,
        job_id: str,
        guild_id: int | None,
        options: Options,
        style_files: Sequence[bytes],
        made: Mapping[str, Any],
    ) -> str:
        """The code of `job_id`'s recipe, kept now if it has none yet. `style_files` are the
        job's style image files in blend order (picture styles and server styles): only the
        pictures' are copied."""
        found = self._rows("SELECT code FROM recipes WHERE job_id = ?", (job_id,))
        if found:
            return str(found[0]["code"])
        with_files = [p for p in options.parts() if p.name not in styles.STYLES]
        pictures = [
            data for part, data in zip(with_files, style_files, strict=True) if part.name == IMAGE
        ]
        code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        folder = self.dir / code
        folder.mkdir()
        for index, data in enumerate(pictures):
            (folder / f"style-{index + 1}").write_bytes(data)
        kept = replace(options, timelapse=False)
        now = time.time()
        self._rows(
            "INSERT INTO recipes (code, job_id, guild_id, options, images, made, created, used) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                code,
                job_id,
                guild_id,
                json.dumps(asdict(kept)),
                len(pictures),
                json.dumps(dict(made)),
                now,
                now,
            ),
        )
        return code

    def get(self, code: str) -> Recipe | None:
        rows = self._rows("SELECT * FROM recipes WHERE code = ?", (code,))
        return _row(rows[0]) if rows else None

    def of_job(self, job_id: str) -> Recipe | None:
        rows = self._rows("SELECT * FROM recipes WHERE job_id = ?", (job_id,))
        return _row(rows[0]) if rows else None

    def codes_of(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Job id → recipe code, for the jobs that have one."""
        marks = ", ".join("?" * len(job_ids))
        rows = self._rows(
            f"SELECT job_id, code FROM recipes WHERE job_id IN ({marks})", tuple(job_ids)
        )
        return {row["job_id"]: row["code"] for row in rows}

    def use(
        self, code: str, guild_id: int | None, server_styles: set[str]
    ) -> tuple[Recipe, list[bytes]]:
        """The recipe `code` for a job in `guild_id` (whose own styles are `server_styles`) and
        its picture copies; marks it used now. Raises `InputError` for an unknown code or one
        that names another server's style."""
        recipe = self.get(code)
        if recipe is None:
            raise InputError(
                f"I don't know the recipe `{code}`: it may be mistyped, or too old and forgotten."
            )
        foreign = recipe.server_styles()
        if foreign and recipe.guild_id != guild_id:
            raise InputError(
                f"That recipe uses `{foreign[0]}`, a style of another server; it only works there."
            )
        missing = [name for name in foreign if name not in server_styles]
        if missing:
            raise InputError(f"This server has no style `{missing[0]}` any more.")
        folder = self.dir / code
        pictures = [(folder / f"style-{i + 1}").read_bytes() for i in range(recipe.images)]
        self._rows("UPDATE recipes SET used = ? WHERE code = ?", (time.time(), code))
        return recipe, pictures

    def prune(self, now: float | None = None) -> int:
        """Forget recipes whose job's record is gone, unless used within `keep_days`."""
        now = time.time() if now is None else now
        rows = self._rows(
            "DELETE FROM recipes WHERE job_id NOT IN (SELECT id FROM jobs) AND used < ? "
            "RETURNING code",
            (now - self.keep_days * 86400,),
        )
        for row in rows:
            shutil.rmtree(self.dir / row["code"], ignore_errors=True)
        return len(rows)
