#!/usr/bin/env bash
# Valgrind memcheck on a short training run, its resume and an evaluation: the trainer, the
# checkpoint writer and the safetensors reader with oneDNN and OpenMP threads running. Fails
# on any invalid access, use of uninitialised memory or definite leak.
# Valgrind 3.19 cannot decode AVX-512, so oneDNN is capped at AVX2 (builds never use
# -march=native, so chainrule's own code is baseline x86-64 with run-time dispatch).
# Usage: tests/valgrind/run.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cli=$1/chainrule
out=$(mktemp -d /tmp/chainrule-valgrind.XXXXXX)
trap 'rm -rf "$out"' EXIT
export ONEDNN_MAX_CPU_ISA=AVX2 OMP_WAIT_POLICY=passive
memcheck=(valgrind --tool=memcheck --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite
          --suppressions="$here/chainrule.supp" --track-origins=no --quiet)
echo "== valgrind: train 20 steps on spirals, checkpoint every 10, 2 threads"
"${memcheck[@]}" "$cli" train --data spirals --stop-after 20 --checkpoint-every 10 --threads 2 --out "$out/run" --quiet
echo "== valgrind: resume to step 30"
"${memcheck[@]}" "$cli" train --out "$out/run" --resume --stop-after 30 --threads 2 --quiet
echo "== valgrind: eval the checkpoint"
"${memcheck[@]}" "$cli" eval --checkpoint "$out/run/model.safetensors" --data spirals --threads 2
echo "valgrind: no errors"
