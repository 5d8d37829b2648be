"""Datasets: the VOC-layout reader (PASCAL VOC-2007 and the synthetic dataset) and COCO."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .sample import Batch, Original, Sample, collate_samples
from .voc import DataError, VOCDataset

__all__ = ["Batch", "DataError", "Original", "Sample", "VOCDataset", "collate_samples",
           "open_dataset"]


def detect_format(root: str | Path) -> str:
    """``"voc"`` when the root has the VOC layout, ``"coco"`` when it has COCO annotations."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data root {root} does not exist")
    if (root / "annotations").is_dir() and any((root / "annotations").glob("instances_*.json")):
        return "coco"
    try:
        from .voc import find_voc_root

        find_voc_root(root)
        return "voc"
    except DataError:
        raise DataError(
            f"cannot tell the format of {root}: expected a VOC layout (JPEGImages/, Annotations/, "
            f"ImageSets/) or COCO (annotations/instances_<split>.json)") from None


def open_dataset(preset: Any, split: str, *, data_root: str | None = None,
                 segmentation: str = "auto", cache: bool = False, limit: int | None = None,
                 fmt: str | None = None, image_size: int | None = None,
                 classes: list[str] | None = None):
    """The dataset of a preset's split (the synthetic one is generated on first use).

    ``classes`` names the classes of a VOC-layout dataset in id order (instead of its
    ``classes.txt`` or the 20 PASCAL VOC classes); COCO names its classes in its annotation
    file, so ``classes`` is refused there.
    """
    size = image_size or preset.image_size
    root = data_root or preset.data_root
    kind = fmt or preset.dataset
    if kind == "synthetic" and root is None:
        from .synthetic import ensure_synthetic

        root = ensure_synthetic()
        kind = "voc"
    if root is None:
        raise DataError(
            f"preset '{preset.name}' needs --data-root DIR (the {preset.dataset.upper()} dataset "
            f"on disk; it cannot be downloaded here)")
    if kind in ("synthetic", "auto"):
        kind = detect_format(root)
    if kind == "voc":
        return VOCDataset(root, split, size, segmentation=segmentation, cache=cache, limit=limit,
                          mean=preset.mean, std=preset.std, classes=classes)
    if classes is not None and kind == "coco":
        raise DataError("--classes is for VOC-layout datasets; a COCO dataset names its classes "
                        "in the 'categories' of its annotation file")
    if kind == "coco":
        from .coco import COCODataset

        return COCODataset(root, split, size, segmentation=segmentation, cache=cache, limit=limit,
                           mean=preset.mean, std=preset.std)
    raise DataError(f"unknown dataset format '{kind}'; expected 'voc' or 'coco'")
