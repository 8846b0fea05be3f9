"""The deployment files hold up without a Docker daemon: compose.yaml's commands and options exist
in the tools the image installs, every service has a healthcheck and an init, the painters do not
all land on one GPU, nothing there is loopback-only, and the Docker lock carries no machine's pip
settings.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from bot.__main__ import main as stylebot

yaml = pytest.importorskip("yaml")
ray_cli = pytest.importorskip("ray.scripts.scripts").cli

ROOT = Path(__file__).resolve().parent.parent
SERVICES: dict[str, dict] = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
# The ports Ray otherwise picks at random on every node (the README lists the ones to open).
PINNED = (
    "--node-manager-port",
    "--object-manager-port",
    "--runtime-env-agent-port",
    "--dashboard-agent-grpc-port",
    "--dashboard-agent-listen-port",
    "--metrics-export-port",
    "--min-worker-port",
    "--max-worker-port",
)


def command_line(service: dict) -> list[str]:
    """The service's entrypoint as words (a `sh -c` script is split into its words)."""
    words = list(service["entrypoint"])
    return shlex.split(words[2]) if words[:2] == ["sh", "-c"] else words


def ray_start_options(words: list[str]) -> dict[str, str]:
    """The options of the first `ray start` in `words`, up to the end of that command."""
    start = next(i for i in range(len(words)) if words[i : i + 2] == ["ray", "start"])
    options = {}
    for word in words[start + 2 :]:
        if word == "&&":
            break
        name, _, value = word.partition("=")
        options[name] = value
    return options


def test_every_service_has_an_init_and_a_healthcheck_that_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, service in SERVICES.items():
        assert service.get("init") is True, name
        kind, program, *args = service["healthcheck"]["test"]
        assert kind == "CMD", name
        if program == "ray":
            assert args[0] in ray_cli.commands, f"{name}: no `ray {args[0]}`"
        else:
            assert program in scripts, f"{name}: no `{program}` in the image"
    # `stylebot --check` is a real flag: with no bot running it says so and exits 1, not 2.
    monkeypatch.setenv("STYLEBOT_DATA_DIR", str(tmp_path))
    assert stylebot(["--check"]) == 1


def test_ray_start_lines_use_real_options_and_pin_the_same_ports() -> None:
    known = {opt for param in ray_cli.commands["start"].params for opt in param.opts}
    ports = {}
    for name, service in SERVICES.items():
        options = ray_start_options(command_line(service))
        assert set(options) <= known, f"{name}: {set(options) - known}"
        ports[name] = {k: options.get(k) for k in PINNED}
        assert None not in ports[name].values(), f"{name} leaves Ray ports to chance: {ports[name]}"
    assert len({tuple(sorted(p.items())) for p in ports.values()}) == 1, ports


def test_painters_get_every_gpu_not_gpu_0_each() -> None:
    (device,) = SERVICES["painter"]["deploy"]["resources"]["reservations"]["devices"]
    assert device.get("count") == "all" or "device_ids" in device, device


def test_nothing_in_compose_is_loopback_only() -> None:
    text = yaml.safe_dump(SERVICES)  # what runs, without the comments
    for name, service in SERVICES.items():
        assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in service.get("environment", {}), name
        assert "--node-ip-address" not in ray_start_options(command_line(service)), name
    assert "127.0.0.1" not in text and "localhost" not in text


def test_docker_lock_is_hashed_and_free_of_machine_settings() -> None:
    lock = (ROOT / "requirements" / "docker.txt").read_text()
    options = [line for line in lock.splitlines() if line.startswith("-")]
    assert options == [], options  # --find-links, --extra-index-url, file:// mirrors...
    assert "file://" not in lock and "/opt/" not in lock
    entries = re.split(r"\n(?=[a-z0-9])", lock)
    pins = [e for e in entries if re.match(r"[a-z0-9][\w.-]*==", e)]
    assert len(pins) > 40 and all("--hash=sha256:" in e for e in pins)
