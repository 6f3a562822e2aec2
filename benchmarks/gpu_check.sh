#!/usr/bin/env bash
# minigen on a CUDA GPU in one command of under 10 minutes, with nothing to install.
#
#   bash benchmarks/gpu_check.sh LOG_DIR
#
# Made for a GPU machine lent for a few minutes (CuPy, NumPy, pytest, hypothesis, Pillow,
# tqdm and PyTorch already there, no network). It runs from the source tree
# (PYTHONPATH=., python3) and writes every step's log, the probe's results, CuPy's kernel
# cache and a summary into LOG_DIR:
#
#   preflight    versions, minigen.cuda.is_available(), one CuPy sum
#   probe        benchmarks/cupy_probe.py: one PASS/FAIL line per risky CuPy API, and the
#                MEASURE lines that decide three open choices (see that file)
#   fused-tests  tests/test_fused.py's CUDA tests: the fused kernels against their references
#   cuda-tests   every other test with "cuda" in its name (the device fixture's cuda cases),
#                hypothesis's "ci" profile, -v so that a timeout still leaves the results so far
#   bench        benchmarks/run.py --device cuda --quick
#
# Each step has a time limit, and a deadline keeps the whole run under TOTAL_SECONDS
# (default 570): a step that would start too late is reported as "skipped: out of time".
# Without a GPU every CUDA step reports "skipped: no GPU" and the run takes seconds.
# Every step runs even when an earlier one failed; LOG_DIR/summary.md ends the run. The
# exit code is 1 if a step failed, timed out or ran out of time, 0 otherwise.

set -u  # no -e: a failing step must not stop the others

if [ $# -ne 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,24p' "$0"
    exit 2
fi
mkdir -p "$1"
LOG_DIR="$(cd "$1" && pwd)"
cd "$(dirname "$0")/.."  # the repository root

export PYTHONPATH=.
export CUPY_CACHE_DIR="$LOG_DIR/cupy_kernel_cache"  # compiled kernels come back with the logs
export CI=true HYPOTHESIS_PROFILE=ci
PYTHON="${PYTHON:-python3}"
TOTAL_SECONDS="${TOTAL_SECONDS:-570}"
DEADLINE=$((SECONDS + TOTAL_SECONDS))

SUMMARY=()  # "name|result|seconds|log"
FAILED=0

# run NAME LIMIT CMD...: run one step for at most LIMIT seconds (less if the deadline is
# nearer), with its output in LOG_DIR/NAME.log.
run() {
    local name="$1" limit="$2"
    shift 2
    local log="$LOG_DIR/$name.log"
    local left=$((DEADLINE - SECONDS - 5))
    if [ "$left" -lt 20 ]; then
        echo "=== $name: skipped: out of time" | tee "$log"
        SUMMARY+=("$name|skipped: out of time|0|$log")
        FAILED=1  # the check is incomplete
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit="$left"
    echo "=== $name (at most ${limit}s): $(printf '%s ' "$@" | tr '\n' ' ' | cut -c1-160)" | tee "$log"
    local start=$SECONDS code result
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
    code=${PIPESTATUS[0]}
    case "$code" in
        0) result="ok" ;;
        124 | 137) result="TIMEOUT (${limit}s)" ;;
        *) result="FAILED (exit $code)" ;;
    esac
    [ "$code" -eq 0 ] || FAILED=1
    echo "=== $name: $result after $((SECONDS - start))s" | tee -a "$log"
    SUMMARY+=("$name|$result|$((SECONDS - start))|$log")
}

skip() {  # skip NAME REASON
    echo "=== $1: skipped: $2" | tee "$LOG_DIR/$1.log"
    SUMMARY+=("$1|skipped: $2|0|$LOG_DIR/$1.log")
}

# -------------------------------------------------------------------------- preflight
run preflight 45 bash -c "
    command -v nvidia-smi > /dev/null && timeout 15 nvidia-smi || echo 'nvidia-smi: not found'
    $PYTHON --version
    $PYTHON - << 'EOF'
import importlib
for name in ('numpy', 'cupy', 'torch', 'pytest', 'hypothesis', 'PIL', 'tqdm'):
    try:
        print(f'{name} {importlib.import_module(name).__version__}')
    except Exception as error:
        print(f'{name}: not importable ({type(error).__name__}: {error})')
import minigen
available = minigen.cuda.is_available()
print(f'cuda available: {available}')
if available:
    import cupy
    total = float(cupy.arange(1000, dtype=cupy.float32).sum())
    print(f'one CuPy sum: {total} (expected 499500.0), devices: {minigen.cuda.device_count()}')
    assert total == 499500.0
EOF"

if grep -q "cuda available: True" "$LOG_DIR/preflight.log"; then
    # ------------------------------------------------------------------- the CUDA steps
    run probe 120 "$PYTHON" benchmarks/cupy_probe.py --out "$LOG_DIR/probe"
    run fused-tests 90 "$PYTHON" -m pytest -v -p no:cacheprovider -rfE tests/test_fused.py -k cuda
    run cuda-tests 210 "$PYTHON" -m pytest -v -p no:cacheprovider -rfE --durations=15 -k cuda \
        --ignore=tests/test_fused.py tests
    run bench 90 "$PYTHON" benchmarks/run.py --device cuda --quick --out "$LOG_DIR/bench"
else
    for step in probe fused-tests cuda-tests bench; do
        skip "$step" "no GPU"
    done
fi

# ---------------------------------------------------------------------------- summary
{
    echo "# gpu_check summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), ${SECONDS}s in all)"
    echo
    echo "| step | result | seconds | log |"
    echo "|---|---|---:|---|"
    for entry in "${SUMMARY[@]}"; do
        IFS="|" read -r name result seconds log <<< "$entry"
        echo "| $name | $result | $seconds | ${log#"$LOG_DIR"/} |"
    done
    if grep -q "^=== probe (at most" "$LOG_DIR/probe.log"; then
        echo
        echo "## probe: failures and measurements"
        echo
        grep -E "^(FAIL|MEASURE|probe:)" "$LOG_DIR/probe.log" | sed 's/^/    /'
    fi
    for step in fused-tests cuda-tests; do
        if grep -q "^=== $step (at most" "$LOG_DIR/$step.log"; then
            echo
            echo "## $step"
            echo
            log="$LOG_DIR/$step.log"
            # -v prints one line per test as it finishes, so these counts survive a timeout.
            echo "    so far: $(grep -c ' PASSED' "$log") passed, $(grep -c ' FAILED' "$log") failed," \
                "$(grep -c ' ERROR' "$log") errors, $(grep -c ' SKIPPED' "$log") skipped"
            grep -E "^(FAILED|ERROR) |^=+ .*(passed|failed|error|skipped|no tests ran).* =+$" "$log" \
                | sed 's/^/    /' || true
            grep -E "::.* (FAILED|ERROR)" "$log" | grep -v "^FAILED\|^ERROR" | sed 's/^/    /' | head -40 || true
        fi
    done
} | tee "$LOG_DIR/summary.md"
exit "$FAILED"
