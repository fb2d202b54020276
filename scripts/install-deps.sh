#!/usr/bin/env bash
# Installs every Debian 12 package that chainrule's build, tests and tools need, on a minimal
# Debian 12 (debootstrap minbase) as well as on a full one. Idempotent; needs root or sudo.
# Set CHAINRULE_WITH_TORCH=1 to add PyTorch (benchmarks and cross-checks only).
set -euo pipefail

die() { echo "install-deps.sh: $*" >&2; exit 1; }

# Debian 12 only: the package names below are bookworm's. (CHAINRULE_OS_RELEASE: for its test.)
os_release=${CHAINRULE_OS_RELEASE:-/etc/os-release}
os_id=$( (. "$os_release" && echo "${ID:-unknown} ${VERSION_ID:-unknown}") 2>/dev/null) || os_id="unknown unknown"
[ "$os_id" = "debian 12" ] ||
  die "needs Debian 12 (bookworm), found '${os_id}' in ${os_release}; elsewhere install the packages listed in this script by hand."

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libdnnl-dev ocl-icd-opencl-dev  # Debian's oneDNN CMake package calls find_package(OpenCL)
  libopenblas-dev zlib1g-dev libsleef-dev
  libcli11-dev nlohmann-json3-dev libfmt-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev  # gmock: the tests' HasSubstr matchers
  dataset-fashion-mnist
  gnuplot-nox fonts-dejavu-core  # the experiments' plots (gnuplot's png terminal needs a font)
  python3                        # tools/ and bench/ scripts
  pybind11-dev python3-dev python3-numpy python3-pytest  # the Python package (python/) and its tests
  clang-14 libclang-rt-14-dev valgrind  # fuzzing (libFuzzer) and memcheck in scripts/test.sh
  libopenmpi-dev openmpi-bin openssh-client  # mpirun needs an rsh agent even on one host
)
if [ "${CHAINRULE_WITH_TORCH:-0}" = 1 ]; then packages+=(python3-torch libtorch-dev); fi
packages+=(${CHAINRULE_EXTRA_PACKAGES:-})  # more packages, space-separated (also how its test forces an install)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -gt 0 ] || exit 0

if [ "$(id -u)" = 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
elif command -v sudo >/dev/null; then
  SUDO=(sudo)
else
  die "needs root or sudo to install ${#missing[@]} missing Debian packages (${missing[*]}); run it as root."
fi
echo "install-deps.sh: installing ${missing[*]}"
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
