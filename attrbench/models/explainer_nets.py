"""Segmentation networks used as Explainers: K logit maps at input resolution.

* ``deeplabv3_resnet50``: the paper's Explainer (torchvision DeepLabv3-ResNet50, no auxiliary
  head). The paper's torchvision 0.11 loaded an ImageNet backbone by default; here the backbone
  weights are read from a given file or the local torch cache, otherwise the backbone is random
  and a warning says so (nothing is downloaded).
* ``unet_small``: a 3-level U-Net for the synthetic preset (CPU-sized; documented deviation).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
    )


class SmallUNet(nn.Module):
    """U-Net with ``len(widths)`` resolutions (default 4: widths 8/16/32/64, 31 M MACs at
    64 px; receptive field about 70 px, the whole image) and a 1x1 head to K logits.

    Deviation from the paper: the paper uses DeepLabv3-ResNet50 with an ImageNet backbone; the
    synthetic preset needs a network that trains on two CPU cores in minutes. A 3-level variant
    (receptive field ~30 px) learned *where* the objects are but not *which* class they are:
    its masks for absent classes were as large as for present ones (val non-target area 0.17
    vs target 0.16), so the fourth level is there to see whole shapes.
    """

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (8, 16, 32, 64)) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths needs at least 2 levels, got {widths!r}")
        self.num_classes = num_classes
        self.widths = tuple(widths)
        self.enc = nn.ModuleList()
        c_in = 3
        for c in widths:
            self.enc.append(_block(c_in, c))
            c_in = c
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for hi, lo in zip(reversed(widths[1:]), reversed(widths[:-1])):
            self.up.append(nn.ConvTranspose2d(hi, lo, 2, stride=2))
            self.dec.append(_block(2 * lo, lo))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        f = 2 ** (len(self.widths) - 1)
        if h % f or w % f:
            raise ValueError(f"SmallUNet needs H and W divisible by {f}, got {h}x{w}")
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            x = dec(torch.cat([up(x), skip], 1))
        return self.head(x)


class _DeepLabWrapper(nn.Module):
    def __init__(self, net: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.net = net
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def deeplabv3_resnet50(num_classes: int, backbone_weights: str | Path | None = None) -> nn.Module:
    """The paper's Explainer: DeepLabv3-ResNet50 with K output channels, no auxiliary head."""
    from torchvision.models import ResNet50_Weights
    from torchvision.models.segmentation import deeplabv3_resnet50 as tv_deeplab

    net = tv_deeplab(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    fname = Path(ResNet50_Weights.IMAGENET1K_V1.url).name
    cand = Path(backbone_weights) if backbone_weights else (
        Path(torch.hub.get_dir()) / "checkpoints" / fname)
    if cand.exists():
        sd = torch.load(cand, map_location="cpu", weights_only=True)
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
        missing, _ = net.backbone.load_state_dict(sd, strict=False)
        if missing:
            raise ValueError(f"{cand} is not a ResNet-50 state dict (missing {missing[:3]}...)")
    else:
        warnings.warn(
            f"No ImageNet ResNet-50 weights found at {cand}; the Explainer's backbone starts "
            f"from random weights (the paper starts from ImageNet). Put {fname} there or pass "
            f"--imagenet-weights FILE.",
            stacklevel=2,
        )
    return _DeepLabWrapper(net, num_classes)
