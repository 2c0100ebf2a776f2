#!/usr/bin/env bash
# Re-measures the README's GPU numbers on one machine, one after another:
#   bash scripts/gpu_measurements.sh DATA_DIR OUT_DIR [STEP ...]
# STEPs (default: all, in this order): bench final final_bf16 report fast
# fast_long table. Each step's output goes to OUT_DIR/<step>.log, its workdir
# to OUT_DIR/<step>/ (report reads OUT_DIR/final/, table writes
# OUT_DIR/paper_table/). Extra main.py arguments for every run but the table:
# $EXTRA, e.g. EXTRA=--config.num_epochs=40 ... fast_long. Python: $PYTHON
# (default python3). The table step starts from the rows measured before
# (the seeds' JSON under results/h200/*/table/) and trains $ROWS (a Python
# tuple, e.g. ROWS='("rmsprop","elu")'; default: every row).
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash scripts/gpu_measurements.sh DATA_DIR OUT_DIR [STEP ...]" >&2
  exit 2
fi
data=$(realpath -m "$1"); out=$(realpath -m "$2"); shift 2
cd "$(dirname "$0")/.."  # main.py, configs/ and results/ are read from here.
steps=${*:-bench final final_bf16 report fast fast_long table}
for step in $steps; do  # A misspelt step fails before any step runs.
  case $step in
    bench|final|final_bf16|report|fast|fast_long|table) ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
extra=${EXTRA:-}
failed=0  # Set by a failed step: the script's exit status, once all ran.
mkdir -p "$out"
run() {  # run STEP ARGS...: one main.py command, timed, logged.
  local step=$1; shift
  local t0; t0=$(date +%s%N)
  ${PYTHON:-python3} main.py "$@" $extra > "$out/$step.log" 2>&1
  local rc=$?
  [ $rc = 0 ] || failed=1
  echo "$step rc=$rc wall $(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee -a "$out/summary.txt"
  tail -3 "$out/$step.log"
}
for step in $steps; do
  case $step in
    bench) run bench --config=configs/final.py --mode=benchmark --workdir="$out/bench" ;;
    final) run final --config=configs/final.py --config.data_dir="$data" --workdir="$out/final" ;;
    final_bf16) run final_bf16 --config=configs/final.py --config.data_dir="$data" --workdir="$out/final_bf16" --config.dtype=bfloat16 --config.max_pool=fused_select --config.pad_input_channels=8 ;;
    report) run report --config=configs/final.py --config.data_dir="$data" --workdir="$out/final" --mode=report ;;
    fast) run fast --config=configs/fast.py --config.data_dir="$data" --workdir="$out/fast" --mode=timed ;;
    fast_long) run fast_long --config=configs/fast_long.py --config.data_dir="$data" --workdir="$out/fast_long" --mode=timed ;;
    table)
      mkdir -p "$out/paper_table"
      for row in results/h200/*/table/*/; do cp -rn "$row" "$out/paper_table/"; done
      extra=${ROWS:+--config.train_rows=$ROWS} run table --config=configs/paper_table.py --config.data_dir="$data" --workdir="$out/paper_table" --mode=sweep --config.results_dir="$out/results" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
exit $failed
