#!/usr/bin/env bash
# The test command: installs dependencies, builds (Release and ASan+UBSan), runs every test,
# then the reliability checks (docs/reliability.md): the sanitizer canaries, ThreadSanitizer on
# the threads test, valgrind memcheck on a short training run, and each fuzzer briefly.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=$(nproc)

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

# The same tests under AddressSanitizer and UndefinedBehaviorSanitizer, except the experiments'
# quick runs (small trainings whose code paths the other tests already cover). The sanitizer builds
# compile at -O1 with line tables only (-g1): sanitizers' recommended level, and half the compile
# time of -O2 -g, which kept CI near its limit; reports still name functions, files and lines.
san_flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG")
cmake -S . -B build-asan -G Ninja "${san_flags[@]}" -DCHAINRULE_SANITIZE=ON -DCHAINRULE_BUILD_BENCH=OFF
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -E '^(find_package|Experiment|Mpi\.)'
# Open MPI itself leaks at exit (MPI_Init's allocations), in every process mpirun starts: the MPI
# tests run with leak checking off, everything else of ASan and UBSan on.
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -R '^Mpi\.'

# ThreadSanitizer on independent graphs differentiated on separate threads (tests/test_threads.cpp)
# and its canary. OMP_NUM_THREADS=1: Debian's oneDNN uses libgomp, which TSan misreports.
cmake -S . -B build-tsan -G Ninja "${san_flags[@]}" -DCHAINRULE_TSAN=ON -DCHAINRULE_BUILD_BENCH=OFF
cmake --build build-tsan -j "$jobs" --target chainrule_thread_tests sanitizer_canary
OMP_NUM_THREADS=1 ctest --test-dir build-tsan --output-on-failure -R '^tsan\.'

# Valgrind memcheck on a short training run, its resume and an evaluation (Release build).
bash tests/valgrind/run.sh build

# libFuzzer targets of the file readers (clang, ASan + UBSan), 20 s each on a copy of the seeds.
cmake -S . -B build-fuzz -G Ninja "${san_flags[@]}" -DCMAKE_CXX_COMPILER=clang++-14 -DCHAINRULE_FUZZ=ON
cmake --build build-fuzz -j "$jobs"
bash tests/fuzz/run.sh build-fuzz 20
