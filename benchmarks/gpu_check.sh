#!/usr/bin/env bash
# minigen on a CUDA GPU, end to end: install, tests, demos, benchmarks.
#
#   bash benchmarks/gpu_check.sh [LOG_DIR] [--steps LIST] [--no-install]
#
# LOG_DIR   where every step's log goes (default: runs/gpu_check-YYYYmmdd-HHMMSS)
# --steps   a comma-separated subset of: env,install,tests,fused-tests,slow-tests,demos-quick,
#           demos,bench,bench-fused (default: all of them, in that order). Useful when one
#           call may only run for a limited time: e.g. --steps install,tests,fused-tests
#           then --steps demos-quick,bench,bench-fused.
# --no-install   skip the pip step (the packages are already there)
#
# The fused CUDA kernels (minigen/fused.py) are off by default until checked here:
# fused-tests runs their agreement tests and the op tests with MINIGEN_FUSED=1, and
# bench-fused times the benchmarks again with them on, next to the bench step's numbers
# (LOG_DIR/bench/fused_vs_unfused.md).
#
# Every step runs even when an earlier one failed; the exit codes are collected and a
# summary table (also in LOG_DIR/summary.md) ends the run. The script exits 1 if any
# step failed, 0 otherwise. Each step has a time limit (STEP_TIMEOUT seconds, default
# 1800), so one hung demo cannot eat the whole session.
#
# Nothing here needs the network except the install step; on an offline machine it
# falls back to installing minigen itself without dependencies and says so.

set -u  # no -e: a failing step must not stop the others

cd "$(dirname "$0")/.."  # the repository root

LOG_DIR=""
STEPS="env,install,tests,fused-tests,slow-tests,demos-quick,demos,bench,bench-fused"
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) STEPS="$2"; shift 2 ;;
        --steps=*) STEPS="${1#--steps=}"; shift ;;
        --no-install) STEPS="$(echo ",$STEPS," | sed 's/,install,/,/; s/^,//; s/,$//')"; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) LOG_DIR="$1"; shift ;;
    esac
done
LOG_DIR="${LOG_DIR:-runs/gpu_check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$LOG_DIR"
STEP_TIMEOUT="${STEP_TIMEOUT:-1800}"
PYTHON="${PYTHON:-python}"

SUMMARY=()   # "name|exit code|seconds|log" for every step that ran
FAILED=0

wanted() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# run NAME CMD...: run one step with a time limit, tee its output to LOG_DIR/NAME.log,
# and record its exit code (124 means it ran out of time).
run() {
    local name="$1"; shift
    local log="$LOG_DIR/$name.log"
    echo "=== $name: $*" | tee "$log"
    local start=$SECONDS
    local code
    if command -v timeout > /dev/null; then
        timeout "$STEP_TIMEOUT" "$@" 2>&1 | tee -a "$log"
        code=${PIPESTATUS[0]}
    else
        "$@" 2>&1 | tee -a "$log"
        code=${PIPESTATUS[0]}
    fi
    local seconds=$((SECONDS - start))
    echo "=== $name: exit code $code after ${seconds}s" | tee -a "$log"
    SUMMARY+=("$name|$code|$seconds|$log")
    [ "$code" -eq 0 ] || FAILED=1
    return 0
}

# ------------------------------------------------------------------ environment
if wanted env; then
    run env bash -c "nvidia-smi; $PYTHON --version; $PYTHON -m pip --version; \
        $PYTHON -m pip list 2>/dev/null | grep -i -E '^(numpy|cupy|torch|pytest|hypothesis|pillow|tqdm) '"
fi

# ---------------------------------------------------------------------- install
if wanted install; then
    # Online: minigen with its GPU and test extras. Offline (no package index): minigen
    # alone, relying on what is already installed.
    run install bash -c "$PYTHON -m pip install -e '.[gpu,test]' \
        || { echo 'pip could not install the extras (offline?); installing minigen without dependencies'; \
             $PYTHON -m pip install --no-deps --no-build-isolation -e .; }"
    # PyTorch is only the benchmarks' reference; its absence is not a failure.
    $PYTHON -c "import torch" 2> /dev/null \
        || $PYTHON -m pip install torch > "$LOG_DIR/install-torch.log" 2>&1 \
        || echo "PyTorch not available: the benchmark's PyTorch columns will be empty" | tee -a "$LOG_DIR/install-torch.log"
