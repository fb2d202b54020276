#!/usr/bin/env bash
# Samples/s of `chainrule train` with one process (1 and 2 threads) and two MPI processes, for the
# default recipe and a 784-1024-1024-1024-10 MLP at batch 256 (docs/distributed.md). Needs a
# build with MPI in build/. Prints one JSON line per run; run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive
cli=build/chainrule
mpi=(mpirun --oversubscribe --mca btl self,vader -np)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run() { rm -rf "$out/run"; echo "$1: $("${@:2}" --out "$out/run" --json --quiet | tail -1)"; }
for rep in 1 2; do
  run "default P=1 threads=1" $cli train --stop-after 150
  run "default P=1 threads=2" $cli train --stop-after 150 --threads 2
  run "default P=2" "${mpi[@]}" 2 $cli train --stop-after 150 --distributed
  run "mlp1024 P=1 threads=1" $cli train --model mlp:784-1024-1024-1024-10 --batch 256 --stop-after 30
  run "mlp1024 P=1 threads=2" $cli train --model mlp:784-1024-1024-1024-10 --batch 256 --stop-after 30 --threads 2
  run "mlp1024 P=2" "${mpi[@]}" 2 $cli train --model mlp:784-1024-1024-1024-10 --batch 256 --stop-after 30 --distributed
done
