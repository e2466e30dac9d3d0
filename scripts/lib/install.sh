# Sourced by the scripts that install the Debian packages they need when missing
# (scripts/test.sh, scripts/pgo.sh, benches/e2e/run.sh, benches/e2e/registry.sh).
#
# install_packages PKG...: `apt-get update`, then a quiet, non-interactive install of the
# packages without their recommended ones, through `sudo -n` when not root and sudo is
# there. apt's output goes to stderr. Returns non-zero when apt-get is missing or the
# install fails; the caller decides whether that is fatal.
install_packages() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install: no apt-get here; install $* by hand" >&2
    return 1
  fi
  local sudo=()
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo=(sudo -n); fi
  "${sudo[@]}" apt-get update -qq >&2 || true
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >&2
}
