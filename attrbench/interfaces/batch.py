"""The batch interface: :class:`EvalBatch`, the one object that carries a batch of images, the
method's masks and the ground truth from the runner to the metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from .method import AttributionMethod

__all__ = ["EvalBatch"]


@dataclass
class EvalBatch:
    """Everything a metric may look at for one batch of images and one method.

    Shapes: B images, P = number of (image, ground-truth class) pairs, K classes.

    Attributes:
        images: (B, 3, H, W) normalised images.
        labels: (B, K) multi-hot ground-truth labels.
        pair_image: (P,) index into the batch of each pair.
        pair_class: (P,) class id of each pair.
        class_masks: (P, H, W) the method's mask for each pair, in [0, 1] after the runner's
            check (values outside are an error recorded as a failure).
        merged: (B, H, W) the image's merged mask: the pixel-wise max of its class masks, taken
            before or after the final rescale as the method's ``merge`` order says.
        gt_masks: (B, K, H, W) bool per-class ground truth, or None when the dataset has none.
        has_gt: (B,) bool, whether image b has segmentation ground truth.
        boxes: per image, a list of (class_id, x0, y0, x1, y1, difficult) in pixel coordinates
            of the (resized) image; empty when the format has none.
        originals: per image, its annotations at the original (file) resolution
            (:class:`attrbench.data.sample.Original`: size, boxes, COCO instance masks) for the
            protocols defined there (the pointing game), or None; empty when unknown.
        model: the frozen classifier (eval mode).
        method: the attribution method (for metrics that need more masks), or None.
        method_name: registry name of the method.
        image_ids: stable sample ids.
        seeds: (B,) per-image seeds.
        time_ms: (B,) milliseconds the method spent per image in this batch (NaN if unknown).
        extras: the runner's per-batch measurements of the method call: ``model_calls`` (B,),
            ``peak_mem_mb``, ``forward_rows``, ``backward_rows``.
        memo: a fresh dict per batch for computations that several metrics share (the two
            class-specificity metrics compute one matrix); keys name the computing function
            and its options.
        all_maps: (B, K, H, W) the method's final maps of every class, when the runner got
            them in one ``attribute_all`` call (methods with ``all_classes_at_once``), else
            None; a metric that needs masks of other classes uses them instead of calling the
            method again.
    """

    images: Tensor
    labels: Tensor
    pair_image: Tensor
    pair_class: Tensor
    class_masks: Tensor
    merged: Tensor
    gt_masks: Tensor | None = None
    has_gt: Tensor | None = None
    boxes: Sequence[Sequence[tuple]] = ()
    originals: Sequence[Any] = ()
    model: nn.Module | None = None
    method: AttributionMethod | None = None
    method_name: str = ""
    image_ids: Sequence[str] = ()
    seeds: Tensor | None = None
    time_ms: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)
    all_maps: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.images.shape[0])

    @property
    def gt_union(self) -> Tensor | None:
        """(B, H, W) bool: union of all classes' ground truth."""
        if self.gt_masks is None:
            return None
        return self.gt_masks.any(dim=1)

    @property
    def pair_gt(self) -> Tensor | None:
        """(P, H, W) bool ground truth of each pair's class."""
        if self.gt_masks is None:
            return None
        return self.gt_masks[self.pair_image, self.pair_class]

    @staticmethod
    def merge(class_masks: Tensor, pair_image: Tensor, batch_size: int) -> Tensor:
        """Pixel-wise max of the class masks of each image: (P,H,W) -> (B,H,W)."""
        p, h, w = class_masks.shape
        out = torch.full(
            (batch_size, h * w), -math.inf, dtype=class_masks.dtype, device=class_masks.device
        )
        out.scatter_reduce_(
            0,
            pair_image.to(class_masks.device).view(-1, 1).expand(p, h * w),
            class_masks.reshape(p, h * w),
            reduce="amax",
            include_self=True,
        )
        out = torch.where(torch.isinf(out), torch.zeros_like(out), out)
        return out.view(batch_size, h, w)
