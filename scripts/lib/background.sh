# Sourced by scripts that start servers in the background (benches/e2e/run.sh,
# scripts/pgo.sh): a scratch directory in $work, and on exit every process whose pid was
# appended to $pids is killed and waited for, and $work removed.
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
