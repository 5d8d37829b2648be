"""Sanity rows: reference "methods" that bracket every metric (the paper's constant and ideal
masks, TorchRay's centre baseline).

* ``ideal``: the ground-truth mask of the target class (the paper's "Ideal"/``perfect`` column).
* ``center``: a centred isotropic Gaussian (TorchRay's ``center`` pointing-game baseline uses
  the image centre; a Gaussian gives the same argmax and a graded map for the other metrics).
* ``constant_0``, ``constant_0.5``, ``constant_1``: the paper's constant masks.
* ``random``: i.i.d. uniform noise in [0, 1], seeded per image (``seed + seeds[i]``), so an
  image gets the same map whatever batch it is in.

None of them reads the classifier (``classifier_use = "none"``: a model-randomisation test
gives them |rho| = 1, the reference for "ignores the model"); they are cheap test doubles for
the metrics as well. Merge order ``"rescale_then_max"`` (the default; nothing is rescaled).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attrbench.interfaces import AttributionMethod


class Ideal(AttributionMethod):
    """The ground-truth mask of the target class, as a float map (1 inside, 0 outside)."""

    name = "ideal"
    black_box = True
    needs_ground_truth = True
    classifier_use = "none"
    sanity = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)

    def _attribute(self, images: Tensor, targets: Tensor, *, gt_masks, seeds) -> Tensor:
        if gt_masks.shape != (images.shape[0], *images.shape[-2:]):
            raise ValueError(
                f"gt_masks must have shape {(images.shape[0], *images.shape[-2:])}, got "
                f"{tuple(gt_masks.shape)}")
        return gt_masks.to(device=images.device, dtype=torch.float32)


class Center(AttributionMethod):
    """exp(-d^2 / (2 (sigma * min(H, W))^2)) with d the distance to the image centre.

    Args:
        sigma: standard deviation as a fraction of the shorter side (default 0.25).
    """

    name = "center"
    black_box = True
    classifier_use = "none"
    sanity = True

    def __init__(self, model: nn.Module, sigma: float = 0.25) -> None:
        self._check_positive("sigma", sigma)
        super().__init__(model, sigma=sigma)
        self.sigma = float(sigma)

    def _attribute(self, images: Tensor, targets: Tensor, *, gt_masks, seeds) -> Tensor:
        b, _, h, w = images.shape
        yy = torch.arange(h, device=images.device, dtype=torch.float32) + 0.5 - h / 2
        xx = torch.arange(w, device=images.device, dtype=torch.float32) + 0.5 - w / 2
        s = self.sigma * min(h, w)
        g = torch.exp(-(yy[:, None] ** 2 + xx[None, :] ** 2) / (2 * s * s))
        return g.expand(b, h, w).clone()


class _Constant(AttributionMethod):
    value: float = 0.0
    black_box = True
    classifier_use = "none"
    sanity = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)

    def _attribute(self, images: Tensor, targets: Tensor, *, gt_masks, seeds) -> Tensor:
        b, _, h, w = images.shape
        return torch.full((b, h, w), self.value, device=images.device)


class Constant0(_Constant):
    """The all-0 mask."""

    name = "constant_0"
    value = 0.0


class Constant05(_Constant):
    """The all-0.5 mask."""

    name = "constant_0.5"
    value = 0.5


class Constant1(_Constant):
    """The all-1 mask."""

    name = "constant_1"
    value = 1.0


class Random(AttributionMethod):
    """Uniform noise in [0, 1]; image i uses a generator seeded with ``seed + seeds[i]``.

    Args:
        seed: base seed (default 0).
    """

    name = "random"
    black_box = True
    stochastic = True
    classifier_use = "none"
    sanity = True

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        super().__init__(model, seed=seed)
        self.seed = seed

    def _attribute(self, images: Tensor, targets: Tensor, *, gt_masks, seeds) -> Tensor:
        b, _, h, w = images.shape
        out = torch.empty(b, h, w)
        for i in range(b):  # one tiny generator call per image: the per-image seed contract
            g = torch.Generator().manual_seed(self.seed + int(seeds[i]) * 1_000_003 + int(targets[i]))
            out[i] = torch.rand(h, w, generator=g)
        return out.to(images.device)
