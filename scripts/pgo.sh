#!/usr/bin/env bash
# A profile-guided (PGO) build of lbproxy: the fastest binary this repository makes.
#
# 1. Builds lbproxy instrumented (-Cprofile-generate, release profile: fat LTO) into
#    target/pgo-gen.
# 2. Trains it for about 20 seconds on loopback: the benchmark backend (e2e-backend, a plain
#    release build) behind a mixed file configuration — Host + PathPrefix, placeholder Path
#    and PathRegexp routes, a round-robin backend of four servers, a frontend with a rate
#    limit and a headers middleware, a 64 KiB backend — driven by wrk with keep-alive
#    clients, a new connection per request, and large bodies. Only plain HTTP/1.1: TLS and
#    HTTP/2 code is treated as cold (still correct, not tuned).
# 3. Merges the profile (llvm-profdata from rustup's llvm-tools component, added when
#    missing) and rebuilds with -Cprofile-use into target/pgo-use.
# 4. Copies the binary to target/pgo/lbproxy.
#
# Figures (2-core VM, `lbproxy --workers 1`, keep-alive small responses): user-space
# instructions per proxied request 32.2k (release) -> 24.7k (PGO), instruction-cache misses
# per request 1670 -> 760 (callgrind's cache simulation). See the README's benchmark
# section. Takes two full release builds (about 17 minutes on 2 cores).
#
# Installs wrk (Debian package) when missing. Loopback only. Not part of the test command.
#
# Usage: scripts/pgo.sh            then run target/pgo/lbproxy like target/release/lbproxy;
#        LBPROXY=target/pgo/lbproxy benches/e2e/run.sh   benchmarks it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if ! command -v wrk >/dev/null 2>&1; then
  echo "pgo: installing wrk" >&2
  source scripts/lib/install.sh
  install_packages wrk
fi

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | awk '/^host:/ {print $2}')
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  echo "pgo: adding rustup component llvm-tools (llvm-profdata)" >&2
  rustup component add llvm-tools >&2
fi
[ -x "$profdata" ] || { echo "pgo: ERROR: $profdata not found" >&2; exit 1; }

source scripts/lib/background.sh

echo "pgo: building the backend and the instrumented lbproxy" >&2
cargo build --release --quiet -p lb-benches --bin e2e-backend
# Fixed flags (the profiles go where LLVM_PROFILE_FILE says at run time), so a second run
# rebuilds only what changed.
RUSTFLAGS="-Cprofile-generate=$root/target/pgo-gen/profiles" \
  cargo build --release --quiet -p lb-proxy --bin lbproxy --target-dir target/pgo-gen

LB_PORT=18481 API_PORT=18482 SMALL_PORT=19400 BIG_PORT=19410
cat >"$work/train.toml" <<EOF
[backends.small]
Settings.KeepAlive = { Period = "30s", MaxIdleConnsPerHost = 256 }
Settings.Balancer = { Type = "roundrobin" }
servers.s0 = { URL = "http://127.0.0.1:$SMALL_PORT" }
servers.s1 = { URL = "http://127.0.0.1:$((SMALL_PORT + 1))" }
servers.s2 = { URL = "http://127.0.0.1:$((SMALL_PORT + 2))" }
servers.s3 = { URL = "http://127.0.0.1:$((SMALL_PORT + 3))" }

[backends.big]
Settings.KeepAlive = { Period = "30s", MaxIdleConnsPerHost = 256 }
servers.b0 = { URL = "http://127.0.0.1:$BIG_PORT" }

[frontends.api]
BackendId = "small"
Route = 'Host("api.train.local") && PathPrefix("/api")'

[frontends.users]
BackendId = "small"
Route = 'Host("api.train.local") && Path("/users/<id>")'

[frontends.assets]
BackendId = "big"
Route = 'Host("assets.train.local") && PathRegexp("^/static/[a-z]+\\\\.js\$")'

[frontends.limited]
BackendId = "small"
Route = 'Host("limited.train.local") && PathPrefix("/")'
middlewares.rl = { Type = "ratelimit", Priority = 1, Middleware = { PeriodSeconds = 1, Requests = 1000000, Burst = 1000000, Variable = "client.ip" } }
middlewares.hd = { Type = "headers", Priority = 2, Middleware = { SetRequest = { "X-Train" = "1" } } }
EOF

"$root/target/release/e2e-backend" --port "$SMALL_PORT" --count 4 --size 12 2>/dev/null &
pids+=($!)
"$root/target/release/e2e-backend" --port "$BIG_PORT" --count 1 --size 65536 2>/dev/null &
pids+=($!)
LLVM_PROFILE_FILE="$work/profiles/lbproxy-%p-%m.profraw" target/pgo-gen/release/lbproxy \
  --registry "file://$work/train.toml" --listen "127.0.0.1:$LB_PORT" --api "127.0.0.1:$API_PORT" \
  --log-level warn >"$work/lbproxy.log" 2>&1 &
lb=$!
pids+=("$lb")
for _ in $(seq 1 200); do
  curl -s -o /dev/null -H 'Host: api.train.local' "http://127.0.0.1:$LB_PORT/api/x" && break
  sleep 0.05
done

echo "pgo: training" >&2
url="http://127.0.0.1:$LB_PORT"
wrk -t1 -c50 -d6s -H 'Host: api.train.local' "$url/api/items" >/dev/null
wrk -t1 -c20 -d3s -H 'Host: api.train.local' "$url/users/42" >/dev/null
wrk -t1 -c20 -d3s -H 'Host: limited.train.local' "$url/anything" >/dev/null
wrk -t1 -c50 -d4s -H 'Host: api.train.local' -H 'Connection: close' "$url/api/items" >/dev/null
wrk -t1 -c10 -d3s -H 'Host: assets.train.local' "$url/static/app.js" >/dev/null
wrk -t1 -c10 -d1s -H 'Host: nowhere.train.local' "$url/" >/dev/null

# A graceful stop writes the profile.
kill -TERM "$lb"
wait "$lb" 2>/dev/null || true
ls "$work"/profiles/*.profraw >/dev/null 2>&1 || {
  echo "pgo: ERROR: the instrumented lbproxy wrote no profile" >&2
  cat "$work/lbproxy.log" >&2
  exit 1
}
mkdir -p target/pgo
"$profdata" merge -o target/pgo/lbproxy.profdata "$work"/profiles/*.profraw

echo "pgo: building lbproxy with the profile" >&2
# Cargo does not see a new profile behind the same flags: start from scratch.
rm -rf target/pgo-use
RUSTFLAGS="-Cprofile-use=$root/target/pgo/lbproxy.profdata -Cllvm-args=-pgo-warn-missing-function=false" \
  cargo build --release --quiet -p lb-proxy --bin lbproxy --target-dir target/pgo-use
cp target/pgo-use/release/lbproxy target/pgo/lbproxy
echo "pgo: built target/pgo/lbproxy" >&2
