"""Sparsity / complexity metrics of the merged mask: Gini index, area and entropy.

Pure batched functions ``f(maps (B, ...)) -> (B,)`` hold the logic; the Metric classes call them
on ``batch.merged`` (the pixel-wise max of the image's class masks). They read no ground truth
and no model.

Conventions: every finite non-negative map is scored. An all-zero map is a constant map like any
other (all pixels equal): Gini 0, entropy log(H W) (the uniform distribution, the limit of a
constant map), area 0, so a method that returns nothing gains no sparsity from it. A map with a
non-finite or a negative value gives NaN (the runner fails non-finite maps before). Sums run in
float64 (float32 on MPS).

Example:
    >>> import torch
    >>> one_hot = torch.zeros(1, 2, 2); one_hot[0, 0, 0] = 1.0
    >>> gini(one_hot).tolist(), entropy(one_hot).tolist(), area(one_hot).tolist()
    ([0.75], [0.0], [0.25])
    >>> round(entropy(torch.ones(1, 2, 2)).item(), 6)  # log(4)
    1.386294
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from attrbench.interfaces import EvalBatch, Metric, Tolerance

__all__ = ["Area", "Entropy", "Gini", "area", "entropy", "gini"]


def _prepare(maps: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(maps, Tensor):
        raise TypeError(f"maps must be a torch.Tensor, got {type(maps).__name__}")
    if maps.ndim < 2:
        raise ValueError(f"maps must have shape (B, ...) with at least one value per map, got "
                         f"{tuple(maps.shape)}")
    if not maps.is_floating_point():
        raise TypeError(f"maps must be a floating tensor, got {maps.dtype}")
    dtype = torch.float32 if maps.device.type == "mps" else torch.float64
    flat = maps.flatten(1).to(dtype)
    valid = torch.isfinite(flat).all(1) & (flat >= 0).all(1)
    flat = torch.where(valid.view(-1, 1), flat, torch.ones_like(flat))  # placeholders
    return flat, valid


def _as_distribution(flat: Tensor) -> Tensor:
    """Rows normalised to sum 1; an all-zero row becomes uniform (the limit of a constant map)."""
    total = flat.sum(1, keepdim=True)
    uniform = torch.full_like(flat, 1.0 / flat.shape[1])
    return torch.where(total > 0, flat / torch.where(total > 0, total, torch.ones_like(total)),
                       uniform)


def _nan(values: Tensor, valid: Tensor, dtype: torch.dtype) -> Tensor:
    return torch.where(valid, values, torch.full_like(values, math.nan)).to(dtype)


def gini(maps: Tensor) -> Tensor:
    """Gini index of each flattened non-negative map (Hurley & Rickard, IEEE Trans. Inf. Theory
    2009; used for attributions by Chalasani et al., ICML 2020).

    With ``c_(1) <= ... <= c_(n)`` the sorted values:
    ``G = 1 - 2 * sum_k (c_(k) / ||c||_1) * (n - k + 1/2) / n``. One-hot map: ``1 - 1/n``;
    uniform map: 0; all-zero map: 0 (a constant map). Invalid maps (see module doc): NaN.
    """
    flat, valid = _prepare(maps)
    n = flat.shape[1]
    srt = torch.sort(_as_distribution(flat), dim=1).values
    k = torch.arange(1, n + 1, device=flat.device, dtype=flat.dtype)
    w = (n - k + 0.5) / n
    g = 1 - 2 * (srt * w).sum(1)
    return _nan(g, valid, maps.dtype)


def area(maps: Tensor) -> Tensor:
    """Mean value of each map (0 for the all-zero map). Invalid maps: NaN."""
    flat, valid = _prepare(maps)
    return _nan(flat.mean(1), valid, maps.dtype)


def entropy(maps: Tensor) -> Tensor:
    """Shannon entropy (natural log) of each map normalised to sum 1 (Bhatt, Weller, Moura,
    IJCAI 2020, "complexity"), with ``0 log 0 = 0``. One-hot: 0; uniform over n: ``log n``;
    all-zero: ``log n`` (a constant map). Invalid maps: NaN."""
    flat, valid = _prepare(maps)
    p = _as_distribution(flat)
    h = 0.0 - torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(1) + 0.0  # no -0.0
    return _nan(h, valid, maps.dtype)


class _MergedMaskMetric(Metric):
    fn: Any = None

    def __init__(self) -> None:
        super().__init__()

    def score(self, batch: EvalBatch) -> list[float]:
        return type(self).fn(batch.merged.float()).tolist()


class Gini(_MergedMaskMetric):
    """Gini index of the merged mask (Hurley & Rickard 2009; Chalasani, Chen, Chowdhury, Wu,
    Jha. "Concise Explanations of Neural Networks using Adversarial Training". ICML 2020).
    Higher is better (sparser).

    See :func:`gini`. Deviation: computed on the merged mask in [0, 1], not on absolute input
    gradients; an all-zero map (0/0 in the formula) counts as a constant map: 0. No options.
    """

    name = "gini"
    higher_is_better = True
    version = 2
    regression_tolerance = Tolerance("absolute", 0.01)  # in [0, 1]
    definition = "Gini index of the flattened merged mask (sparsity)"
    fn = staticmethod(gini)


class Area(_MergedMaskMetric):
    """Area of the merged mask: its mean value (the ``mean(m)`` term of the paper's Explainer
    loss and saliency metric). Lower is better.

    An all-zero map has area 0 (the paper reports its constant-0 reference row too); the
    localisation metrics are where an empty map loses. No options.
    """

    name = "area"
    higher_is_better = False
    version = 2
    regression_tolerance = Tolerance("relative", 0.05, floor=0.002)  # sharp masks: 0.03 to 0.15
    definition = "mean value of the merged mask"
    fn = staticmethod(area)


class Entropy(_MergedMaskMetric):
    """Shannon entropy of the merged mask normalised to a distribution (Bhatt, Weller, Moura.
    "Evaluating and Aggregating Feature-based Model Explanations". IJCAI 2020). Lower is better.

    See :func:`entropy`. Natural logarithm; an all-zero map counts as a constant map
    (``log(H W)``). Deviation: Bhatt et al. normalise absolute attributions per feature; here the
    mask is already non-negative and each pixel is one feature (channels are not separate). No
    options.
    """

    name = "entropy"
    higher_is_better = False
    version = 2
    # nats, up to log(H*W) (8.3 at 64 px) and all methods within 5.8 to 8.3: relative 0.5 %
    regression_tolerance = Tolerance("relative", 0.005, floor=0.01)
    definition = "Shannon entropy (nats) of the merged mask normalised to sum 1"
    fn = staticmethod(entropy)
