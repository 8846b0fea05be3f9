"""Each server's own styles: a row per style in the journal's database (`styles` table) and its
image, a re-encoded PNG, in `styles/<guild_id>/<name>.png` under the data dir, until it is
removed or the bot leaves the server.

Only the bot process touches them; it never decodes anything here (the PNGs were re-encoded by
a decoder child when they were added).
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bot import files

SCHEMA = """
CREATE TABLE IF NOT EXISTS styles (
    guild_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    file TEXT NOT NULL,
    created REAL NOT NULL,
    added_by INTEGER NOT NULL,
    PRIMARY KEY (guild_id, name)
);
"""


@dataclass(frozen=True)
class ServerStyle:
    """One of a server's own styles: its name, its PNG (relative to the data dir), who added it."""

    guild_id: int
    name: str
    file: str
    created: float
    added_by: int


class ServerStyles:
    """The server styles kept in `data_dir` (the database file is the journal's)."""

    def __init__(self, data_dir: Path, db_path: Path) -> None:
        self.dir = data_dir
        self._lock = threading.Lock()
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def add(self, guild_id: int, name: str, png: bytes, added_by: int, cap: int) -> bool:
        """Store a server style (file first, then its row); False when the server already has
        `cap` styles. Replaces a style of the same name."""
        relative = f"styles/{guild_id}/{name}.png"
        path = self.dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            count = self._db.execute(
                "SELECT COUNT(*) FROM styles WHERE guild_id = ? AND name != ?", (guild_id, name)
            ).fetchone()[0]
            if count >= cap:
                return False
            files.write_file(path, png)
            self._db.execute(
                "INSERT OR REPLACE INTO styles (guild_id, name, file, created, added_by) "
                "VALUES (?, ?, ?, ?, ?)",
                (guild_id, name, relative, time.time(), added_by),
            )
        return True

    def of(self, guild_id: int | None) -> list[ServerStyle]:
        """A server's own styles, by name (none outside a server)."""
        if guild_id is None:
            return []
        rows = self._rows(
            "SELECT guild_id, name, file, created, added_by FROM styles WHERE guild_id = ? "
            "ORDER BY name",
            (guild_id,),
        )
        return [ServerStyle(**dict(row)) for row in rows]

    def names(self, guild_id: int | None) -> set[str]:
        return {s.name for s in self.of(guild_id)}

    def image(self, guild_id: int, name: str) -> tuple[bytes, str] | None:
        """A server style's PNG and its sha256 (the key of its cached targets), or None."""
        rows = self._rows(
            "SELECT file FROM styles WHERE guild_id = ? AND name = ?", (guild_id, name)
        )
        if not rows:
            return None
        data = (self.dir / rows[0]["file"]).read_bytes()
        return data, hashlib.sha256(data).hexdigest()

    def remove(self, guild_id: int, name: str) -> bool:
        """Forget a server style (row, then file); False when there was none."""
        rows = self._rows(
            "DELETE FROM styles WHERE guild_id = ? AND name = ? RETURNING file", (guild_id, name)
        )
        for row in rows:
            (self.dir / row["file"]).unlink(missing_ok=True)
        return bool(rows)

    def guilds(self) -> set[int]:
        """The servers that have styles of their own."""
        return {row["guild_id"] for row in self._rows("SELECT DISTINCT guild_id FROM styles")}

    def forget_guild(self, guild_id: int) -> int:
        """Remove every style of a server (the bot left it); returns how many."""
        rows = self._rows("DELETE FROM styles WHERE guild_id = ? RETURNING name", (guild_id,))
        shutil.rmtree(self.dir / "styles" / str(guild_id), ignore_errors=True)
        return len(rows)
