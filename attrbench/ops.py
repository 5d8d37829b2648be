"""Tensor helpers shared by methods, metrics and training: one implementation each.

* :func:`image_class_pairs` — the (image, ground-truth class) pairs of a multi-hot label batch,
  the unit every method is called on and every per-class metric scores;
* :func:`minmax_rescale` — per-map min-max rescale to [0, 1];
* :func:`gaussian_blur` — separable Gaussian blur of image batches;
* :func:`pair_mean` and :func:`keep_pair_curves` — per-pair values and curves of a batch's
  (image, class) pairs to per-image values and to a ``{image id: {class: curve}}`` store.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_blur", "image_class_pairs", "keep_pair_curves", "minmax_rescale",
           "pair_mean"]


def image_class_pairs(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(image index, class id) of every label > 0.5 of (B, K) ``labels``, in row-major order.

    Example:
        >>> image_class_pairs(torch.tensor([[0., 1., 1.], [1., 0., 0.]]))
        (tensor([0, 0, 1]), tensor([1, 2, 0]))
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be (B, K) multi-hot, got shape {tuple(labels.shape)}")
    nz = torch.nonzero(labels > 0.5)
    return nz[:, 0], nz[:, 1]


def minmax_rescale(maps: Tensor) -> Tensor:
    """Min-max rescale each (H, W) map of (..., H, W) ``maps`` to [0, 1]; a constant map
    becomes all 0.

    Example:
        >>> minmax_rescale(torch.tensor([[[1., 3.], [2., 5.]], [[7., 7.], [7., 7.]]])).tolist()
        [[[0.0, 0.5], [0.25, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]
    """
    flat = maps.flatten(-2)
    lo = flat.amin(dim=-1, keepdim=True)
    rng = flat.amax(dim=-1, keepdim=True) - lo
    out = torch.where(rng > 0, (flat - lo) / torch.where(rng > 0, rng, torch.ones_like(rng)),
                      torch.zeros_like(flat))
    return out.view_as(maps)


def gaussian_blur(x: Tensor, sigma: float, radius: int | None = None,
                  padding: str = "reflect") -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) ``x`` with standard deviation ``sigma`` pixels.

    ``radius`` defaults to ``ceil(3 sigma)``; the kernel is normalised to sum 1. ``padding`` is a
    :func:`torch.nn.functional.pad` mode (``"reflect"`` falls back to ``"replicate"`` when the
    radius is not smaller than the image side). ``sigma <= 0`` or a radius of 0 returns ``x``.
    """
    if sigma <= 0:
        return x
    r = math.ceil(3 * sigma) if radius is None else int(radius)
    if r <= 0:
        return x
    n, c, h, w = x.shape
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t * t) / (2 * sigma * sigma))
    k = k / k.sum()
    mode = "replicate" if padding == "reflect" and r >= min(h, w) else padding
    y = x.reshape(n * c, 1, h, w)
    y = F.pad(y, (r, r, r, r)) if mode == "constant" else F.pad(y, (r, r, r, r), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def pair_mean(values: Tensor, pair_image: Tensor, batch_size: int) -> Tensor:
    """(B,) mean of the (P,) per-pair ``values`` over each image's pairs; NaN for an image
    without pairs, and NaN when one of its pairs is NaN (a failure on one class fails the
    image)."""
    pi = pair_image.to(values.device).long()
    n = torch.zeros(batch_size, device=values.device).index_add_(0, pi, torch.ones_like(values))
    s = torch.zeros(batch_size, device=values.device).index_add_(0, pi, values)
    return torch.where(n > 0, s / n.clamp_min(1), torch.full_like(s, math.nan))


def keep_pair_curves(store: dict, curves: Tensor, pair_image: Tensor, pair_class: Tensor,
                     image_ids, seen: int) -> None:
    """Add the (P, S) per-pair ``curves`` to ``store[image id][class id]`` (lists of floats);
    images without ids are numbered from ``seen``."""
    b = int(pair_image.max()) + 1 if pair_image.numel() else 0
    ids = list(image_ids) if len(image_ids) >= b else [str(seen + i) for i in range(b)]
    rows = curves.cpu().tolist()
    for k, (i, c) in enumerate(zip(pair_image.tolist(), pair_class.tolist())):
        store.setdefault(str(ids[i]), {})[int(c)] = rows[k]
