"""The super-resolution network of the PyTorch ONNX / Caffe2 mobile tutorial (Shi et al. 2016,
ESPCN): 5x5 and 3x3 convolutions, then PixelShuffle x3; one channel (the Y of YCbCr), 224x224.

    edgepack export examples/super_resolution.py:make_model \\
        --input input:1x1x224x224:float32 -o super_resolution.onnx
"""

import torch
from torch import nn
from torch.nn import init


class SuperResolutionNet(nn.Module):
    def __init__(self, upscale_factor: int = 3) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(1, 64, (5, 5), (1, 1), (2, 2))
        self.conv2 = nn.Conv2d(64, 64, (3, 3), (1, 1), (1, 1))
        self.conv3 = nn.Conv2d(64, 32, (3, 3), (1, 1), (1, 1))
        self.conv4 = nn.Conv2d(32, upscale_factor**2, (3, 3), (1, 1), (1, 1))
        self.pixel_shuffle = nn.PixelShuffle(upscale_factor)
        self._initialize_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        x = self.relu(self.conv3(x))
        return self.pixel_shuffle(self.conv4(x))

    def _initialize_weights(self) -> None:
        init.orthogonal_(self.conv1.weight, init.calculate_gain("relu"))
        init.orthogonal_(self.conv2.weight, init.calculate_gain("relu"))
        init.orthogonal_(self.conv3.weight, init.calculate_gain("relu"))
        init.orthogonal_(self.conv4.weight)


def make_model() -> nn.Module:
    torch.manual_seed(3)
    return SuperResolutionNet(upscale_factor=3).eval()
