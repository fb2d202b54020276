#!/usr/bin/env bash
# The main job: installs dependencies, builds, and runs chainrule's default command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$(nproc)"
./build/chainrule check "$@"
