"""Guided Backpropagation (Springenberg et al., ICLR workshop 2015)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from attrbench.interfaces import AttributionMethod
from attrbench.ops import minmax_rescale

__all__ = ["GuidedBackprop", "guided_relus"]


class _GuidedGate(torch.autograd.Function):
    """Identity forward; backward lets only positive gradients through.

    Placed right after a ReLU's output, and composed with the ReLU's own backward
    (``grad * (x > 0)``), it gives the guided-ReLU rule ``grad * (grad > 0) * (x > 0)``.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


@contextlib.contextmanager
def guided_relus(model: nn.Module) -> Iterator[int]:
    """Inside the body every ``nn.ReLU`` module of ``model`` back-propagates the guided rule.

    Each ReLU gets a forward hook that routes its output through :class:`_GuidedGate`. In-place
    ReLUs (torchvision's VGG/ResNet use ``inplace=True``) are switched to ``inplace=False`` for
    the duration, so the gate never sees a tensor that is modified afterwards. Hooks are removed
    and every ``inplace`` flag is restored in a ``finally`` block, even when the body raises.
    Functional ``F.relu`` / ``torch.relu`` calls inside ``forward`` are not modules and are not
    affected. Yields the number of ReLU modules patched.
    """
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    flags = [(m, m.inplace) for m in relus]
    handles = []
    try:
        for m in relus:
            m.inplace = False
            handles.append(m.register_forward_hook(lambda _m, _i, out: _GuidedGate.apply(out)))
        yield len(relus)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags:
            m.inplace = flag


class GuidedBackprop(AttributionMethod):
    """Guided Backpropagation (Springenberg, Dosovitskiy, Brox, Riedmiller, "Striving for
    Simplicity: The All Convolutional Net", ICLR workshop 2015).

    Definition: the gradient of the target logit with respect to the input, where every ReLU's
    backward pass is replaced by the guided rule: the gradient passes only where both the
    ReLU's input and the incoming gradient are positive. The saliency map is the maximum over
    the RGB channels of the absolute input gradient (Stalder et al.'s benchmark, via TorchRay),
    min-max normalised per map to [0, 1] when ``normalize=True`` (default; a constant map
    becomes all 0).

    Merge order: ``merge = "max_then_rescale"``. Stalder et al.'s code takes the pixel-wise
    maximum of an image's class gradients first and min-max rescales the result once (the
    gradient magnitudes of different classes are comparable, so the class with the stronger
    gradient dominates the merged map); ``attribute(..., rescale=False)`` returns the
    unrescaled maps for that merge.

    Implementation: forward hooks on every ``nn.ReLU`` module (see :func:`guided_relus`);
    in-place ReLUs are temporarily made out-of-place and restored afterwards. Deviations and
    limits: ReLUs applied functionally (``F.relu``, ``torch.relu``, ``x.relu()``) are not
    modules and keep their ordinary backward, so such a network gets a partly guided gradient
    (a model without any ``nn.ReLU`` gets the plain gradient; a warning says so). The paper
    shows signed RGB gradient images; the channel max of ``|grad|`` is the benchmark's reduction.

    Args:
        model: the classifier, (B, 3, H, W) -> (B, K) logits.
        normalize: per-map min-max scaling to [0, 1] (default True).
    """

    name = "guided_backprop"
    needs_gradients = True
    merge = "max_then_rescale"

    def __init__(self, model: nn.Module, normalize: bool = True) -> None:
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {normalize!r}")
        super().__init__(model, normalize=normalize)
        self.normalize = normalize
        if not any(isinstance(m, nn.ReLU) for m in model.modules()):
            warnings.warn(
                f"{type(model).__name__} has no nn.ReLU module: guided backprop reduces to the "
                f"plain input gradient (functional relus are not guided)",
                stacklevel=2,
            )

    def _saliency(self, grad: Tensor) -> Tensor:
        """Channel max of |grad|, before the rescale (applied by :meth:`rescale`)."""
        return grad.abs().amax(dim=-3)

    def rescale(self, maps: Tensor) -> Tensor:
        """Per-map min-max to [0, 1] with ``normalize=True``; the raw maps otherwise."""
        return minmax_rescale(maps) if self.normalize else maps

    def _forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = images.detach().clone().requires_grad_(True)
        logits = self.model(x)
        if logits.ndim != 2 or logits.shape[0] != images.shape[0]:
            raise ValueError(f"classifier must return (B, K) logits, got {tuple(logits.shape)}")
        return x, logits

    def _attribute(
        self, images: Tensor, targets: Tensor, *, gt_masks: Tensor | None, seeds: Tensor
    ) -> Tensor:
        with guided_relus(self.model):
            x, logits = self._forward(images)
            (grad,) = torch.autograd.grad(logits.gather(1, targets.view(-1, 1)).sum(), x)
        return self._saliency(grad).detach()

    def _attribute_all(self, images: Tensor, *, seeds: Tensor) -> Tensor:
        """All classes from one forward pass and K guided backward passes."""
        with guided_relus(self.model):
            x, logits = self._forward(images)
            k = logits.shape[1]
            maps = [
                self._saliency(
                    torch.autograd.grad(logits[:, c].sum(), x, retain_graph=c < k - 1)[0]
                )
                for c in range(k)
            ]
        return torch.stack(maps, dim=1).detach()
