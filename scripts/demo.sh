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
edgepack run "$work/resnet20.bundle" --device host --iterations 50
