"""Segmentation networks used as Explainers: K logit maps at input resolution.

* ``deeplabv3_resnet50``: the paper's Explainer (torchvision DeepLabv3-ResNet50, no auxiliary
  head). The paper's torchvision 0.11 loaded an ImageNet backbone by default; here the backbone
  weights are read from a given file or the local torch cache, otherwise the backbone is random
  and a warning says so (nothing is downloaded).
* ``unet_small``: a 4-level U-Net for the synthetic preset (CPU-sized; documented deviation).
* ``unet_deep``: the same U-Net with DeepLab-style class logits predicted from its deepest
  features and upsampled, plus the decoder's full-resolution logits as a refinement that starts
  at zero (the synthetic preset's Explainer; see :class:`DeepHeadUNet`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
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

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps, finest first (the last one is the bottleneck)."""
        h, w = x.shape[-2:]
        f = 2 ** (len(self.widths) - 1)
        if h % f or w % f:
            raise ValueError(f"{type(self).__name__} needs H and W divisible by {f}, got {h}x{w}")
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        return skips

    def decode(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """Full-resolution logits of the decoder from the encoder's feature maps."""
        y = skips[-1]
        for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            y = dec(torch.cat([up(y), skip], 1))
        return self.head(y)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.enc for p in m.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class DeepHeadUNet(SmallUNet):
    """:class:`SmallUNet` whose class logits come from its deepest features, as in DeepLabv3.

    ``logits = upsample(deep_head(bottleneck)) + b * tanh(head(decoder) / b)``: a 3x3 conv
    block and a 1x1 conv predict the K logit maps from the bottleneck (1/8 resolution at 4
    levels), bilinearly upsampled to the input size; the U-Net decoder's own 1x1 head adds a
    full-resolution refinement, initialised to zero (training starts from the deep, class-aware
    maps) and bounded to +-b logits (``refine_bound``, default 3): it can sharpen the borders of
    a class's region but not move its peak onto another object. Unbounded, the refinement grew
    class-agnostic over the epochs and pulled the maxima of the class maps off their objects
    (docs/explainer.md has the measurements).

    Why: with logits taken from the 8-channel full-resolution decoder layer alone, whose skip
    connections carry objectness, the U-Net learned one "object here" map and copied it into
    every class channel (the class-k logit on class-k pixels equalled the other classes'); the
    deep features of the same encoder, pretrained to recognise the classes, are class-specific.
    The paper's DeepLabv3 likewise predicts its K maps from deep features at 1/8 resolution.

    :meth:`encoder_parameters` lets training freeze the encoder or give it a lower learning
    rate, and :meth:`encode` exposes the bottleneck for encoder pretraining.
    """

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (8, 16, 32, 64),
                 head_width: int = 64, refine_bound: float | None = 3.0) -> None:
        super().__init__(num_classes, widths)
        self.refine_bound = refine_bound
        c = widths[-1]
        self.deep_head = nn.Sequential(
            nn.Conv2d(c, head_width, 3, padding=1, bias=False), nn.BatchNorm2d(head_width),
            nn.ReLU(), nn.Conv2d(head_width, num_classes, 1))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encode(x)
        deep = F.interpolate(self.deep_head(skips[-1]), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)
        refine = self.decode(skips)
        if self.refine_bound is not None:
            refine = self.refine_bound * torch.tanh(refine / self.refine_bound)
        return deep + refine


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
