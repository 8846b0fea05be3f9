"""targets.py: the disk style cache stays within its byte bound, least recently used out first."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from nst_engine import targets
from nst_engine.targets import TargetCache

CPU = torch.device("cpu")


def _grams(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"relu1_1": torch.rand(1, 16, 16, generator=generator)}


def _cached(directory: Path) -> set[str]:
    return {p.name.split("-")[0] for p in directory.glob("*.pt")}


def _entry_bytes(tmp_path: Path) -> int:
    """The size on disk of one entry of _grams()."""
    probe = tmp_path / "probe"
    TargetCache(directory=probe).put("probe", 8, 8, _grams(0))
    (size,) = [p.stat().st_size for p in probe.iterdir()]
    return size


def test_the_least_recently_used_files_are_evicted(tmp_path: Path) -> None:
    bound = 3 * _entry_bytes(tmp_path) + 100
    folder = tmp_path / "cache"
    for i, name in enumerate(("alpha", "beta", "gamma")):
        TargetCache(directory=folder, max_bytes=bound).put(name, 32, 24, _grams(i))
    assert _cached(folder) == {"alpha", "beta", "gamma"}

    # Another process reads alpha from disk: alpha is now used more recently than beta.
    reader = TargetCache(directory=folder, max_bytes=bound)
    loaded = reader.get("alpha", 32, 24, CPU)
    assert loaded is not None
    torch.testing.assert_close(loaded["relu1_1"], _grams(0)["relu1_1"])

    reader.put("delta", 32, 24, _grams(3))
    assert _cached(folder) == {"alpha", "gamma", "delta"}
    assert sum(p.stat().st_size for p in folder.iterdir()) <= bound
    assert TargetCache(directory=folder).get("beta", 32, 24, CPU) is None


def test_a_hit_in_memory_also_counts_as_a_use(tmp_path: Path) -> None:
    bound = 2 * _entry_bytes(tmp_path) + 100
    folder = tmp_path / "cache"
    cache = TargetCache(directory=folder, max_bytes=bound)
    cache.put("alpha", 32, 24, _grams(0))
    cache.put("beta", 32, 24, _grams(1))
    assert cache.get("alpha", 32, 24, CPU) is not None  # from memory
    cache.put("gamma", 32, 24, _grams(2))
    assert _cached(folder) == {"alpha", "gamma"}


def test_only_the_caches_own_files_are_counted_and_evicted(tmp_path: Path) -> None:
    one = _entry_bytes(tmp_path)
    folder = tmp_path / "cache"
    folder.mkdir()
    notes = folder / "notes.txt"
    notes.write_bytes(b"x" * 10 * one)  # not the cache's: neither counted nor deleted
    stale = folder / f"udnie-32x24-v{targets.FORMAT_VERSION + 99}.pt"  # another format version
    stale.write_bytes(b"\0" * one)
    os.utime(stale, ns=(0, 0))  # long unused
    cache = TargetCache(directory=folder, max_bytes=2 * one + 100)
    cache.put("alpha", 32, 24, _grams(0))
    assert stale.exists()  # two entries fit
    cache.put("beta", 32, 24, _grams(1))
    assert not stale.exists() and notes.exists()
    assert _cached(folder) == {"alpha", "beta"}


def test_a_bound_below_one_entry_keeps_nothing_on_disk(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    cache = TargetCache(directory=folder, max_bytes=10)
    cache.put("alpha", 32, 24, _grams(0))
    assert not list(folder.glob("*.pt"))
    assert cache.get("alpha", 32, 24, CPU) is not None  # still served from memory


@pytest.mark.parametrize(
    ("value", "megabytes"),
    [(None, 512), ("64", 64), ("1.5", 1.5), (" 2 ", 2)],
)
def test_the_bound_comes_from_the_environment(
    value: str | None, megabytes: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv(targets.ENV_MAX_MB, raising=False)
    else:
        monkeypatch.setenv(targets.ENV_MAX_MB, value)
    assert targets.max_bytes_from_env() == int(megabytes * 1024 * 1024)


@pytest.mark.parametrize("value", ["lots", "0", "-3", "nan", "inf"])
def test_a_bad_bound_falls_back_to_the_default_with_a_warning(
    value: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(targets.ENV_MAX_MB, value)
    with caplog.at_level(logging.WARNING, logger="nst_engine.targets"):
        assert targets.max_bytes_from_env() == targets.DEFAULT_MAX_MB * 1024 * 1024
    assert any(targets.ENV_MAX_MB in r.getMessage() for r in caplog.records)


def test_the_default_cache_takes_both_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(targets, "_default", None)
    monkeypatch.setenv(targets.ENV_DIR, str(tmp_path))
    monkeypatch.setenv(targets.ENV_MAX_MB, "3")
    cache = targets.default_cache()
    assert cache.directory == tmp_path and cache.max_bytes == 3 * 1024 * 1024
