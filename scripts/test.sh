#!/usr/bin/env bash
# The one test command for the whole workspace.
#
# 1. Installs what the tests need when it is missing (Debian packages, via apt-get):
#      etcd-server        a real etcd for the registry tests
#      chromium           headless Chromium for the dashboard test (lb-proxy/tests/dashboard.rs)
#      protobuf-compiler  protoc, which etcd-client's build script needs
#      libprotobuf-dev    protobuf's well-known .proto files, which etcd-client's build also
#                         needs (only a Recommends of protobuf-compiler)
#    Outside CI a tool that cannot be installed is reported and the run goes on; with
#    CI=true it is an error, never a skip.
# 2. Runs every test of every crate (unit, integration, examples, benches in test mode,
#    doc tests).
#
# Usage: scripts/test.sh [extra cargo test args, e.g. -p lb-route]
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package that provides it
declare -A tools=(
  [etcd]=etcd-server
  [chromium]=chromium
  [protoc]=protobuf-compiler
)

# file -> Debian package that provides it
declare -A files=(
  [/usr/include/google/protobuf/descriptor.proto]=libprotobuf-dev
)

missing_pkgs=()
for cmd in "${!tools[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing_pkgs+=("${tools[$cmd]}")
done
for file in "${!files[@]}"; do
  [ -e "$file" ] || missing_pkgs+=("${files[$file]}")
done

if ((${#missing_pkgs[@]})); then
  echo "test.sh: installing ${missing_pkgs[*]}" >&2
  source scripts/lib/install.sh
  # A failure is reported below, tool by tool.
  install_packages "${missing_pkgs[@]}" || true
fi

still_missing=()
for cmd in "${!tools[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || still_missing+=("$cmd (package ${tools[$cmd]})")
done
for file in "${!files[@]}"; do
  [ -e "$file" ] || still_missing+=("$file (package ${files[$file]})")
done
if ((${#still_missing[@]})); then
  if [ "${CI:-}" = "true" ]; then
    echo "test.sh: ERROR: required tools are missing and could not be installed: ${still_missing[*]}" >&2
    exit 1
  fi
  echo "test.sh: WARNING: missing ${still_missing[*]}; tests that need them will say so" >&2
fi

# Tests that need an external service read this to decide between failing and skipping.
export LB_REQUIRE_SERVICES="${LB_REQUIRE_SERVICES:-${CI:-false}}"

set -x
cargo test --workspace --all-targets --locked "$@"
cargo test --workspace --doc --locked "$@"
