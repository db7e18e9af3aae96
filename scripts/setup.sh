#!/usr/bin/env bash
# Set up this machine for edgepack: system packages, PyTorch (CPU), and edgepack itself.
#
#   bash scripts/setup.sh          what running edgepack and its demo need (adb, gcc and cmake,
#                                  mksh and toybox, npm, torch, edgepack[torch,postgres])
#   bash scripts/setup.sh --dev    also what the tests need (qemu-user, the aarch64 cross
#                                  compiler and its C library, clang, chromium, the PostgreSQL
#                                  server, test extras)
#   bash scripts/setup.sh [--dev] --list   print the Debian packages, one a line; install nothing
#
# Idempotent: installed pieces are skipped, so the demo and test scripts call it every time.
# Packages are installed with --no-install-recommends, so every package a program needs beyond
# its Depends is named here (a compiler's C library is only a Recommends of the compiler);
# tests/host/test_setup_packages.py checks that every program and library the tests use comes
# from a package named here.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
list=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --list) list=1 ;;
    *) echo "setup: unknown option $arg (use --dev, --list)" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# adb deploys; cmake, gcc and the C library build the host runner (the demo builds it); npm
# fetches the ONNX Runtime AAR's headers where Maven Central is out of reach; mksh and toybox
# give the virtual device (the demo's stand-in for a phone) Android's userland.
apt_packages=(adb cmake gcc g++ libc6-dev nodejs mksh toybox)
# Debian's nodejs leaves npm to a package of its own; NodeSource's nodejs carries it (and
# conflicts with Debian's npm), so npm is named unless a nodejs package provides the command.
npm_owner=$(dpkg-query -S "$(command -v npm || echo /usr/bin/npm)" 2>/dev/null || true)
case "$npm_owner" in nodejs:*) ;; *) apt_packages+=(npm) ;; esac
if [ "$dev" = 1 ]; then
  apt_packages+=(
    qemu-user                                    # qemu-aarch64 runs the linux-aarch64 runner
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross  # the linux-aarch64 runner, and its libc
    clang libclang-rt-14-dev                     # libFuzzer (bench/fuzz_tensorproto.sh)
    chromium                                     # the browser device; renders report.html
    git binutils util-linux                      # git ls-files, readelf, unshare and mount
    postgresql                                   # the PostgreSQL history's tests start one
  )
fi
if [ "$list" = 1 ]; then
  printf '%s\n' "${apt_packages[@]}"
  exit 0
fi
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned: a bare `torch` requirement pulls a CUDA build of several GB, while
# torch==2.13.0 is the CPU wheel these machines keep on disk.
if ! "$PY" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  echo "setup: installing torch==2.13.0 (CPU)"
  "$PY" -m pip install -q torch==2.13.0
fi
# postgres: the psycopg driver, for a lab's shared history (--db postgresql://...); browser:
# Playwright, which drives the system's Chromium for `--device browser`.
extras="torch,postgres,browser"
[ "$dev" = 1 ] && extras="torch,postgres,browser,dev"
"$PY" -m pip install -q -e ".[${extras}]"
if [ "$dev" = 1 ]; then
  # The browser device's runtimes (pinned npm packages), fetched once so no test downloads.
  "$PY" -m edgepack runner fetch-web >/dev/null
fi
echo "setup: done ($("$PY" -m edgepack --version))"
