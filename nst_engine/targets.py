"""A cache of built-in styles' Gram targets, per (style, size), in memory and optionally on disk.

A built-in style at a given size always yields the same Grams, so a job with a built-in style
skips the style image's forward pass when its size has been seen before. Image uploads are
never cached (they are seen once), nor are keep-colours targets (they depend on the photo).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# Bump when the Gram definition, the weights or the style images change.
FORMAT_VERSION = 1
ENV_DIR = "NST_STYLE_CACHE"


class TargetCache:
    """LRU of {layer: Gram} keyed by (style name, width, height, device).

    `directory`, when given, also keeps each entry on disk (CPU tensors, one file per entry).
    """

    def __init__(self, max_entries: int = 32, directory: str | Path | None = None) -> None:
        self.max_entries = max_entries
        self.directory = Path(directory) if directory else None
        self._entries: OrderedDict[tuple[str, int, int, str], dict[str, torch.Tensor]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def _path(self, name: str, width: int, height: int) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"{name}-{width}x{height}-v{FORMAT_VERSION}.pt"

    def get(
        self, name: str, width: int, height: int, device: torch.device
    ) -> dict[str, torch.Tensor] | None:
        key = (name, width, height, str(device))
        with self._lock:
            grams = self._entries.get(key)
            if grams is not None:
                self._entries.move_to_end(key)
                return grams
        path = self._path(name, width, height)
        if path is None or not path.is_file():
            return None
        try:
            loaded = torch.load(path, map_location=device, weights_only=True)
        except (OSError, RuntimeError, EOFError) as exc:
            log.warning("ignoring unreadable style cache file %s: %s", path, exc)
            return None
        self._remember(key, loaded)
        return loaded

    def put(self, name: str, width: int, height: int, grams: dict[str, torch.Tensor]) -> None:
        device = next(iter(grams.values())).device
        self._remember((name, width, height, str(device)), grams)
        path = self._path(name, width, height)
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

    def _remember(self, key: tuple[str, int, int, str], grams: dict[str, torch.Tensor]) -> None:
        with self._lock:
            self._entries[key] = grams
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


_default: TargetCache | None = None


def default_cache() -> TargetCache:
    """The process-wide cache; on disk too when the NST_STYLE_CACHE variable names a folder."""
    global _default
    if _default is None:
        _default = TargetCache(directory=os.environ.get(ENV_DIR) or None)
    return _default
