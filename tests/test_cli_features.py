"""The `nst stylize` options of the speed and Bigger/timelapse work, through the real script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nst_engine import images

NST = str(Path(sys.executable).with_name("nst"))
PHOTO = str(Path(__file__).resolve().parent.parent / "samples" / "chelsea.png")


def nst(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NST, *args], capture_output=True, text=True, timeout=180, check=False, env=env
    )


def test_precision_option_paints_and_refuses_unknown_values(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    common = ["stylize", PHOTO, "-s", "udnie", "--size", "48", "--iterations", "2", "-o", str(out)]
    run = nst(*common, "--precision", "fp32", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    assert max(images.decode(out.read_bytes()).size) == 48
    bad = nst(*common, "--precision", "fp16")
    assert bad.returncode == 2 and "fp16" in bad.stderr and "bf16" in bad.stderr
