"""Settings validation and the `stylebot` program's start-up refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.settings import Settings


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "secret-token-value")
    monkeypatch.setenv("STYLEBOT_DEVICES", "cuda:0, cuda:1")
    monkeypatch.setenv("STYLEBOT_LOG_LEVEL", "debug")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.devices == ("cuda:0", "cuda:1")
    assert s.log_level == "DEBUG"
    assert (s.prefix, s.user_running, s.user_waiting) == ("!", 1, 2)
    assert "secret-token-value" not in repr(s)


def test_env_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    (tmp_path / ".env").write_text("DISCORD_TOKEN=from-file\nSTYLEBOT_PREFIX=?\n")
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.discord_token is not None and s.discord_token.get_secret_value() == "from-file"
    assert s.prefix == "?"


@pytest.mark.parametrize(
    "values",
    [
        {"default_size": 2000, "max_size": 1024},
        {"user_running": 0},
        {"default_quality": "ultra"},
        {"max_size": 4096},
    ],
)
def test_bad_values_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **values)  # type: ignore[call-arg]


def run_stylebot(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "STYLEBOT_"))}
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_a_token_one_line_says_how_to_get_one(tmp_path: Path) -> None:
    done = run_stylebot(tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DISCORD_TOKEN is not set" in lines[0]
    assert "developers/applications" in lines[0]


def test_a_bad_setting_is_named(tmp_path: Path) -> None:
    done = run_stylebot(tmp_path, DISCORD_TOKEN="x", STYLEBOT_MAX_SIZE="huge")
    assert done.returncode == 2
    assert done.stderr.startswith("stylebot: bad setting STYLEBOT_MAX_SIZE")
    assert "Traceback" not in done.stderr


def test_the_token_from_a_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "discord_token"
    secret.write_text("from-a-secret\n")
    s = Settings(_env_file=None, discord_token_file=secret)  # type: ignore[call-arg]
    assert s.discord_token is not None and s.discord_token.get_secret_value() == "from-a-secret"


def test_a_token_file_that_is_missing_or_doubled_is_named(tmp_path: Path) -> None:
    done = run_stylebot(tmp_path, DISCORD_TOKEN_FILE=str(tmp_path / "nothing"))
    assert done.returncode == 2
    assert "DISCORD_TOKEN_FILE: cannot read" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "t").write_text("x")
    done = run_stylebot(tmp_path, DISCORD_TOKEN="y", DISCORD_TOKEN_FILE=str(tmp_path / "t"))
    assert done.returncode == 2
    assert "not both" in done.stderr and "Traceback" not in done.stderr
