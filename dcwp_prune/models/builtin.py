"""The small CMNIST networks: ``cnn`` (the official DCWP CNN) and ``mlp`` (LfF's 3 x 100 MLP)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CMNISTCNN", "MLP"]


class CMNISTCNN(nn.Module):
    """DCWP's CMNIST CNN: 3 x (conv k4 s2 p1, BN, ReLU) with 64/128/256 channels, global pooling, linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers = []
        for cin, cout in ((in_channels, 64), (64, 128), (128, 256)):
            layers += [
                nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class MLP(nn.Module):
    """LfF's Colored MNIST MLP: flatten 3 x 28 x 28, three hidden layers of 100 with ReLU, linear head."""

    def __init__(self, num_classes: int = 10, in_features: int = 3 * 28 * 28, hidden: int = 100) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))
