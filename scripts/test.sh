#!/usr/bin/env bash
# Set up a fresh machine and run edgepack's tests.   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
# Tests that need a tool (chromium, qemu) skip on a developer machine without it; here they fail.
export CI=${CI:-true}
# pytest exits 5 when it collects nothing: with set -e that fails the run, as it should.
exec python3 -m pytest -q "$@"
