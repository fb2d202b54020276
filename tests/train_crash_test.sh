#!/usr/bin/env bash
# Crash tests of `chainrule train` (issue 6, "no data lost"), run by CTest:
#   train_crash_test.sh kill CHAINRULE [TRIALS]   SIGKILL at random moments, some inside a save
#   train_crash_test.sh fault CHAINRULE           abort after each stage of each file's save
# After every crash the last checkpoint must load (`chainrule eval`) and `--resume` must end with
# a model.safetensors identical, byte for byte, to the one of an uninterrupted run.
set -euo pipefail
mode=$1
bin=$2
trials=${3:-20}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 8 epochs of 16 steps; a checkpoint every 3 steps: 50 saves per run, most of them mid-epoch.
args=(--data spirals --epochs 8 --checkpoint-every 3 --seed 5 --threads 1 --quiet)
steps_per_epoch=16
export OMP_WAIT_POLICY=passive

fail() { echo "FAIL: $*" >&2; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
sha() { sha256sum "$1" | cut -d' ' -f1; }
# chainrule.step from a safetensors header (the JSON header comes first, in plain text).
step_of() { head -c 4096 "$1" | grep -ao '"chainrule.step":"[0-9]*"' | grep -o '[0-9]*' || echo none; }
temporaries() { find "$1" -name '.*.tmp.*' | wc -l; }

t0=$(now_ms)
"$bin" train "${args[@]}" --out "$work/ref" || fail "uninterrupted run failed"
run_ms=$(($(now_ms) - t0))
want=$(sha "$work/ref/model.safetensors")
echo "uninterrupted run: ${run_ms} ms, model sha256 $want"

# The last checkpoint loads, --resume finishes, and the weights equal the uninterrupted run's.
check_and_resume() {
  local dir=$1 what=$2
  "$bin" eval --checkpoint "$dir/model.safetensors" --data spirals --json >/dev/null ||
    fail "$what: the last checkpoint does not load"
  "$bin" train --out "$dir" --resume --threads 1 --quiet 2>"$dir.resume.err" ||
    fail "$what: --resume failed: $(cat "$dir.resume.err")"
  [ "$(sha "$dir/model.safetensors")" = "$want" ] || fail "$what: resumed weights differ from the uninterrupted run's"
  [ "$(temporaries "$dir")" = 0 ] || fail "$what: temporary files left after the resumed run"
}

if [ "$mode" = kill ]; then
  RANDOM=${CHAINRULE_KILL_SEED:-2026}
  kills=0 in_save=0 between_files=0 mid_epoch=0 attempts=0
  while [ "$kills" -lt "$trials" ]; do
    attempts=$((attempts + 1))
    [ "$attempts" -le $((trials * 3)) ] || fail "only $kills of $attempts runs were killed before they finished"
    dir="$work/trial$attempts"
    # Every other trial slows each save step by 5 ms so that more kills land inside a save.
    delay=$((attempts % 2 ? 0 : 5))
    CHAINRULE_FAULT_DELAY_MS=$delay "$bin" train "${args[@]}" --out "$dir" &
    pid=$!
    # Kill after the first checkpoint, at a random moment within the run's expected length.
    while [ ! -e "$dir/model.safetensors" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.005; done
    span=$((run_ms * (delay ? 2 : 1)))
    ms=$(((RANDOM * 32768 + RANDOM) % (span > 1 ? span : 1)))
    sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"
    kill -KILL "$pid" 2>/dev/null || true
    rc=0
    { wait "$pid"; } 2>/dev/null || rc=$?
    if [ "$rc" = 0 ]; then
      echo "run $attempts finished before its kill at +${ms} ms; not counted"
      continue
    fi
    [ "$rc" = 137 ] || fail "run $attempts ended with status $rc, not by SIGKILL"
    kills=$((kills + 1))
    s=$(step_of "$dir/state.safetensors") m=$(step_of "$dir/model.safetensors") tmp=$(temporaries "$dir")
    where="at step $s"
    [ "$tmp" -gt 0 ] && in_save=$((in_save + 1)) && where="$where, inside a save (temporary file left)"
    [ "$s" != "$m" ] && between_files=$((between_files + 1)) && where="$where, between the state ($s) and model ($m) files"
    [ $((s % steps_per_epoch)) != 0 ] && mid_epoch=$((mid_epoch + 1)) && where="$where, mid-epoch"
    echo "kill $kills: +${ms} ms after the first checkpoint (save delay ${delay} ms), $where"
    check_and_resume "$dir" "kill $kills"
  done
  echo "kill-and-resume: $kills kills, all resumed bit-exact ($in_save inside a save, $between_files between the two files, $mid_epoch mid-epoch)"
  [ "$in_save" -gt 0 ] || fail "no kill landed inside a save; the test did not test that case"
  [ "$mid_epoch" -gt 0 ] || fail "no kill landed mid-epoch"
elif [ "$mode" = fault ]; then
  # A checkpoint at step 6, then a resumed run that aborts in its next save (step 9; the
  # metrics file is first written at the end of epoch 1, step 16).
  cases=0
  for file in state.safetensors model.safetensors metrics.jsonl; do
    for stage in after_write after_fsync after_rename; do
      dir="$work/$stage-$file"
      "$bin" train "${args[@]}" --out "$dir" --stop-after 6 >/dev/null
      rc=0
      { CHAINRULE_FAULT_INJECT="$stage:$file" "$bin" train --out "$dir" --resume --threads 1 --quiet; } 2>/dev/null || rc=$?
      [ "$rc" = 134 ] || fail "$stage:$file: expected an abort (status 134), got $rc"
      s=$(step_of "$dir/state.safetensors") m=$(step_of "$dir/model.safetensors")
      case "$file:$stage" in
        state.safetensors:after_rename) want_steps="9 6" ;;  # the state is committed, the model not yet
        state.safetensors:*) want_steps="6 6" ;;
        model.safetensors:after_rename) want_steps="9 9" ;;
        model.safetensors:*) want_steps="9 6" ;;
        metrics.jsonl:*) want_steps="16 16" ;;
      esac
      [ "$s $m" = "$want_steps" ] || fail "$stage:$file: state and model at steps $s $m, expected $want_steps"
      echo "abort $stage of $file: state at step $s, model at step $m"
      check_and_resume "$dir" "$stage:$file"
      cases=$((cases + 1))
    done
  done
  echo "fault injection: $cases aborted saves (3 stages x 3 files), all resumed bit-exact"
else
  fail "unknown mode '$mode' (kill, fault)"
fi
