"""How each example is exported and packed: the commands of its docstring, as data, for the
scripts and tests that run every example (bench/browser_bench.py, tests/web/test_examples.py).

name: (factory relative to examples/, `edgepack export` options, `edgepack pack` options).
"""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
IMAGES = EXAMPLES / "images"

RECIPES: dict[str, tuple[str, list[str], list[str]]] = {
    "resnet20": ("resnet20.py:make_model", ["--input", "input:1x3x32x32:float32"],
                 ["--input", f"input={IMAGES / 'cifar_32.png'}", "--mean",
                  "0.4914,0.4822,0.4465", "--std", "0.247,0.243,0.261"]),
    "super_resolution": ("super_resolution.py:make_model",
                         ["--input", "input:1x1x224x224:float32"],
                         ["--input", f"input={IMAGES / 'scene_320x240.jpg'}", "--color", "y"]),
    "face_detector": ("face_detector.py:make_model",
                      ["--input", "input:1x3x120x160:float32", "--output-name", "scores",
                       "--output-name", "boxes"],
                      ["--input", f"input={IMAGES / 'scene_320x240.jpg'}", "--mean",
                       "0.498,0.498,0.498", "--std", "0.502,0.502,0.502"]),
    "face_parser": ("face_parser.py:make_model",
                    ["--exporter", "torchscript", "--opset", "11", "--input",
                     "input:1x3x128x128:float32", "--output-name", "out"],
                    ["--input", f"input={IMAGES / 'scene_224.png'}", "--mean",
                     "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]),
    "fast_neural_style": ("fast_neural_style.py:make_model",
                          ["--exporter", "torchscript", "--opset", "9", "--input",
                           "input:1x3x64x64:float32"], []),
}
