#!/usr/bin/env bash
# The dedicated parser fuzz run: every "parsers never panic" property suite with many cases.
#
# The same suites run in the normal test command (scripts/test.sh) with a few hundred seeded
# cases each, so that stays fast; this script runs them with PROPTEST_CASES cases per
# property (default 100 000):
#
#   route        lb-route/tests/parse_props.rs       the route expression parser
#   core         lb-core/tests/parse_props.rs        failover predicates, Go durations, the
#                                                    snapshot builder (registry key/value
#                                                    decoding), the TOML/JSON file form
#   middleware   lb-middleware/tests/parse_props.rs  cbreaker conditions, validate_config of
#                                                    every built-in middleware type
#   flat         lb-registry/tests/parse_props.rs    flat= prefixes, host:port keys/values
#   registry     lb-registry src props modules       Consul KV and catalog answers, etcd
#                                                    URLs and keys (features etcd, consul)
#
# Runs are seeded (fixed RngSeed in each suite), so a failure reproduces with the same case
# count; proptest prints the minimal failing input.
#
# Build profile "fuzz": release optimisation (without LTO) with overflow checks and debug assertions on,
# so an arithmetic overflow is a panic the properties catch instead of a silently wrong
# value. It is defined here through environment variables and builds into its own
# directory (target/fuzz), leaving the release artifacts alone.
#
# Usage: scripts/fuzz.sh [SUITE...]        (default: all suites, in the order above)
#        PROPTEST_CASES=1000000 scripts/fuzz.sh core
# Prints cases and wall time per suite, and exits non-zero if any suite failed.
set -uo pipefail
cd "$(dirname "$0")/.."

export PROPTEST_CASES="${PROPTEST_CASES:-100000}"
export CARGO_PROFILE_FUZZ_INHERITS=release
export CARGO_PROFILE_FUZZ_OVERFLOW_CHECKS=true
export CARGO_PROFILE_FUZZ_DEBUG_ASSERTIONS=true
# Properties do not need release's whole-program optimisation, only its speed: skip the
# slow link.
export CARGO_PROFILE_FUZZ_LTO=false
export CARGO_PROFILE_FUZZ_CODEGEN_UNITS=16
# Proptest reports each panic it catches while shrinking; one backtrace is plenty.
export RUST_BACKTRACE=0

declare -A args=(
  [route]="-p lb-route --test parse_props"
  [core]="-p lb-core --test parse_props"
  [middleware]="-p lb-middleware --test parse_props"
  [flat]="-p lb-registry --test parse_props"
  [registry]="-p lb-registry --features etcd,consul --lib"
)
# Test-name filter per suite (the registry's unit-test binary holds other tests too).
declare -A filter=([registry]="props")
order=(route core middleware flat registry)

suites=("$@")
((${#suites[@]})) || suites=("${order[@]}")
for suite in "${suites[@]}"; do
  [ -n "${args[$suite]:-}" ] || { echo "fuzz.sh: unknown suite $suite (known: ${order[*]})" >&2; exit 2; }
done

echo "fuzz.sh: building the test binaries (profile fuzz)" >&2
for suite in "${suites[@]}"; do
  # shellcheck disable=SC2086
  cargo test --profile fuzz --locked ${args[$suite]} --no-run || exit 1
done

failed=()
summary=()
for suite in "${suites[@]}"; do
  log="$(mktemp)"
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  cargo test --profile fuzz --locked ${args[$suite]} -- ${filter[$suite]:-} 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  end=$(date +%s.%N)
  tests=$(grep -c '^test .* \.\.\. ' "$log")
  passed=$(grep -c '^test .* \.\.\. ok$' "$log")
  rm -f "$log"
  line=$(printf '%-11s %3d properties x %s cases  %4d ok  %8.1f s' \
    "$suite" "$tests" "$PROPTEST_CASES" "$passed" "$(echo "$end - $start" | bc)")
  summary+=("$line")
  ((status == 0)) || failed+=("$suite")
done

echo
echo "fuzz.sh: summary (PROPTEST_CASES=$PROPTEST_CASES; 'properties' counts every test in the"
echo "binary, including the few plain regression tests that ignore the case count)"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz.sh: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz.sh: all suites passed"
