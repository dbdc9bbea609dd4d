"""A small CNN digit classifier: the judge of MNIST restorations (accuracy) and of the prior's samples."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["MNISTClassifier", "classify"]


class MNISTClassifier(nn.Module):
    """A small CNN: logits ``(B, 10)`` for ``(B, 1, 28, 28)`` digits on the [-1, 1] scale.

    conv3x3(32)-conv3x3(32)-maxpool-conv3x3(64)-conv3x3(64)-maxpool-fc(128)-fc(10), ReLU and
    batch norm after each convolution, dropout before the classifier head. 468,010 parameters.
    """

    def __init__(self, width: int = 32, hidden: int = 128, dropout: float = 0.25):
        super().__init__()
        w = width

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(1, w), *block(w, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * w * 7 * 7, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, 10),
        )
        self.config = {"width": width, "hidden": hidden, "dropout": dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def classify(classifier: nn.Module, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted labels and their softmax probabilities for ``images (N, 1, 28, 28)``."""
    classifier.eval()
    labels, conf = [], []
    for i in range(0, images.shape[0], batch_size):
        p = torch.softmax(classifier(images[i:i + batch_size].float()), dim=1)
        c, lab = p.max(dim=1)
        labels.append(lab)
        conf.append(c)
    if not labels:
        return torch.empty(0, dtype=torch.int64), torch.empty(0)
    return torch.cat(labels), torch.cat(conf)
