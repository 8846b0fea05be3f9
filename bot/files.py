"""Files under the data dir: written durably and atomically, and how old they are."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` durably and atomically (a reader never sees half a file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def age(path: Path, now: float) -> float:
    """Seconds since `path` was last written (0 when it is already gone)."""
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
