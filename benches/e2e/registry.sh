#!/usr/bin/env bash
# Registry-side figures for lbproxy (see benches/e2e/registry.rs): propagation latency from an
# etcd write and from a file edit to the first routed request, and scale (RSS and apply times
# with 10k frontends and 50k servers loaded from etcd). Needs etcd (etcd-server); installs
# it when missing. Loopback only; not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v etcd >/dev/null 2>&1; then
  echo "e2e-registry: installing etcd-server" >&2
  source scripts/lib/install.sh
  install_packages etcd-server
fi
cargo build --release --quiet -p lb-proxy --bin lbproxy -p lb-benches --bin e2e-backend --bin e2e-registry
exec target/release/e2e-registry
