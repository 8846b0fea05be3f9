"""The `nst stylize` options of the speed and Bigger/timelapse work, through the real script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from nst_engine import images
from nst_engine.schedule import plan

NST = str(Path(sys.executable).with_name("nst"))
PHOTO = str(Path(__file__).resolve().parent.parent / "samples" / "chelsea.png")


def nst(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NST, *map(str, args)], capture_output=True, text=True, timeout=180, check=False, env=env
    )


def test_precision_option_paints_and_refuses_unknown_values(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    common = ["stylize", PHOTO, "-s", "udnie", "--size", "48", "--iterations", "2", "-o", str(out)]
    run = nst(*common, "--precision", "fp32", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    assert max(images.decode(out.read_bytes()).size) == 48
    bad = nst(*common, "--precision", "fp16")
    assert bad.returncode == 2 and "fp16" in bad.stderr and "bf16" in bad.stderr


def _steps(stdout: str) -> int:
    """The step count from `nst stylize`'s "Saved … (W×H, N steps in …)" line."""
    return int(stdout.split(" steps in ")[0].rsplit(" ", 1)[1])


def test_init_paints_a_bigger_version_with_only_the_fine_scale(tmp_path: Path) -> None:
    small, big, fresh = tmp_path / "small.png", tmp_path / "big.png", tmp_path / "fresh.png"
    common = ["stylize", PHOTO, "-s", "udnie", "--quality", "draft", "--device", "cpu"]
    first = nst(*common, "--size", "96", "--iterations", "3", "-o", str(small))
    assert first.returncode == 0, first.stderr
    bigger = nst(*common, "--size", "192", "--iterations", "9", "--init", str(small), "-o", big)
    assert bigger.returncode == 0, bigger.stderr
    anew = nst(*common, "--size", "192", "--iterations", "9", "-o", str(fresh))
    assert anew.returncode == 0, anew.stderr
    result = images.decode(big.read_bytes())
    assert result.size == (192, 128)
    # 9 draft steps at 192 px are shared out between 96 px and 192 px; from a 96 px start only
    # the 192 px share runs
    coarse, fine = plan(*result.size, 192, "draft", 9)
    assert coarse.width == 96 and fine.width == 192
    assert _steps(bigger.stdout) == fine.steps < _steps(anew.stdout) == 9
    # it starts from the small result: closer to it than a fresh painting is
    upsampled = np.asarray(images.decode(small.read_bytes()).resize(result.size), np.float32)
    from_init = np.abs(np.asarray(result, np.float32) - upsampled).mean()
    from_noise = np.abs(np.asarray(images.decode(fresh.read_bytes()), np.float32) - upsampled)
    assert from_init < from_noise.mean()


def test_init_that_is_not_an_image_is_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    run = nst("stylize", PHOTO, "-s", "udnie", "--init", str(notes), "-o", str(tmp_path / "o.png"))
    assert run.returncode != 0 and "isn't an image" in run.stderr


def test_timelapse_writes_an_animation_ending_on_the_result(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    for name in ("forming.webp", "forming.gif"):
        animation = tmp_path / name
        run = nst(
            "stylize", PHOTO, "-s", "udnie", "--size", "64", "--iterations", "10",
            "--device", "cpu", "-o", str(out), "--timelapse", str(animation),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        with Image.open(animation) as img:
            assert img.format == name.split(".")[1].upper()
            assert img.n_frames >= 8
            assert img.size == images.decode(out.read_bytes()).size
            img.seek(img.n_frames - 1)
            last = np.asarray(img.convert("RGB"), np.float32)
            durations = img.info.get("duration")
        result = np.asarray(images.decode(out.read_bytes()), np.float32)
        assert np.abs(last - result).mean() < 12  # lossy (WebP) or paletted (GIF) encoding
        assert durations is not None and durations >= 1000  # the hold on the last frame
    bad = nst("stylize", PHOTO, "-s", "udnie", "-o", str(out), "--timelapse", str(tmp_path / "a"))
    assert bad.returncode != 0 and ".webp or .gif" in bad.stderr
