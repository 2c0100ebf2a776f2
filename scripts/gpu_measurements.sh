#!/usr/bin/env bash
# Re-measures the README's GPU numbers on one machine, one after another:
#   bash scripts/gpu_measurements.sh DATA_DIR OUT_DIR [STEP ...]
# STEPs (default: all, in this order): bench candidates concurrent final
# final_bf16 report eval_augmented fast fast_long table. Each step's output
# goes to OUT_DIR/<step>.log, its workdir to OUT_DIR/<step>/ (report and
# eval_augmented read OUT_DIR/final/, table writes OUT_DIR/paper_table/).
# Extra main.py arguments for every run but the table: $EXTRA, e.g.
# EXTRA=--config.num_epochs=40 ... fast_long. Python: $PYTHON (default
# python3).
# - eval_augmented: the final run evaluated on test images augmented as in
#   training, as the paper did (its eval_other_config.json, beside eval.json).
# - candidates: the speed settings not yet measured on a GPU, each benchmarked
#   (2 timed epochs, no step-loop row) with its own empty compilation cache,
#   beside the fp32 and bf16 bases they change; $CANDIDATES names some
#   (default: all of f32 f32_relu f32_im2col f32_nchw b16 b16_relu
#   b16_im2col_relu). Their compile s and s/epoch go to OUT_DIR/candidates.txt.
# - concurrent: the benchmark alone, then in $PROCS processes at once on the
#   one GPU (default 3; each given 0.8/PROCS of its memory, the run alone
#   too), with MPS if $MPS=1: whether a sweep would gain by training seeds as
#   processes side by side. The ratio goes to OUT_DIR/concurrent.txt.
# - table: starts from the rows measured before (the seeds' JSON under
#   results/h200/*/table/) and trains $ROWS (a Python tuple, e.g.
#   ROWS='("rmsprop","elu")', in that order; default: every row). With
#   $TABLE_SECONDS, it is asked to stop (SIGTERM) after that many seconds: the
#   epoch in progress is saved, the table written from the finished seeds.
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash scripts/gpu_measurements.sh DATA_DIR OUT_DIR [STEP ...]" >&2
  exit 2
fi
data=$(realpath -m "$1"); out=$(realpath -m "$2"); shift 2
cd "$(dirname "$0")/.."  # main.py, configs/ and results/ are read from here.
steps=${*:-bench candidates concurrent final final_bf16 report eval_augmented fast fast_long table}
# Lease d's fastest bf16 form (README, Performance); final_bf16 runs it.
b16_base='--config.dtype=bfloat16 --config.max_pool=fused_select'
bf16="$b16_base --config.pad_input_channels=8"
candidate() {  # The overrides of a candidate, by name; fails for no candidate.
  case $1 in
    f32) echo '' ;;
    f32_relu) echo '--config.relu_grad_from_output=True' ;;
    f32_im2col) echo '--config.first_conv_im2col=True' ;;
    f32_nchw) echo '--config.xla_flags=--xla_gpu_force_conv_nchw=true' ;;
    b16) echo "$bf16" ;;
    b16_relu) echo "$bf16 --config.relu_grad_from_output=True" ;;
    # first_conv_im2col replaces pad_input_channels (the config refuses both).
    b16_im2col_relu) echo "$b16_base --config.first_conv_im2col=True --config.relu_grad_from_output=True" ;;
    *) return 1 ;;
  esac
}
candidates=${CANDIDATES:-f32 f32_relu f32_im2col f32_nchw b16 b16_relu b16_im2col_relu}
procs=${PROCS:-3}
for step in $steps; do  # A misspelt step fails before any step runs.
  case $step in
    bench|candidates|concurrent|final|final_bf16|report|eval_augmented|fast|fast_long|table) ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
for name in $candidates; do  # So does a misspelt candidate.
  candidate "$name" >/dev/null || { echo "unknown candidate $name" >&2; exit 2; }
done
case $procs in
  ''|*[!0-9]*|0|1) echo "PROCS must be a whole number above 1, not '$procs'" >&2; exit 2 ;;
esac
case ${MPS:-0} in
  0) ;;
  1) command -v nvidia-cuda-mps-control >/dev/null ||
       { echo "MPS=1, but nvidia-cuda-mps-control is not on PATH" >&2; exit 2; } ;;
  *) echo "MPS must be 0 or 1, not '$MPS'" >&2; exit 2 ;;
esac
case ${TABLE_SECONDS-1} in
  ''|*[!0-9]*|0) echo "TABLE_SECONDS must be a whole number of seconds above 0, not '$TABLE_SECONDS'" >&2; exit 2 ;;
