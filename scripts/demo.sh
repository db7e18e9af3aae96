#!/usr/bin/env bash
# The main job on a fresh machine: export the CIFAR-10 ResNet-20 example, pack it with an image,
# deploy it over adb (push, run on the device, pull, compare with the host's outputs), and print
# the top-1 class and the latency.   bash scripts/demo.sh
#
# It deploys to the first device the adb server sees. With none connected, it starts a virtual
# device (`edgepack virtual-device`: an adb device in Python, running this machine's programs
# under Android's shell) behind an adb server of its own on a free port, so the user's server on
# 5037 is never touched, and deploys to that; both are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

work=${EDGEPACK_DEMO_DIR:-build/demo}
mkdir -p "$work"
edgepack export examples/resnet20.py:make_model --input input:1x3x32x32:float32 \
  --dynamic input:0:batch -o "$work/resnet20.onnx" --force
edgepack pack "$work/resnet20.onnx" -o "$work/resnet20.bundle" --force \
  --input "input=examples/images/cifar_32.png" --mean 0.4914,0.4822,0.4465 --std 0.247,0.243,0.261
edgepack inspect "$work/resnet20.bundle"

vd_pid=""
private_port=""
stop_started() {
  if [ -n "$vd_pid" ]; then
    kill "$vd_pid" 2>/dev/null || true
    wait "$vd_pid" 2>/dev/null || true
  fi
  if [ -n "$private_port" ]; then
    ANDROID_ADB_SERVER_PORT=$private_port adb kill-server >/dev/null 2>&1 || true
  fi
}
trap stop_started EXIT

# The first device the adb server sees in state "device", and the runner it needs ("- -" when
# there is none, or no adb server can be reached).
first_device() {
  { edgepack devices --json 2>/dev/null || echo "[]"; } | python3 -c '
import json, sys
ready = [d for d in json.load(sys.stdin) if d["state"] == "device"]
print(ready[0]["serial"], ready[0]["runner_target"] or "-") if ready else print("- -")'
}

read -r serial target < <(first_device)
if [ "$serial" = "-" ]; then
  private_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
  echo "demo: no device connected; starting a virtual device behind a private adb server" \
    "on port $private_port"
  # Every adb and edgepack command below talks to this server. It probes no emulator ports and
  # no USB: the user's own server keeps those.
  export ANDROID_ADB_SERVER_HOST=127.0.0.1 ANDROID_ADB_SERVER_PORT=$private_port ADB_EMU=0 \
    ADB_USB=0 ADB_MDNS=0
  adb start-server >/dev/null 2>&1 || { echo "demo: adb start-server failed" >&2; exit 3; }
  port_file="$work/virtual-device.port"
  rm -f "$port_file"
  edgepack virtual-device --root "$work/virtual-device" --port 0 --port-file "$port_file" \
    --model "demo phone" 2>"$work/virtual-device.log" &
  vd_pid=$!
  for _ in $(seq 300); do
    [ -s "$port_file" ] && break
    kill -0 "$vd_pid" 2>/dev/null || { cat "$work/virtual-device.log" >&2; exit 3; }
    sleep 0.1
  done
  [ -s "$port_file" ] || { echo "demo: the virtual device did not start" >&2; exit 3; }
  address="127.0.0.1:$(cat "$port_file")"
  adb connect "$address" >/dev/null
  timeout 30 adb -s "$address" wait-for-device
  read -r serial target < <(first_device)
  [ "$serial" = "$address" ] || { echo "demo: $address is not ready ($serial)" >&2; exit 3; }
fi

echo "demo: deploying to $serial (runner $target)"
[ "$target" != "-" ] || { echo "demo: no runner target for $serial's ABI" >&2; exit 3; }
# Android targets need the NDK (ANDROID_NDK_HOME); `runner build` says so if it is missing.
edgepack runner build --target "$target"
rm -rf "$work/outputs"
status=0
edgepack deploy "$work/resnet20.bundle" --device "$serial" --iterations 50 \
  --outputs "$work/outputs" --report "$work/deploy.json" || status=$?
# A mismatch (exit 1) still has outputs and a report to show; a failure (3) has none.
[ "$status" -le 1 ] || exit "$status"

python3 - "$work/outputs/test_data_set_0/output_0.pb" "$work/deploy.json" <<'EOF'
import json
import sys

import numpy as np
from onnx import TensorProto, numpy_helper

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
proto = TensorProto()
with open(sys.argv[1], "rb") as fh:
    proto.ParseFromString(fh.read())
scores = numpy_helper.to_array(proto).reshape(-1)
top = int(np.argmax(scores))
with open(sys.argv[2]) as fh:
    result = json.load(fh)
stats = result["stats"]
where = result["device"]["serial"]
print(f"demo: top-1 on {where}: {CLASSES[top]} (class {top}, score {scores[top]:.3f}; the "
      "example's weights are seeded, not trained)")
print(f"demo: latency on {where}: median {stats['median_ms']:.3f} ms, mean "
      f"{stats['mean_ms']:.3f} ms over {stats['count']} runs")
EOF
exit "$status"
