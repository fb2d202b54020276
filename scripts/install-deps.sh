#!/usr/bin/env bash
# Installs every Debian 12 package that chainrule's build, tests and tools need.
# Idempotent; needs root. Set CHAINRULE_WITH_TORCH=1 to add PyTorch (benchmarks and cross-checks only).
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libdnnl-dev libopenblas-dev zlib1g-dev
  libcli11-dev nlohmann-json3-dev libfmt-dev
  googletest libgtest-dev libbenchmark-dev
  dataset-fashion-mnist gnuplot-nox
  clang-14 libclang-rt-14-dev valgrind  # fuzzing (libFuzzer) and memcheck in scripts/test.sh
  libopenmpi-dev openmpi-bin
)
if [ "${CHAINRULE_WITH_TORCH:-0}" = 1 ]; then packages+=(python3-torch libtorch-dev); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