esac
extra=${EXTRA:-}
prefix=  # A command run() puts before python (the table's time limit).
failed=0  # Set by a failed step: the script's exit status, once all ran.
mkdir -p "$out"
run() {  # run STEP ARGS...: one main.py command, timed, logged.
  local step=$1; shift
  local t0; t0=$(date +%s%N)
  $prefix ${PYTHON:-python3} main.py "$@" $extra > "$out/$step.log" 2>&1
  local rc=$?
  [ $rc = 0 ] || failed=1
  echo "$step rc=$rc wall $(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee -a "$out/summary.txt"
  tail -3 "$out/$step.log"
}
bench_json() {  # bench_json [--together] WORKDIR...: compile s and s/epoch
  # of the benchmarks in these workdirs; with --together, the total rate of
  # all but the first (runs at once) against the first's (the run alone).
  ${PYTHON:-python3} - "$@" <<'PY'
import json, os, sys
paths, together = sys.argv[1:], sys.argv[1:2] == ['--together']
paths = paths[together:]
rates = []
for path in paths:
  name = os.path.basename(path)
  try:
    with open(os.path.join(path, 'benchmark.json')) as f:
      row = json.load(f)['rows']['configured']
  except (OSError, ValueError, KeyError) as e:
    print(f'{name}: no result ({e.__class__.__name__})')
    continue
  rates.append(row['train_images_per_sec'])
  compile = row['compile_seconds']  # None: inside the first epoch (step loop).
  print(f"{name}: compile "
        + ('in 1st epoch' if compile is None else f'{compile:.2f} s') + ', '
        f"{row['epoch_seconds']:.3f} s/epoch (each "
        f"{min(row['epoch_seconds_all']):.3f}-{max(row['epoch_seconds_all']):.3f}), "
        f"{row['step_ms']:.2f} ms/step, "
        f"{row['train_images_per_sec']:.0f} train images/s")
if together and len(rates) == len(paths) > 1:
  print(f'{len(rates) - 1} at once: {sum(rates[1:]):.0f} train images/s in '
        f'all, {sum(rates[1:]) / rates[0]:.2f}x the run alone')
PY
}
short_bench='--config=configs/final.py --mode=benchmark --config.benchmark.compare_step_loop=False'
for step in $steps; do
  case $step in
    bench) run bench --config=configs/final.py --mode=benchmark --workdir="$out/bench" ;;
    candidates)
      mkdir -p "$out/candidates"
      for name in $candidates; do
        run "candidates/$name" $short_bench --config.benchmark.epochs=2 \
          --workdir="$out/candidates/$name" \
          --config.compilation_cache_dir="$out/candidates/$name/xla" $(candidate "$name")
      done
      bench_json $(for name in $candidates; do echo "$out/candidates/$name"; done) | tee "$out/candidates.txt" ;;
    concurrent)
      # Each process times 6 epochs after its first, so that they overlap
      # although their start-up differs by a second or so (epochs timed
      # while another process was not yet running, or no longer, show as a
      # spread in concurrent.txt); the compilation cache is the one the run
      # alone fills.
      mkdir -p "$out/concurrent"
      conc="$short_bench --config.benchmark.epochs=6"
      cache=--config.compilation_cache_dir="$out/concurrent/xla"
      export XLA_PYTHON_CLIENT_MEM_FRACTION=$(awk "BEGIN {print 0.8 / $procs}")
      run concurrent/alone $conc "$cache" --workdir="$out/concurrent/alone"
      mps=${MPS:-0}
      if [ "$mps" = 1 ] && ! nvidia-cuda-mps-control -d; then
        echo "concurrent: the MPS daemon did not start; running without it" | tee -a "$out/summary.txt"
        failed=1; mps=0
      fi
      t0=$(date +%s%N); pids=()
      for i in $(seq "$procs"); do
        ${PYTHON:-python3} main.py $conc "$cache" --workdir="$out/concurrent/p$i" \
          $extra > "$out/concurrent/p$i.log" 2>&1 & pids+=($!)
      done
      for i in $(seq "$procs"); do
        wait "${pids[i - 1]}"; rc=$?
        [ $rc = 0 ] || failed=1
        echo "concurrent/p$i rc=$rc" >> "$out/summary.txt"
      done
      echo "concurrent: $procs at once, wall $(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee -a "$out/summary.txt"
      [ "$mps" = 1 ] && echo quit | nvidia-cuda-mps-control
      unset XLA_PYTHON_CLIENT_MEM_FRACTION
      bench_json --together "$out/concurrent/alone" $(seq -f "$out/concurrent/p%g" "$procs") | tee "$out/concurrent.txt" ;;
    final) run final --config=configs/final.py --config.data_dir="$data" --workdir="$out/final" ;;
    final_bf16) run final_bf16 --config=configs/final.py --config.data_dir="$data" --workdir="$out/final_bf16" $bf16 ;;
    report) run report --config=configs/final.py --config.data_dir="$data" --workdir="$out/final" --mode=report ;;
    eval_augmented) run eval_augmented --config=configs/final.py --config.data_dir="$data" --workdir="$out/final" --mode=eval --config.augment_test=True ;;
    fast) run fast --config=configs/fast.py --config.data_dir="$data" --workdir="$out/fast" --mode=timed ;;
    fast_long) run fast_long --config=configs/fast_long.py --config.data_dir="$data" --workdir="$out/fast_long" --mode=timed ;;
    table)
      mkdir -p "$out/paper_table"
      for row in results/h200/*/table/*/; do cp -rn "$row" "$out/paper_table/"; done
      prefix=${TABLE_SECONDS:+timeout -s TERM -k 120 $TABLE_SECONDS}
      extra=${ROWS:+--config.train_rows=$ROWS} run table --config=configs/paper_table.py --config.data_dir="$data" --workdir="$out/paper_table" --mode=sweep --config.results_dir="$out/results"
      prefix= ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
exit $failed
