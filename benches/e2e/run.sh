#!/usr/bin/env bash
# End-to-end comparison: lbproxy vs nginx vs HAProxy on the same core, same routing.
#
# Layout (2-core machine): each proxy runs ONE worker pinned to CPU 1 (lbproxy --workers 1,
# nginx worker_processes 1 with master_process off, haproxy nbthread 1); wrk (-t1) and the
# backend (one thread) share CPU 0. Runs alternate (lbproxy nginx haproxy, lbproxy nginx
# haproxy, ...) so drift on this noisy machine hits all three alike; the table gives medians
# and the ratios lbproxy/nginx and lbproxy/haproxy. CPU per request is the proxy process's
# utime+stime (/proc/PID/stat) over the measured run divided by the requests wrk completed.
#
# Variants (all by default; name some to run only those):
#   keepalive  keep-alive clients, 12-byte responses, Host + PathPrefix route, 1 server
#   close      a new client connection per request (Connection: close)
#   4k         4 KiB responses
#   1m         1 MiB responses
#   routes10k  10,000 frontends configured (Host per frontend); the request hits one
#   servers50  50 servers in the backend, round robin
#
# Each proxy forwards with upstream keep-alive and sets X-Forwarded-For/-Proto/-Host;
# lbproxy runs with its metrics on (they always are) and access logs off (--log-level warn),
# nginx with access_log off, haproxy without logging.
#
# Installs wrk, nginx and haproxy (Debian packages) when missing. Loopback only. Not part of
# the test command: timing is never a test.
#
# Usage: benches/e2e/run.sh [variant...]
# Env:   DURATION (seconds per run, default 3), WARMUP (default 1), REPS (default 3),
#        CONNS (default 50), OUT (results dir, default target/e2e),
#        LBPROXY (the lbproxy binary, default target/release/lbproxy; scripts/pgo.sh makes
#        target/pgo/lbproxy)
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
REPS=${REPS:-3}
CONNS=${CONNS:-50}
OUT=${OUT:-target/e2e}
VARIANTS=("$@")
if ((${#VARIANTS[@]} == 0)); then
  VARIANTS=(keepalive close 4k 1m routes10k servers50)
fi

missing=()
for tool in wrk nginx haproxy taskset; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "e2e: installing ${missing[*]}" >&2
  source scripts/lib/install.sh
  install_packages "${missing[@]}"
fi
export PATH="$PATH:/usr/sbin"

cargo build --release --quiet -p lb-proxy --bin lbproxy -p lb-benches --bin e2e-backend
BIN=target/release
LBPROXY=${LBPROXY:-$BIN/lbproxy}

LB_PORT=18081 NGINX_PORT=18082 HAPROXY_PORT=18083 API_PORT=18182 BACKEND_PORT=19000
HOST=bench.local
ROUTE_PATH=/api/items
mkdir -p "$OUT"
source scripts/lib/background.sh

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wait_http() { # port host
  for _ in $(seq 1 200); do
    if curl -s -o /dev/null -H "Host: $2" "http://127.0.0.1:$1$ROUTE_PATH"; then return 0; fi
    sleep 0.05
  done
  echo "e2e: nothing answers on port $1" >&2
  return 1
}

# Writes lbproxy.toml, nginx.conf and haproxy.cfg for a variant into $work.
configure() { # variant
  local variant=$1 servers=1 routes=1 host=$HOST
  [ "$variant" = servers50 ] && servers=50
  [ "$variant" = routes10k ] && routes=10000
  # lbproxy
  {
    echo '[backends.b1]'
    echo 'Settings.KeepAlive = { Period = "30s", MaxIdleConnsPerHost = 256 }'
    echo 'Settings.Balancer = { Type = "roundrobin" }'
    for ((i = 0; i < servers; i++)); do
      echo "servers.s$i = { URL = \"http://127.0.0.1:$((BACKEND_PORT + i))\" }"
    done
    for ((r = 0; r < routes; r++)); do
      local h=$HOST
      ((routes > 1)) && h="h$r.$HOST"
      echo "[frontends.f$r]"
      echo 'BackendId = "b1"'
      echo "Route = 'Host(\"$h\") && PathPrefix(\"/api\")'"
    done
  } >"$work/lbproxy.toml"
  # nginx: one worker, no master, upstream keep-alive
  {
    echo "worker_processes 1; master_process off; daemon off; pid $work/nginx.pid;"
    echo "error_log $work/nginx.error.log warn;"
    echo 'events { worker_connections 4096; }'
    echo 'http {'
    echo "  access_log off; client_body_temp_path $work; proxy_temp_path $work;"
    echo '  server_names_hash_max_size 32768; server_names_hash_bucket_size 128;'
    echo '  upstream b1 { keepalive 256;'
    for ((i = 0; i < servers; i++)); do echo "    server 127.0.0.1:$((BACKEND_PORT + i));"; done
    echo '  }'
    for ((r = 0; r < routes; r++)); do
      local h=$HOST
      ((routes > 1)) && h="h$r.$HOST"
      echo "  server { listen 127.0.0.1:$NGINX_PORT; server_name $h;"
      echo '    location /api { proxy_pass http://b1; proxy_http_version 1.1;'
      echo '      proxy_set_header Connection ""; proxy_set_header Host $host;'
      echo '      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;'
      echo '      proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host;'
      echo '      proxy_buffering on; }'
      echo '    location / { return 404; } }'
    done
    echo '}'
  } >"$work/nginx.conf"
  # haproxy: one thread; the Host route through a map (what an HAProxy user does at 10k hosts)
  : >"$work/hosts.map"
  for ((r = 0; r < routes; r++)); do
    local h=$HOST
    ((routes > 1)) && h="h$r.$HOST"
    echo "$h b1" >>"$work/hosts.map"
  done
  {
    echo 'global'
    echo '  nbthread 1'
    echo '  maxconn 4096'
    echo 'defaults'
    echo '  mode http'
    echo '  timeout connect 2s'
    echo '  timeout client 30s'
    echo '  timeout server 30s'
    echo '  option http-keep-alive'
    echo '  http-reuse always'
    echo 'frontend fe'
    echo "  bind 127.0.0.1:$HAPROXY_PORT"
    echo '  option forwardfor'
    echo '  http-request set-header X-Forwarded-Proto http'
    echo '  http-request set-header X-Forwarded-Host %[req.hdr(host)]'
    echo "  use_backend %[req.hdr(host),lower,map($work/hosts.map)] if { path_beg /api }"
    echo 'backend b1'
    echo '  balance roundrobin'
    for ((i = 0; i < servers; i++)); do echo "  server s$i 127.0.0.1:$((BACKEND_PORT + i))"; done
  } >"$work/haproxy.cfg"
}

# One wrk run against a port; prints "rps p50_ms p99_ms requests".
run_wrk() { # port host extra-wrk-args...
  local port=$1 host=$2
  shift 2
  taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Host: $host" "$@" \
    "http://127.0.0.1:$port$ROUTE_PATH" >"$work/wrk.out"
  awk '
    function ms(v) { if (v ~ /us$/) return v * 0.001; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    / requests in / { n = $1 }
    /Non-2xx/ { bad = $NF }
    END { printf "%.0f %.3f %.3f %d %d\n", rps, p50, p99, n, bad + 0 }
  ' "$work/wrk.out"
}

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

summary="$OUT/summary.txt"
{
  echo "# e2e $(date -u +%FT%TZ) $(nproc) cores, DURATION=${DURATION}s REPS=$REPS CONNS=$CONNS"
  echo "# $(nginx -v 2>&1 | tr -d '\n'); $(haproxy -v | head -1); wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  echo "# lbproxy: $LBPROXY"
  printf "%-10s %-8s %9s %8s %8s %9s %7s\n" variant proxy req/s p50_ms p99_ms cpu_us/req non2xx
} | tee "$summary"

for variant in "${VARIANTS[@]}"; do
  size=12
  [ "$variant" = 4k ] && size=4096
  [ "$variant" = 1m ] && size=1048576
  count=1
  [ "$variant" = servers50 ] && count=50
  host=$HOST
  [ "$variant" = routes10k ] && host="h5000.$HOST"
  extra=()
  [ "$variant" = close ] && extra=(-H "Connection: close")
  configure "$variant"

  taskset -c 0 "$BIN/e2e-backend" --port "$BACKEND_PORT" --count "$count" --size "$size" 2>/dev/null &
  backend=$!
  pids+=("$backend")
  taskset -c 1 "$LBPROXY" --registry "file://$work/lbproxy.toml" --listen "127.0.0.1:$LB_PORT" \
    --api "127.0.0.1:$API_PORT" --workers 1 --log-level warn >"$work/lbproxy.log" 2>&1 &
  lb=$!
  taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" >/dev/null 2>&1 &
  ngx=$!
  taskset -c 1 haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>&1 &
  hap=$!
  pids+=("$lb" "$ngx" "$hap")
  wait_http "$LB_PORT" "$host"
  wait_http "$NGINX_PORT" "$host"
  wait_http "$HAPROXY_PORT" "$host"

  declare -A pid_of=([lbproxy]=$lb [nginx]=$ngx [haproxy]=$hap)
  declare -A port_of=([lbproxy]=$LB_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT)
  rm -f "$work"/res.*
  for ((rep = 0; rep < REPS; rep++)); do
    for proxy in lbproxy nginx haproxy; do
      DURATION=$WARMUP run_wrk "${port_of[$proxy]}" "$host" "${extra[@]}" >/dev/null
      before=$(ticks "${pid_of[$proxy]}")
      read -r rps p50 p99 n bad < <(run_wrk "${port_of[$proxy]}" "$host" "${extra[@]}")
      after=$(ticks "${pid_of[$proxy]}")
      cpu=$(awk -v t=$((after - before)) -v n="$n" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.2f", n ? t / hz * 1e6 / n : 0 }')
      echo "$rps $p50 $p99 $cpu $bad" >>"$work/res.$proxy"
      cp "$work/wrk.out" "$OUT/$variant.$proxy.$rep.wrk.txt"
    done
  done
  declare -A med_rps
  for proxy in lbproxy nginx haproxy; do
    col() { awk -v c="$1" '{print $c}' "$work/res.$proxy" | median; }
    med_rps[$proxy]=$(col 1)
    printf "%-10s %-8s %9.0f %8.3f %8.3f %9.2f %7s\n" "$variant" "$proxy" \
      "${med_rps[$proxy]}" "$(col 2)" "$(col 3)" "$(col 4)" "$(col 5)" | tee -a "$summary"
  done
  awk -v l="${med_rps[lbproxy]}" -v n="${med_rps[nginx]}" -v h="${med_rps[haproxy]}" -v v="$variant" \
    'BEGIN { printf "%-10s req/s ratio lbproxy/nginx %.2f, lbproxy/haproxy %.2f\n", v, l / n, l / h }' |
    tee -a "$summary"

  kill "$lb" "$ngx" "$hap" "$backend" 2>/dev/null || true
  wait "$lb" "$ngx" "$hap" "$backend" 2>/dev/null || true
  pids=()
done
echo "e2e: raw wrk output and $summary"