fi

# The rest needs a GPU that CuPy can see; say so plainly if there is none.
if ! $PYTHON -c "import minigen, sys; sys.exit(0 if minigen.cuda.is_available() else 1)" 2> /dev/null; then
    echo "minigen.cuda.is_available() is False: CuPy is missing or sees no GPU; the cuda steps will fail" \
        | tee "$LOG_DIR/no-gpu.log"
fi

# ------------------------------------------------------------------------ tests
# The device fixture adds "cuda" to every device-parametrised test when CuPy sees a GPU.
if wanted tests; then
    run tests "$PYTHON" -m pytest -q -ra
fi
# The opt-in fused kernels: their fused-vs-reference tests (tests/test_fused.py), then the
# op, optimiser and model tests once more with the kernels on for every CUDA array.
if wanted fused-tests; then
    run fused-tests env MINIGEN_FUSED=1 "$PYTHON" -m pytest -q -ra tests/test_fused.py \
        tests/test_activation.py tests/test_normalization.py tests/test_optim.py tests/test_layers.py \
        tests/test_transformer_models.py
fi
if wanted slow-tests; then
    run slow-tests "$PYTHON" -m pytest -q -ra -m slow
fi

# ------------------------------------------------------------------------ demos
DEMOS=()
for path in demos/*.py; do
    name="$(basename "$path" .py)"
    [ "$name" = "common" ] || DEMOS+=("$name")
done
if wanted demos-quick; then
    for name in "${DEMOS[@]}"; do
        run "demo-$name-quick" "$PYTHON" "demos/$name.py" --device cuda --quick --out "$LOG_DIR/demos/$name-quick"
    done
fi
if wanted demos; then
    for name in "${DEMOS[@]}"; do
        run "demo-$name" "$PYTHON" "demos/$name.py" --device cuda --out "$LOG_DIR/demos/$name"
    done
fi

# ------------------------------------------------------------------- benchmarks
if wanted bench; then
    run bench "$PYTHON" benchmarks/run.py --device cuda --out "$LOG_DIR/bench"
fi
if wanted bench-fused; then
    run bench-fused "$PYTHON" benchmarks/run.py --device cuda --fused --out "$LOG_DIR/bench"
    mkdir -p "$LOG_DIR/bench"
    # Side by side, per case: the reference path (bench) and the fused kernels (bench-fused).
    "$PYTHON" - "$LOG_DIR/bench" << 'EOF' | tee "$LOG_DIR/bench/fused_vs_unfused.md"
import json, sys
from pathlib import Path
folder = Path(sys.argv[1])
try:
    plain, fused = (json.loads((folder / name).read_text()) for name in ("cuda.json", "cuda_fused.json"))
except OSError as error:
    sys.exit(f"no comparison: {error}")
fused_ms = {r["case"]: r.get("minigen_ms") for r in fused["rows"]}
print("| case | unfused (ms) | fused (ms) | fused speed-up |\n|---|---:|---:|---:|")
for row in plain["rows"]:
    a, b = row.get("minigen_ms"), fused_ms.get(row["case"])
    cells = f"{a:.3f} | {b:.3f} | {a / b:.2f}×" if a and b else "failed | | "
    print(f"| {row['case']} | {cells} |")
EOF
fi

# ---------------------------------------------------------------------- summary
{
    echo "# gpu_check summary ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo
    echo "| step | result | seconds | log |"
    echo "|---|---|---:|---|"
    for entry in "${SUMMARY[@]}"; do
        IFS="|" read -r name code seconds log <<< "$entry"
        case "$code" in
            0) result="ok" ;;
            124) result="TIMEOUT (${STEP_TIMEOUT}s)" ;;
            *) result="FAILED (exit $code)" ;;
        esac
        echo "| $name | $result | $seconds | $log |"
    done
} | tee "$LOG_DIR/summary.md"
[ -f "$LOG_DIR/bench/cuda.json" ] && echo "benchmark results: $LOG_DIR/bench/cuda.json"
[ -f "$LOG_DIR/bench/cuda_fused.json" ] && echo "with the fused kernels: $LOG_DIR/bench/cuda_fused.json ($LOG_DIR/bench/fused_vs_unfused.md)"
exit "$FAILED"
