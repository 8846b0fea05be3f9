"""The real `nst` console script, run as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nst_engine import images, styles

NST = str(Path(sys.executable).with_name("nst"))
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
PHOTO = str(SAMPLES / "chelsea.png")


def nst(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NST, *args], capture_output=True, text=True, timeout=180, check=False)


def test_styles_lists_the_seven_builtins() -> None:
    run = nst("styles")
    assert run.returncode == 0, run.stderr
    for name in styles.names():
        assert name in run.stdout
    assert "vaporwave" in run.stdout and "Vincent van Gogh" in run.stdout


def test_gallery_writes_a_decodable_sheet(tmp_path: Path) -> None:
    out = tmp_path / "sheets" / "styles.jpg"
    run = nst("gallery", "-o", str(out), "--thumb", "96")
    assert run.returncode == 0, run.stderr
    assert str(out) in run.stdout
    sheet = images.decode(out.read_bytes())
    assert sheet.width > 4 * 96 and sheet.height > 2 * 96


# {tmp} is the test's own folder; it holds notes.png (text, not an image) and a-file (a file
# where a folder would have to be).
BAD_CASES: dict[str, tuple[list[str], str]] = {
    "missing content": (["stylize", "{tmp}/nope.jpg", "-s", "udnie", "-o", "{tmp}/out.png"],
                        "No such file"),
    "undecodable content": (["stylize", "{tmp}/notes.png", "-s", "udnie", "-o", "{tmp}/out.png"],
                            "isn't an image"),
    "unknown style": (["stylize", PHOTO, "-s", "starry", "-o", "{tmp}/out.png"],
                      "Did you mean 'starry-night'?"),
    "missing style file": (["stylize", PHOTO, "-s", "{tmp}/mine.jpg", "-o", "{tmp}/out.png"],
                           "No such file"),
    "undecodable style file": (["stylize", PHOTO, "-s", "{tmp}/notes.png:2", "-o", "{tmp}/out.png"],
                               "isn't an image"),
    "bad weight": (["stylize", PHOTO, "-s", "udnie:heavy", "-o", "{tmp}/out.png"], "weight"),
    "zero weight": (["stylize", PHOTO, "-s", "udnie:0", "-o", "{tmp}/out.png"], "positive"),
    "size 0": (["stylize", PHOTO, "-s", "udnie", "-o", "{tmp}/out.png", "--size", "0"], "Size"),
    "strength -1": (["stylize", PHOTO, "-s", "udnie", "-o", "{tmp}/out.png", "--strength", "-1"],
                    "Strength"),
    "unwritable output": (["stylize", PHOTO, "-s", "udnie", "-o", "{tmp}/a-file/out.png"],
                          "Can't write"),
    "output type": (["stylize", PHOTO, "-s", "udnie", "-o", "{tmp}/out.tiff"], ".png"),
    "gallery unwritable": (["gallery", "-o", "{tmp}/a-file/sheet.png"], "Can't write"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_exits_2_with_one_line(case: str, tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "a-file").write_text("x")
    template, phrase = BAD_CASES[case]
    run = nst(*(arg.format(tmp=tmp_path) for arg in template))
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("nst: ") and phrase in lines[0]
    assert not (tmp_path / "out.png").exists()


def test_argparse_errors_also_exit_2() -> None:
    run = nst("stylize", PHOTO, "-s", "udnie", "-o", "x.png", "--size", "big")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and "--size" in run.stderr


def test_tiny_stylize_writes_an_image_and_snapshots(tmp_path: Path) -> None:
    out = tmp_path / "result.png"
    run = nst(
        "stylize", PHOTO, "--style", "vaporwave", "--style", "udnie:0.5", "-o", str(out),
        "--size", "64", "--iterations", "4", "--quality", "draft", "--save-every", "2",
        "--device", "cpu",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"Saved {out}" in run.stdout
    result = images.decode(out.read_bytes())
    assert max(result.size) == 64
    assert "4/4" in run.stderr  # the progress bar's step count
    for step in (2, 4):
        snapshot = images.decode((tmp_path / f"result-step{step:04d}.png").read_bytes())
        assert snapshot.size == result.size


def test_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "never.png"
    first = tmp_path / "never-step0001.png"
    proc = subprocess.Popen(
        [NST, "stylize", PHOTO, "-s", "the-scream", "-o", str(out), "--size", "64",
         "--iterations", "10000", "--quality", "draft", "--save-every", "1", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.exists(), "the job never started"
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "nst: stopped."
    assert not out.exists()


def test_missing_gpu_is_bad_input(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run = nst("stylize", PHOTO, "-s", "udnie", "-o", str(tmp_path / "o.png"), "--device", "cuda")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nst: ") and "cuda" in lines[0].lower()
