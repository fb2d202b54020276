#!/usr/bin/env bash
# The main job: installs dependencies, builds, and trains the default network on Fashion-MNIST
# (Debian's dataset-fashion-mnist), printing accuracy per epoch and the test accuracy at the end.
# Extra arguments go to `chainrule train` (see `build/chainrule train --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$(nproc)"
./build/chainrule train "$@"
