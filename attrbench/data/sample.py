"""The sample and batch records that flow from datasets to the runner (DESIGN.md, "Sample")."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Sample:
    """One image with its annotations.

    Attributes:
        image: (3, H, W) float, normalised with the dataset's mean/std.
        labels: (K,) float multi-hot image labels (all annotated objects, difficult included).
        masks: (K, H, W) bool per-class ground truth, or None when the image has no segmentation.
        boxes: list of (class_id, x0, y0, x1, y1, difficult) in resized-image pixels.
        image_id: stable id (the file stem for VOC, the image id for COCO).
        error: None for a good sample; otherwise why the image could not be read (a corrupt
            image or mask file, an unknown class, ...). Such a sample is a placeholder (zero
            image, no labels) made by :meth:`failed`; the runner records it as a failed row for
            every method and never scores it.
    """

    image: Tensor
    labels: Tensor
    masks: Tensor | None
    boxes: list[tuple] = field(default_factory=list)
    image_id: str = ""
    error: str | None = None

    @classmethod
    def failed(cls, image_id: str, num_classes: int, image_size: int, error: str) -> Sample:
        """A placeholder for an image that could not be read (see ``error``)."""
        return cls(torch.zeros(3, image_size, image_size), torch.zeros(num_classes), None, [],
                   image_id, error)

    @property
    def class_ids(self) -> list[int]:
        return torch.nonzero(self.labels > 0.5).flatten().tolist()


@dataclass
class Batch:
    """A collated list of samples. ``masks`` is all-False where ``has_gt`` is False.

    ``errors`` holds each sample's :attr:`Sample.error` (None for a good sample); ``None`` for
    the whole field means that every sample is good.
    """

    images: Tensor
    labels: Tensor
    masks: Tensor
    has_gt: Tensor
    boxes: list[list[tuple]]
    image_ids: list[str]
    errors: list[str | None] | None = None

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.images.to(device),
            self.labels.to(device),
            self.masks.to(device),
            self.has_gt.to(device),
            self.boxes,
            self.image_ids,
            self.errors,
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])


def collate_samples(samples: list[Sample]) -> Batch:
    """Stack samples into a :class:`Batch` (a ``DataLoader`` ``collate_fn``)."""
    images = torch.stack([s.image for s in samples])
    labels = torch.stack([s.labels for s in samples])
    k = labels.shape[1]
    h, w = images.shape[-2:]
    masks = torch.zeros(len(samples), k, h, w, dtype=torch.bool)
    has_gt = torch.zeros(len(samples), dtype=torch.bool)
    for i, s in enumerate(samples):
        if s.masks is not None:
            masks[i] = s.masks
            has_gt[i] = True
    errors = [s.error for s in samples]
    return Batch(images, labels, masks, has_gt, [s.boxes for s in samples],
                 [s.image_id for s in samples], errors if any(errors) else None)
