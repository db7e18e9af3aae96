"""The face detector of the browser tutorial: an UltraFace-style net (Linzaer's
Ultra-Light-Fast-Generic-Face-Detector-1MB, "slim" version), with the box decoding inside the
graph as the released ONNX has it. A depthwise-separable backbone (strides 8, 16, 32) plus one
extra stride-64 layer; at each of the four scales a separable-conv head gives 2 class scores and
4 box offsets per anchor; scores go through Softmax, offsets are decoded against the anchors
(Exp, Mul, Add) into corner-form boxes in [0, 1] coordinates:

    scores [1, N, 2] (background, face)      boxes [1, N, 4] (x0, y0, x1, y1)

The tutorial fed it 320x240; this example is 160x120 (N = 1118 anchors) so a test runs in
seconds. Random weights (seeded), no downloads; the input is an RGB picture scaled as the
original, (pixel - 127) / 128:

    edgepack export examples/face_detector.py:make_model \\
        --input input:1x3x120x160:float32 --output-name scores --output-name boxes \\
        -o face_detector.onnx
    edgepack pack face_detector.onnx -o face_detector --input \\
        input=examples/images/scene_320x240.jpg --mean 0.498,0.498,0.498 --std 0.502,0.502,0.502

face_parser.py is its partner: the tutorial ran the detector on onnxruntime-web's WASM backend and
the parser on WebGL. The detector cannot go on WebGL, whichever exporter: its Reshape shapes and
Slice bounds are int64 tensors, and onnxruntime-web's WebGL backend holds no int64 ("int64 is not
supported" at session creation), so `deploy --device browser --ep webgl` fails, exit 3.
"""

import math

import torch
from torch import nn

WIDTH, HEIGHT = 160, 120
STRIDES = (8, 16, 32, 64)
# Anchor sizes in input pixels, per stride: the original's, scaled with the input (320 -> 160).
MIN_BOXES = ((5, 8, 12), (16, 24), (32, 48), (64, 96, 128))
CENTER_VARIANCE = 0.1
SIZE_VARIANCE = 0.2


def conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup),
                         nn.ReLU(inplace=True))


def conv_dw(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
        nn.ReLU(inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True),
    )


def separable(inp: int, oup: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, inp, 3, stride, 1, groups=inp), nn.ReLU(),
                         nn.Conv2d(inp, oup, 1))


def priors(width: int = WIDTH, height: int = HEIGHT) -> torch.Tensor:
    """Anchors in centre form (cx, cy, w, h), relative to the picture, in the order the heads
    emit them: scale by scale, row-major over the feature map, sizes innermost."""
    rows = []
    for stride, sizes in zip(STRIDES, MIN_BOXES, strict=True):
        fw, fh = math.ceil(width / stride), math.ceil(height / stride)
        for j in range(fh):
            for i in range(fw):
                cx, cy = (i + 0.5) / (width / stride), (j + 0.5) / (height / stride)
                rows += [[cx, cy, s / width, s / height] for s in sizes]
    return torch.tensor(rows, dtype=torch.float32).clamp_(0.0, 1.0)


class UltraFaceSlim(nn.Module):
    def __init__(self, base: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        b = base
        self.stage8 = nn.Sequential(
            conv_bn(3, b, 2), conv_dw(b, 2 * b, 1), conv_dw(2 * b, 2 * b, 2),
            conv_dw(2 * b, 2 * b, 1), conv_dw(2 * b, 4 * b, 2), conv_dw(4 * b, 4 * b, 1),
            conv_dw(4 * b, 4 * b, 1), conv_dw(4 * b, 4 * b, 1),
        )
        self.stage16 = nn.Sequential(conv_dw(4 * b, 8 * b, 2), conv_dw(8 * b, 8 * b, 1),
                                     conv_dw(8 * b, 8 * b, 1))
        self.stage32 = nn.Sequential(conv_dw(8 * b, 16 * b, 2), conv_dw(16 * b, 16 * b, 1))
        self.extras = nn.Sequential(nn.Conv2d(16 * b, 4 * b, 1), nn.ReLU(),
                                    separable(4 * b, 16 * b, stride=2), nn.ReLU())
        channels = (4 * b, 8 * b, 16 * b)
        anchors = [len(s) for s in MIN_BOXES]
        self.cls = nn.ModuleList(
            [separable(c, a * num_classes) for c, a in zip(channels, anchors[:3], strict=True)]
            + [nn.Conv2d(16 * b, anchors[3] * num_classes, 3, padding=1)]
        )
        self.reg = nn.ModuleList(
            [separable(c, a * 4) for c, a in zip(channels, anchors[:3], strict=True)]
            + [nn.Conv2d(16 * b, anchors[3] * 4, 3, padding=1)]
        )
        self.register_buffer("priors", priors(), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f8 = self.stage8(x)
        f16 = self.stage16(f8)
        f32 = self.stage32(f16)
        f64 = self.extras(f32)
        scores, locations = [], []
        for k, feat in enumerate((f8, f16, f32, f64)):
            n = feat.shape[0]
            scores.append(self.cls[k](feat).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes))
            locations.append(self.reg[k](feat).permute(0, 2, 3, 1).reshape(n, -1, 4))
        confidences = torch.softmax(torch.cat(scores, 1), dim=2)
        loc = torch.cat(locations, 1)
        p = self.priors.unsqueeze(0)
        centers = loc[..., :2] * CENTER_VARIANCE * p[..., 2:] + p[..., :2]
        sizes = torch.exp(loc[..., 2:] * SIZE_VARIANCE) * p[..., 2:]
        boxes = torch.cat([centers - sizes / 2, centers + sizes / 2], dim=-1)
        return confidences, boxes


def make_model() -> nn.Module:
    torch.manual_seed(1118)
    model = UltraFaceSlim()
    # Untrained BatchNorm is the identity, which would hide fusion and numeric errors.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()
