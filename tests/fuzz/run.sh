#!/usr/bin/env bash
# Runs each libFuzzer target for SECONDS on a copy of its seed corpus (the repository is not
# modified) and prints libFuzzer's final statistics. Exits non-zero if any target finds a
# crash, a leak, a timeout or an out-of-memory input; the input is then kept under
# $FUZZ_ARTIFACTS (default: a temporary directory that is printed).
# Usage: tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]   (targets: safetensors idx idx_gzip csv)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$1
seconds=$2
shift 2
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors idx idx_gzip csv)
work=$(mktemp -d /tmp/chainrule-fuzz.XXXXXX)
artifacts=${FUZZ_ARTIFACTS:-$work/artifacts}
mkdir -p "$artifacts"
status=0
for t in "${targets[@]}"; do
  seeds=${t%_gzip}  # fuzz_idx_gzip starts from the IDX seeds
  mkdir -p "$work/$t"
  cp "$here/corpus/$seeds/"* "$work/$t/"
  echo "== fuzz_$t: ${seconds}s on $(ls "$work/$t" | wc -l) seeds"
  if ! "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$artifacts/fuzz_$t-" "$work/$t" >"$work/$t.log" 2>&1; then
    status=1
    tail -n 60 "$work/$t.log"
    echo "fuzz_$t FAILED; the input is under $artifacts"
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "$work/$t.log" | sed "s/^/fuzz_$t /"
  echo "fuzz_$t corpus grew to $(ls "$work/$t" | wc -l) inputs"
done
if [ $status = 0 ]; then rm -rf "$work"; fi
exit $status
