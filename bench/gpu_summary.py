"""Write bench/gpu_check.sh's summary from its step statuses and logs (stdlib only).

    python bench/gpu_summary.py OUT DEVICE DRY "name|status|seconds|limit" ...

Reads the `RESULT {json}` lines of OUT/default.log and OUT/throughput_*.log and the last pytest
line of OUT/cuda_tests.log; writes OUT/summary.json and OUT/summary.md (a table). Called after
every step, so the summary always holds what has been measured so far.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

STEPS = ("preflight", "default", "throughput_plain", "throughput_batched", "cuda_tests")


def _log(out: Path, name: str) -> str:
    path = out / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _results(out: Path, *names: str) -> list[dict]:
    found = []
    for name in names:
        for line in _log(out, name).splitlines():
            if line.startswith("RESULT "):
                found.append(json.loads(line[len("RESULT ") :]))
    return found


def collect(out: Path, device: str, dry: bool, rows: list[str]) -> dict:
    steps = []
    for row in rows:
        name, status, seconds, limit = row.split("|")
        steps.append({"step": name, "status": status, "seconds": int(seconds),
                      "limit_s": int(limit)})  # fmt: skip
    results = _results(out, "default", "throughput_plain", "throughput_batched")
    tests = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|errors?|deselected)\b.*?)\s*=*$",
                       _log(out, "cuda_tests"), re.M)  # fmt: skip
    done = {s["step"]: s["status"] for s in steps}
    return {
        "device": device,
        "dry_run": dry,
        "steps": steps,
        "default": [r for r in results if r["kind"] == "default"],
        "batch": [r for r in results if r["kind"] == "batch"],
        "throughput": [r for r in results if r["kind"] == "throughput"],
        "cuda_tests": tests[-1] if tests else None,
        "all_ok": all(done.get(name) == "ok" for name in STEPS)
        and all(s["status"] == "ok" for s in steps),
    }


def table(summary: dict) -> str:
    rows = [(f"step {s['step']}", f"{s['status']} in {s['seconds']} s",
             f"limit {s['limit_s']} s") for s in summary["steps"]]  # fmt: skip
    for d in summary["default"]:
        ev = d["eval"]
        peak = d["peak_alloc_mib"]
        memory = f", peak allocated {peak} MiB over the models" if peak is not None else ""
        rows.append((
            f"default job {d['size']} px {d['precision']}", f"{d['wall_s']} s",
            f"{d['pixels']}, {d['steps']} steps, scales {d['scales_s']} s, first run at this "
            f"shape {d.get('first_wall_s')} s; evaluator loss "
            f"{ev['loss']} (content {ev['content']}, style {ev['style']}){memory}",
        ))  # fmt: skip
    for b in summary["batch"]:
        memory = b["peak_alloc_mib_per_job"]
        rows.append((
            f"{b['batch']} jobs as one stylize_batch", f"{b['jobs_per_min']} jobs/min",
            f"{b['size']} px, {b['wall_s']} s"
            + (f", peak allocated {memory} MiB per job" if memory is not None else ""),
        ))  # fmt: skip
    for t in summary["throughput"]:
        rows.append((
            f"{t['concurrency']} concurrent jobs, {t['mode']}", f"{t['jobs_per_min']} jobs/min",
            f"{t['per_device']} painter(s) x batch {t['batch_max']}, {t['wall_s']} s, "
            f"{t['mean_job_s']} s per job in its painter",
        ))  # fmt: skip
    rows.append(("cuda tests", summary["cuda_tests"] or "not run", ""))
    rows.append(("all steps ok", str(summary["all_ok"]).lower(), ""))
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    title = f"# gpu_check on {summary['device']}" + (" (dry run, toy sizes)" if summary["dry_run"]
                                                     else "")  # fmt: skip
    lines = [f"{name:<{width}}  {value:<{vwidth}}  {note}".rstrip() for name, value, note in rows]
    return "\n".join([title, "", "```", *lines, "```", ""])


def main() -> None:
    out, device, dry, *rows = sys.argv[1:]
    summary = collect(Path(out), device, dry == "1", rows)
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (Path(out) / "summary.md").write_text(table(summary))


if __name__ == "__main__":
    main()
