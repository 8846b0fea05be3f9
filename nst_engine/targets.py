"""A cache of built-in styles' Gram targets, per (style, size, precision), in memory and optionally
on disk.

A built-in style at a given size always yields the same Grams, so a job with a built-in style
skips the style image's forward pass when its size has been seen before. Image uploads are
never cached (they are seen once), nor are keep-colours targets (they depend on the photo).

On disk the cache is bounded in bytes (NST_STYLE_CACHE_MAX_MB): after each write the least
recently used files go first. A file's mtime is its last use (set on write and on every hit), so
several worker processes sharing the folder share one LRU order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# Bump when the Gram definition, the weights or the style images change.
FORMAT_VERSION = 1
ENV_DIR = "NST_STYLE_CACHE"
ENV_MAX_MB = "NST_STYLE_CACHE_MAX_MB"
DEFAULT_MAX_MB = 512
# The precisions a Gram can have been computed in (the engine computes targets in fp32).
PRECISIONS = ("fp32", "bf16")
# What this cache's files are called (any format version, with or without the precision that
# older versions lacked); nothing else in the folder is touched.
_FILE_NAME = re.compile(r"[a-z0-9-]+-\d+x\d+(-fp32|-bf16)?-v\d+\.pt")
_Key = tuple[str, int, int, str, str]  # style, width, height, precision, device


class TargetCache:
    """LRU of {layer: Gram} keyed by (style name, width, height, precision, device).

    `precision` is that of the forward pass the Grams came from, so Grams made under bf16 are
    never served to an fp32 job, nor the other way round.

    `directory`, when given, also keeps each entry on disk (CPU tensors, one file per entry),
    at most `max_bytes` of them in all, least recently used evicted first.
    """

    def __init__(
        self,
        max_entries: int = 32,
        directory: str | Path | None = None,
        max_bytes: int = DEFAULT_MAX_MB * 1024 * 1024,
    ) -> None:
        self.max_entries = max_entries
        self.directory = Path(directory) if directory else None
        self.max_bytes = max_bytes
        self._entries: OrderedDict[_Key, dict[str, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def _path(self, name: str, width: int, height: int, precision: str) -> Path | None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}")
        if self.directory is None:
            return None
        return self.directory / f"{name}-{width}x{height}-{precision}-v{FORMAT_VERSION}.pt"

    def get(
        self,
        name: str,
        width: int,
        height: int,
        device: torch.device,
        *,
        precision: str = "fp32",
    ) -> dict[str, torch.Tensor] | None:
        path = self._path(name, width, height, precision)
        key = (name, width, height, precision, str(device))
        with self._lock:
            grams = self._entries.get(key)
            if grams is not None:
                self._entries.move_to_end(key)
        if grams is not None:
            if path is not None:
                _touch(path)  # a hit in memory is a use of the file too, for other processes
            return grams
        if path is None or not path.is_file():
            return None
        try:
            loaded = torch.load(path, map_location=device, weights_only=True)
        except (OSError, RuntimeError, EOFError) as exc:
            log.warning("ignoring unreadable style cache file %s: %s", path, exc)
            return None
        _touch(path)
        self._remember(key, loaded)
        return loaded

    def put(
        self,
        name: str,
        width: int,
        height: int,
        grams: dict[str, torch.Tensor],
        *,
        precision: str = "fp32",
    ) -> None:
        path = self._path(name, width, height, precision)
        device = next(iter(grams.values())).device
        self._remember((name, width, height, precision, str(device)), grams)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        except OSError as exc:
            log.warning("could not write style cache file %s: %s", path, exc)
            return
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({k: v.cpu() for k, v in grams.items()}, f)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not write style cache file %s: %s", path, exc)
            Path(tmp).unlink(missing_ok=True)
            return
        _touch(path)
        self._evict(path.parent)

    def _evict(self, directory: Path) -> None:
        """Delete the least recently used cache files until they fit in `max_bytes`."""
        files: list[tuple[int, str, int]] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if not _FILE_NAME.fullmatch(entry.name):
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:  # another process evicted it meanwhile
                        continue
                    files.append((info.st_mtime_ns, entry.name, info.st_size))
        except OSError as exc:
            log.warning("could not list the style cache %s: %s", directory, exc)
            return
        total = sum(size for _, _, size in files)
        for _, name, size in sorted(files):
            if total <= self.max_bytes:
                break
            try:
                (directory / name).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not evict style cache file %s: %s", name, exc)
                continue
            total -= size
            log.info("evicted %s from the style cache", name)

    def _remember(self, key: _Key, grams: dict[str, torch.Tensor]) -> None:
        with self._lock:
            self._entries[key] = grams
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


def _touch(path: Path) -> None:
    """Mark a cache file as just used (nanosecond mtime, so close uses still order)."""
    now = time.time_ns()
    with contextlib.suppress(OSError):  # evicted by another process meanwhile: nothing to mark
        os.utime(path, ns=(now, now))


def max_bytes_from_env() -> int:
    """NST_STYLE_CACHE_MAX_MB in bytes; the default when unset, not a number or not positive."""
    text = os.environ.get(ENV_MAX_MB, "").strip()
    if not text:
        return DEFAULT_MAX_MB * 1024 * 1024
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = -1.0
    if not 0 < megabytes < float("inf"):
        log.warning(
            "%s=%r is not a positive number of megabytes; using %d",
            ENV_MAX_MB,
            text,
            DEFAULT_MAX_MB,
        )
        megabytes = DEFAULT_MAX_MB
    return int(megabytes * 1024 * 1024)


_default: TargetCache | None = None


def default_cache() -> TargetCache:
    """The process-wide cache; on disk too when the NST_STYLE_CACHE variable names a folder,
    bounded by NST_STYLE_CACHE_MAX_MB."""
    global _default
    if _default is None:
        _default = TargetCache(
            directory=os.environ.get(ENV_DIR) or None, max_bytes=max_bytes_from_env()
        )
    return _default
