"""Reader for MS-COCO 2014 (instance annotations) with the same interface as the VOC reader.

Layout (``root`` is the folder that holds these)::

    annotations/instances_train2014.json
    annotations/instances_val2014.json
    train2014/<file_name>           file_name as given in the annotation file's "images" list
    val2014/<file_name>

Splits:
    * ``"train"``: the custom training part of train2014 (about 90 % of its annotated images).
    * ``"val"``: the held-out part of train2014 (early stopping). The paper's split files were
      downloaded from a private link and their ratio is not known, so attrbench draws its own
      deterministic split: an image goes to ``val`` when
      ``sha1(f"{SPLIT_SEED}:{image_id}")`` read as a 64-bit fraction is below ``VAL_FRACTION``
      (seed 0, 10 %). It depends only on the image id, so it does not change with the order of
      the annotation file or with other images (see :func:`train_val_part`).
    * ``"test"``: all of val2014 (the paper's test set).
    * ``"test-seg"``: the fixed subset of val2014 used for the segmentation metrics, read from a
      committed id list (``ids_file``, by default ``attrbench/data/coco_val2014_seg_ids.txt``,
      one image id per line, ``#`` comments allowed). *Deviation:* the paper draws 1000 or 2000
      images with ``random.sample`` and no seed; attrbench commits a seeded list drawn by
      :func:`make_seg_id_list` (2000 ids, seed 0) so that runs are comparable. The list can only
      be drawn from the real ``instances_val2014.json``; when it is missing the split raises a
      :class:`DataError` that says how to make it.

Protocol:
    * Images are resized to ``image_size`` x ``image_size`` (squashed, bilinear) and normalised,
      as for VOC.
    * Classes: the categories of the annotation file, sorted by ``category_id`` and numbered
      0..K-1 (K = 80 for COCO). *Deviation:* the paper uses a 91-slot label vector indexed by the
      raw ``category_id`` (11 slots never used); ``self.category_ids[k]`` gives the raw id of
      class ``k`` to map between the two.
    * Labels: the categories of all annotations of the image (crowd included by default).
    * Per-class masks: the union of the ``annToMask`` masks of the class's annotations (crowd
      annotations included, as in the paper), resized with nearest-neighbour interpolation.
      *Deviation:* the paper resized the union with interpolation and kept interpolated edge
      values; nearest keeps the masks binary. ``crowd="exclude"`` drops crowd annotations
      entirely (labels, masks and boxes), as if they were not annotated.
    * Boxes: from the ``bbox`` field ``(x, y, w, h)``, as ``(class_id, x * sx, y * sy,
      (x + w) * sx - 1, (y + h) * sy - 1, False)``: the same inclusive pixel convention as the VOC
      reader, in resized-image pixels. COCO has no "difficult" flag, so it is always False.
    * Images without annotations (after the crowd option) are skipped: the paper's label vector
      would be empty and its mask extraction fails on them. Their number is kept in
      ``self.skipped_empty``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import torch
from PIL import Image

from .base import DataError, ImageDataset, open_rgb
from .sample import IMAGENET_MEAN, IMAGENET_STD, Original, Sample

SPLITS = ("train", "val", "test", "test-seg")
VAL_FRACTION = 0.1
SPLIT_SEED = 0
DEFAULT_SEG_IDS = Path(__file__).with_name("coco_val2014_seg_ids.txt")
_SOURCE = {"train": "train2014", "val": "train2014", "test": "val2014", "test-seg": "val2014"}


def train_val_part(image_id: int, seed: int = SPLIT_SEED,
                   val_fraction: float = VAL_FRACTION) -> str:
    """``"val"`` or ``"train"``: which part of train2014 an image id belongs to.

    The part is ``"val"`` when the first 8 bytes of ``sha1(f"{seed}:{image_id}")``, read as a
    big-endian fraction in [0, 1), are below ``val_fraction``.
    """
    digest = hashlib.sha1(f"{seed}:{int(image_id)}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "val" if u < val_fraction else "train"


def _load_coco(path: Path):
    """A pycocotools ``COCO`` index of ``path`` (quietly), with format errors as DataError."""
    from pycocotools.coco import COCO

    if not path.is_file():
        raise DataError(
            f"missing annotation file {path}; expected the COCO instances JSON "
            f"(annotations/instances_<train2014|val2014>.json under the data root)")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"unreadable annotation file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(
            isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise DataError(
            f"malformed annotation file {path}: expected a JSON object with 'images', "
            f"'annotations' and 'categories' lists")
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    except (KeyError, TypeError) as exc:
        raise DataError(f"malformed annotation file {path}: missing or bad field {exc}") from None
    return coco


def _check_file_name(name: object, ann_file: Path, image_id: int) -> str:
    """The image's ``file_name`` if it stays inside the image folder, else DataError."""
    bad = (not isinstance(name, str) or not name or "\x00" in name
           or PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute()
           or PureWindowsPath(name).drive != ""
           or ".." in PurePosixPath(name.replace("\\", "/")).parts)
    if bad:
        raise DataError(
            f"{ann_file}: image {image_id} has file_name {name!r}; expected a relative path "
            f"inside the image folder (no absolute path, no '..')")
    return name


