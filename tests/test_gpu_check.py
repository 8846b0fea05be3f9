"""bench/gpu_check.sh on this CPU: the dry run takes every step the GPU run takes, at toy sizes.

A borrowed GPU machine gives a few minutes, once; these keep the script from rotting between
such runs: its steps, its preflight and its summary all run here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BOUND = 240.0  # seconds the script may take here before the test fails instead of hanging


def gpu_check(out: Path, *args: str, device: str) -> tuple[int, str]:
    """Run the script in its own process group (all of it is stopped if it overruns)."""
    env = {**os.environ, "DEVICE": device, "PYTHON": sys.executable}
    proc = subprocess.Popen(
        ["bash", "bench/gpu_check.sh", "--out", str(out), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"gpu_check.sh ran past {BOUND} s:\n{output[-4000:]}")
    return proc.returncode, output


def test_dry_run_takes_every_step_and_summarises_them(tmp_path: Path) -> None:
    code, output = gpu_check(tmp_path, "--dry-run", device="cpu")
    assert code == 0, output[-4000:]
    assert "pip download" in output and "--wheels .whl --out" in output  # the header's commands
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["all_ok"] and summary["dry_run"]
    assert [s["step"] for s in summary["steps"]] == [
        "preflight", "default", "throughput_plain", "throughput_batched", "cuda_tests",
    ]  # fmt: skip
    assert {(d["size"], d["precision"]) for d in summary["default"]} == {
        (64, "fp32"), (64, "bf16"),
    }  # fmt: skip
    for job in summary["default"]:
        assert job["wall_s"] > 0 and 0 < job["eval"]["loss"] == pytest.approx(
            job["eval"]["content"] + job["eval"]["style"], abs=1e-3
        )
    assert [b["batch"] for b in summary["batch"]] == [2]
    levels = {(t["batch_max"], t["concurrency"]) for t in summary["throughput"]}
    assert levels == {(1, 1), (1, 2), (2, 1), (2, 2)}
    assert "skipped" in summary["cuda_tests"]  # collected and marked; no GPU here
    table = (tmp_path / "summary.md").read_text()
    assert "default job 64 px bf16" in table and "all steps ok" in table
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cuda_tests.log", "default.log", "preflight.log", "summary.json", "summary.md",
        "throughput_batched.log", "throughput_plain.log",
    ]  # fmt: skip
    # (the device tool brings back at most 8 files)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU preflight")
def test_preflight_stops_at_once_with_one_line_without_a_gpu(tmp_path: Path) -> None:
    code, output = gpu_check(tmp_path, device="cuda")
    assert code == 1
    failure = [line for line in output.splitlines() if line.startswith("CHECK FAILED")]
    assert failure == [
        "CHECK FAILED: PREFLIGHT FAILED: torch.cuda.is_available() is False "
        f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})"
    ]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(s["step"], s["status"]) for s in summary["steps"]] == [
        ("preflight", "failed (exit 1)")
    ]
    assert not summary["all_ok"]
    assert not (tmp_path / "default.log").exists()
