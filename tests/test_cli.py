"""The real `nst` console script, run as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from nst_engine import images, styles

NST = str(Path(sys.executable).with_name("nst"))
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
PHOTO = str(SAMPLES / "chelsea.png")


def nst(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NST, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def one_line_refusal(run: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a run refused as bad input (exit 2, no traceback)."""
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("nst: ")
    return lines[0]


def fingerprint(path: Path) -> tuple[bytes, int, int]:
    info = path.stat()
    return path.read_bytes(), info.st_mtime_ns, info.st_ino


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
    assert phrase in one_line_refusal(run)
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["stylize", PHOTO, "-s", "udnie", "-o", "x.png", "--size", "big"], "--size"),
        (["stylize", PHOTO, "-o", "x.png"], "-s/--style"),
        (["stylize", PHOTO, "-s", "udnie", "-o", "x.png", "--quality", "best"], "--quality"),
        (["paint"], "invalid choice"),
        ([], "COMMAND"),
    ],
)
def test_argparse_errors_are_one_line(args: list[str], phrase: str) -> None:
    line = one_line_refusal(nst(*args))
    assert phrase in line and "--help" in line
    assert "usage:" not in line


def test_help_still_shows_the_usage() -> None:
    run = nst("stylize", "--help")
    assert run.returncode == 0
    assert run.stdout.startswith("usage: nst stylize") and "--iterations" in run.stdout