def read_id_list(path: str | Path) -> list[int]:
    """Image ids from a text file: one integer per line, blank lines and ``#`` comments ignored."""
    path = Path(path)
    ids = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"missing id list {path}; expected one COCO image id per line") from None
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            ids.append(int(text))
        except ValueError:
            raise DataError(f"{path}:{n}: {text!r} is not an integer image id") from None
    if not ids:
        raise DataError(f"id list {path} is empty; expected one COCO image id per line")
    return ids


def make_seg_id_list(annotation_file: str | Path, n: int = 2000, seed: int = 0,
                     out: str | Path | None = None) -> list[int]:
    """Draw the fixed ``test-seg`` id list from ``instances_val2014.json``.

    The candidates are the images with at least one annotation that has a segmentation, sorted by
    id; ``random.Random(seed).sample`` draws ``min(n, len(candidates))`` of them, returned sorted.
    With ``out`` the list is also written there (one id per line, with a header comment).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    path = Path(annotation_file)
    coco = _load_coco(path)
    cands = sorted(i for i in coco.imgs
                   if any(a.get("segmentation") for a in coco.imgToAnns.get(i, ())))
    ids = sorted(random.Random(seed).sample(cands, min(n, len(cands))))
    if out is not None:
        header = (f"# attrbench COCO test-seg ids: make_seg_id_list({path.name!r}, n={n}, "
                  f"seed={seed}); {len(ids)} of {len(cands)} segmented images\n")
        Path(out).write_text(header + "".join(f"{i}\n" for i in ids))
    return ids


def _check_options(split: str, segmentation: str, crowd: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if segmentation not in ("auto", "only", "none"):
        raise ValueError(f"segmentation must be 'auto', 'only' or 'none', got {segmentation!r}")
    if crowd not in ("include", "exclude"):
        raise ValueError(f"crowd must be 'include' or 'exclude', got {crowd!r}")


class COCODataset(ImageDataset):
    """Samples of one split of COCO-2014 (see the module docstring for splits and protocol).

    Args:
        root: folder holding ``annotations/``, ``train2014/`` and ``val2014/``.
        split: ``"train"``, ``"val"``, ``"test"`` (val2014) or ``"test-seg"``.
        image_size: side of the square network input.
        segmentation: ``"auto"`` gives masks for images with at least one segmented annotation;
            ``"only"`` keeps only such images; ``"none"`` gives no masks.
        cache: keep decoded samples in memory.
        limit: keep the first ``limit`` ids of the split (ids are sorted numerically).
        mean, std: normalisation (ImageNet by default).
        crowd: ``"include"`` (the paper) or ``"exclude"`` (drop ``iscrowd=1`` annotations).
        ids_file: the ``test-seg`` id list (default :data:`DEFAULT_SEG_IDS`); only for that split.

    Attributes:
        classes: category names, ordered by ``category_id``.
        category_ids: the raw COCO ``category_id`` of each class.
        ids: image ids (as strings) of the split.
        skipped_empty: number of the split's images skipped for having no annotations.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        image_size: int = 224,
        segmentation: str = "auto",
        cache: bool = False,
        limit: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        crowd: str = "include",
        ids_file: str | Path | None = None,
    ) -> None:
        _check_options(split, segmentation, crowd)
        super().__init__(image_size, mean, std, cache)
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive int or None, got {limit!r}")
        if ids_file is not None and split != "test-seg":
            raise ValueError(f"ids_file is only used by split 'test-seg', got split {split!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"data root {self.root} does not exist")
        self.split = split
        self.segmentation = segmentation
        self.crowd = crowd

        source = _SOURCE[split]
        self.annotation_file = self.root / "annotations" / f"instances_{source}.json"
        self.image_dir = self.root / source
        self.coco = _load_coco(self.annotation_file)
        if not self.image_dir.is_dir():
            raise DataError(
                f"missing image folder {self.image_dir}; expected the {source} images there "
                f"(named by the file_name fields of {self.annotation_file.name})")
        self._read_categories()
        ids = self._select(self._candidates(ids_file), limit)
        if not ids:
            raise DataError(f"split '{split}' of {self.root} has no annotated images")
        self._int_ids = ids
        self.ids = [str(i) for i in ids]

    def _read_categories(self) -> None:
        """``category_ids`` (sorted), ``classes`` (their names) and ``cat_index`` (id -> class
        index) from the annotation file's categories."""
        cats = self.coco.dataset["categories"]
        try:
            cats = sorted(cats, key=lambda c: int(c["id"]))
            self.category_ids = tuple(int(c["id"]) for c in cats)
            self.classes = tuple(str(c["name"]) for c in cats)
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{self.annotation_file}: every category needs an integer 'id' "
                            f"and a 'name'") from None
        if not cats or len(set(self.category_ids)) != len(cats):
            raise DataError(f"{self.annotation_file}: expected unique category ids, got "
                            f"{list(self.category_ids)}")
        self.cat_index = {c: k for k, c in enumerate(self.category_ids)}

    def _candidates(self, ids_file: str | Path | None) -> list[int]:
        """The split's image ids, sorted: the id list of ``test-seg``, else the annotation
        file's images (``train``/``val``: their part of it)."""
        if self.split == "test-seg":
            seg_path = Path(ids_file) if ids_file is not None else DEFAULT_SEG_IDS
            if ids_file is None and not seg_path.exists():
                raise DataError(
                    f"the committed COCO test-seg id list {seg_path} is missing; draw it once "
                    f"with attrbench.data.coco.make_seg_id_list('<root>/annotations/"
                    f"instances_val2014.json', n=2000, seed=0, out='{seg_path}') and commit it, "
                    f"or pass ids_file=")
            wanted = read_id_list(seg_path)
            unknown = [i for i in wanted if i not in self.coco.imgs]
            if unknown:
                raise DataError(f"{seg_path} lists image ids not in {self.annotation_file}: "
                                f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
            return sorted(set(wanted))
        candidates = sorted(self.coco.imgs)
        if self.split in ("train", "val"):
            candidates = [i for i in candidates if train_val_part(i) == self.split]
        return candidates

    def _select(self, candidates: list[int], limit: int | None) -> list[int]:
        """The candidates with annotations (and a segmentation with ``segmentation="only"``),
        the first ``limit`` of them; sets ``skipped_empty`` and checks their file names."""
        ids, skipped = [], 0
        for i in candidates:
            anns = self._annotations(i)
            if not anns:
                skipped += 1
                continue
            if self.segmentation == "only" and not any(a.get("segmentation") for a in anns):
                continue
            ids.append(i)
        self.skipped_empty = skipped
        if limit is not None:
            ids = ids[:limit]
        for i in ids:
            _check_file_name(self.coco.imgs[i].get("file_name"), self.annotation_file, i)
        return ids

    def _annotations(self, image_id: int) -> list[dict]:
        anns = self.coco.imgToAnns.get(image_id, [])
        if self.crowd == "exclude":
            anns = [a for a in anns if not a.get("iscrowd", 0)]
        return anns

    def image_path(self, image_id: int) -> Path:
        name = _check_file_name(self.coco.imgs[image_id].get("file_name"), self.annotation_file,
                                image_id)
        return self.image_dir / name

    def load_image(self, image_id: int) -> Image.Image:
        return open_rgb(self.image_path(image_id))

    def class_masks_native(self, image_id: int) -> np.ndarray | None:
        """(K, h, w) bool union of each class's annotation masks at the annotated size."""
        info = self.coco.imgs[image_id]
        anns = [a for a in self._annotations(image_id) if a.get("segmentation")]
        if not anns:
            return None
        try:
            h, w = int(info["height"]), int(info["width"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{self.annotation_file}: image {image_id} needs integer 'height' "
                            f"and 'width' fields") from None
        masks = np.zeros((self.num_classes, h, w), bool)
        for a in anns:
            try:
                m = self.coco.annToMask(a)
            except Exception as exc:  # noqa: BLE001 (pycocotools raises bare Exception)
                raise DataError(f"{self.annotation_file}: annotation {a.get('id')} of image "
                                f"{image_id} has a malformed segmentation: {exc}") from None
            if m.shape != masks.shape[1:]:
                raise DataError(f"{self.annotation_file}: annotation {a.get('id')} of image "
                                f"{image_id} has a {m.shape} mask; the image is "
                                f"{masks.shape[1:]}")
            masks[self.cat_index[a["category_id"]]] |= m.astype(bool)
        return masks

    def _resize_masks(self, masks: np.ndarray) -> torch.Tensor:
        s = self.image_size
        out = torch.zeros(masks.shape[0], s, s, dtype=torch.bool)
        for k in np.flatnonzero(masks.reshape(masks.shape[0], -1).any(1)):
            im = Image.fromarray(masks[k].astype(np.uint8) * 255)
            if im.size != (s, s):
                im = im.resize((s, s), Image.NEAREST)
            out[k] = torch.from_numpy(np.asarray(im) > 127)
        return out

    def _load(self, index: int) -> Sample:
        image_id = self._int_ids[index]
        info = self.coco.imgs[image_id]
        im = self.load_image(image_id)
        w0, h0 = im.size
        if (w0, h0) != (info.get("width"), info.get("height")):
            raise DataError(
                f"image file {self.image_path(image_id)} is {w0}x{h0}; {self.annotation_file} "
                f"says {info.get('width')}x{info.get('height')}")
        anns = self._annotations(image_id)
        labels = torch.zeros(self.num_classes)
        boxes, original_boxes = [], []
        sx, sy = self.image_size / w0, self.image_size / h0
        for a in anns:
            k = self.cat_index.get(a.get("category_id"))
            if k is None:
                raise DataError(f"{self.annotation_file}: annotation {a.get('id')} has unknown "
                                f"category_id {a.get('category_id')!r}")
            labels[k] = 1.0
            bb = a.get("bbox")
            if not (isinstance(bb, (list, tuple)) and len(bb) == 4):
                raise DataError(f"{self.annotation_file}: annotation {a.get('id')} has bbox "
                                f"{bb!r}; expected [x, y, width, height]")
            x, y, w, h = (float(v) for v in bb)
            boxes.append((k, x * sx, y * sy, (x + w) * sx - 1, (y + h) * sy - 1, False))
            original_boxes.append((k, *(int(np.floor(v)) for v in (x, y, x + w - 1, y + h - 1)),
                                   False))
        masks, original_masks = None, None
        if self.segmentation != "none":  # "none" (training): no masks at any size
            native = self.class_masks_native(image_id)
            original_masks = {}
            if native is not None:
                masks = self._resize_masks(native)
                # the pointing game's ground truth: the union of the class's instance masks at
                # the original size, for every class with a segmented annotation (even if it
                # rasterises to no pixel: TorchRay counts that as a miss)
                for k in sorted({self.cat_index[a["category_id"]] for a in anns
                                 if a.get("segmentation")}):
                    original_masks[k] = torch.from_numpy(native[k].copy())
        return Sample(self.to_tensor(im), labels, masks, boxes, str(image_id),
                      original=Original(h0, w0, original_boxes, original_masks, "coco"))
