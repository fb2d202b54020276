#!/usr/bin/env bash
# Reliability of the `chainrule` tool (issue 6), run by CTest:
#   cli_reliability_test.sh badargs CHAINRULE      every bad option: one clear line, non-zero exit
#   cli_reliability_test.sh nan CHAINRULE          a NaN loss stops training, the checkpoint before it stays
#   cli_reliability_test.sh anomaly CHAINRULE      --detect-anomaly names the primitive, shapes and module
#   cli_reliability_test.sh determinism CHAINRULE  same seed and threads: the same bytes, three times
set -euo pipefail
mode=$1
bin=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export OMP_WAIT_POLICY=passive

fail() { echo "FAIL: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
step_of() { head -c 4096 "$1" | grep -ao '"chainrule.step":"[0-9]*"' | grep -o '[0-9]*' || echo none; }

# Runs the tool expecting failure: exit status in 1..125 (not a signal, not 0), stderr at most two
# lines (CLI11 adds "Run with --help"), the first naming `want`, and no sign of a crash.
expect_error() {
  local want=$1
  shift
  local rc=0
  timeout 60 "$bin" "$@" >out.txt 2>err.txt || rc=$?
  local first
  first=$(head -n 1 err.txt)
  [ "$rc" -ge 1 ] && [ "$rc" -le 125 ] || fail "chainrule $*: exit status $rc (want a clean error); stderr: $(cat err.txt)"
  [ "$(wc -l <err.txt)" -le 2 ] || fail "chainrule $*: more than one line of error: $(cat err.txt)"
  grep -qiE 'terminate|abort|sanitizer|stack|segmentation|core dumped' err.txt && fail "chainrule $*: crashed: $(cat err.txt)"
  [[ "$first" == *"$want"* ]] || fail "chainrule $*: error does not name '$want': $first"
  return 0
}

case "$mode" in
badargs)
  "$bin" train --data spirals --epochs 1 --out run --quiet >/dev/null
  ckpt=run/model.safetensors
  printf 'not a safetensors file' >junk.safetensors
  n=0
  # want | arguments (one case per line; word-split on spaces)
  while IFS='|' read -r want args; do
    [ -z "$want" ] && continue
    # shellcheck disable=SC2086
    expect_error "$want" ${args//CKPT/$ckpt}
    n=$((n + 1))
  done <<'EOF'
unknown command 'tran'|tran --data spirals
not expected: --bogus|train --bogus
--lr|train --data spirals --lr abc --out o
--lr -1|train --data spirals --lr -1 --out o
--lr nan|train --data spirals --lr nan --out o
--lr 0|train --data spirals --lr 0 --out o
--wd -2|train --data spirals --wd -2 --out o
--momentum 1|train --data spirals --opt sgd --momentum 1 --out o
--warmup -7|train --data spirals --warmup -7 --out o
--label-smoothing 2|train --data spirals --label-smoothing 2 --out o
--label-smoothing -0.5|train --data spirals --label-smoothing -0.5 --out o
--clip -1|train --data spirals --clip -1 --out o
--shift -1|train --data spirals --shift -1 --out o
--batch 0|train --data spirals --batch 0 --out o
--epochs 0|train --data spirals --epochs 0 --out o
--epochs -2|train --data spirals --epochs -2 --out o
--epochs 10000000|train --data spirals --epochs 10000000 --out o
--checkpoint-every -5|train --data spirals --checkpoint-every -5 --out o
--stop-after -5|train --data spirals --stop-after -5 --out o
--checkpoint-segments -1|train --data spirals --checkpoint-segments -1 --out o
--seed|train --data spirals --seed -1 --out o
--threads|train --data spirals --threads 0 --out o
--threads|train --data spirals --threads 100000 --out o
--dtype|train --data spirals --dtype f16 --out o
unknown schedule 'foo'|train --data spirals --schedule foo --out o
unknown optimiser 'rmsprop'|train --data spirals --opt rmsprop --out o
unknown initialiser 'foo'|train --data spirals --init foo --out o
model spec 'mlp:2-x-2'|train --data spirals --model mlp:2-x-2 --out o
maps 3 inputs|train --data spirals --model mlp:3-4-2 --out o
unknown data set 'nosuch'|train --data nosuch --out o
/nonexistent.csv|train --data csv:/nonexistent.csv --out o
/nonexistent|train --data fashion-mnist:/nonexistent --out o
--out /proc/version|train --data spirals --out /proc/version
--out run: already holds a run|train --data spirals --out run
--resume needs --out|train --resume
no state.safetensors|train --resume --out /nonexistent
--resume and --force|train --resume --force --out run
--lr 0.5 differs|train --resume --out run --lr 0.5
--checkpoint is required|eval
/nonexistent|eval --checkpoint /nonexistent --data spirals
junk.safetensors|eval --checkpoint junk.safetensors --data spirals
--split must be|eval --checkpoint CKPT --data spirals --split foo
maps 2 inputs|eval --checkpoint CKPT --data regression
contradicts|eval --checkpoint CKPT --data spirals --model mlp:2-3-2
--threads|eval --checkpoint CKPT --data spirals --threads -1
--limit -3|predict --checkpoint CKPT --data spirals --limit -3
/nonexistent/dir/x.csv|predict --checkpoint CKPT --data spirals --out /nonexistent/dir/x.csv
--out is required|grad --checkpoint CKPT --data spirals
--batch 0|grad --checkpoint CKPT --data spirals --out g.safetensors --batch 0
--batch 100000|grad --checkpoint CKPT --data spirals --out g.safetensors --batch 100000
--dtype|grad --checkpoint CKPT --data spirals --out g.safetensors --dtype f8
/nonexistent/x/g.safetensors|grad --checkpoint CKPT --data spirals --out /nonexistent/x/g.safetensors
no differentiable primitive named 'nosuch'|check --op nosuch
not expected: --bogus|check --bogus
unknown experiment 'nosuch'|experiment nosuch
--seed|experiment init --quick --seed -4
--seeds|experiment init --quick --seeds 0
/proc/x|experiment init --quick --out /proc/x
EOF
  [ ! -e o ] || fail "a refused train run created its --out directory's files"
  echo "bad arguments: $n cases, each one clear line and a non-zero exit"
  ;;
nan)
  # SGD at a learning rate of 10 (warmed up over 40 steps) diverges at step 5; checkpoints every
  # 2 steps. Training must stop with a message, exit 1 and leave the step-4 checkpoint, which
  # must be bit-identical to a run stopped at step 4.
  rc=0
  "$bin" train --data spirals --opt sgd --lr 10 --warmup 40 --epochs 3 --checkpoint-every 2 --out diverged --quiet 2>err.txt || rc=$?
  cat err.txt
  [ "$rc" = 1 ] || fail "a NaN loss gave exit status $rc"
  grep -q "step 5 (epoch 1, batch 5): the loss became NaN" err.txt || fail "no clear message: $(cat err.txt)"
  grep -q "the last good checkpoint, step 4, is in diverged" err.txt || fail "message does not name the last checkpoint"
  [ "$(step_of diverged/model.safetensors)" = 4 ] && [ "$(step_of diverged/state.safetensors)" = 4 ] ||
    fail "the checkpoint is not the one of step 4"
  "$bin" eval --checkpoint diverged/model.safetensors --data spirals --json >/dev/null || fail "the last good checkpoint does not load"
  "$bin" train --data spirals --opt sgd --lr 10 --warmup 40 --epochs 3 --checkpoint-every 2 --out good --stop-after 4 --quiet >/dev/null
  [ "$(sha diverged/model.safetensors)" = "$(sha good/model.safetensors)" ] || fail "the kept checkpoint is not the pre-NaN one"
  echo "NaN loss: stopped with exit 1, step-4 checkpoint intact and loadable"
  ;;
