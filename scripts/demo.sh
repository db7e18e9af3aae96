#!/usr/bin/env bash
# The main job on a fresh machine: export the CIFAR-10 ResNet-20 example, pack it with an image,
# run it on the first connected device (or on this machine when none is connected), and print
# the comparison with the host's outputs and the latency.   bash scripts/demo.sh
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

# The first device the adb server sees in state "device", and the runner it needs.
read -r serial target < <(edgepack devices --json | python3 -c '
import json, sys
ready = [d for d in json.load(sys.stdin) if d["state"] == "device"]
print(ready[0]["serial"], ready[0]["runner_target"] or "-") if ready else print("- -")')

if [ "$serial" != "-" ]; then
  echo "demo: deploying to $serial (runner $target)"
  [ "$target" != "-" ] || { echo "demo: no runner target for $serial's ABI" >&2; exit 3; }
  # Android targets need the NDK (ANDROID_NDK_HOME); `runner build` says so if it is missing.
  edgepack runner build --target "$target"
  edgepack deploy "$work/resnet20.bundle" --device "$serial" --iterations 50
else
  echo "demo: no device connected; running on this machine with the native runner"
  edgepack runner build --target host
  edgepack run "$work/resnet20.bundle" --device host --iterations 50
fi
