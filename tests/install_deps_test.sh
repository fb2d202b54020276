#!/usr/bin/env bash
# scripts/install-deps.sh refuses, in one sentence, what it cannot do: another OS than Debian 12,
# and a needed install without root or sudo. Usage: install_deps_test.sh SOURCE_DIR
set -uo pipefail
script=$(cd "$1" && pwd)/scripts/install-deps.sh
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

printf 'ID=ubuntu\nVERSION_ID="22.04"\n' >"$tmp/ubuntu"
out=$(CHAINRULE_OS_RELEASE="$tmp/ubuntu" bash "$script" 2>&1); rc=$?
[ $rc = 1 ] || fail "Ubuntu 22.04: exit $rc, expected 1"
[ "$(printf '%s\n' "$out" | wc -l)" = 1 ] || fail "Ubuntu 22.04: expected one line, got: $out"
grep -q "needs Debian 12 (bookworm), found 'ubuntu 22.04'" <<<"$out" || fail "Ubuntu 22.04: message was: $out"

out=$(CHAINRULE_OS_RELEASE="$tmp/missing" bash "$script" 2>&1); rc=$?
[ $rc = 1 ] && grep -q "found 'unknown unknown'" <<<"$out" || fail "no os-release: exit $rc, message: $out"

# Not root and no sudo, with a package to install: one sentence naming what is missing. PATH holds
# only the commands the script needs, so there is no sudo, and an `id` that answers uid 1000 (no
# privileges are dropped: a clean chroot may not let another user read its libraries).
mkdir "$tmp/bin"
for c in bash dpkg-query grep cat; do ln -s "$(command -v $c)" "$tmp/bin/$c"; done
printf '#!%s\necho 1000\n' "$(command -v bash)" >"$tmp/bin/id"; chmod +x "$tmp/bin/id"
out=$(cd / && env -i PATH="$tmp/bin" CHAINRULE_EXTRA_PACKAGES=chainrule-no-such-package \
      "$tmp/bin/bash" "$script" 2>&1); rc=$?
[ $rc = 1 ] || fail "no root, no sudo: exit $rc, output: $out"
[ "$(printf '%s\n' "$out" | wc -l)" = 1 ] || fail "no root, no sudo: expected one line, got: $out"
grep -q "needs root or sudo to install 1 missing Debian packages (chainrule-no-such-package)" <<<"$out" ||
  fail "no root, no sudo: message was: $out"
echo "install-deps refusals: ok"
