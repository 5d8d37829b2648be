"""Reader for datasets in the PASCAL VOC directory layout.

Layout (``root`` is the folder that holds these; ``VOCdevkit`` or ``VOCdevkit/VOC2007`` above it
are also accepted)::

    JPEGImages/<id>.jpg
    Annotations/<id>.xml            objects: name, difficult, bndbox (1-based pixels)
    SegmentationClass/<id>.png      palette PNG: 0 background, k+1 class k, 255 void
    SegmentationObject/<id>.png     palette PNG: instance index, 255 void (not needed here)
    ImageSets/Main/<split>.txt      image ids of the split
    ImageSets/Segmentation/<split>.txt
    classes.txt                     optional (attrbench extension): one class name per line, in
                                    the order of the class ids (line k = id k, mask index k+1);
                                    without it (and without ``classes=``) the 20 PASCAL VOC
                                    classes are used

Protocol:
    * Images are resized to ``image_size`` x ``image_size`` (squashed, no crop) with bilinear
      interpolation, then normalised with ``mean``/``std`` (ImageNet by default).
    * Image labels are **all** annotated objects, difficult ones included (flagged in ``boxes``).
    * Per-class masks come from ``SegmentationClass``, resized with nearest-neighbour
      interpolation. *Deviation:* the paper resizes the PNG bilinearly and takes every non-zero
      pixel, which grows masks by about one pixel at 224 px; nearest keeps class identities.
    * Void pixels (255, object borders) are handled by ``void``: ``"foreground"`` (the paper's
      choice) gives each void pixel to every present class whose mask lies within
      ``void_radius`` pixels of it; ``"background"`` drops them; ``"ignore"`` is the same as
      background for the masks (metrics that can ignore pixels do not exist yet).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .base import DataError, ImageDataset, open_rgb
from .sample import IMAGENET_MEAN, IMAGENET_STD, Original, Sample

__all__ = ["VOC_CLASSES", "DataError", "VOCDataset", "find_voc_root", "parse_voc_xml"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def find_voc_root(root: str | Path) -> Path:
    """Accept ``VOCdevkit``, ``VOCdevkit/VOC2007`` or any folder holding ``JPEGImages``."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data root {root} does not exist")
    if (root / "JPEGImages").is_dir():
        return root
    for cand in (root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
        if (cand / "JPEGImages").is_dir():
            return cand
    subs = sorted(p for p in root.iterdir() if p.is_dir() and (p / "JPEGImages").is_dir())
    if len(subs) == 1:
        return subs[0]
    raise DataError(
        f"{root} is not a VOC-layout dataset: expected a JPEGImages/ folder in it (or in "
        f"VOC2007/ or VOCdevkit/VOC2007/ below it)"
    )


def check_class_names(names: Sequence[str], where: str) -> tuple[str, ...]:
    """``names`` as a tuple, refusing an empty list, blank names and duplicates."""
    names = tuple(str(n).strip() for n in names)
    if not names or any(not n for n in names):
        raise DataError(f"{where}: expected a non-empty list of class names, got {list(names)}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{where} lists a class twice: {dup}")
    return names


def read_class_names(root: Path) -> tuple[str, ...]:
    path = root / "classes.txt"
    if path.exists():
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
        if not names:
            raise DataError(f"{path} is empty; expected one class name per line")
        if len(set(names)) != len(names):
            raise DataError(f"{path} lists a class twice")
        return names
    return VOC_CLASSES


def parse_voc_xml(path: Path, class_index: dict[str, int]) -> list[tuple]:
    """Objects of one annotation file as (class_id, x0, y0, x1, y1, difficult), 0-based pixels."""
    try:
        tree = ET.parse(path)
    except FileNotFoundError:
        raise DataError(f"missing annotation file {path}") from None
    except ET.ParseError as exc:
        raise DataError(f"malformed annotation file {path}: {exc}") from None
    out = []
    for obj in tree.getroot().iter("object"):
        name_el = obj.find("name")
        if name_el is None or not (name_el.text or "").strip():
            raise DataError(f"{path}: an <object> has no <name>")
        name = name_el.text.strip()
        if name not in class_index:
            raise DataError(
                f"{path}: unknown class name '{name}'; expected one of {sorted(class_index)}"
            )
        diff_el = obj.find("difficult")
        difficult = bool(int(diff_el.text)) if diff_el is not None and diff_el.text else False
        bb = obj.find("bndbox")
        if bb is None:
            box = (float("nan"),) * 4
        else:
            try:
                box = tuple(float(bb.find(t).text) - 1.0 for t in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                raise DataError(f"{path}: malformed <bndbox> for '{name}'") from None
        out.append((class_index[name], *box, difficult))
    return out


def unknown_class_names(root: Path, ids: Sequence[str], class_index: dict[str, int]
                        ) -> dict[str, str]:
    """``{name: first annotation file using it}`` for object names of the split's annotation
    files that are not in ``class_index`` (files that are missing or malformed are skipped:
    they fail their own image later)."""
    found: dict[str, str] = {}
    for i in ids:
        path = root / "Annotations" / f"{i}.xml"
        try:
            tree = ET.parse(path)
        except (OSError, ET.ParseError):
            continue
        for el in tree.getroot().iter("name"):
            name = (el.text or "").strip()
            if name and name not in class_index and name not in found:
                found[name] = path.name
    return found


def _safe_child(root: Path, sub: str, name: str, suffix: str) -> Path:
    """``root/sub/name+suffix``, refusing ids that would escape the data root."""
    if "/" in name or "\\" in name or name in ("", ".", "..") or "\x00" in name:
        raise DataError(f"invalid image id '{name}' in an ImageSets file of {root}")
    return root / sub / f"{name}{suffix}"


class VOCDataset(ImageDataset):
    """Samples of one split of a VOC-layout dataset (see the module docstring).

    Args:
        root: dataset root (see :func:`find_voc_root`).
        split: ``train``, ``val``, ``trainval`` or ``test`` (a file in ``ImageSets/Main``).
        image_size: side of the square network input.
        segmentation: ``"auto"`` loads masks where ``SegmentationClass/<id>.png`` exists;
            ``"only"`` keeps only such images (the paper's evaluation set); ``"none"`` skips masks.
        void: ``"foreground"``, ``"background"`` or ``"ignore"`` (see the module docstring).
        limit: keep the first ``limit`` ids of the split.
        cache: keep decoded samples in memory (for small datasets used for training).
        classes: the class names in id order; default ``classes.txt`` of the root, else the 20
            PASCAL VOC classes. With the VOC default, an annotation that uses another name is
            one :class:`DataError` when the dataset is opened (before any work), not a failure
            per image.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        image_size: int = 224,
        segmentation: str = "auto",
        void: str = "foreground",
        void_radius: int = 3,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        limit: int | None = None,
        cache: bool = False,
        classes: Sequence[str] | None = None,
    ) -> None:
        if segmentation not in ("auto", "only", "none"):
            raise ValueError(f"segmentation must be 'auto', 'only' or 'none', got {segmentation!r}")
        if void not in ("foreground", "background", "ignore"):
            raise ValueError(f"void must be 'foreground', 'background' or 'ignore', got {void!r}")
        super().__init__(image_size, mean, std, cache)
        self.root = find_voc_root(root)
        self.split = split
        self.segmentation = segmentation
        self.void = void
        self.void_radius = void_radius
        if classes is not None:
            self.classes = check_class_names(classes, "classes")
        else:
            self.classes = read_class_names(self.root)
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        split_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.exists():
            raise DataError(
                f"missing split file {split_file}; expected a text file with one image id per "
                f"line (ImageSets/Main/<split>.txt of the VOC layout)"
            )
        ids = [ln.split()[0] for ln in split_file.read_text().splitlines() if ln.strip()]
        if segmentation == "only":
            ids = [i for i in ids if _safe_child(self.root, "SegmentationClass", i, ".png").exists()]
        if limit is not None:
            ids = ids[:limit]
        for i in ids:
            _safe_child(self.root, "JPEGImages", i, ".jpg")
        if not ids:
            raise DataError(f"split '{split}' of {self.root} has no images")
        self.ids = ids
        if classes is None and self.classes == VOC_CLASSES:
            unknown = unknown_class_names(self.root, ids, self.class_index)
            if unknown:
                shown = ", ".join(f"'{n}' ({f})" for n, f in list(unknown.items())[:5])
                more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                raise DataError(
                    f"the annotations of {self.root} use class names that are not PASCAL VOC "
                    f"classes: {shown}{more}; list your classes, one per line in id order, in "
                    f"{self.root / 'classes.txt'} or pass --classes a,b,c")

    def load_image(self, image_id: str) -> Image.Image:
        return open_rgb(_safe_child(self.root, "JPEGImages", image_id, ".jpg"))

    def load_masks(self, image_id: str, labels: torch.Tensor) -> torch.Tensor | None:
        path = _safe_child(self.root, "SegmentationClass", image_id, ".png")
        if self.segmentation == "none" or not path.exists():
            return None
        try:
            with Image.open(path) as im:
                if im.mode not in ("P", "L"):
                    raise DataError(
                        f"{path} has mode {im.mode}; expected a palette ('P') or grey ('L') "
                        f"index PNG"
                    )
                seg = im.resize((self.image_size,) * 2, Image.NEAREST)
                seg = torch.from_numpy(np.asarray(seg, dtype=np.uint8).copy()).long()
        except DataError:
            raise
        except (OSError, SyntaxError) as exc:
            raise DataError(f"unreadable mask file {path}: {exc}") from None
        k = self.num_classes
        bad = (seg > k) & (seg != 255)
        if bad.any():
            raise DataError(
                f"{path} holds class index {int(seg[bad].max())}; expected 0..{k} or 255 (void)"
            )
        masks = torch.zeros(k, *seg.shape, dtype=torch.bool)
        present = (seg >= 1) & (seg <= k)
        idx = (seg[present] - 1)
        ys, xs = torch.nonzero(present, as_tuple=True)
        masks[idx, ys, xs] = True
        void = seg == 255
        if self.void == "foreground" and void.any():
            r = self.void_radius
            near = torch.nn.functional.max_pool2d(
                masks.float().unsqueeze(0), kernel_size=2 * r + 1, stride=1, padding=r
            )[0] > 0
            masks |= near & void.unsqueeze(0)
        return masks

    def _load(self, index: int) -> Sample:
        image_id = self.ids[index]
        im = self.load_image(image_id)
        w0, h0 = im.size
        objects = parse_voc_xml(_safe_child(self.root, "Annotations", image_id, ".xml"),
                                self.class_index)
        labels = torch.zeros(self.num_classes)
        boxes, original_boxes = [], []
        sx, sy = self.image_size / w0, self.image_size / h0
        for c, x0, y0, x1, y1, diff in objects:
            labels[c] = 1.0
            boxes.append((c, x0 * sx, y0 * sy, (x1 + 1) * sx - 1, (y1 + 1) * sy - 1, diff))
            original_boxes.append((c, *(_floor(v) for v in (x0, y0, x1, y1)), diff))
        masks = self.load_masks(image_id, labels)
        return Sample(self.to_tensor(im), labels, masks, boxes, image_id,
                      original=Original(h0, w0, original_boxes, None, "voc"))


def _floor(v: float) -> int | float:
    """An integer pixel coordinate (non-finite values are kept; such boxes are ignored)."""
    return int(np.floor(v)) if np.isfinite(v) else v