anomaly)
  rc=0
  "$bin" train --data spirals --opt sgd --lr 1e30 --epochs 1 --out a --quiet --detect-anomaly 2>err.txt || rc=$?
  cat err.txt
  [ "$rc" = 1 ] || fail "--detect-anomaly: exit status $rc"
  grep -q "anomaly: 'linear' produced inf" err.txt || fail "no primitive named"
  grep -q "float32 \[128, 64\], float32 \[64, 64\]" err.txt || fail "no input shapes"
  grep -q "in module 2.l1" err.txt || fail "no module path"
  "$bin" train --data spirals --epochs 1 --out ok --quiet --detect-anomaly >/dev/null || fail "--detect-anomaly on a healthy run failed"
  "$bin" grad --checkpoint ok/model.safetensors --data spirals --out g.safetensors --detect-anomaly >/dev/null ||
    fail "grad --detect-anomaly on a healthy model failed"
  echo "anomaly mode: primitive, shapes and module named"
  ;;
determinism)
  # Three runs per thread count with the same seed must give identical model files.
  for threads in 1 2; do
    for i in 1 2 3; do
      "$bin" train --data spirals --epochs 3 --seed 7 --threads "$threads" --out "t$threads-$i" --quiet >/dev/null
    done
    a=$(sha "t$threads-1/model.safetensors")
    [ "$(sha "t$threads-2/model.safetensors")" = "$a" ] && [ "$(sha "t$threads-3/model.safetensors")" = "$a" ] ||
      fail "three runs on $threads thread(s) gave different weights"
    echo "threads $threads: 3 runs, model sha256 $a"
  done
  ;;
*) fail "unknown mode '$mode'" ;;
esac