@pytest.mark.parametrize("value", ["1e30", "20000", "10001", "0", "-3", "many"])
def test_iterations_are_bounded(value: str, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    line = one_line_refusal(nst("stylize", PHOTO, "-s", "udnie", "-o", str(out),
                                "--iterations", value))  # fmt: skip
    assert "--iterations" in line and "10000" in line and repr(value) in line
    assert not out.exists()


def _inputs(tmp: Path) -> None:
    """mine.png (the photo), art.jpg (a style file) and other names for both."""
    (tmp / "mine.png").write_bytes((SAMPLES / "chelsea.png").read_bytes())
    (tmp / "art.jpg").write_bytes((SAMPLES / "rocket.jpg").read_bytes())
    os.link(tmp / "mine.png", tmp / "hard.png")
    (tmp / "link.jpg").symlink_to(tmp / "art.jpg")
    (tmp / "sub").mkdir()
    os.link(tmp / "mine.png", tmp / "out-step0010.png")  # where --save-every 5 would write
    os.link(tmp / "art.jpg", tmp / "snap-step0007.jpg")  # not a multiple of 2: never written


# Run from the test's folder: CONTENT, the style and -o, then what the message says.
CLOBBER_CASES: dict[str, tuple[list[str], str]] = {
    "output is the photo": (["mine.png", "-s", "starry-night", "-o", "mine.png"],
                            "is the same file as the photo mine.png"),
    "output is the photo by another path": (["mine.png", "-s", "udnie", "-o", "sub/../mine.png"],
                                            "the photo mine.png"),
    "output is a hard link to the photo": (["mine.png", "-s", "udnie", "-o", "hard.png"],
                                           "the photo mine.png"),
    "output is a style file": (["mine.png", "-s", "art.jpg:2", "-o", "art.jpg"],
                               "the style file art.jpg"),
    "output is a symlink to a style file": (["mine.png", "-s", "udnie", "-s", "art.jpg",
                                             "-o", "link.jpg"], "the style file art.jpg"),
    "output is the photo by absolute path": (["mine.png", "-s", "udnie", "-o", "{tmp}/mine.png"],
                                             "the photo mine.png"),
    "a snapshot would hit the photo": (["mine.png", "-s", "udnie", "-o", "out.png",
                                        "--save-every", "5"], "--save-every would overwrite"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CLOBBER_CASES))
def test_an_output_that_is_an_input_is_refused(case: str, tmp_path: Path) -> None:
    _inputs(tmp_path)
    before = {p: fingerprint(p) for p in tmp_path.iterdir() if p.is_file()}
    template, phrase = CLOBBER_CASES[case]
    run = subprocess.run(
        [NST, "stylize", *(a.format(tmp=tmp_path) for a in template)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert phrase in one_line_refusal(run)
    after = {p: fingerprint(p) for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # byte for byte, same mtime, same inode; nothing new written


def test_snapshots_that_miss_the_inputs_are_allowed(tmp_path: Path) -> None:
    """snap-step0007.jpg is a style file, but --save-every 2 never writes step 7."""
    _inputs(tmp_path)
    run = subprocess.run(
        [NST, "stylize", "mine.png", "-s", "art.jpg", "-o", "snap.jpg", "--save-every", "2",
         "--size", "32", "--iterations", "2", "--quality", "draft", "--device", "cpu"],
        capture_output=True, text=True, timeout=180, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "snap-step0002.jpg").is_file()
    assert (tmp_path / "snap-step0007.jpg").read_bytes() == (tmp_path / "art.jpg").read_bytes()


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
@pytest.mark.parametrize("role", ["photo", "style file"])
def test_non_regular_files_are_refused_without_reading(
    kind: str, role: str, tmp_path: Path
) -> None:
    if kind == "device":
        target = "/dev/zero"
    elif kind == "fifo":
        target = str(tmp_path / "pipe.png")
        os.mkfifo(target)  # no writer: opening it for a read would block forever
    else:
        target = str(tmp_path / "folder.png")
        os.mkdir(target)
    out = tmp_path / "out.png"
    if role == "photo":
        args = [target, "-s", "udnie", "-o", str(out)]
    else:
        args = [PHOTO, "-s", f"{target}:2", "-o", str(out)]
    line = one_line_refusal(nst("stylize", *args, timeout=30))
    assert line.startswith(f"nst: {role} {target}: ")
    assert ("folder" if kind == "folder" else "not a regular file") in line
    assert not out.exists()


def _png_of(width: int, height: int) -> bytes:
    """A real, fully decodable white PNG, small on disk because white compresses well."""
    row = b"\0" + b"\xff" * (3 * width)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    packer = zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


# Runs a command as its own child and prints its exit status and peak memory (KiB). A process
# forked from a big one (pytest) inherits that one's peak; this small go-between forks afresh.
PEAK_RSS = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
    "_, status, usage = os.wait4(p.pid, 0); "
    "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)"
)


def test_style_files_are_capped_together_before_decoding(tmp_path: Path) -> None:
    """Ten small files of 49 megapixels each (each under the cap for one image) are refused
    from their headers: the process never holds even one of them decoded."""
    big = _png_of(7000, 7000)
    assert len(big) < 200_000
    args = []
    for i in range(10):
        (tmp_path / f"big{i}.png").write_bytes(big)
        args += ["-s", str(tmp_path / f"big{i}.png")]
    out = tmp_path / "out.png"
    run = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, NST, "stylize", PHOTO, *args, "-o", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    status, peak_kib = (int(n) for n in run.stdout.split())
    line = one_line_refusal(subprocess.CompletedProcess(run.args, status, "", run.stderr))
    assert "too large together" in line and "147.0 megapixels in the first 3" in line
    assert peak_kib * 1024 < 7000 * 7000 * 3, peak_kib
    assert not out.exists()


@pytest.mark.parametrize("role", ["photo", "style file"])
def test_a_damaged_file_is_named(role: str, tmp_path: Path) -> None:
    damaged = tmp_path / "cut.png"
    whole = (SAMPLES / "chelsea.png").read_bytes()
    damaged.write_bytes(whole[: len(whole) // 2])
    if role == "photo":
        args = [str(damaged), "-s", "udnie", "-o", str(tmp_path / "o.png")]
    else:
        args = [PHOTO, "-s", "udnie", "-s", str(damaged), "-o", str(tmp_path / "o.png")]
    line = one_line_refusal(nst("stylize", *args, timeout=60))
    assert line.startswith(f"nst: {role} {damaged}: ") and "damaged" in line


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
