"""The sample and batch records that flow from datasets to the runner."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Original:
    """An image's annotations at its original (file) resolution, for the protocols that are
    defined there: the pointing game measures its 15-px tolerance in original pixels.

    Attributes:
        height, width: the size of the image file.
        boxes: (class_id, x0, y0, x1, y1, difficult) per annotated object, 0-based inclusive
            integer pixel coordinates of the original image (VOC: the XML's 1-based values
            minus 1; COCO: ``floor`` of ``x, y, x + w - 1, y + h - 1``).
        masks: COCO: ``{class_id: (height, width) bool}``, the union of the class's instance
            masks; None for VOC-layout datasets (their pointing-game region is the boxes) and
            when masks are not loaded (``segmentation="none"``).
        kind: ``"voc"`` or ``"coco"``: the annotation convention, which decides the pointing
            game's ground truth (VOC: union of the class's boxes; COCO: instance masks).
    """

    height: int
    width: int
    boxes: list[tuple] = field(default_factory=list)
    masks: dict[int, Tensor] | None = None
    kind: str = "voc"


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
        original: the annotations at the original resolution (:class:`Original`), or None.
    """

    image: Tensor
    labels: Tensor
    masks: Tensor | None
    boxes: list[tuple] = field(default_factory=list)
    image_id: str = ""
    error: str | None = None
    original: Original | None = None

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
    the whole field means that every sample is good. ``originals`` holds each sample's
    :attr:`Sample.original` (None for the whole field: unknown).
    """

    images: Tensor
    labels: Tensor
    masks: Tensor
    has_gt: Tensor
    boxes: list[list[tuple]]
    image_ids: list[str]
    errors: list[str | None] | None = None
    originals: list[Original | None] | None = None

    def select(self, idx: list[int]) -> Batch:
        """The batch of the samples at positions ``idx`` (on the same devices)."""
        t = torch.tensor(idx, dtype=torch.long)
        return Batch(self.images[t.to(self.images.device)], self.labels[t.to(self.labels.device)],
                     self.masks[t.to(self.masks.device)], self.has_gt[t.to(self.has_gt.device)],
                     [self.boxes[i] for i in idx], [self.image_ids[i] for i in idx],
                     None if self.errors is None else [self.errors[i] for i in idx],
                     None if self.originals is None else [self.originals[i] for i in idx])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.images.to(device),
            self.labels.to(device),
            self.masks.to(device),
            self.has_gt.to(device),
            self.boxes,
            self.image_ids,
            self.errors,
            self.originals,
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
    originals = [s.original for s in samples]
    return Batch(images, labels, masks, has_gt, [s.boxes for s in samples],
                 [s.image_id for s in samples], errors if any(errors) else None,
                 originals if any(o is not None for o in originals) else None)
