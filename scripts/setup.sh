#!/usr/bin/env bash
# Set up this machine for edgepack: system packages, PyTorch (CPU), and edgepack itself.
#
#   bash scripts/setup.sh          what running edgepack needs (adb, torch, edgepack[torch])
#   bash scripts/setup.sh --dev    also what the tests need (qemu-user, the aarch64 cross
#                                  compiler, clang, chromium, test extras)
#
# Idempotent: installed pieces are skipped, so the demo and test scripts call it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_packages=(adb cmake gcc g++)
if [ "$dev" = 1 ]; then
  apt_packages+=(qemu-user gcc-aarch64-linux-gnu clang libclang-rt-14-dev chromium)
  # npm fetches ONNX Runtime's Android AAR (headers); node's own package carries it here.
  command -v npm >/dev/null || apt_packages+=(nodejs npm)
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
extras="torch"
[ "$dev" = 1 ] && extras="torch,dev"
"$PY" -m pip install -q -e ".[${extras}]"
echo "setup: done ($("$PY" -m edgepack --version))"
