"""The face parser of the browser tutorial: a BiSeNet (Yu et al. 2018) as zllrunning's
face-parsing.PyTorch has it, 19 classes (skin, brows, eyes, ears, nose, mouth, lips, neck,
cloth, hair, hat...). A ResNet-18-like context path whose stride-16 and stride-32 features go
through attention refinement (global average pool, 1x1 conv, Sigmoid, Mul), a global-context
branch added on top, bilinear upsampling between scales, a feature fusion module (Concat, global
average pool, two 1x1 convs, Sigmoid attention, Mul, Add) and a bilinear Resize
(align_corners) of the logits back to the input size:

    out [1, 19, H, W] per-pixel class logits

The tutorial's net took 512x512 and a ResNet-18 (64..512 channels); this one takes 128x128 with
a quarter of the channels and one block per stage, so a test runs in seconds. Random weights
(seeded), no downloads.

face_detector.py is its partner: the tutorial ran the detector on onnxruntime-web's WASM backend
and this parser on WebGL. For WebGL, export with the TorchScript exporter at opset 11, as the
tutorial's era did: the dynamo exporter's opset-18 Resize takes its output size as an int64
tensor, which onnxruntime-web's WebGL backend cannot read ("data type is not float"); at opset 11
the sizes are computed by Shape/Slice/Concat, which it runs. Both exports run on WASM:

    edgepack export examples/face_parser.py:make_model --exporter torchscript --opset 11 \\
        --input input:1x3x128x128:float32 --output-name out -o face_parser.onnx
    edgepack pack face_parser.onnx -o face_parser --input input=examples/images/scene_224.png \\
        --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
    edgepack deploy face_parser --device browser --ep webgl
"""

import torch
from torch import nn
from torch.nn import functional as F

N_CLASSES = 19


def global_pool(x: torch.Tensor) -> torch.Tensor:
    # An average pool over the whole map, as the original writes it: it exports as AveragePool
    # (adaptive_avg_pool2d(x, 1) becomes ReduceMean, whose opset-18 form, axes as an input,
    # onnxruntime-web's WebGL backend cannot run).
    return F.avg_pool2d(x, kernel_size=(int(x.shape[2]), int(x.shape[3])))


def upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # Bilinear where the original upsamples nearest between scales: onnxruntime-web's WebGL
    # Resize does linear only, and the tutorial ran this net on WebGL.
    return F.interpolate(x, size=(int(like.shape[2]), int(like.shape[3])), mode="bilinear",
                         align_corners=True)


class ConvBNReLU(nn.Module):
    def __init__(self, inp: int, oup: int, ks: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(inp, oup, ks, stride, ks // 2, bias=False)
        self.bn = nn.BatchNorm2d(oup)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(inp, oup, 3, stride)
        self.conv2 = nn.Conv2d(oup, oup, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(oup)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or inp != oup:
            self.down = nn.Sequential(nn.Conv2d(inp, oup, 1, stride, bias=False),
                                      nn.BatchNorm2d(oup))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(self.conv1(x))) + self.down(x))


class Backbone(nn.Module):
    """ResNet-18's shape (stem, max-pool, four stages) at a quarter of its width, one block a
    stage; returns the stride-8, -16 and -32 features."""

    def __init__(self, w: int = 16) -> None:
        super().__init__()
        self.stem = ConvBNReLU(3, w, 7, 2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(w, w, 1)
        self.layer2 = BasicBlock(w, 2 * w, 2)
        self.layer3 = BasicBlock(2 * w, 4 * w, 2)
        self.layer4 = BasicBlock(4 * w, 8 * w, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8 = self.layer2(self.layer1(self.pool(self.stem(x))))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinement(nn.Module):
    def __init__(self, inp: int, oup: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(inp, oup, 3)
        self.conv_atten = nn.Conv2d(oup, oup, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(oup)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        atten = torch.sigmoid(self.bn_atten(self.conv_atten(global_pool(feat))))
        return feat * atten


class ContextPath(nn.Module):
    def __init__(self, w: int = 16, mid: int = 32) -> None:
        super().__init__()
        self.backbone = Backbone(w)
        self.arm16 = AttentionRefinement(4 * w, mid)
        self.arm32 = AttentionRefinement(8 * w, mid)
        self.conv_head32 = ConvBNReLU(mid, mid, 3)
        self.conv_head16 = ConvBNReLU(mid, mid, 3)
        self.conv_avg = ConvBNReLU(8 * w, mid, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.backbone(x)
        avg = self.conv_avg(global_pool(feat32))
        feat32_sum = self.arm32(feat32) + avg  # the 1x1 context broadcast over the map
        feat32_up = self.conv_head32(upsample(feat32_sum, feat16))
        feat16_up = upsample(self.arm16(feat16) + feat32_up, feat8)
        return feat8, self.conv_head16(feat16_up)


class FeatureFusion(nn.Module):
    def __init__(self, inp: int, oup: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(inp, oup, 1)
        self.conv1 = nn.Conv2d(oup, oup // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(oup // 4, oup, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = global_pool(feat)
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(atten))))
        return feat * atten + feat


class BiSeNet(nn.Module):
    def __init__(self, n_classes: int = N_CLASSES, w: int = 16) -> None:
        super().__init__()
        self.cp = ContextPath(w, mid=2 * w)
        self.ffm = FeatureFusion(2 * w + 2 * w, 4 * w)
        self.conv_out = ConvBNReLU(4 * w, 4 * w, 3)
        self.classifier = nn.Conv2d(4 * w, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat8, feat_cp8 = self.cp(x)
        logits = self.classifier(self.conv_out(self.ffm(feat8, feat_cp8)))
        return upsample(logits, x)


def make_model() -> nn.Module:
    torch.manual_seed(19)
    model = BiSeNet()
    # Untrained BatchNorm is the identity, which would hide fusion and numeric errors.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()
